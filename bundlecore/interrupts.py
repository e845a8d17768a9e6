"""SIGINT and SIGTERM: raised at once while nothing is half done, deferred while something is.

Why: an interrupt that lands inside an engine call (a `docker stop` still running in the engine, a
rename, a backup) leaves the engine doing what it was asked while the process already reports a
verdict; a rollback printed as done could be followed, seconds later, by the stop it interrupted.
So a journaled step runs `deferred()`: a signal is noted, the step's engine operation finishes,
and the interrupt is raised once the step is recorded done (or at the next `check()`, where a
long wait such as a health gate may stop early). An undo runs `shielded()`: a signal is noted and
never raised, because an undo that stops halfway is worse than one that finishes.

`install()` (the CLI, once) makes SIGTERM behave as SIGINT does: an `Interrupted`, so the same
cleanup runs and the same exit code (ExitCode.INTERRUPTED, 130) says "interrupted, nothing changed".
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: str | None = None  # the name of a signal noted and not raised yet
_deferring = 0               # depth of deferred() scopes
_shielded: list[str] = []    # the open shielded() scopes: what each runs to its end, innermost last


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM; a KeyboardInterrupt so that no `except Exception` swallows it."""

    def __init__(self, signame: str = "SIGINT"):
        super().__init__(signame)
        self.signame = signame
        self.unfinished: str | None = None  # the journal of a run it left unfinished (None: nothing changed)

    def __str__(self) -> str:
        return f"interrupted by {self.signame}"


def _handler(signum: int, frame: object) -> None:
    global _pending
    name = signal.Signals(signum).name
    if not _deferring and not _shielded:
        raise Interrupted(name)
    first = _pending is None
    _pending = _pending or name
    if first:
        what = (_shielded[-1] if _shielded
                else "stopping after the step in progress (its engine operation finishes first)")
        sys.stderr.write(f"\n{name} received: {what}\n")
        sys.stderr.flush()


def install() -> None:
    """SIGINT and SIGTERM raise `Interrupted` (deferred inside `deferred()`/`shielded()`)."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _handler)


def pending() -> str | None:
    return _pending


def check() -> None:
    """Raise the noted interrupt now, unless an undo is running (a point where stopping is safe)."""
    global _pending
    if _pending and not _shielded:
        name, _pending = _pending, None
        raise Interrupted(name)


def sleep(seconds: float) -> None:
    """time.sleep that ends early (raising) on a noted interrupt, outside an undo."""
    end = time.monotonic() + seconds
    while True:
        check()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Signals are noted, not raised, inside; a noted one is raised on leaving (unless shielded)."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    check()


@contextlib.contextmanager
def shielded(what: str = "the rollback runs to its end") -> Iterator[str | None]:
    """An undo (or a commit past the point of no return): runs to its end whatever arrives; the
    interrupt noted meanwhile is dropped on leaving (what ran is the answer to it). `what` is what
    the signal's notice says continues."""
    global _pending
    _shielded.append(what)
    try:
        yield _pending
    finally:
        _shielded.pop()
        if not _shielded:
            _pending = None
