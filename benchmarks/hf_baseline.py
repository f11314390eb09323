"""The incumbent way (open-instruct / alignment-handbook): load_dataset("json") per source, map to messages,
shuffle(seed).select(n) per source, concatenate_datasets, shuffle, to_parquet.

    python benchmarks/hf_baseline.py DATA_DIR OUT_FILE --counts '{"alpaca": 160000, ...}'
    python benchmarks/hf_baseline.py DATA_DIR OUT_FILE --oasst 0.64    # OpenAssistant's trees export alone

OpenAssistant trees are flattened the way open-instruct's converter does: every root-to-leaf path through
messages not deleted, trimmed to end with an assistant turn, one conversation per distinct leaf.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import datasets


def to_messages(fmt: str):
    def convert(row: dict) -> dict:
        if fmt in ("alpaca", "code_alpaca"):
            user = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
            return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]}
        if fmt == "dolly":
            user = row["instruction"] + ("\n\n" + row["context"] if row["context"] else "")
            return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["response"]}]}
        if fmt == "flan_v2":
            return {
                "messages": [
                    {"role": "user", "content": row["inputs"]},
                    {"role": "assistant", "content": row["targets"]},
                ]
            }
        roles = {"human": "user", "gpt": "assistant"}
        return {"messages": [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]}

    return convert


def oasst_paths(node: dict) -> list[list[dict]]:
    if node.get("deleted"):
        return []
    below = [path for reply in node.get("replies") or [] for path in oasst_paths(reply)]
    return [[node, *path] for path in below] if below else [[node]]


def flatten_trees(batch: dict) -> dict:
    conversations = []
    for root in batch["prompt"]:
        seen = set()
        for path in oasst_paths(root):
            while path and path[-1]["role"] != "assistant":
                path = path[:-1]
            if len(path) < 2 or path[-1]["message_id"] in seen:
                continue
            seen.add(path[-1]["message_id"])
            roles = {"prompter": "user", "assistant": "assistant"}
            conversations.append([{"role": roles[m["role"]], "content": m["text"]} for m in path])
    return {"messages": conversations}


def oasst(data: Path, out: Path, fraction: float, seed: int, cache: str) -> None:
    ds = datasets.load_dataset("json", data_files=str(data / "oasst.trees.jsonl"), split="train", cache_dir=cache)
    ds = ds.map(flatten_trees, batched=True, remove_columns=ds.column_names)
    ds.shuffle(seed=seed).select(range(round(fraction * len(ds)))).to_parquet(str(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--counts", help="rows to take of each of the five formats")
    parser.add_argument("--oasst", type=float, help="instead, this fraction of the OpenAssistant trees' conversations")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        if args.oasst is not None:
            oasst(args.data, args.out, args.oasst, args.seed, cache)
            return
        parts = []
        for fmt, n in json.loads(args.counts).items():
            ds = datasets.load_dataset(
                "json", data_files=str(args.data / f"{fmt}.jsonl"), split="train", cache_dir=cache
            )
            ds = ds.map(to_messages(fmt), remove_columns=ds.column_names)
            parts.append(ds.shuffle(seed=args.seed).select(range(n)))
        mixed = datasets.concatenate_datasets(parts).shuffle(seed=args.seed)
        mixed.to_parquet(str(args.out))


if __name__ == "__main__":
    main()
