"""What the SFT and DPO scripts share: setup, the optimisation loop, checkpoints and metrics.

The loop is plain accelerate: gradient accumulation through `accelerator.accumulate`, a scheduler stepped
once per optimizer step, a checkpoint (accelerate state + trainer_state.json) every `save_steps` or at the
end of each epoch, and resume from the newest checkpoint by replaying the same seeded batch order.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

from mixer.files import write_atomic_file
from mixer.recipe import Hyperparameters
from mixer.train.config import StageConfig, final_model, mixture_content
from mixer.train.data import ensure_chat_template

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def hyperparameters(cfg: StageConfig) -> Hyperparameters:
    values = dict(cfg.hyperparameters)
    values["report_to"] = tuple(values.get("report_to") or ())
    return Hyperparameters(**values)


def make_accelerator(cfg: StageConfig, hp: Hyperparameters) -> Accelerator:
    """CPU-only machines need cpu=True for accelerate to pick gloo (MULTI_CPU) under a multi-process launch."""
    trackers = [name for name in hp.report_to if find_spec(name) is not None]
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        log_with=trackers or None,
        project_dir=cfg.run_dir,
    )
    if trackers:
        accelerator.init_trackers(f"mixer-{cfg.name}", config={"stage": cfg.name, **cfg.hyperparameters})
    for missing in sorted(set(hp.report_to) - set(trackers)):  # accelerate would skip it without a word
        accelerator.print(f"warning: report_to {missing}: not installed, so this run does not report to it")
    if warning := cpu_fallback_warning(dict(os.environ), torch.cuda.is_available()):
        accelerator.print(warning)
    set_seed(hp.seed)
    return accelerator


def cpu_fallback_warning(environ: dict[str, str], cuda: bool) -> str | None:
    """Without a GPU accelerate runs a DeepSpeed stage as plain multi-process CPU training (cpu=True is what gives
    it gloo), without a word: a smoke test on a laptop would pass for a DeepSpeed run. (FSDP stops instead, and
    `mixer train` refuses it on such a machine before launching.)"""
    if cuda or environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return None
    return (
        "warning: no GPU here: this DeepSpeed stage runs as plain multi-process training on the CPU, without "
        "DeepSpeed (its sharding and precision settings take effect on GPUs)"
    )


def load_tokenizer(cfg: StageConfig) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer, cfg.chat_template)
    return tokenizer


def load_model(path: str, hp: Hyperparameters) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(path)
    if hp.gradient_checkpointing:  # transformers 5 renamed it and warns on the old name
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    return model


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


class Checkpoints:
    """checkpoints/step-NNNNNNN/ folders with accelerate state and trainer_state.json; keeps the newest N."""

    def __init__(self, run_dir: Path, keep: int):
        self.root = run_dir / "checkpoints"
        self.keep = keep

    def latest(self) -> Path | None:
        done = sorted(p for p in self.root.glob("step-*") if (p / "trainer_state.json").is_file())
        return done[-1] if done else None

    def save(self, accelerator: Accelerator, state: TrainerState) -> None:
        folder = self.root / f"step-{state.step:07d}"
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            (folder / "trainer_state.json").write_text(json.dumps(state.__dict__))  # written last: marks complete
            for old in sorted(p for p in self.root.glob("step-*") if p != folder)[: -self.keep + 1 or None]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def resume(self, accelerator: Accelerator) -> TrainerState:
        latest = self.latest()
        if latest is None:
            return TrainerState()
        accelerator.load_state(str(latest))
        state = TrainerState(**json.loads((latest / "trainer_state.json").read_text()))
        accelerator.print(f"resuming from {latest} (step {state.step})")
        return state


class MetricsLog:
    """metrics.jsonl plus a line on stdout, from the main process only."""

    def __init__(self, accelerator: Accelerator, run_dir: Path):
        self.accelerator = accelerator
        self.path = run_dir / "metrics.jsonl"

    def write(self, record: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        print(shown, flush=True)
        self.accelerator.log(record, step=record.get("step"))


def train(
    cfg: StageConfig,
    accelerator: Accelerator,
    model: torch.nn.Module,
    dataset: list[Any],
    collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]],
    loss_fn: LossFn,
    tokenizer: Any,
    eval_dataset: list[Any] | None = None,
) -> dict[str, Any]:
    """Optimise `model` on `dataset`; returns the final metrics (also written to metrics.json). With
    `eval_dataset`, it is scored at the end of every epoch (and of training): `eval_loss` and the loss's other
    statistics (`evaluate`)."""
    hp = hyperparameters(cfg)
    run_dir = Path(cfg.run_dir)
    if not dataset:
        raise SystemExit(f"{cfg.name}: no training rows left after tokenisation (max_seq_length {cfg.max_seq_length})")
    started = time.monotonic()
    loader = DataLoader(dataset, batch_size=hp.per_device_batch_size, shuffle=True, collate_fn=collate_fn)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    eval_loader = None
    if eval_dataset:
        held_out = DataLoader(eval_dataset, batch_size=hp.per_device_batch_size, shuffle=False, collate_fn=collate_fn)
        eval_loader = accelerator.prepare(held_out)
    steps_per_epoch = max(1, math.ceil(len(loader) / hp.gradient_accumulation_steps))
    total_steps = hp.max_steps or max(1, math.ceil(hp.epochs * steps_per_epoch))
    scheduler = get_scheduler(
        hp.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(hp.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    accelerator.register_for_checkpointing(scheduler)
    checkpoints = Checkpoints(run_dir, hp.save_total_limit)
    state = checkpoints.resume(accelerator)
    log = MetricsLog(accelerator, run_dir)
    accelerator.print(
        f"{cfg.kind} {cfg.name}: {len(dataset)} rows, {accelerator.num_processes} process(es), "
        f"{total_steps} optimizer steps, model {cfg.model}"
    )
    window: list[float] = []
    extra: dict[str, list[float]] = {}
    first_loss = last_loss = None
    scored: dict[str, float] = {}
    while state.step < total_steps:
        loader.set_epoch(state.epoch)
        batches = accelerator.skip_first_batches(loader, state.batches_in_epoch) if state.batches_in_epoch else loader
        model.train()
        for batch in batches:
            state.batches_in_epoch += 1
            with accelerator.accumulate(model):
                loss, stats = loss_fn(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            window.append(loss.detach().float().item())
            for key, value in stats.items():
                extra.setdefault(key, []).append(value)
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.step += 1
            mean = torch.tensor([sum(window) / len(window)], device=accelerator.device)
            last_loss = accelerator.reduce(mean, reduction="mean").item()
            first_loss = last_loss if first_loss is None else first_loss
            if state.step % hp.logging_steps == 0 or state.step == total_steps:
                record = {"step": state.step, "epoch": state.epoch, "loss": last_loss, "lr": scheduler.get_last_lr()[0]}
                record.update({k: sum(v) / len(v) for k, v in extra.items()})
                log.write(record)
            window, extra = [], {}
            if hp.save_steps and state.step % hp.save_steps == 0:
                checkpoints.save(accelerator, state)
            if state.step >= total_steps:
                break
        if eval_loader is not None:
            scored = evaluate(accelerator, model, eval_loader, loss_fn)
            log.write({"step": state.step, "epoch": state.epoch, **scored})
        if state.step >= total_steps:
            break
        state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        if not hp.save_steps:
            checkpoints.save(accelerator, state)

    final = final_model(run_dir)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(
        final,
        is_main_process=accelerator.is_main_process,
        save_function=accelerator.save,
        state_dict=accelerator.get_state_dict(model),
    )
    metrics = {
        "kind": cfg.kind,
        "steps": state.step,
        "total_steps": total_steps,
        "rows": len(dataset),
        "world_size": accelerator.num_processes,
        "first_loss": first_loss,
        "final_loss": last_loss,
        **({**scored, "eval_rows": len(eval_dataset)} if eval_dataset and scored else {}),
        "runtime_s": round(time.monotonic() - started, 2),
    }
    if accelerator.is_main_process:
        tokenizer.save_pretrained(final)
        # whole or absent, never cut short: `mixer train` reads it to tell a finished stage from one to rerun
        write_atomic_file(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    accelerator.end_training()
    return metrics


def evaluate(accelerator: Accelerator, model: torch.nn.Module, loader: DataLoader, loss_fn: LossFn) -> dict[str, float]:
    """Mean batch loss (`eval_loss`) and mean of each statistic the loss reports (DPO's reward accuracy and
    margin: `eval_rewards/accuracy`, ...) over the held-out rows, from every process (without the batches padded
    to even them)."""
    model.eval()
    values: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for batch in loader:
            loss, stats = loss_fn(model, batch)
            for key, value in {"loss": loss.detach().float().item(), **stats}.items():
                local = torch.tensor([value], dtype=torch.float32, device=accelerator.device)
                values.setdefault(key, []).append(accelerator.gather_for_metrics(local))
    model.train()
    return {f"eval_{key}": torch.cat(found).mean().item() for key, found in values.items()}


def config_from_argv(argv: list[str] | None = None) -> StageConfig:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--config":
        raise SystemExit("usage: python -m mixer.train.<kind> --config RUN_DIR/stage.json")
    cfg = StageConfig.load(Path(args[1]))
    check_mixture(cfg)  # before the tokenizer and model load: a replaced mixture is refused at once
    return cfg


def read_rows(cfg: StageConfig, columns: list[str], files: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of `files` (default: the stage's training data)."""
    import polars as pl

    return pl.read_parquet(files or cfg.data_files, columns=columns).to_dicts()


def check_mixture(cfg: StageConfig) -> None:
    """Refuse to train on rows other than those the stage was prepared on (and its run.json records)."""
    if cfg.mixture_manifest is None:
        return
    manifest = Path(cfg.mixture_manifest)
    now = mixture_content(json.loads(manifest.read_text(encoding="utf-8"))) if manifest.is_file() else None
    if now != cfg.mixture_content:
        raise SystemExit(
            f"error: stage {cfg.name} was prepared on the mixture in {manifest.parent}, which "
            f"{'another build has replaced' if now else 'is gone'} since\n"
            "  hint: prepare the stage again (`mixer train RECIPE --slurm`, or without --slurm), which builds its "
            "mixture again, or give the other recipe its own output.dir"
        )
