"""Read a JSON array (`[{...}, {...}]`, as Alpaca, Code-Alpaca and ShareGPT are shipped) in chunks of whole
elements.

polars parses a JSON array whole, at about five times its size in memory (1.3 GB of peak for a 272 MB ShareGPT
export), which undid a build's bounded memory. The commas between the array's elements can be found without
parsing: a vectorised scan of each block marks the bytes inside strings (a quote counts unless an odd run of
backslashes escapes it) and follows the bracket depth, carrying both from block to block. Each chunk of whole
elements is then parsed as an array of its own. After the first cut, the bytes between two elements there
are looked for instead of scanning, and each chunk cut so is checked by parsing it (`ArrayChunks`).
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
SEPARATOR_REACH = 256  # bytes looked at on each side of a comma for the separator between elements


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


def whole_array(text: bytes) -> tuple[bytes, int] | None:
    """A small file's array: the bytes between its brackets and its number of elements, so that several can
    be joined into one array and parsed at once (`mixer.io.read_small_files`); None unless `text` is exactly
    one array with at least one element (a file that is not is then read alone, which words its error)."""
    body = text.lstrip(WHITESPACE)
    if body[:1] != b"[":
        return None
    commas, end = _separators(body[1:], _Scan())
    if end is None or body[end + 2 :].strip(WHITESPACE) or not body[1 : end + 1].strip(WHITESPACE):
        return None
    return body[1 : end + 1], len(commas) + 1


class ArrayChunks:
    """JSON arrays of about `chunk_bytes` of the file's elements each, from `first` (the file's first block,
    without its byte-order mark) and the rest of `fh`. Raises NotAnArray when the brackets and strings do not
    close as one array's should.

    The scan costs more than parsing the chunks it cuts (1.06 s for a 297 MB ShareGPT export, which polars
    then parses in about 1 s). Exports are written by one `json.dump`, so the bytes between any two elements
    are the same: from the first scanned cut on, the separator there (the closing brace with the blanks before
    it, the comma, the next element's opening brace and first key: `}, {"id"`, or with the newlines and
    indents of `indent=2`) is looked for instead, with `bytes.rfind`. Inside a string every quote is escaped,
    so the separator can only be found between objects whose first key it names, but a nested object may open
    with the same key. A chunk cut at a guess is therefore only right if it parses: the reader must parse every
    chunk with a strict parser before asking for the next, and call `rescan()` when one with `guessed` set
    does not parse. A chunk that starts between two elements and parses ends between two elements; one cut
    inside an element leaves a bracket or a string open. From a failed guess on, the file is cut by the scan."""

    def __init__(self, fh: BinaryIO, chunk_bytes: int, first: bytes, *, guess: bool = True) -> None:
        if not starts_an_array(first):
            raise NotAnArray("it does not start with [")
        self.guessed = False  # the last chunk was cut at a guess
        self._fh, self._chunk_bytes, self._guess = fh, chunk_bytes, guess
        self._pushed: bytes | None = first.lstrip(WHITESPACE)[1:] or None  # bytes to cut before reading more
        self._separator: tuple[bytes, int] | None = None  # (the bytes between two elements, the comma's offset)
        self._rescanning = False

    def rescan(self) -> None:
        """The last chunk, cut at a guess, did not parse: cut it and the rest of the file by the scan."""
        if not self.guessed:
            raise RuntimeError("only a chunk cut at a guess can be cut again")
        self._rescanning = True

    def _read(self) -> bytes:
        if self._pushed is not None:
            data, self._pushed = self._pushed, None
            return data
        return self._fh.read(self._chunk_bytes)

    def _scan_from(self, data: bytes) -> None:
        """Cut `data` (which starts between two elements) and all after it by the scan."""
        self._guess, self._separator, self._pushed, self._rescanning = False, None, data, False

    def __iter__(self) -> Iterator[bytes]:
        scan, pending, block = _Scan(), b"", self._read()
        while True:
            if self._separator is None:  # the scan
                if not block:
                    raise NotAnArray("the array is not closed (is the file cut short?)")
                commas, end = _separators(block, scan)
                if end is not None:
                    if (block[end + 1 :] + self._fh.read(TAIL_CHECKED)).strip(WHITESPACE):
                        raise NotAnArray("text follows the array's closing bracket")
                    last = pending + block[:end]
                    if last.strip(WHITESPACE):
                        self.guessed = False
                        yield _bracketed(last)
                    return
                if self._guess and len(commas):
                    self._separator = _separator_around(block, int(commas[-1]))
                if len(pending) + len(block) >= self._chunk_bytes and len(commas):
                    cut = int(commas[-1])
                    self.guessed = False
                    yield _bracketed(pending, memoryview(block)[:cut])
                    pending = block[cut + 1 :]
                else:
                    pending += block
                block = self._read()
                continue
            if not block:  # the end of the file: the last elements, then the closing bracket
                tail = pending.rstrip(WHITESPACE)
                if not tail.endswith(b"]"):
                    self._scan_from(pending)  # for the scan's error
                elif tail[:-1].strip(WHITESPACE):
                    self.guessed = True
                    yield _bracketed(memoryview(tail)[:-1])
                    if not self._rescanning:
                        return
                    self._scan_from(pending)
                else:
                    return
                scan, pending, block = _Scan(), b"", self._read()
                continue
            if len(pending) + len(block) < self._chunk_bytes:
                pending += block
                block = self._read()
                continue
            separator, comma = self._separator
            at = block.rfind(separator)
            if at < 0:
                if len(pending) + len(block) >= 2 * self._chunk_bytes:  # not how this file separates elements
                    self._scan_from(pending + block)
                    scan, pending, block = _Scan(), b"", self._read()
                else:
                    pending += block
                    block = self._read()
                continue
            cut = at + comma
            self.guessed = True
            yield _bracketed(pending, memoryview(block)[:cut])
            if self._rescanning:
                self._scan_from(pending + block)
                scan, pending, block = _Scan(), b"", self._read()
                continue
            pending = block[cut + 1 :]
            block = self._read()


def _bracketed(*parts: bytes | memoryview) -> bytes:
    """`[`, the parts, `]` in one copy: `+` copies the text once per operand (~0.3 s per 300 MB)."""
    return b"".join((b"[", *parts, b"]"))


def _separator_around(block: bytes, comma: int) -> tuple[bytes, int] | None:
    """The bytes between the two elements around the top-level `comma` of `block`, from the blanks before the
    first one's closing brace to the second one's first key, and the comma's offset in them; None unless both
    are objects within `block` and the key is plain text."""
    before = block[max(0, comma - SEPARATOR_REACH) : comma]
    closing = len(before.rstrip(WHITESPACE)) - 1
    if closing < 0 or before[closing] != CLOSERS[0]:
        return None
    start = len(before[:closing].rstrip(WHITESPACE))
    if start == 0 and comma > SEPARATOR_REACH:  # the blanks may go on before the window
        return None
    after = block[comma + 1 : comma + 1 + SEPARATOR_REACH]
    opening = len(after) - len(after.lstrip(WHITESPACE))
    if after[opening : opening + 1] != b"{":
        return None
    quote = opening + 1 + len(after[opening + 1 :]) - len(after[opening + 1 :].lstrip(WHITESPACE))
    end = after.find(b'"', quote + 1)
    if after[quote : quote + 1] != b'"' or end < 0 or b"\\" in after[quote:end]:
        return None
    return before[start:] + b"," + after[: end + 1], len(before) - start
