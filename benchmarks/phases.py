"""Where a build's time goes: the benchmark build in one process, wall and CPU time per phase, beside what
parsing the inputs and compressing the output cost alone (the two halves of the polars floor).

    python benchmarks/phases.py --rows 1000000 --repeats 3    # prints a table, writes results/phases.json

Phases are timed by wrapping the pipeline's step functions in this process only; mixer itself knows nothing
of it. CPU time is the whole process's (every thread), so a phase's CPU over its wall time is how many cores
it kept busy. Inputs are those of `run.py` (generated once into --work); medians over --repeats builds.

The process's resident memory is sampled every 0.1 s; a phase's peak is the highest sample while it ran, in the
first build only (later ones start from what the allocator kept of the runs before). In revisions before the
twenty-first session filling the buckets ran inside writing the shards, whose peak then covers both. The largest
is where a build peaks, which is how `--rows 10000000 --repeats 1` shows what to trim for the 10M memory target.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import benchmark_arguments, prepare_inputs  # noqa: E402

import mixer.assemble  # noqa: E402
import mixer.pipeline  # noqa: E402
from mixer.build import Options, build  # noqa: E402

# (module, function): the steps of `pipeline.materialise`, in the order they run. Before the twenty-first
# session filling the buckets ran inside writing the shards (on its first shard), after the overlap matrix; a
# build of such a revision (`PYTHONPATH`) has the fill's time taken out of writing's
STEPS = {
    "load, convert, key, stage": (mixer.pipeline, "stage_sources"),
    "select": (mixer.pipeline, "select"),
    "fill sort buckets": (mixer.assemble, "_fill_buckets"),
    "overlap matrix": (mixer.pipeline, "overlap_matrix"),
    "sort buckets, write shards": (mixer.pipeline, "write_shards"),
    "statistics and report": (mixer.pipeline, "write_stats"),
}


def _clock() -> tuple[float, float]:
    times = os.times()
    return time.perf_counter(), times.user + times.system


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


@contextmanager
def rss_samples(every: float = 0.1) -> Iterator[list[tuple[float, float]]]:
    """(perf_counter, RSS MB) samples taken in a thread while the block runs."""
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), _rss_mb()))
            done.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()


def timed(
    function: Callable[..., Any], record: dict[str, list[float]], step: str, spans: list[tuple[str, float, float]]
) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = _clock()
        try:
            return function(*args, **kwargs)
        finally:
            end_wall, end_cpu = _clock()
            record[step][0] += end_wall - wall
            record[step][1] += end_cpu - cpu
            spans.append((step, wall, end_wall))

    return wrapper


def peaks(spans: list[tuple[str, float, float]], samples: list[tuple[float, float]]) -> dict[str, float]:
    """Each step's highest RSS sample while it ran (for a step shorter than the sampling interval, the last
    sample before it)."""
    found: dict[str, float] = {}
    for step, start, end in spans:
        inside = [rss for at, rss in samples if start <= at <= end]
        seen = inside or [rss for at, rss in samples if at < start][-1:]
        found[step] = max([found.get(step, 0.0), *seen])
    return found


def one_build(recipe: Path, out: Path) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each step's [wall s, CPU s], and its peak RSS in MB."""
    record = {step: [0.0, 0.0] for step in [*STEPS, "whole build"]}
    spans: list[tuple[str, float, float]] = []
    originals = {step: getattr(module, name) for step, (module, name) in STEPS.items()}
    for step, (module, name) in STEPS.items():
        setattr(module, name, timed(originals[step], record, step, spans))
    try:
        with rss_samples() as samples:
            timed(build, record, "whole build", spans)(recipe, Options(progress=False), out=out, force=True)
    finally:
        for step, (module, name) in STEPS.items():
            setattr(module, name, originals[step])
    started = {step: start for step, start, _ in spans}
    if started.get("fill sort buckets", 0.0) > started.get("sort buckets, write shards", float("inf")):
        writing, filling = record["sort buckets, write shards"], record["fill sort buckets"]
        record["sort buckets, write shards"] = [writing[0] - filling[0], writing[1] - filling[1]]
    named = [record[s] for s in STEPS]
    record["other (validate, plan, hash inputs, manifest)"] = [
        record["whole build"][k] - sum(step[k] for step in named) for k in (0, 1)
    ]
    return record, peaks(spans, samples)


def parse_alone(data: Path) -> list[float]:
    """Every input parsed by polars' streaming JSON reader into memory, nothing else."""
    wall, cpu = _clock()
    for path in sorted(data.glob("*.jsonl")):
        pl.scan_ndjson(path).collect(engine="streaming")
    end_wall, end_cpu = _clock()
    return [end_wall - wall, end_cpu - cpu]


def compress_alone(shards: list[Path], scratch: Path) -> list[float]:
    """The build's own shards written again as mixer writes them (zstd parquet): the compression a mixture
    of this size costs, one shard at a time."""
    total = [0.0, 0.0]
    for shard in shards:
        frame = pl.read_parquet(shard)
        wall, cpu = _clock()
        frame.write_parquet(scratch, compression="zstd", statistics=False)
        end_wall, end_cpu = _clock()
        total = [total[0] + end_wall - wall, total[1] + end_cpu - cpu]
    scratch.unlink(missing_ok=True)
    return total


def main() -> None:
    args = benchmark_arguments(__doc__.splitlines()[0], "phases.json").parse_args()
    work, data, counts, recipe = prepare_inputs(args.rows, args.work)
    out = work / "out_phases"
    runs: dict[str, list[list[float]]] = {}
    first_peaks: dict[str, float] = {}
    for repeat in range(args.repeats):
        record, peak = one_build(recipe, out)
        first_peaks = first_peaks or peak
        for step, figures in record.items():
            runs.setdefault(step, []).append(figures)
        runs.setdefault("parse the inputs alone", []).append(parse_alone(data))
        shards = sorted((out / "data").glob("*.parquet"))
        runs.setdefault("compress the output alone", []).append(compress_alone(shards, work / "compress.parquet"))
        print(f"  run {repeat + 1}/{args.repeats}: build {runs['whole build'][-1][0]:.2f} s", flush=True)
    medians = {step: [statistics.median(r[k] for r in rs) for k in (0, 1)] for step, rs in runs.items()}
    print(f"\n{args.rows:,} input rows -> {sum(counts.values()):,} mixed rows; medians of {args.repeats}")
    width = max(len(s) for s in medians)
    print(f"{'phase':<{width}} {'wall s':>8} {'cpu s':>8} {'cores':>6} {'peak MB':>8}")
    for step, (wall, cpu) in medians.items():
        peak = f"{first_peaks[step]:>8.0f}" if step in first_peaks else f"{'':>8}"
        print(f"{step:<{width}} {wall:>8.2f} {cpu:>8.2f} {cpu / wall if wall > 0 else 0:>6.2f} {peak}")
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {p: version(p) for p in ("mixer", "polars", "pyarrow")},
        "rows": args.rows,
        "mixed_rows": sum(counts.values()),
        "medians": {step: {"wall_s": wall, "cpu_s": cpu} for step, (wall, cpu) in medians.items()},
        "peak_rss_mb_first_build": first_peaks,
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
