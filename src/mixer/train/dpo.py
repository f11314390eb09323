"""Direct Preference Optimisation: `accelerate launch -m mixer.train.dpo --config RUN_DIR/stage.json`.

loss = -log σ(β · [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])  (Rafailov et al. 2023)

The reference is a frozen copy of the starting model, or (`reference: precomputed`) its log-probs computed
once before training so only one model is in memory. Logged: loss, reward accuracy, chosen/rejected rewards
and their margin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object

from mixer.recipe import Hyperparameters
from mixer.train.common import (
    config_from_argv,
    hyperparameters,
    load_model,
    load_tokenizer,
    make_accelerator,
    read_rows,
    train,
)
from mixer.train.data import IGNORE, Packed, collate, preference_example


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label token) over labelled positions, per sequence (logits predict the next token)."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE
    picked = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_reward - rejected_reward)
    stats = {
        "rewards/chosen": chosen_reward.mean().item(),
        "rewards/rejected": rejected_reward.mean().item(),
        "rewards/accuracy": (chosen_reward > rejected_reward).float().mean().item(),
        "rewards/margin": (chosen_reward - rejected_reward).mean().item(),
    }
    return losses.mean(), stats


def pair_batch(pairs: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen sequences first, then rejected ones, in one padded batch (one forward pass per model)."""
    rows = [Packed(*p["chosen"], [0] * len(p["chosen"][0])) for p in pairs]
    rows += [Packed(*p["rejected"], [0] * len(p["rejected"][0])) for p in pairs]
    batch = collate(rows, pad_id)
    if "ref" in pairs[0]:
        batch["ref_logps"] = torch.tensor([p["ref"][0] for p in pairs] + [p["ref"][1] for p in pairs])
    return batch


def forward_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    return sequence_logps(model(**inputs).logits.float(), batch["labels"])


@contextmanager
def loading_whole(deepspeed_plugin: Any | None) -> Iterator[None]:
    """Models loaded in here are whole on every process. Under DeepSpeed ZeRO-3 transformers shards each model it
    loads (zero.Init, from the config accelerate registers with it), and under FSDP with cpu_ram_efficient_loading
    transformers 4.x reads the weights on local rank 0 only, the others waiting for FSDP's broadcast.
    `accelerator.prepare` gathers or broadcasts for the policy; a frozen reference never goes through it, and its
    forward failed (ZeRO-3: empty parameters) or ran on uninitialised weights on every rank but the first."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    ram_efficient = os.environ.pop("FSDP_CPU_RAM_EFFICIENT_LOADING", None)
    if deepspeed_plugin is not None:
        unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if ram_efficient is not None:
            os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = ram_efficient
        if deepspeed_plugin is not None:
            deepspeed_plugin.set_deepspeed_weakref()


def load_reference(path: str, hp: Hyperparameters, accelerator: Accelerator) -> torch.nn.Module:
    """The frozen starting model on this process's device, whole (a copy per device, as under DDP)."""
    with loading_whole(accelerator.state.deepspeed_plugin):
        model = load_model(path, hp)
    return model.to(accelerator.device).eval().requires_grad_(False)


def score_with_reference(
    reference: torch.nn.Module, pairs: list[dict], batch_size: int, pad: int, accelerator: Accelerator
) -> None:
    """Set each pair's `ref` (chosen and rejected log-probs under the reference), in place. Each process scores
    every num_processes-th pair and all of them get every score: each process scoring all pairs took as long on
    eight GPUs as on one (hours for UltraFeedback's 61K pairs and a 7B model)."""
    share = list(range(accelerator.process_index, len(pairs), accelerator.num_processes))
    scores = []
    with torch.no_grad():
        for start in range(0, len(share), batch_size):
            indices = share[start : start + batch_size]
            chunk = [pairs[i] for i in indices]
            batch = {k: v.to(accelerator.device) for k, v in pair_batch(chunk, pad).items()}
            logps = forward_logps(reference, batch).tolist()
            scores += [(i, logps[k], logps[k + len(chunk)]) for k, i in enumerate(indices)]
    for i, chosen, rejected in gather_object(scores):
        pairs[i]["ref"] = (chosen, rejected)


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_argv(argv)
    hp = hyperparameters(cfg)
    accelerator = make_accelerator(cfg, hp)
    tokenizer = load_tokenizer(cfg)
    columns = ["prompt", "chosen", "rejected"]

    def tokenised(rows: list[dict]) -> list[dict]:
        pairs = [
            preference_example(tokenizer, r["prompt"], r["chosen"], r["rejected"], cfg.max_seq_length) for r in rows
        ]
        return [p for p in pairs if p is not None]

    pairs = tokenised(read_rows(cfg, columns))
    # the stage's own test split (`eval`), scored at the end of every epoch: loss, reward accuracy and margin
    held_out = tokenised(read_rows(cfg, columns, cfg.eval_files)) if cfg.eval_files else []
    policy = load_model(cfg.model, hp)
    accelerator.print(f"loaded model from {cfg.model}")
    pad = tokenizer.pad_token_id

    reference: torch.nn.Module | None = load_reference(cfg.model, hp, accelerator)
    if cfg.reference == "precomputed":  # scored once, then the copy goes: one model in memory while training
        score_with_reference(reference, pairs + held_out, hp.per_device_batch_size, pad, accelerator)
        reference = None

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logps = forward_logps(model, batch)
        if reference is not None:
            with torch.no_grad():
                ref = forward_logps(reference, batch)
        else:
            ref = batch["ref_logps"].to(logps.device)
        n = logps.shape[0] // 2
        return dpo_loss(logps[:n], logps[n:], ref[:n], ref[n:], cfg.beta)

    batches = lambda chunk: pair_batch(chunk, pad)  # noqa: E731
    train(cfg, accelerator, policy, pairs, batches, loss_fn, tokenizer, eval_dataset=held_out or None)


if __name__ == "__main__":
    main()
