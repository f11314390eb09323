"""Word n-gram hashes of many texts at once, computed with numpy on the bytes of the texts joined together.

Why not polars: splitting every text into word strings, exploding them and hashing each string cost ~20-30 ms
per MB of text, most of decontamination's time. Here no word is ever made: a word is a byte range of the
normalised bytes (found from where letters and spaces alternate), its hash is read off its bytes 8 at a time,
and a window's hash is a polynomial over its words' hashes, built by doubling. The words and windows are the
same as before; the whole step costs ~2x less CPU per MB.

Normalisation is `decontam.normalise`'s: lowercase, the punctuation list turned into spaces, words split on
runs of spaces. ASCII rows (nearly all) go through a 256-entry byte table that does exactly that; the few rows
with other characters take polars' Unicode lowercasing and replacement first (the table then leaves them as
they are).

Decontamination runs this exact pass only on the texts a cheaper one lets through (`Screen`: every s-th window,
on word prints instead of hashes), which every text sharing an n-gram with a benchmark item passes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from mixer.hashing import large_strings

WORD_BASE = 0x9E3779B97F4A7C15  # spreads a word's length over its hash, so a NUL byte cannot stand for a shorter word
LONG_WORD = 64  # longer words are hashed one by one (see `_word_hashes`)
GRAM_BASE = 0x100000001B3  # odd, so the polynomial hash of a window mixes every word
BATCH_BYTES = 1 << 20  # text turned into words at once (see `batches`)
SPACE = 32
U64 = 1 << 64


def punctuation() -> list[str]:
    """What normalisation turns into spaces: ASCII, typographic quotes and dashes, and whitespace. A fixed
    list lets polars use one multi-pattern replace (several times faster than a Unicode regex)."""
    ascii_marks = [*"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "\n", "\t", "\r"]
    typographic = ["\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014", "\u2026", "\u00ab", "\u00bb"]
    return ascii_marks + typographic + ["\u00bf", "\u00a1", "\u00a0"]


def spaced(text: pl.Expr) -> pl.Expr:
    """Lowercase with punctuation as spaces: the text words are split from."""
    marks = punctuation()
    return text.str.to_lowercase().str.replace_many(marks, [" "] * len(marks))


def _byte_table() -> np.ndarray:
    """`spaced` for ASCII bytes: A-Z lowered, the ASCII marks of `punctuation()` made spaces."""
    table = np.arange(256, dtype=np.uint8)
    table[ord("A") : ord("Z") + 1] += 32
    for mark in punctuation():
        if ord(mark) < 128:
            table[ord(mark)] = SPACE
    return table


def _mix(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: inputs that differ in one bit give outputs that differ in about half."""
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def _joined_bytes(texts: pl.Series) -> np.ndarray:
    """The texts joined by single spaces, as bytes (one polars pass, no per-row work)."""
    array = large_strings(texts.str.join(" "))
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + 2]
    values = array.buffers()[2]
    if values is None:
        return np.zeros(0, dtype=np.uint8)
    return np.frombuffer(values, dtype=np.uint8)[offsets[0] : offsets[1]]


@dataclass(frozen=True)
class Words:
    """Every word of a batch of texts: its row, its byte range in `text`, and its 64-bit hash.

    `text` is the normalised batch: a space, the rows joined by single spaces, then 8 spaces."""

    text: np.ndarray
    row: np.ndarray
    start: np.ndarray
    end: np.ndarray
    hash: np.ndarray

    def windows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(first word, hash) of every window of n consecutive words inside one row. The hash is
        sum(hash[first + k] * GRAM_BASE^(n-1-k)) mod 2^64; windows of 2, 4, 8... words are built by doubling and
        n is put together from its binary digits: ~2 log2(n) array passes instead of 2n."""
        count = len(self.hash) - n + 1
        if count <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
        level, width = {1: self.hash}, 1
        while width * 2 <= n:  # w{2k}[s] = w{k}[s] * B^k + w{k}[s + k]
            shorter = level[width]
            level[2 * width] = shorter[:-width] * np.uint64(pow(GRAM_BASE, width, U64)) + shorter[width:]
            width *= 2
        gram, covered = None, 0
        while width:  # the widest window first, then each smaller one the binary form of n needs
            if n - covered >= width:
                piece = level[width][covered : covered + count]
                gram = piece if gram is None else gram * np.uint64(pow(GRAM_BASE, width, U64)) + piece
                covered += width
            width //= 2
        assert gram is not None
        first = np.flatnonzero(self.row[:count] == self.row[n - 1 :])
        return first, gram[first]

    def phrase(self, first: int, count: int) -> str:
        """The words first .. first + count - 1 (of one row) joined by single spaces."""
        return " ".join(
            self.text[a:b].tobytes().decode("utf-8")
            for a, b in zip(
                self.start[first : first + count].tolist(), self.end[first : first + count].tolist(), strict=True
            )
        )


@dataclass(frozen=True)
class Spans:
    """Where the words of a batch of texts are: `text` is the normalised batch (a space, the rows joined by
    single spaces, then 8 spaces), word i is text[start[i]:end[i]], and row r's words begin at firsts[r]."""

    text: np.ndarray
    start: np.ndarray
    end: np.ndarray
    firsts: np.ndarray

    def rows(self) -> np.ndarray:
        """The row of every word."""
        return np.repeat(np.arange(len(self.firsts), dtype=np.int64), np.diff(np.append(self.firsts, len(self.start))))

    def rows_of(self, word: np.ndarray) -> np.ndarray:
        """The row of each of some words."""
        return np.searchsorted(self.firsts, word, side="right") - 1


def spans(texts: pl.Series) -> Spans:
    """The words of every text, normalised (see the module docstring), as byte ranges."""
    texts = texts.cast(pl.String)
    if texts.null_count():
        texts = texts.fill_null("")
    sizes = texts.str.len_bytes()
    unicode = sizes != texts.str.len_chars()
    if unicode.any():
        where = unicode.arg_true()
        texts = texts.scatter(where, pl.select(spaced(pl.lit(texts.gather(where)))).to_series())
        sizes = texts.str.len_bytes()
    raw = _joined_bytes(texts)
    # a space before the first row (and between rows), 8 after the last: words start after a space, end before
    # one, and 8-byte reads stay inside
    text = np.frombuffer(b" " + raw.tobytes().translate(_byte_table().tobytes()) + b" " * 8, dtype=np.uint8)
    letter = text != SPACE
    edges = np.flatnonzero(letter[1:] != letter[:-1])  # alternately the last space, the last letter
    start, end = edges[0::2] + 1, edges[1::2] + 1
    lengths = sizes.to_numpy().astype(np.int64)
    row_starts = np.cumsum(lengths + 1) - lengths  # row r starts after r + 1 spaces and the rows before it
    return Spans(text, start, end, np.searchsorted(start, row_starts))


def words(texts: pl.Series) -> Words:
    """The words of every text, normalised (see the module docstring), with their hashes."""
    found = spans(texts)
    return Words(found.text, found.rows(), found.start, found.end, _word_hashes(found.text, found.start, found.end))


def _word_hashes(text: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A mixed 64-bit hash of each word's bytes. A word of up to 8 bytes (most words) is one unaligned 8-byte
    read, masked to its length; a longer one folds in 8 more bytes per step, up to LONG_WORD bytes; the rare
    longer ones (URLs, encoded blobs) are hashed one by one. `text` must extend 7 bytes past the last word."""
    length = (end - start).astype(np.uint64)
    # the 8 bytes from every offset: gathering from the overlapping view itself made numpy copy all of it on
    # each gather (the fold steps included); one copy up front costs the same as one of those
    reads = np.ndarray(shape=(len(text) - 7,), dtype="<u8", buffer=text, strides=(1,)).copy()
    masks = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
    value = np.take(reads, start) & masks[np.minimum(length, 8)]
    folding, taken = np.flatnonzero((length > 8) & (length <= LONG_WORD)), 8
    while len(folding):
        more = np.take(reads, start[folding] + taken) & masks[np.minimum(length[folding] - taken, 8)]
        value[folding] = _mix(value[folding]) ^ more
        taken += 8
        folding = folding[length[folding] > taken]
    for word in np.flatnonzero(length > LONG_WORD).tolist():
        digest = hashlib.blake2b(text[start[word] : end[word]].tobytes(), digest_size=8).digest()
        value[word] = int.from_bytes(digest, "little")
    return _mix(value ^ (length * np.uint64(WORD_BASE)))


def _word_prints(text: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A cheap 64-bit print of each word: its length and first 8 bytes, lightly mixed. Words that share both
    share a print, so prints can only say which texts might match (`Screen`), never that they do."""
    length = (end - start).astype(np.uint64)
    reads = np.ndarray(shape=(len(text) - 7,), dtype="<u8", buffer=text, strides=(1,))
    masks = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
    value = reads[start] & masks[np.minimum(length, 8)]
    value ^= length * np.uint64(WORD_BASE)
    value ^= value >> np.uint64(29)
    value *= np.uint64(0xBF58476D1CE4E5B9)
    value ^= value >> np.uint64(32)
    return value


def _polynomial(values: np.ndarray, width: int, step: int) -> np.ndarray:
    """sum(values[p + k] * GRAM_BASE^(width-1-k)) for every p that is a multiple of `step`, built from strided
    views (no gather): `width` multiply-adds over len(values) / step windows."""
    count = (len(values) - width) // step + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    gram = values[0 : step * count : step].copy()
    for k in range(1, width):
        gram *= np.uint64(GRAM_BASE)
        gram += values[k : k + step * count : step]
    return gram


class Screen:
    """Which texts might share a word n-gram with a set of items: a cheap pass that lets the exact one
    (`Words` and `HashSet`, ~2x the cost per MB) run on the few texts that pass.

    Only windows starting at every s-th word are looked at, k = n - s + 1 words long, in a set of every
    k-word window of every item of at least n words. That misses nothing: a shared n-gram starts at some word
    o, one of o .. o + s - 1 is a multiple of s, and the k words from there lie inside the n-gram, so they are a
    k-gram of the item. Words are cheap prints (`_word_prints`), and windows may run across two texts: both
    can only let extra texts through to the exact pass, never keep one out. s = (n + 1) // 2 balances the
    windows' cost (k / s multiply-adds per word) against the texts let through by shorter windows (about 1% of
    GSM8K-like rows at n = 13 against HumanEval + GSM8K)."""

    def __init__(self, items: pl.Series, n: int) -> None:
        self.step = (n + 1) // 2
        self.width = n - self.step + 1
        found = spans(items)
        prints = _word_prints(found.text, found.start, found.end)
        row = found.rows()
        long_enough = np.flatnonzero(np.bincount(row, minlength=len(items)) >= n)
        first, grams = Words(found.text, row, found.start, found.end, prints).windows(self.width)
        self.prints = HashSet(grams[np.isin(row[first], long_enough)])

    def candidates(self, texts: pl.Series) -> np.ndarray:
        """The indexes (ascending) of the texts that might share an n-gram with an item."""
        found = spans(texts)
        prints = _word_prints(found.text, found.start, found.end)
        grams = _polynomial(prints, self.width, self.step)
        hit = np.flatnonzero(self.prints.contains(grams)) * self.step
        return np.unique(found.rows_of(hit))


def batches(texts: pl.Series, max_bytes: int = BATCH_BYTES) -> Iterator[tuple[int, pl.Series]]:
    """(offset, slice) of consecutive texts of about `max_bytes` together (a longer text alone). Small batches
    keep every array of `words` and `Words.windows` in cache and reuse the same memory (fresh pages cost more
    here than the arithmetic)."""
    sizes = texts.str.len_bytes().fill_null(0).cast(pl.Int64).cum_sum().to_numpy()
    offset = 0
    while offset < len(texts):
        done = sizes[offset - 1] if offset else 0
        stop = max(int(np.searchsorted(sizes, done + max_bytes, side="right")), offset + 1)
        yield offset, texts.slice(offset, stop - offset)
        offset = stop


class HashSet:
    """Membership of many 64-bit hashes at once in a fixed set of them. A table of one flag per value of the
    low bits rules out nearly all non-members in one gather (~1 in 32 or fewer slips through); a second one on
    bits from the high half rules out nearly all of those, and a binary search in the sorted members settles
    the few left. (Binary searches of the ~3% the first table lets through, scattered over the members, had
    cost as much as the whole gather.) A polars join per batch cost more, mostly building its table."""

    HIGH = np.uint64(32)  # where the second table's bits start

    def __init__(self, members: np.ndarray) -> None:
        self.members = np.unique(members)
        size = min(max(1 << 16, 1 << (32 * len(self.members)).bit_length()), 1 << 26)
        self.mask = np.uint64(size - 1)
        self.low = np.zeros(size, dtype=bool)
        self.low[(self.members & self.mask).view(np.int64)] = True
        self.high = np.zeros(size, dtype=bool)
        self.high[((self.members >> self.HIGH) & self.mask).view(np.int64)] = True

    def contains(self, values: np.ndarray) -> np.ndarray:
        """A bool per value."""
        found = np.take(self.low, (values & self.mask).view(np.int64))
        maybe = np.flatnonzero(found)
        candidates = values[maybe]
        still = np.take(self.high, ((candidates >> self.HIGH) & self.mask).view(np.int64))
        found[maybe] = still
        maybe, candidates = maybe[still], candidates[still]
        if len(maybe):
            place = np.minimum(np.searchsorted(self.members, candidates), len(self.members) - 1)
            found[maybe] = self.members[place] == candidates
        return found
