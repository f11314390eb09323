"""Synthetic instruction-tuning sources in their native formats, at a scale parameter.

    python benchmarks/generate.py OUT_DIR --rows 1000000     # ~0.5 GB of JSONL in five formats
    python benchmarks/generate.py OUT_DIR --oasst-trees 30000  # OpenAssistant's trees export, ~180 MB

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


LABELS = ("spam", "lang_mismatch", "pii", "not_appropriate", "hate_speech", "quality", "toxicity", "humor")
LANGS = ("en", "es", "de", "ru", "zh", "fr")


def oasst_message(rng: random.Random, parent: str | None, role: str, depth: int) -> dict:
    """One message of the trees export with the metadata the real one carries (labels, emojis, detoxify
    scores, review counts: the nesting that makes these files slow to infer), and replies below it."""
    message_id = f"{rng.getrandbits(64):016x}"
    replies = []
    if depth < 6 and rng.random() < (0.9 if depth == 0 else 0.3):
        child_role = "assistant" if role == "prompter" else "prompter"
        replies = [oasst_message(rng, message_id, child_role, depth + 1) for _ in range(rng.choice((1, 1, 2)))]
    return {
        "message_id": message_id,
        "parent_id": parent,
        "user_id": f"{rng.getrandbits(64):016x}",
        "created_date": f"2023-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T12:00:00+00:00",
        "text": text(rng, 25 if role == "prompter" else 90),
        "role": role,
        "lang": rng.choice(LANGS),
        "review_count": rng.randint(0, 5),
        "review_result": rng.random() < 0.95,
        "deleted": rng.random() < 0.03,
        "rank": rng.randint(0, 2) if role == "assistant" and rng.random() < 0.8 else None,
        "synthetic": False,
        "model_name": None,
        "emojis": {"+1": rng.randint(0, 9), "-1": rng.randint(0, 3)} if rng.random() < 0.6 else {},
        "labels": {name: {"value": round(rng.random(), 3), "count": rng.randint(1, 5)} for name in LABELS},
        "detoxify": {"toxicity": rng.random(), "insult": rng.random(), "threat": rng.random()},
        "replies": replies,
    }


def generate_oasst(out: Path, trees: int, seed: int = 0) -> Path:
    """`oasst.trees.jsonl`: a tree per line, as OpenAssistant exports them: ~3 messages and ~4 KB per tree (the
    real oasst2 file in ../shared/data has ~3 messages and ~6 KB)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}:oasst")
    path = out / "oasst.trees.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for _ in range(trees):
            root = oasst_message(rng, None, "prompter", 0)
            tree = {"message_tree_id": root["message_id"], "tree_state": "ready_for_export", "prompt": root}
            f.write(json.dumps(tree) + "\n")
    return path


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
    parser.add_argument("--oasst-trees", type=int, help="write only OpenAssistant's trees export, of this many trees")
    args = parser.parse_args()
    if args.oasst_trees is not None:
        print(generate_oasst(args.out, args.oasst_trees))
    else:
        print(generate(args.out, args.rows))


if __name__ == "__main__":
    main()
