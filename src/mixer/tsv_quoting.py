"""Whether a TSV file quotes its fields as CSV does.

TSV has no quoting of its own, and FLAN's TSVs hold bare quotes (`"Gamey" is a word ...`), so a TSV is read
as written. But pandas, `datasets` and Python's csv module write TSV with CSV's quoting: a field that holds a
quote, a tab or a line break is put in quotes, with its own quotes doubled. Read as written, such a field kept
its quotes (`"He said ""hi""."`) without a word, and one with a line break was cut into two records. A file
whose fields in quotes that needed them outnumber its bare quotes (text after a closing quote, or a quote
never closed) is read with CSV's quoting instead.
"""

from __future__ import annotations

import re

SNIFF_BYTES = 16 << 20  # text looked at in a large file: as much as its first chunk
SNIFF_FIELDS = 10_000  # fields opening with a quote that decide it: a heavily quoted head is not walked whole
# from a field's opening quote to its closing one (absent at the end of the text); it never fails, so the
# `[^"]+` inside cannot backtrack
_QUOTED_FIELD = re.compile(rb'"(?:[^"]+|"")*("?)')
_NEEDS_QUOTES = re.compile(rb'""|[\t\n\r]')
_FIELD_ENDS = (b"\t", b"\n", b"\r", b"")


def quotes_like_csv(data: bytes, complete: bool = True) -> bool:
    """Whether `data` (a TSV's text, the whole file when `complete`, else its head) quotes fields as CSV does:
    its fields in quotes that needed them outnumber its bare quotes. One bare quote in a file written by pandas
    is a damaged field, which reading it as CSV names at its line; a file of bare quotes is read as written."""
    needed = bare = position = 0
    openings = _OpeningQuotes(data)
    for _ in range(SNIFF_FIELDS):
        if (opening := openings.after(position)) is None:
            break
        field = _QUOTED_FIELD.match(data, opening)
        after = data[field.end() : field.end() + 1]
        if not field.group(1) or (after == b"" and not complete):
            if complete:  # never closed (in a head, it may be a field the head cuts short)
                bare += 1
            break
        if after not in _FIELD_ENDS:  # text after the closing quote: a bare quote, as FLAN's
            bare += 1
        elif _NEEDS_QUOTES.search(data, opening + 1, field.end() - 1):
            needed += 1
        position = field.end()
    return needed > bare


class _OpeningQuotes:
    """The quotes that open a field (at the start, or after a tab or line feed), found with bytes.find, many
    times faster than a regular expression's scan. Each pattern's last hit is kept until passed, so one that is
    not in the text is looked for once."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.hits = {b'\t"': -1, b'\n"': -1}

    def after(self, start: int) -> int | None:
        """The first quote that opens a field at or after `start`."""
        if start == 0 and self.data.startswith(b'"'):
            return 0
        end = len(self.data)
        for pattern, hit in self.hits.items():
            if hit < start:
                found = self.data.find(pattern, start)
                self.hits[pattern] = end if found < 0 else found
        nearest = min(self.hits.values())
        return None if nearest == end else nearest + 1
