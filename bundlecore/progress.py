"""Progress on stderr: a redrawn counter on a terminal, plain timestamped lines otherwise.

Why both: an admin at a terminal wants one live line; cron, CI and `ssh host bundle import | tee`
want lines a log keeps, each with its time, and not every 0.2 s: one every LINE_EVERY seconds
($BUNDLE_PROGRESS_INTERVAL), the first after that long, so a quick step adds nothing to a log and a
one-line error stays one line. `-q` silences progress (results and errors still print), `-v` adds
step-by-step lines (`step`). The level is set once by the CLI.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

QUIET, NORMAL, VERBOSE = 0, 1, 2
LINE_EVERY = 10.0   # seconds between plain progress lines (not a terminal); $BUNDLE_PROGRESS_INTERVAL
DRAW_EVERY = 0.2    # seconds between redraws on a terminal
REDRAW = "\r\x1b[K"  # back to the line's start and clear it: a shorter text leaves nothing of a longer one

_level = NORMAL


def set_verbosity(level: int) -> None:
    global _level
    _level = level


def verbosity() -> int:
    return _level


def line_every() -> float:
    """Seconds between progress lines in a log: $BUNDLE_PROGRESS_INTERVAL if it is a number >= 0."""
    try:
        return max(0.0, float(os.environ["BUNDLE_PROGRESS_INTERVAL"]))
    except (KeyError, ValueError):
        return LINE_EVERY


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(text: str, stream: TextIO | None = None) -> None:
    from bundlecore.text import printable
    stream = stream or sys.stderr
    stream.write(f"{stamp()} {printable(text)}\n")
    stream.flush()


def note(text: str) -> None:
    """A progress line (timestamped, stderr) unless -q."""
    if _level >= NORMAL:
        _line(text)


def step(text: str) -> None:
    """A step-by-step line, shown only with -v."""
    if _level >= VERBOSE:
        _line(text)


class Progress:
    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.enabled = (_level >= NORMAL) if enabled is None else enabled
        self.tty = self.stream.isatty()
        self.every = DRAW_EVERY if self.tty else line_every()
        self.start = self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            self._draw(now)

    def _text(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-6)
        pct = f" {min(100, 100 * self.done // self.total):3d}%" if self.total else ""
        return f"{self.label}:{pct} {human(self.done)} at {human(rate)}/s"

    def _draw(self, now: float) -> None:
        if self.tty:
            self.stream.write(f"{REDRAW}{self._text(now)}")
            self.stream.flush()
        else:
            _line(self._text(now), self.stream)

    def close(self) -> None:
        """The final figures: always on a terminal; in a log only after a long run (a short one
        would add a line to every scripted run for nothing)."""
        now = time.monotonic()
        if self.enabled and (self.tty or now - self.start >= self.every):
            self._draw(now)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()


class Countdown:
    """'waiting for the health gate: 42 s left' while a deadline runs: redrawn every second on a
    terminal, a line every line_every() seconds otherwise. Silent with -q."""

    def __init__(self, label: str, seconds: float, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = _level >= NORMAL
        self.tty = self.stream.isatty()
        now = time.monotonic()
        self.deadline = now + seconds
        self.every = 1.0 if self.tty else line_every()
        self._last = None if self.tty else now   # in a log, the first line after `every`
        self._drawn = False

    def tick(self, detail: str | Callable[[], str] = "") -> None:
        """`detail` may be a function: asked only when a line is drawn (e.g. a query to the engine)."""
        now = time.monotonic()
        if not self.enabled or (self._last is not None and now - self._last < self.every):
            return
        detail = detail() if callable(detail) else detail
        self._drawn = True
        self._last = now
        text = f"{self.label}: {max(0, int(self.deadline - now + 0.5))} s left" + (f" ({detail})" if detail else "")
        if self.tty:
            from bundlecore.text import printable
            self.stream.write(f"{REDRAW}{printable(text)}")
            self.stream.flush()
        else:
            _line(text, self.stream)

    def close(self) -> None:
        """On a terminal the countdown leaves nothing behind: the line is cleared (what the wait
        ended in is the next line)."""
        if self.enabled and self.tty and self._drawn:
            self.stream.write(REDRAW)
            self.stream.flush()


class PullProgress(Progress):
    """`docker pull`'s event stream folded into one figure: layers finished and bytes fetched.

    A line when the pull starts (its first event: an image the registry lacks stays a one-line
    error) and when it ends, also in logs (a pull is the slow part of a build); the figure in
    between at the usual pace."""

    def __init__(self, ref: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        super().__init__(f"pulling {ref}", None, stream, enabled)
        self.ref = ref
        self.layers: dict[str, tuple[int, int, str]] = {}  # layer id -> (current, total, status)
        self.started = False

    def event(self, ev: dict[str, Any]) -> None:
        if self.enabled and not self.started:  # once the engine accepted the pull, not before
            self.started = True
            _line(f"pulling {self.ref}", self.stream)
        lid, status = ev.get("id"), str(ev.get("status", ""))
        if lid and ev.get("progressDetail") is not None:
            detail = ev.get("progressDetail") or {}
            cur, tot, _ = self.layers.get(lid, (0, 0, ""))
            if status == "Downloading":
                cur, tot = int(detail.get("current") or cur), int(detail.get("total") or tot)
            self.layers[lid] = (cur, tot, status)
        self.done = sum(c for c, _, _ in self.layers.values())
        self(0)

    def _text(self, now: float) -> str:
        finished = sum(1 for _, _, s in self.layers.values() if s in ("Pull complete", "Already exists"))
        return f"{self.label}: {finished}/{len(self.layers)} layers, {human(self.done)}"

    def close(self) -> None:
        if self.enabled and self.started:
            if self.tty:
                self.stream.write(REDRAW)
            finished = sum(1 for _, _, s in self.layers.values() if s in ("Pull complete", "Already exists"))
            _line(f"pulled {self.ref}: {finished} layer(s), {human(self.done)} fetched", self.stream)
