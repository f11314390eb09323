"""The floor: streaming-parse every input JSONL into parquet with polars, no mixing at all.

python benchmarks/polars_floor.py DATA_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

data, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for path in sorted(data.glob("*.jsonl")):
    pl.scan_ndjson(path).sink_parquet(out / f"{path.stem}.parquet")
