"""Random-init models for smoke tests: a BPE tokenizer trained on the stage's data and a small Llama.

No download: everything comes from the mixture itself, so `recipes/tiny.yaml` trains offline.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mixer.train.data import TULU_TEMPLATE

ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SMALL_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=ROLE_TOKENS,
        # said, not left to the release: transformers 4.45 defaults to True (and warns), so "a . b" would decode as
        # "a. b" there and as written in newer releases
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = TULU_TEMPLATE
    return fast


def create_random_model(spec: dict[str, Any], texts: Iterable[str], out_dir: Path, seed: int) -> Path:
    """Write tokenizer + randomly initialised weights to `out_dir` (deterministic for a seed)."""
    tokenizer = train_tokenizer(texts, (spec.get("tokenizer") or {}).get("vocab_size", 1000))
    config = LlamaConfig(
        **{**SMALL_LLAMA, **(spec.get("config") or {})},
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():  # seed the init without touching the caller's RNG state
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
