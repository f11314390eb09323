"""Which wide Unicode encoding a file is in, from its byte-order mark. mixer reads UTF-8 only; a UTF-16 or
UTF-32 file (Windows tools write them, PowerShell 5's `>` among them) is named as such, where decoding it as
UTF-8 would only report broken text. Free of dataframe libraries: recipes are read on the no-op path."""

from __future__ import annotations

import shlex
from pathlib import Path

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


def to_utf8_command(path: Path, encoding: str) -> str:
    """A shell command that writes a UTF-8 copy beside `path` (decompressed, when it is gzip), runnable from
    where the error was printed: the path as the user gave it, quoted for the shell."""
    name = path.name.removesuffix(".gz")
    target = shlex.quote(str(path.with_name(f"utf8-{name}")))
    # UTF-16 rather than UTF-16LE: iconv then takes the byte order from the mark and drops it, where naming the
    # byte order would copy the mark into the UTF-8 text
    iconv = f"iconv -f {encoding[:-2]} -t UTF-8"
    if path.name.endswith(".gz"):
        return f"gzip -dc {shlex.quote(str(path))} | {iconv} > {target}"
    return f"{iconv} {shlex.quote(str(path))} > {target}"
