"""Waiting on worker threads without deafening the main thread to Ctrl-C.

SIGINT goes to whichever thread the kernel picks; when that is a worker (polars keeps several busy), a main
thread blocked on a lock is not woken, and Ctrl-C takes effect only when the awaited work ends, seconds
later. Waiting in short slices lets the main thread see the signal within one slice.
"""

from __future__ import annotations

from concurrent.futures import Future, wait
from typing import TypeVar

T = TypeVar("T")
SLICE_SECONDS = 0.1


def wait_for(future: Future[T]) -> T:
    """`future.result()`, interruptible by Ctrl-C whichever thread receives the signal."""
    while not future.done():
        wait([future], timeout=SLICE_SECONDS)
    return future.result()
