"""Teacher-call throughput of the evolve engine against a local OpenAI-compatible server with fixed latency.

Prints calls/s at each concurrency next to the bound (concurrency / latency) and writes JSON.
    python benchmarks/evolve_throughput.py [--latency 0.05] [--calls 400] [--json benchmarks/results/evolve.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mixer.evolve.cache import CallCache
from mixer.evolve.client import Teacher
from mixer.evolve.cost import Budget, Prices
from mixer.recipe import Endpoint

HERE = Path(__file__).resolve().parent
SERVER = HERE.parent / "tests" / "openai_server.py"


async def measure(base_url: str, concurrency: int, calls: int, cache_dir: Path) -> float:
    endpoint = Endpoint(model="bench", base_url=base_url, max_retries=0)
    teacher = Teacher(
        endpoint,
        CallCache(cache_dir / f"c{concurrency}.sqlite"),
        Budget(),
        Prices(0, 0),
        asyncio.Semaphore(concurrency),
        "bench",
    )
    started = time.perf_counter()
    await asyncio.gather(*(teacher.complete(f"prompt {concurrency}-{i}") for i in range(calls)))
    elapsed = time.perf_counter() - started
    await teacher.close()
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "evolve_throughput.json")
    args = parser.parse_args()
    # the server runs in its own process, so it does not compete with the client for the GIL
    server = subprocess.Popen([sys.executable, str(SERVER), str(args.latency)], stdout=subprocess.PIPE, text=True)
    base_url = server.stdout.readline().strip()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for concurrency in (1, 8, 64):
                calls = min(args.calls, max(40, concurrency * 10)) if concurrency == 1 else args.calls
                rate = asyncio.run(measure(base_url, concurrency, calls, Path(tmp)))
                bound = concurrency / args.latency
                rows.append(
                    {
                        "concurrency": concurrency,
                        "calls": calls,
                        "calls_per_s": round(rate, 1),
                        "bound_calls_per_s": round(bound, 1),
                        "of_bound": round(rate / bound, 3),
                    }
                )
    finally:
        server.terminate()
        server.wait()
    print(f"latency {args.latency * 1000:.0f} ms per call, local server on 127.0.0.1")
    print(f"{'concurrency':>11} {'calls':>6} {'calls/s':>9} {'bound':>9} {'of bound':>9}")
    for r in rows:
        print(
            f"{r['concurrency']:>11} {r['calls']:>6} {r['calls_per_s']:>9.1f} {r['bound_calls_per_s']:>9.1f} "
            f"{r['of_bound']:>9.0%}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "latency_s": args.latency,
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
