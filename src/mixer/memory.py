"""Hand memory that numpy freed back to the system once staging is over.

numpy allocates through the C library's malloc. Decontamination's scan frees megabytes of temporaries per
batch in each staging thread, and glibc keeps much of that in its heaps instead of returning it. Everything
after staging allocates through polars' own allocator, so those pages are never used again, yet they stayed
resident under the build's peak: ~100 MB at 1M rows (benchmarks/README.md). glibc's `malloc_trim` returns them
in ~10 ms. With another C library (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys


def release_freed_memory() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
