"""The resolved configuration a trainer process reads (stage.json): everything decided, nothing to look up."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixer.hashing import fingerprint


def mixture_content(manifest: dict[str, Any]) -> str:
    """The rows a mixture holds, by its shards' hashes: a build whose recipe changed only in its stages (a
    learning rate) writes another manifest but the same shards."""
    return fingerprint([shard["sha256"] for shard in manifest.get("shards") or []])


def final_model(run_dir: Path) -> Path:
    """Where a stage's trainer saves the trained model, and where the stages that start from it read it."""
    return run_dir / "final"


@dataclass
class StageConfig:
    name: str
    kind: str  # sft | dpo
    model: str  # local path or hub id
    data_files: list[str]
    run_dir: str
    tokenizer: str | None = None
    chat_template: str | None = None
    max_seq_length: int = 8192
    packing: bool = False
    beta: float = 0.1
    reference: str = "model"  # model | precomputed
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    eval_files: list[str] = field(default_factory=list)  # held-out rows (mixture.eval, or the stage's eval)
    # the build whose shards `data_files` are: a stage prepared for a cluster runs later, by which time another
    # build may have replaced that folder
    mixture_manifest: str | None = None
    mixture_content: str | None = None  # `mixture_content` of that build when the stage was prepared

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> StageConfig:
        return cls(**json.loads(path.read_text(encoding="utf-8")))
