"""Which wide Unicode encoding a file is in, from its byte-order mark. mixer reads UTF-8 only; a UTF-16 or
UTF-32 file (Windows tools write them, PowerShell 5's `>` among them) is named as such, where decoding it as
UTF-8 would only report broken text. Free of dataframe libraries: recipes are read on the no-op path."""

from __future__ import annotations

# longest first: UTF-32LE's mark starts with UTF-16LE's
WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)


def wide_encoding(data: bytes) -> str | None:
    """The encoding whose byte-order mark `data` starts with, or None."""
    return next((encoding for mark, encoding in WIDE_BOMS if data.startswith(mark)), None)
