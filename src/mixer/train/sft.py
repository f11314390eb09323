"""Supervised fine-tuning: `accelerate launch -m mixer.train.sft --config RUN_DIR/stage.json`.

Read top to bottom: load the stage config, tokenizer and model; turn every conversation into input ids with
labels on assistant tokens only; optionally pack short examples into full rows; train; save `final/`.
"""

from __future__ import annotations

from functools import partial

import torch

from mixer.train.common import (
    config_from_argv,
    hyperparameters,
    load_model,
    load_tokenizer,
    make_accelerator,
    read_rows,
    train,
)
from mixer.train.data import as_rows, collate, pack, sft_example


def token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy over labelled (assistant) tokens; transformers shifts labels internally."""
    output = model(**batch)
    return output.loss, {"label_tokens": float((batch["labels"] != -100).sum().item())}


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_argv(argv)
    hp = hyperparameters(cfg)
    accelerator = make_accelerator(cfg, hp)
    tokenizer = load_tokenizer(cfg)
    examples = [sft_example(tokenizer, row["messages"], cfg.max_seq_length) for row in read_rows(cfg, ["messages"])]
    kept = [e for e in examples if e is not None]
    accelerator.print(f"{len(kept)} of {len(examples)} conversations keep assistant tokens after truncation")
    rows = pack(kept, cfg.max_seq_length) if cfg.packing else as_rows(kept)
    # held-out rows (the mixture's test split, or the stage's own `eval`), scored unpacked after every epoch
    held_out = read_rows(cfg, ["messages"], cfg.eval_files) if cfg.eval_files else []
    scored = [sft_example(tokenizer, row["messages"], cfg.max_seq_length) for row in held_out]
    model = load_model(cfg.model, hp)
    accelerator.print(f"loaded model from {cfg.model}")
    batches = partial(collate, pad_id=tokenizer.pad_token_id)
    evaluated = as_rows([e for e in scored if e is not None]) or None
    train(cfg, accelerator, model, rows, batches, token_loss, tokenizer, eval_dataset=evaluated)


if __name__ == "__main__":
    main()
