"""Synthetic instruction-tuning sources in their native formats, at a scale parameter.

    python benchmarks/generate.py OUT_DIR --rows 1000000     # ~0.5 GB of JSONL in five formats

Lengths are log-normal (median ~12 words for instructions, ~50 for answers, wide tails), so 1M rows come to
about half a gigabyte, as the Tülu-style sources do.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

VOCABULARY = (
    "the model data answer question write explain list code function python number value table string "
    "user system example list describe summarise translate given input output result step reason because "
    "first then finally each every sort array return print loop while class object error test file read "
    "time"
)
WORDS = VOCABULARY.split()
SHARES = {"alpaca": 0.25, "code_alpaca": 0.15, "dolly": 0.15, "flan_v2": 0.25, "sharegpt": 0.20}


def text(rng: random.Random, median_words: int) -> str:
    count = max(1, int(math.exp(rng.gauss(math.log(median_words), 0.7))))
    return " ".join(rng.choices(WORDS, k=count)).capitalize() + "."


def record(fmt: str, rng: random.Random) -> dict:
    if fmt in ("alpaca", "code_alpaca"):
        return {
            "instruction": text(rng, 12),
            "input": text(rng, 10) if rng.random() < 0.4 else "",
            "output": text(rng, 50),
        }
    if fmt == "dolly":
        return {
            "instruction": text(rng, 12),
            "context": text(rng, 40) if rng.random() < 0.3 else "",
            "response": text(rng, 45),
            "category": "open_qa",
        }
    if fmt == "flan_v2":
        return {"inputs": text(rng, 40), "targets": text(rng, 10), "task": "synthetic"}
    turns = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        turns += [{"from": "human", "value": text(rng, 15)}, {"from": "gpt", "value": text(rng, 70)}]
    return {"id": f"{rng.getrandbits(48):012x}", "conversations": turns}


def generate(out: Path, rows: int, seed: int = 0) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for fmt, share in SHARES.items():
        rng = random.Random(f"{seed}:{fmt}")
        n = round(rows * share)
        with (out / f"{fmt}.jsonl").open("w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(json.dumps(record(fmt, rng)) + "\n")
        counts[fmt] = n
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(generate(args.out, args.rows))


if __name__ == "__main__":
    main()
