"""Threads that never make Ctrl-C wait: waiting on workers, and reading ahead in one.

SIGINT goes to whichever thread the kernel picks; when that is a worker (polars keeps several busy), a main
thread blocked on a lock is not woken, and Ctrl-C takes effect only when the awaited work ends, seconds
later. Waiting in short slices lets the main thread see the signal within one slice; the read-ahead thread
waits the same way, so a stopping build never waits on it for more than one item.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from typing import Any, TypeVar

from mixer.interrupts import INTERRUPTS

T = TypeVar("T")
SLICE_SECONDS = 0.1


def wait_for(future: Future[T]) -> T:
    """`future.result()`, interruptible by Ctrl-C whichever thread receives the signal. The future's lock is
    taken in `holding` blocks: a KeyboardInterrupt raised inside one could leave it held (mixer.interrupts).
    After a Ctrl-C or SIGTERM of the `mixer` command it raises at once."""
    while True:
        INTERRUPTS.check()  # a Ctrl-C a polars call swallowed still stops the command
        with INTERRUPTS.holding():
            if wait([future], timeout=SLICE_SECONDS).done:
                return future.result()


def one_ahead(items: Iterable[T], ahead: Callable[[], bool] = lambda: True) -> Iterator[T]:
    """`items`, produced in a second thread. While `ahead()` says a core is to spare, the next item is made
    while the one before is used: reading and parsing a file's next chunk overlaps converting and writing the
    current one (polars releases the GIL in both), with at most two items in hand. Otherwise an item is made
    only when asked for, as without the thread. Stopping early (an error, Ctrl-C) stops the producer before
    its next item."""
    slot: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    asked = threading.Condition()
    requests = 0
    closed = threading.Event()

    def offer(entry: tuple[bool, Any]) -> None:
        while not closed.is_set():
            try:
                slot.put(entry, timeout=SLICE_SECONDS)
                return
            except queue.Full:
                continue

    def produce() -> None:
        iterator = iter(items)
        made = 0
        try:
            while True:
                with asked:  # asked for, or the one after the item in use when a core is to spare
                    while not closed.is_set() and made >= requests + (1 if ahead() else 0):
                        asked.wait(SLICE_SECONDS)  # `ahead` is asked again as other work ends
                if closed.is_set():
                    return
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                offer((False, item))
                made += 1
            offer((True, None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer((True, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator's open files close in the thread that ran it
                close()

    producer = threading.Thread(target=produce, name="mixer-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            with asked:
                requests += 1
                asked.notify()
            while True:
                try:
                    done, value = slot.get(timeout=SLICE_SECONDS)
                    break
                except queue.Empty:
                    continue
            if done:
                if isinstance(value, BaseException):
                    raise value
                return
            yield value
    finally:
        closed.set()
        with asked:
            asked.notify()
        producer.join()
