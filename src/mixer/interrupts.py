"""Ctrl-C and SIGTERM in the `mixer` command: a build stops within a fraction of a second and unwinds the
same way every time, removing its temp dir and leaving the previous output as it was.

Python raises KeyboardInterrupt (and mixer, for SIGTERM, `Terminated`) in the main thread, which waits on
every worker in short slices (mixer.threads). Three things got in the way:
- polars 2 replaces the process's SIGINT handler as it is imported (with `signal-hook`, for its own
  KeyboardInterrupt), chaining to the handler it found. A process started with SIGINT ignored (`nohup`,
  `cmd &` in a script) reacted to it again, and some of those signals became a KeyboardInterrupt inside
  whichever polars call was running: the build failed. polars is imported lazily (a no-op rebuild never
  imports it), so Python's handler is put back right after polars' module has run, by a one-shot import hook.
- An exception raised by a signal handler inside Python's threading code can leave a lock held. Raised while
  the main thread was in `concurrent.futures.wait`, it left a future's lock taken; the shard writer then
  waited for it to store its result, and the build waited for the writer, for ever: once in ~680 builds
  interrupted by a harness, where every thread's stack showed it (likely the interrupt test's two earlier
  hangs too). So `wait_for` touches a future's lock only in a `holding` block, where a signal is recorded
  and raised as the block ends.
- A KeyboardInterrupt raised while polars calls back into Python (to read a dtype, say) can come out of that
  call as another error (pyo3 turns the failed conversion into a TypeError), or not at all (reported as an
  "Exception ignored" while the build went on to the end). So the signal is recorded: `wait_for` raises it
  again at its next slice, and the command reports any error after it as the interruption it is.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importlib.abc pulls in importlib.resources: ~20 ms of every command's start-up
    from importlib.machinery import ModuleSpec
    from types import ModuleType


class _ThenLoader:
    """Runs a module with its own loader, then `then()`; afterwards the module names its own loader again."""

    def __init__(self, loader: Any, then: Callable[[], None]) -> None:
        self.loader = loader
        self.then = then

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            self.loader.exec_module(module)
        finally:
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader
            self.then()


class _AfterImport:
    """Finds nothing itself: when `name` is first imported, wraps the real loader so `then()` runs after it."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name = name
        self.then = then

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        _remove(self)  # one shot, and the search below must not find this finder again
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


def _remove(finder: _AfterImport) -> None:
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)


def add_note(stop: BaseException, note: str) -> None:
    """What a stopped step leaves, printed under "interrupted" (mixer.cli). `BaseException.add_note` is Python
    3.11's; this keeps the same `__notes__` list on 3.10 too, where the method is missing."""
    notes = getattr(stop, "__notes__", None)
    if notes is None:
        notes = []
        stop.__notes__ = notes
    notes.append(note)


class Terminated(BaseException):
    """SIGTERM (a scheduler's cancel or timeout, `docker stop`, `kill`), raised in the main thread so that a
    build unwinds as on Ctrl-C: staged rows and temp dirs, gigabytes at scale, are removed on the way out."""


@dataclass
class Interrupts:
    """SIGINT and SIGTERM for the `mixer` command: `received` is the exception a signal stands for
    (KeyboardInterrupt or Terminated), kept to tell an error caused by it from others; a signal that comes
    while the main thread is `holding` is `pending` until the block ends."""

    received: type[BaseException] | None = None
    held: bool = False
    pending: bool = False

    def on_signal(self, signum: int, frame: object) -> None:
        self.received = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        if self.held:
            self.pending = True
        else:
            raise self.received

    def check(self) -> None:
        """Raise a signal again, in case a polars call swallowed it; for the main thread's waits."""
        if self.received and not self.held and threading.current_thread() is threading.main_thread():
            raise self.received

    @contextmanager
    def holding(self) -> Iterator[None]:
        """A signal during the block is raised as it ends (replacing any error on its way out), never inside
        it. For short blocks of the main thread that take locks worker threads take too."""
        if self.held or threading.current_thread() is not threading.main_thread():
            yield
            return
        self.held = True
        try:
            yield
        finally:
            self.held = False
            pending, self.pending = self.pending, False
            if pending and self.received:
                raise self.received

    def install(self) -> Callable[[], None]:
        """Handle SIGTERM, and SIGINT now and again once polars is imported (a SIGINT ignored at start-up stays
        ignored). Returns the undo: called in-process (a notebook, a test), the command leaves the handlers as
        it found them. SIGINT is then left alone when polars is already imported, with the caller's choice."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        self.received, self.pending = None, False  # a command run in-process before this one was stopped
        previous_term = signal.signal(signal.SIGTERM, self.on_signal)
        previous_int = signal.getsignal(signal.SIGINT)
        finder = None
        if "polars" not in sys.modules:
            handler = self.on_signal if previous_int is signal.default_int_handler else previous_int

            def apply() -> None:
                if handler is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGINT, handler)

            apply()
            finder = _AfterImport("polars", apply)
            sys.meta_path.insert(0, finder)

        def undo() -> None:
            signal.signal(signal.SIGTERM, previous_term)
            if finder is not None:
                _remove(finder)
                if previous_int is not None:
                    signal.signal(signal.SIGINT, previous_int)

        return undo


INTERRUPTS = Interrupts()  # the process's: `mixer.cli.main` alone installs its handlers
