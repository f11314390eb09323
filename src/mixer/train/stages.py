"""`mixer train`: turn a recipe's stages into run directories and launch them in order.

Per stage it decides the data (this recipe's built mixture, or a source selected like any mixture source),
the model (a hub id/path, the previous stage's `final/`, or a random init for smoke tests), writes
stage.json + accelerate.yaml (+ deepspeed.json) + run.json into runs/<recipe>/<stage>/, and runs
`accelerate launch`. run.json records what the results/diff step keys on: recipe fingerprint, mixture
manifest hash (and a copy of the manifest), what the stage was trained from (`run_dir`), launcher config,
package versions and final metrics.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from mixer.build import Options, build
from mixer.errors import MixerError
from mixer.files import replacing, write_atomic_file
from mixer.hashing import fingerprint
from mixer.interrupts import Terminated, add_note
from mixer.load import load_pool
from mixer.mix import select_rows
from mixer.outputs import MIXTURE_MANIFEST
from mixer.pipeline import load_rows_recipe
from mixer.plan import selector_count
from mixer.recipe import Recipe, SourceSpec, StageSpec
from mixer.redact import redacted
from mixer.resolve import resolve_source
from mixer.train.config import StageConfig, final_model, mixture_content
from mixer.train.launch import accelerate_config, deepspeed_config, display, launch_command, slurm_script
from mixer.train.preflight import check_chat_template, check_models
from mixer.train.run_dir import claim_run_dir, done_before, json_object, training_inputs

TEST_FILE = "test.parquet"  # beside data/train.parquet: a stage's own held-out rows
STOP_GRACE_S = 30  # how long an interrupted launcher gets to stop its workers before it is killed

PACKAGES = ("mixer", "torch", "transformers", "accelerate", "polars", "datasets", "tokenizers", "deepspeed")


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@dataclass
class PreparedStage:
    spec: StageSpec
    run_dir: Path
    config: StageConfig
    files: dict[str, str]  # file name in run_dir -> content
    command: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)


def _mixture_data(recipe: Recipe, options: Options, dry_run: bool) -> tuple[list[str], dict[str, Any], str | None]:
    """(shards, provenance, the manifest's text). The run keeps a copy of the manifest: the output folder is
    rebuilt in place when the recipe changes, and `mixer diff` of this run must still show this mixture."""
    out_dir = Path(recipe.output.dir) if Path(recipe.output.dir).is_absolute() else Path.cwd() / recipe.output.dir
    if dry_run:
        return [str(out_dir / "data" / "train-*.parquet")], {"kind": "mixture", "out_dir": str(out_dir)}, None
    result = build(recipe.path, options)
    manifest = (result.out_dir / "manifest.json").read_bytes()
    files = sorted(str(p) for p in (result.out_dir / "data").glob("train-*.parquet"))  # not the held-out test split
    return (
        files,
        {
            "kind": "mixture",
            "out_dir": str(result.out_dir),
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "build_fingerprint": result.manifest["build_fingerprint"],
            "content": mixture_content(result.manifest),
            "rows": result.manifest["totals"]["rows"] - result.manifest["totals"].get("eval_rows", 0),  # train split
        },
        manifest.decode("utf-8"),
    )


def _named(source: SourceSpec) -> str | list[str]:
    """A stage's own data, as run.json records it: registry entry, hub dataset or files."""
    return source.registry or (f"hub:{source.hub.id}" if source.hub else list(source.paths))


def _test_split(data_info: dict[str, Any], recipe: Recipe, dry_run: bool) -> list[str]:
    """The mixture's held-out rows (mixture.eval), which an SFT stage scores at the end of every epoch."""
    data = Path(data_info["out_dir"]) / "data"
    if dry_run:
        return [str(data / "test-*.parquet")] if recipe.mixture.eval else []
    return sorted(str(p) for p in data.glob("test-*.parquet"))


def _own_test(stage: StageSpec, run_dir: Path) -> list[str]:
    """The stage's own test split (`eval` on a source's data), which it scores at the end of every epoch."""
    return [str(run_dir / "data" / TEST_FILE)] if stage.eval else []


def _source_data(recipe: Recipe, stage: StageSpec, run_dir: Path, options: Options, dry_run: bool):
    """The stage's rows of a source, selected as a mixture source's are, written to `data/train.parquet`; with
    the stage's `eval`, the last distinct rows of the selection go to `data/test.parquet` instead, every copy
    of them (an upsampled source repeats rows) left out of training, so the test split is unseen rows."""
    target = run_dir / "data" / "train.parquet"
    source = stage.data
    if dry_run:
        return [str(target)], {"kind": "source", "source": _named(source)}
    resolved = resolve_source(
        source,
        recipe.base_dir,
        data_dir=options.data_dir,
        sample=options.sample,
        cache_dir=options.cache,
    )
    pool = load_pool(resolved)
    count = selector_count(source.selector, pool.rows.height)
    if source.selector.mode == "take" and count > pool.rows.height:
        raise MixerError(f"stages.{stage.name}.data: take {count} but only {pool.rows.height} rows are available")
    rows = select_rows(pool, count, recipe.seed)
    rows, test = _held_out(rows, stage)
    target.parent.mkdir(parents=True, exist_ok=True)
    held_out = {}
    if test is not None:
        with replacing(target.with_name(TEST_FILE)) as partial:
            test.write_parquet(partial)
        held_out = {"eval_rows": test.height, "test_split": fingerprint(sorted(test["id"].to_list()))[:12]}
    with replacing(target) as partial:
        rows.write_parquet(partial)
    return [str(target)], {
        "kind": "source",
        "source": _named(source),
        "files": [f.to_json() for f in resolved.files],
        "rows": rows.height,
        "counts": pool.counts,
        **held_out,
    }


def _held_out(selected: pl.DataFrame, stage: StageSpec) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(training rows, test rows or None) of a selection in selection order (with `__repeat`)."""
    distinct = selected.filter(pl.col("__repeat") == 0)
    wanted = stage.eval.count(selected.height)
    if not wanted:
        return selected.drop("__repeat"), None
    if wanted >= distinct.height:
        raise MixerError(
            f"stages.{stage.name}.eval: holds out {wanted:,} of {distinct.height:,} distinct rows, which leaves none "
            "to train on",
            "hold out fewer rows, or select more (take / fraction)",
        )
    test = distinct.tail(wanted)
    train = selected.filter(~pl.col("id").is_in(test["id"].implode()))
    return train.drop("__repeat"), test.drop("__repeat")


def _texts(files: list[str]) -> list[str]:
    frame = pl.read_parquet(files)
    columns = [c for c in ("messages", "prompt", "chosen", "rejected") if c in frame.columns]
    return [m["content"] for c in columns for conversation in frame[c].to_list() for m in conversation]


def _model(stage: StageSpec, root: Path, run_dir: Path, data_files: list[str], seed: int, dry_run: bool) -> str:
    model = stage.model
    if isinstance(model, str):
        return model
    if stage.parent_stage is not None:
        return str(final_model(root / stage.parent_stage))
    init_dir = run_dir / "init"
    if not dry_run and not (init_dir / "config.json").is_file():
        from mixer.train.init_model import create_random_model

        create_random_model(model, _texts(data_files), init_dir, seed)
    return str(init_dir)


def prepare_stage(
    recipe: Recipe, stage: StageSpec, root: Path, options: Options, dry_run: bool, restart: bool = False
) -> PreparedStage:
    run_dir = root / stage.name
    if not dry_run:
        run_dir.mkdir(parents=True, exist_ok=True)
    mixture_manifest = None
    if stage.data == "mixture":
        data_files, data_info, mixture_manifest = _mixture_data(recipe, options, dry_run)
    else:
        data_files, data_info = _source_data(recipe, stage, run_dir, options, dry_run)
    inputs = training_inputs(recipe, stage, data_info, root)
    if not dry_run:
        claim_run_dir(run_dir, stage.name, inputs, restart, recipe.path)
    model = _model(stage, root, run_dir, data_files, stage.hyperparameters.seed, dry_run)
    hyper = asdict(stage.hyperparameters)
    hyper["report_to"] = list(hyper["report_to"])
    config = StageConfig(
        name=stage.name,
        kind=stage.kind,
        model=model,
        data_files=data_files,
        run_dir=str(run_dir),
        tokenizer=stage.tokenizer,
        chat_template=stage.chat_template,
        max_seq_length=stage.max_seq_length,
        packing=stage.packing,
        beta=stage.beta,
        reference=stage.reference,
        hyperparameters=hyper,
        mixture_manifest=str(Path(data_info["out_dir"]) / "manifest.json") if mixture_manifest else None,
        eval_files=_test_split(data_info, recipe, dry_run) if stage.data == "mixture" else _own_test(stage, run_dir),
        mixture_content=data_info.get("content"),
    )
    files: dict[str, str] = {}
    ds_file = None
    if stage.launcher.backend == "deepspeed":
        ds_file = str(run_dir / "deepspeed.json")
        files["deepspeed.json"] = (
            json.dumps(deepspeed_config(stage.launcher, stage.hyperparameters.max_grad_norm), indent=2) + "\n"
        )
    accel = accelerate_config(stage.launcher, ds_file)
    files["accelerate.yaml"] = yaml.safe_dump(accel, sort_keys=True)
    files["stage.json"] = json.dumps(asdict(config), indent=2) + "\n"
    if mixture_manifest is not None:
        files[MIXTURE_MANIFEST] = mixture_manifest
    command = launch_command(str(run_dir / "accelerate.yaml"), stage.kind, str(run_dir / "stage.json"))
    provenance = {
        "recipe": {
            "name": recipe.name,
            "path": str(recipe.path),
            # of the mixture, as `mixer runs` computes a build's: runs of one mixture share it
            "fingerprint": fingerprint(redacted(recipe.mixture_document)),
            "document": redacted(recipe.document),  # the recipe as run: the file may be edited after
        },
        "stage": stage.name,
        "kind": stage.kind,
        "parent_stage": stage.parent_stage,
        "training": inputs,  # what the checkpoints are of: a rerun with other inputs is refused, not resumed
        "training_fingerprint": fingerprint(inputs),
        "model": model,
        "data": data_info,
        "accelerate_config": accel,
        "deepspeed_config": json.loads(files["deepspeed.json"]) if ds_file else None,
        "command": display(command),
        "versions": package_versions(),
    }
    return PreparedStage(stage, run_dir, config, files, command, provenance)


def write_stage_files(prepared: PreparedStage, status: str, metrics: dict | None = None) -> None:
    for name, content in prepared.files.items():
        write_atomic_file(prepared.run_dir / name, content)
    record = {**prepared.provenance, "status": status, "metrics": metrics}
    write_atomic_file(prepared.run_dir / "run.json", json.dumps(record, indent=2) + "\n")


def run_to_end(command: list[str]) -> int:
    """The launcher's exit code. Interrupted (Ctrl-C, SIGTERM), mixer asks it to stop with SIGTERM, which
    accelerate and torchrun pass on to their workers, so no worker outlives mixer; it is killed if it has not
    stopped within STOP_GRACE_S."""
    child = subprocess.Popen(command)
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def _metrics(prepared: PreparedStage) -> dict[str, Any] | None:
    """The trainer's final metrics, or None: not written (stopped before the end), or unreadable, which must
    not hide why the run stopped (this is read while an interrupt is on its way up)."""
    return json_object(prepared.run_dir / "metrics.json") or None


def run_stage(prepared: PreparedStage) -> dict[str, Any]:
    check_models(prepared.config)  # before any worker loads the model
    check_chat_template(prepared.config)
    write_stage_files(prepared, "running")
    try:
        returncode = run_to_end(prepared.command)
    except BaseException as stop:
        write_stage_files(prepared, "interrupted", _metrics(prepared))
        if isinstance(stop, KeyboardInterrupt | Terminated):  # printed under "interrupted" (mixer.cli)
            add_note(
                stop,
                f"stage {prepared.spec.name}: run `mixer train` again to resume from its last checkpoint in "
                f"{prepared.run_dir}/checkpoints, if one was saved (--restart starts over)",
            )
        raise
    metrics = _metrics(prepared)
    if returncode != 0:
        write_stage_files(prepared, "failed", metrics)
        raise MixerError(
            f"stage {prepared.spec.name} failed (exit code {returncode}); see the output above",
            f"fix the cause and run `mixer train` again: it resumes from {prepared.run_dir}/checkpoints",
        )
    write_stage_files(prepared, "done", metrics)
    return metrics or {}


@dataclass
class TrainReport:
    root: Path
    stages: list[PreparedStage]
    metrics: dict[str, dict[str, Any]]
    slurm_script: Path | None = None
    slurm_text: str | None = None
    finished: list[str] = field(default_factory=list)  # stages done before with the same inputs: not run again


def _check_parent(recipe: Recipe, stage: StageSpec, root: Path) -> None:
    """A stage that starts from an earlier one's model needs it on disk: run alone (`--stage dpo`) before its
    parent, the launched processes failed on the missing folder with a hub-id error from transformers."""
    parent = stage.parent_stage
    if parent is None:
        return
    final = final_model(root / parent)
    if not (final / "config.json").is_file():
        raise MixerError(
            f"stage {stage.name} starts from stage {parent}'s final model, which is not there: {final}",
            f"run stage {parent} first (mixer train {recipe.path} --stage {parent}), or every stage in order",
        )


TRAINING_PACKAGES = ("torch", "transformers", "accelerate", "tokenizers")
MODEL_PACKAGES = ("torch", "transformers", "tokenizers")  # a random model for `--slurm` is made here


def require_training_packages(needed_for: str, packages: tuple[str, ...] = TRAINING_PACKAGES) -> None:
    """The training extras are not in the core install (building a mixture never imports torch): without them
    `mixer train` stopped with a traceback from the first `import torch`."""
    missing = [name for name in packages if find_spec(name) is None]
    if missing:
        raise MixerError(
            f"{needed_for} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed",
            "install the training extras: pip install torch==2.13.0 (the CPU build; on GPU machines, the CUDA "
            "build that fits them), then pip install 'mixer[train]' (pip install -e '.[train]' in a checkout). "
            "`mixer train --dry-run` prints the stages' files and commands without them",
        )


def _check_backends(stages: list[StageSpec]) -> None:
    """A DeepSpeed stage launched where DeepSpeed is not installed fails in accelerate with an ImportError, and an
    FSDP stage on a machine without GPUs with "There are currently no available devices found", after the
    mixture is built: say so before any work."""
    for stage in stages:
        if stage.launcher.backend == "deepspeed" and find_spec("deepspeed") is None:
            raise MixerError(
                f"stages.{stage.name}.launcher.backend: deepspeed is not installed here",
                "pip install deepspeed on the machines that train; `mixer train --slurm` or `--dry-run` prepares the "
                "stages without running them",
            )
        if stage.launcher.backend == "fsdp" and not _has_gpu():
            raise MixerError(
                f"stages.{stage.name}.launcher.backend: fsdp needs GPUs, and this machine has none (accelerate "
                "stops at 'There are currently no available devices found')",
                "train it where the GPUs are (`mixer train --slurm` or `--dry-run` prepares it here), or give a CPU "
                "smoke run `backend: ddp`",
            )


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def selected_stages(recipe: Recipe, only: str | None) -> list[StageSpec]:
    if not recipe.stages:
        raise MixerError(f"{recipe.path}: the recipe has no stages:", "add a stages: block (see docs/recipes.md)")
    if only is None:
        return list(recipe.stages)
    names = [s.name for s in recipe.stages]
    if only not in names:
        raise MixerError(f"no stage {only!r} in {recipe.path}", f"stages: {', '.join(names)}")
    return [recipe.stages[names.index(only)]]


def train_recipe(
    recipe_path: Path,
    *,
    only: str | None = None,
    dry_run: bool = False,
    slurm: bool = False,
    runs_dir: Path | None = None,
    options: Options | None = None,
    restart: bool = False,
) -> TrainReport:
    """`restart` deletes each selected stage's checkpoints and final model and trains it from the start."""
    options = options or Options()
    recipe = load_rows_recipe(recipe_path)
    root = runs_dir or Path.cwd() / "runs" / recipe.name
    report = TrainReport(root, [], {})
    stages = selected_stages(recipe, only)
    here = not (dry_run or slurm)  # stages run on this machine; prepared ones run in a cluster's environment
    if here:
        require_training_packages("mixer train")
        _check_backends(stages)
    elif slurm and (made := [s.name for s in stages if not isinstance(s.model, str) and s.parent_stage is None]):
        require_training_packages(f"stage {made[0]}'s randomly initialised model", MODEL_PACKAGES)
    for stage in stages:
        if here:
            _check_parent(recipe, stage, root)
        prepared = prepare_stage(recipe, stage, root, options, dry_run, restart)
        report.stages.append(prepared)
        if dry_run:
            continue
        if (metrics := done_before(prepared.run_dir, prepared.provenance["training_fingerprint"])) is not None:
            write_stage_files(prepared, "done", metrics)  # a run stopped after its trainer finished is done too
            report.finished.append(stage.name)
            report.metrics[stage.name] = metrics
            continue
        if slurm:
            check_chat_template(prepared.config)  # a job refused after hours in the queue is the costlier one
            write_stage_files(prepared, "prepared")
        else:
            report.metrics[stage.name] = run_stage(prepared)
    jobs = [(p.spec.name, p.spec.launcher, p.command) for p in report.stages if p.spec.name not in report.finished]
    if slurm and jobs:
        report.slurm_text = slurm_script(f"mixer-{recipe.name}", jobs, str(root))
        if not dry_run:
            report.slurm_script = root / "train.sbatch"
            write_atomic_file(report.slurm_script, report.slurm_text)
    return report
