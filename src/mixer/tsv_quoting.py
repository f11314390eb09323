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
_OPENING_QUOTE = re.compile(rb'(?:\A|(?<=[\t\n]))"')
_FIELD_ENDS = (b"\t", b"\n", b"\r", b"")


def quotes_like_csv(data: bytes, complete: bool = True) -> bool:
    """Whether `data` (a TSV's text, the whole file when `complete`, else its head) quotes fields as CSV does:
    its fields in quotes that needed them outnumber its bare quotes. One bare quote in a file written by pandas
    is a damaged field, which reading it as CSV names at its line; a file of bare quotes is read as written."""
    needed = bare = at = 0
    while (opening := _OPENING_QUOTE.search(data, at)) is not None:
        close = opening.end()
        while (close := data.find(b'"', close)) >= 0 and data[close + 1 : close + 2] == b'"':
            close += 2  # a doubled quote inside the field
        after = data[close + 1 : close + 2] if close >= 0 else b""
        if close < 0 or (after == b"" and not complete):
            if complete:  # never closed (in a head, it may be a field the head cuts short)
                bare += 1
            break
        if after not in _FIELD_ENDS:  # text after the closing quote: a bare quote, as FLAN's
            bare += 1
        elif any(mark in data[opening.end() : close] for mark in (b'""', b"\t", b"\n", b"\r")):
            needed += 1
        at = close + 1
    return needed > bare
