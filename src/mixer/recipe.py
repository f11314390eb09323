"""Typed recipe model, built from a validated YAML document.

Validation (validate.py) guarantees the shapes here, so this module only translates; it never reports errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mixer.yamlpos import Located

SelectorMode = Literal["take", "all", "fraction", "weight"]


@dataclass(frozen=True)
class Selector:
    """How many rows a source contributes; exactly one mode per source, never an overloaded number."""

    mode: SelectorMode
    value: float | int | None = None

    def describe(self) -> str:
        return "take: all" if self.mode == "all" else f"{self.mode}: {self.value}"


@dataclass(frozen=True)
class Filters:
    min_turns: int | None = None
    max_turns: int | None = None
    max_chars: int | None = None
    lang: tuple[str, ...] | None = None
    drop_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceSpec:
    name: str
    registry: str | None
    paths: tuple[str, ...]
    format: str | None
    fields: dict[str, str]
    options: dict[str, Any]
    selector: Selector
    filters: Filters
    on_error: str | None


@dataclass(frozen=True)
class MixtureSpec:
    total: int | None = None
    shuffle: bool = True
    dedup: str = "none"
    drop_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputSpec:
    dir: str
    shard_rows: int = 100_000


@dataclass(frozen=True)
class Hyperparameters:
    """Optimisation settings; `defaults_for(kind)` gives the Tülu 2 values (Ivison et al. 2023, App. B)."""

    learning_rate: float = 2e-5
    epochs: float = 2
    max_steps: int | None = None
    warmup_ratio: float = 0.03
    lr_scheduler: str = "linear"
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 16
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    logging_steps: int = 1
    save_steps: int | None = None  # None: a checkpoint at the end of every epoch
    save_total_limit: int = 2
    gradient_checkpointing: bool = False
    report_to: tuple[str, ...] = ()


STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    # Tülu 2 SFT: lr 2e-5, 2 epochs, linear with 3% warmup, effective batch 128 (8 GPUs x 1 x 16), 8K tokens
    "sft": {"learning_rate": 2e-5, "epochs": 2, "warmup_ratio": 0.03, "gradient_accumulation_steps": 16},
    # Tülu 2 DPO: lr 5e-7, 3 epochs, 10% warmup, effective batch 32 (8 x 1 x 4), beta 0.1
    "dpo": {"learning_rate": 5e-7, "epochs": 3, "warmup_ratio": 0.1, "gradient_accumulation_steps": 4},
}


@dataclass(frozen=True)
class Launcher:
    num_processes: int = 1  # per machine
    num_machines: int = 1
    mixed_precision: str = "bf16"
    backend: str = "ddp"  # ddp | deepspeed | fsdp
    zero_stage: int | None = None
    offload: bool = False
    main_process_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.num_processes * self.num_machines


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: str  # sft | dpo
    model: str | dict[str, Any]  # hub id/path, {stage: name} or {init: llama, config: {...}}
    data: str | SourceSpec  # "mixture" or a source
    tokenizer: str | None = None
    chat_template: str | None = None
    max_seq_length: int = 8192
    packing: bool = False
    beta: float = 0.1
    reference: str = "model"
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    launcher: Launcher = field(default_factory=Launcher)

    @property
    def parent_stage(self) -> str | None:
        return self.model.get("stage") if isinstance(self.model, dict) else None


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    description: str
    seed: int
    sources: tuple[SourceSpec, ...]
    mixture: MixtureSpec
    output: OutputSpec
    stages: tuple[StageSpec, ...]
    document: dict[str, Any] = field(repr=False)  # the interpolated YAML data, for manifests and diffs
    located: Located | None = field(default=None, repr=False, compare=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.sources if s.name == name)


def selector_of(spec: dict[str, Any]) -> Selector:
    if spec.get("take") == "all":
        return Selector("all")
    for mode in ("take", "fraction", "weight"):
        if mode in spec:
            return Selector(mode, spec[mode])
    raise ValueError("validated source has no selector")


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def source_spec(name: str, spec: dict[str, Any]) -> SourceSpec:
    return SourceSpec(
        name=name,
        registry=spec.get("source"),
        paths=_as_tuple(spec.get("path")),
        format=spec.get("format"),
        fields=dict(spec.get("fields") or {}),
        options=dict(spec.get("options") or {}),
        selector=selector_of(spec),
        filters=Filters(
            min_turns=spec.get("min_turns"),
            max_turns=spec.get("max_turns"),
            max_chars=spec.get("max_chars"),
            lang=_as_tuple(spec.get("lang")) or None,
            drop_patterns=_as_tuple(spec.get("drop_patterns")),
        ),
        on_error=spec.get("on_error"),
    )


def stage_spec(spec: dict[str, Any]) -> StageSpec:
    kind = spec["kind"]
    hyper = {**STAGE_DEFAULTS[kind], **(spec.get("hyperparameters") or {})}
    hyper["report_to"] = tuple(hyper.get("report_to") or ())
    data = spec["data"]
    return StageSpec(
        name=spec["name"],
        kind=kind,
        model=spec["model"],
        data=data if data == "mixture" else source_spec(spec["name"], data),
        tokenizer=spec.get("tokenizer"),
        chat_template=spec.get("chat_template"),
        max_seq_length=spec.get("max_seq_length", 8192),
        packing=spec.get("packing", False),
        beta=spec.get("beta", 0.1),
        reference=spec.get("reference", "model"),
        hyperparameters=Hyperparameters(**hyper),
        launcher=Launcher(**(spec.get("launcher") or {})),
    )


def build_recipe(path: Path, data: dict[str, Any], located: Located | None = None) -> Recipe:
    sources = [source_spec(name, spec) for name, spec in data["sources"].items()]
    mixture = data.get("mixture") or {}
    output = data.get("output") or {}
    return Recipe(
        path=path,
        name=data["name"],
        description=data.get("description", ""),
        seed=data.get("seed", 42),
        sources=tuple(sources),
        mixture=MixtureSpec(
            total=mixture.get("total"),
            shuffle=mixture.get("shuffle", True),
            dedup=mixture.get("dedup", "none"),
            drop_patterns=_as_tuple(mixture.get("drop_patterns")),
        ),
        stages=tuple(stage_spec(s) for s in data.get("stages") or []),
        output=OutputSpec(dir=output.get("dir", f"out/{data['name']}"), shard_rows=output.get("shard_rows", 100_000)),
        document=data,
        located=located,
    )
