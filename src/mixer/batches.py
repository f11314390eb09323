"""Small files of one source converted together.

Converting a table costs a dozen polars calls whatever its size, so a source of 1,000 files of 100 rows spent
most of its build converting each file alone. Consecutive small files whose records have the same fields are
joined into one batch, converted once, and split back by file for ids and error messages. (Parsing them is
joined too, when it is safe: `mixer.load.load_chunks`, `mixer.io.read_small_files`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mixer.adapters.base import Context
from mixer.io import RawTable


@dataclass
class Member:
    """One table of a batch: the file it came from, the id prefix of that file's rows, the table, and what
    the adapter is told about the file."""

    path: Path
    prefix: str
    table: RawTable
    file_bytes: int  # of the whole file: a chunk of a large one never joins others, however small
    ctx: Context

    @property
    def size(self) -> int:
        return max(self.file_bytes, self.table.frame.estimated_size())

    def small(self, batch_bytes: int) -> bool:
        table = self.table
        return table.frame.height > 0 and self.size < batch_bytes and not table.unparsable and not table.misshapen


@dataclass
class Batch:
    """Tables converted together. With several members, `__row` carries the member's index in its high 32
    bits, so the adapters, which pass `__row` through, need not know."""

    members: list[Member]

    @property
    def ctx(self) -> Context:  # the first file's: a batch's files have the same fields
        return self.members[0].ctx

    def joined(self) -> pl.DataFrame:
        if len(self.members) == 1:
            return self.members[0].table.frame
        # the member's index added once over the joined frame, not per member (each call costs ~0.1 ms)
        member = np.repeat(np.arange(len(self.members), dtype=np.uint64), [m.table.frame.height for m in self.members])
        joined = pl.concat([m.table.frame for m in self.members])
        return joined.with_columns((pl.Series(member << np.uint64(32)) + pl.col("__row")).alias("__row"))

    def split(self, rows: pl.DataFrame) -> Iterator[tuple[Member, pl.DataFrame]]:
        """Each member with its part of `rows` (which carry `__row`), `__row` as in its own file."""
        if len(self.members) == 1:
            yield self.members[0], rows
            return
        member = (pl.col("__row") // (1 << 32)).alias("__member")
        parts = rows.with_columns(member).partition_by("__member", as_dict=True, include_key=False)
        for index, m in enumerate(self.members):
            part = parts.get((index,), rows.clear())
            yield m, part.with_columns((pl.col("__row") % (1 << 32)).cast(pl.UInt32))

    def base_ids(self) -> pl.Expr:
        """Each row's id within the source, before the source's name: its native id, or its file's prefix and
        its row number in that file."""
        if len(self.members) == 1:
            numbered = pl.concat_str([pl.lit(self.members[0].prefix), pl.col("__row").cast(pl.String)])
        else:
            prefix = (pl.col("__row") // (1 << 32)).replace_strict(
                {i: m.prefix for i, m in enumerate(self.members)}, return_dtype=pl.String
            )
            numbered = pl.concat_str([prefix, (pl.col("__row") % (1 << 32)).cast(pl.String)])
        return pl.coalesce(pl.col("native_id"), numbered)


def batches(tables: Iterator[Member], batch_bytes: int) -> Iterator[Batch]:
    """Consecutive small files (under `batch_bytes`) whose tables have the same fields as one batch of about
    that size, every other table alone (and every table when `batch_bytes` is 0)."""
    waiting: list[Member] = []
    waiting_bytes = 0
    for member in tables:
        small = member.small(batch_bytes)
        if waiting and (not small or member.table.frame.schema != waiting[0].table.frame.schema):
            yield Batch(waiting)
            waiting, waiting_bytes = [], 0
        if not small:
            yield Batch([member])
            continue
        waiting.append(member)
        waiting_bytes += member.size
        if waiting_bytes >= batch_bytes:
            yield Batch(waiting)
            waiting, waiting_bytes = [], 0
    if waiting:
        yield Batch(waiting)
