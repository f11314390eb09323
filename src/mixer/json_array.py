"""Read a JSON array (`[{...}, {...}]`, as Alpaca, Code-Alpaca and ShareGPT are shipped) in chunks of whole
elements.

polars parses a JSON array whole, at about five times its size in memory (1.3 GB of peak for a 272 MB ShareGPT
export), which undid a build's bounded memory. The commas between the array's elements can be found without
parsing: a vectorised scan of each block marks the bytes inside strings (a quote counts unless an odd run of
backslashes escapes it) and follows the bracket depth, carrying both from block to block. Each chunk of whole
elements is then parsed as an array of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

QUOTE, BACKSLASH, COMMA = ord('"'), ord("\\"), ord(",")
OPENERS, CLOSERS = [ord("{"), ord("[")], [ord("}"), ord("]")]
WHITESPACE = b" \t\r\n"
TAIL_CHECKED = 1 << 16  # bytes after the closing bracket that must be blank


class NotAnArray(ValueError):
    """The text is not one JSON array as far as strings and brackets go."""


@dataclass
class _Scan:
    """What the scan of one block hands to the next: inside a string or not, the run of backslashes the block
    ended with, and the bracket depth (1 inside the array itself)."""

    in_string: bool = False
    backslashes: int = 0
    depth: int = 1


SPECIAL = (QUOTE, BACKSLASH, COMMA, *OPENERS, *CLOSERS)


def _separators(block: bytes, scan: _Scan) -> tuple[np.ndarray, int | None]:
    """Positions in `block` of the commas between the array's elements, and of the array's closing bracket
    (None while the array goes on); `scan` moves on to the end of the block. Only the bytes that can matter
    (quotes, backslashes, brackets, commas: a few percent of text) are looked at, once they are found."""
    b = np.frombuffer(block, dtype=np.uint8)
    # one comparison per special byte: numpy releases the GIL for them, and seven take 19 ms per 16 MB where a
    # lookup table (`table[b]`, which holds it) took 31 ms before the 6 ms of `flatnonzero`
    marked = b == SPECIAL[0]
    for special in SPECIAL[1:]:
        marked |= b == special
    at = np.flatnonzero(marked)
    if not len(at):  # the middle of one long string, or blanks
        scan.backslashes = 0
        return at, None
    byte, number = b[at], np.arange(len(at))
    backslash = byte == BACKSLASH
    adjacent = np.concatenate(([False], np.diff(at) == 1))  # right after the special byte before it
    continues = adjacent & backslash & np.concatenate(([False], backslash[:-1]))
    run_start = np.maximum.accumulate(np.where(backslash & ~continues, number, -1))
    carried = scan.backslashes if at[0] == 0 else 0  # a run the last block ended with goes on here
    run = np.where(backslash, number - run_start + 1 + np.where(run_start == 0, carried, 0), 0)
    before = np.zeros(len(at), dtype=np.int64)  # the backslashes right before each special byte
    before[0] = carried
    before[1:] = np.where(adjacent[1:] & backslash[:-1], run[:-1], 0)
    toggles = np.cumsum((byte == QUOTE) & (before % 2 == 0))
    outside = (toggles + scan.in_string) % 2 == 0  # right for brackets and commas, which are never quotes
    steps = (outside & np.isin(byte, OPENERS)).astype(np.int64) - (outside & np.isin(byte, CLOSERS))
    depth = scan.depth + np.cumsum(steps)
    closed = np.flatnonzero(depth == 0)
    end = int(at[closed[0]]) if len(closed) else None
    commas = at[outside & (byte == COMMA) & (depth == 1)]
    scan.in_string = bool((int(toggles[-1]) + scan.in_string) % 2)
    scan.backslashes = int(run[-1]) if at[-1] == len(b) - 1 else 0
    scan.depth = int(depth[-1])
    return (commas[commas < end] if end is not None else commas), end


def starts_an_array(first: bytes) -> bool:
    return first.lstrip(WHITESPACE)[:1] == b"["


def array_chunks(fh: BinaryIO, chunk_bytes: int, first: bytes) -> Iterator[bytes]:
    """JSON arrays of about `chunk_bytes` of the file's elements each, from `first` (the file's first block,
    without its byte-order mark) and the rest of `fh`. Raises NotAnArray when the brackets and strings do not
    close as one array's should."""
    if not starts_an_array(first):
        raise NotAnArray("it does not start with [")
    scan, block, pending = _Scan(), first.lstrip(WHITESPACE)[1:] or fh.read(chunk_bytes), b""
    while block:
        commas, end = _separators(block, scan)
        if end is not None:
            if (block[end + 1 :] + fh.read(TAIL_CHECKED)).strip(WHITESPACE):
                raise NotAnArray("text follows the array's closing bracket")
            last = pending + block[:end]
            if last.strip(WHITESPACE):
                yield b"[" + last + b"]"
            return
        if len(pending) + len(block) >= chunk_bytes and len(commas):
            cut = int(commas[-1])
            yield b"[" + pending + block[:cut] + b"]"
            pending = block[cut + 1 :]
        else:
            pending += block
        block = fh.read(chunk_bytes)
    raise NotAnArray("the array is not closed (is the file cut short?)")
