"""The incumbent way (open-instruct / alignment-handbook): load_dataset("json") per source, map to messages,
shuffle(seed).select(n) per source, concatenate_datasets, shuffle, to_parquet.

    python benchmarks/hf_baseline.py DATA_DIR OUT_FILE --counts '{"alpaca": 160000, ...}'
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--counts", required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
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
