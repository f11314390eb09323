"""A stage's run folder holds one training: what it was trained from (recorded in run.json), whether its
checkpoints may resume, and whether it is already done.

Checkpoints made from other settings, data or starting model resumed as if nothing had changed, mixing two
trainings; a finished stage run again replayed its last epoch. Both are decided here, before anything runs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mixer.errors import MixerError
from mixer.recipe import Recipe, SourceSpec, StageSpec
from mixer.train.config import final_model

# settings that change what is logged or kept, not what is trained: a changed one still resumes
UNTRAINED_SETTINGS = ("report_to", "logging_steps", "save_steps", "save_total_limit")
TRAINED_STATE = ("checkpoints", "final", "init", "metrics.jsonl", "metrics.json")  # what --restart deletes


def training_inputs(recipe: Recipe, stage: StageSpec, data_info: dict[str, Any], root: Path) -> dict[str, Any]:
    """Everything a stage's checkpoints and final model depend on: its model (an earlier stage's by what that
    stage was trained from), its data by content, and the settings that shape the optimisation. Resuming
    checkpoints made from other inputs would silently mix two trainings."""
    parent = stage.parent_stage
    model: Any = stage.model
    if parent is not None:
        model = {"stage": parent, "trained_from": json_object(root / parent / "run.json").get("training_fingerprint")}
    hyper = {k: v for k, v in asdict(stage.hyperparameters).items() if k not in UNTRAINED_SETTINGS}
    launcher = {k: v for k, v in asdict(stage.launcher).items() if k != "main_process_port"}
    if isinstance(stage.data, SourceSpec):
        data = {"selection": asdict(stage.data), "seed": recipe.seed, **data_info}
    else:  # the mixture's rows, not its manifest or folder: a recipe edited only in its stages has the same rows
        data = {k: data_info.get(k) for k in ("kind", "content", "rows")}
    return {
        "kind": stage.kind,
        "model": model,
        "data": data,
        "tokenizer": stage.tokenizer,
        "chat_template": stage.chat_template,
        "max_seq_length": stage.max_seq_length,
        "packing": stage.packing,
        "beta": stage.beta,
        "reference": stage.reference,
        "hyperparameters": hyper,
        "launcher": launcher,
    }


def json_object(path: Path) -> dict[str, Any]:
    """A JSON object a run left (run.json, metrics.json), or nothing: none yet, or unreadable, and then there is
    nothing to compare."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _differences(before: Any, now: Any, at: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        keys = sorted(set(before) | set(now))
        return [d for k in keys for d in _differences(before.get(k), now.get(k), f"{at}.{k}" if at else str(k))]
    return [] if before == now else [f"{at}: {json.dumps(before)} → {json.dumps(now)}"]


def _remove(run_dir: Path, names: list[str]) -> None:
    for name in names:
        target = run_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def claim_run_dir(run_dir: Path, stage: str, inputs: dict[str, Any], restart: bool, recipe: Path) -> None:
    """A stage's folder holds one training: its checkpoints resume only the training they were made by. With
    other settings, data or starting model, it is refused (before a random model is made for the new data),
    or, with `restart`, emptied of the old training. A random starting model made for other inputs, with
    nothing trained from it yet, is only made again."""
    present = [name for name in TRAINED_STATE if (run_dir / name).exists()]
    if restart:
        _remove(run_dir, present)
        return
    before = json_object(run_dir / "run.json").get("training")
    now = json.loads(json.dumps(inputs))  # as run.json holds it: tuples are lists
    if before is None or before == now:
        return  # the same training, or a folder from before mixer kept what it trained from
    trained = [name for name in present if name != "init"]
    if not trained:
        _remove(run_dir, present)
        return
    changed = _differences(before, now)
    shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
    raise MixerError(
        f"stage {stage}: {run_dir} holds a training from other inputs ({shown}); resuming its checkpoints would "
        "mix the two",
        f"train it from the start with `mixer train {recipe} --stage {stage} --restart` (its checkpoints and final "
        "model are deleted; without --stage every stage trains again), or keep them and give this training "
        "another folder with --runs-dir",
    )


def done_before(run_dir: Path, training_fingerprint: str) -> dict[str, Any] | None:
    """The metrics of the same training finished earlier in this folder, or None when the stage must run: a
    rerun of a finished stage replayed its last epoch from the newest checkpoint (the last step is not
    checkpointed). A run stopped after its trainer finished (a scheduler's time limit while the final model was
    written, say) counts as finished too: the trainer writes metrics.json last, once final/ is saved."""
    previous = json_object(run_dir / "run.json")
    saved = (final_model(run_dir) / "config.json").is_file()
    if previous.get("training_fingerprint") != training_fingerprint or not saved:
        return None
    if previous.get("status") == "done":
        return previous.get("metrics") or {}
    written = json_object(run_dir / "metrics.json")
    complete = written.get("steps") is not None and written.get("steps") == written.get("total_steps")
    return written if complete else None
