"""Would an exact substring prefilter make decontamination cheaper? Measured on real data, not assumed.

A row can only share a 13-gram with a benchmark item if its normalised text contains every k-word piece of
that 13-gram, so testing rows against a few anchor pieces per item (one per window, chosen greedily as the
longest piece) is exact and could skip the full n-gram join for most rows. It pays only if most rows fail
the test and the test is cheaper than the join. This prints, for k = 1, 2, 3, how many rows and characters
of real instruction data pass, and the cost per MB of the test and of the join it would save:

    python benchmarks/decontam_prefilter.py [--shared ../shared/data] [--synthetic /tmp/mixer-bench/1000000]

The result decided the design (see benchmarks/README.md): no prefilter.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import polars as pl

from mixer import decontam, ngrams
from mixer.recipe import BenchmarkSpec

HERE = Path(__file__).resolve().parent
N = 13


def benchmark_texts(shared: Path) -> list[str]:
    texts = []
    files = {"humaneval": shared / "humaneval" / "HumanEval.jsonl.gz", "gsm8k": shared / "gsm8k" / "test.jsonl"}
    for name, path in files.items():
        texts += decontam.benchmark_items(BenchmarkSpec(name=name, path=str(path)), path)["text"].to_list()
    return texts


def anchors(texts: list[str], k: int) -> list[str]:
    """One k-word piece inside every 13-word window of every item: the longest in reach of the window."""
    chosen = set()
    for text in texts:
        words = text.split(" ")
        start = 0
        while start + N <= len(words):
            best = max(range(start, start + N - k + 1), key=lambda i: (sum(map(len, words[i : i + k])), -i))
            chosen.add(" ".join(words[best : best + k]))
            start = best + 1
    return sorted(chosen)


def training_texts(shared: Path, synthetic: Path | None) -> dict[str, list[str]]:
    code = json.loads((shared / "code_alpaca" / "code_alpaca_2k.json").read_text())
    share = json.loads((shared / "sharegpt" / "dummy_conversation.json").read_text())
    flan = [line for f in sorted((shared / "flan_cot").glob("*.tsv")) for line in f.read_text().splitlines()]
    sets = {
        "code_alpaca (real)": [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in code],
        "sharegpt (real)": ["\n".join(t["value"] for t in r["conversations"]) for r in share],
        "oasst trees (real)": (shared / "oasst" / "oasst2_filtered.trees.jsonl").read_text().splitlines(),
        "flan cot (real)": flan,
        "gsm8k train (real)": [
            f"{r['question']}\n{r['answer']}" for r in map(json.loads, (shared / "gsm8k" / "train.jsonl").open())
        ],
    }
    if synthetic is not None and (synthetic / "data" / "sharegpt.jsonl").is_file():
        with (synthetic / "data" / "sharegpt.jsonl").open() as fh:
            sets["sharegpt (synthetic)"] = [next(fh) for _ in range(12_000)]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--synthetic", type=Path, default=Path("/tmp/mixer-bench/1000000"))
    parser.add_argument("--json", type=Path, default=HERE / "results" / "decontam-prefilter.json")
    args = parser.parse_args()
    if not args.shared.is_dir():
        raise SystemExit(f"needs the real data in {args.shared} (../shared/data beside the clone)")
    items = benchmark_texts(args.shared)
    index = decontam.Index({"bench": pl.DataFrame({"item": [str(i) for i in range(len(items))], "text": items})}, N)
    rows = []
    sets = training_texts(args.shared, args.synthetic)
    for k in (1, 2, 3):
        pieces = anchors(items, k)
        for name, texts in sets.items():
            frame = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts})
            megabytes = frame["text"].str.len_bytes().sum() / 1e6
            began = time.perf_counter()
            normalised = frame.select(decontam.normalise(pl.col("text")))["text"]
            passed = normalised.str.contains_any(pieces)
            test_s = time.perf_counter() - began
            began = time.perf_counter()
            for _, batch in ngrams.batches(frame["text"]):  # the build's n-gram path (decontam.Index.hits)
                index.gram_set.contains(ngrams.words(batch).windows(N)[1])
            join_s = time.perf_counter() - began
            chars = frame["text"].str.len_chars()
            passed_chars = float(chars.filter(passed).sum() / chars.sum())
            rows.append(
                {
                    "k": k,
                    "anchors": len(pieces),
                    "data": name,
                    "rows": frame.height,
                    "pass_rows": round(float(passed.mean()), 3),
                    "pass_chars": round(passed_chars, 3),
                    "test_s_per_mb": round(test_s / megabytes, 4),
                    "join_s_per_mb": round(join_s / megabytes, 4),
                    # the test on every row, then the join on the rows that pass (its cost follows their text)
                    "with_prefilter_s_per_mb": round((test_s + join_s * passed_chars) / megabytes, 4),
                }
            )
    header = ("k", "anchors", "data", "rows", "pass rows", "pass chars", "join s/MB", "prefilter+join s/MB")
    print("{:>2} {:>7}  {:22} {:>6} {:>9} {:>10} {:>9} {:>19}".format(*header))
    for r in rows:
        print(
            f"{r['k']:>2} {r['anchors']:>7}  {r['data']:22} {r['rows']:>6} {r['pass_rows']:>9.3f} "
            f"{r['pass_chars']:>10.3f} {r['join_s_per_mb']:>9.4f} {r['with_prefilter_s_per_mb']:>19.4f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "polars": pl.__version__, "machine": platform.machine()}
    args.json.write_text(json.dumps({"machine": machine, "n": N, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
