"""One journaled step runner: what makes every target kind's changes crash safe.

A kind declares its steps as an enum and, in one table (`Rule` per step), what each step does,
which step undoes it and what recovery does after a crash in it. The runner then owns the rest,
once for every kind:

- the journal (`JOURNAL`, one file per app): a step is written "started" (fsync, atomic rename)
  before it runs and "done" after it ran, with its history, so a process killed anywhere leaves
  a journal that says what may have happened; a finished run's record moves to the kind's
  `LAST` file and the journal disappears (it exists only while a run is unfinished);
- forward (skipping steps already done), undo (the undo steps of every step that started, in
  the kind's undo order, each once) and the resume rule recovery reads (`resume`);
- the audit event at the end of a run (a full disk never turns a finished run into a failure);
- the one crash hook of the kill -9 matrices (`crash_hook`);
- interrupts (bundlecore.interrupts): SIGINT/SIGTERM during a step is deferred until the step's
  engine operation has finished and the step is recorded done, then raised (the kind undoes the
  run); an undo is shielded and runs to its end.

Test hook: BUNDLE_CRASH_AT=<point> (the step's value, after the kind's `POINT_PREFIX`) and
BUNDLE_CRASH_WHEN SIGKILL the process at that step: `ahead` before its "started" record is
written, `before` once that record is durable (its action has not run), `after` (the default)
once its "done" record is durable.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from bundlecore import interrupts, progress
from bundlecore.fsutil import atomic_write_json, read_bytes_nofollow
from importer.audit import AuditEvent, PhaseTimer, now, step_phase, write_event
from importer.state import JOURNAL, StateDir


class Phase(StrEnum):
    STARTED = "started"
    DONE = "done"


class Direction(StrEnum):
    FORWARD = "forward"
    UNDO = "undo"


class Resume(StrEnum):
    """What recovery does with a run the journal left at a step."""

    UNDO = "undo"      # put back what the run changed (the undo steps of every step that started)
    REPLAY = "replay"  # carry on forward: the step again (each is idempotent), then the rest
    NONE = "none"      # nothing left to do (an undo step: the undo resumes where it stopped)


@dataclass(frozen=True)
class Rule:
    """One step of a kind: its action (called with the kind's machine), the step that undoes it,
    and the resume rule after a crash while it was started, and once it was done."""

    action: Callable[[Any], None]
    undo: StrEnum | str | None = None  # a str: a kind's step of one part (a compose project's `step:service`)
    started: Resume = Resume.UNDO
    done: Resume | None = None  # None: as `started`

    def resume(self, phase: str) -> Resume:
        return self.done if phase == Phase.DONE and self.done is not None else self.started


# what the notice of a signal received during a kind's commit says continues (interrupts.shielded)
COMMIT_RUNS_ON = "the release is past its health gate: its commit runs to its end"


def crash_hook(point: str, when: str) -> None:
    """SIGKILL ourselves at the point named by BUNDLE_CRASH_AT (tests of crash safety only), or
    the signal BUNDLE_CRASH_SIGNAL names (SIGINT, SIGTERM: tests of what an interrupt there says)."""
    if os.environ.get("BUNDLE_CRASH_AT") == point and os.environ.get("BUNDLE_CRASH_WHEN", "after") == when:
        os.kill(os.getpid(), signal.Signals[os.environ.get("BUNDLE_CRASH_SIGNAL", "SIGKILL")])


class Record(Protocol):
    """What the runner needs of a kind's journal record."""

    step: Any
    phase: Any
    history: list[dict]

    def to_json(self) -> dict: ...


class StepJournal:
    """The journal file of one app's run in progress (apps/<app>/journal.json)."""

    FILE = JOURNAL
    LAST = "last-run.json"  # each kind names its own
    POINT_PREFIX = ""       # the crash points of this kind: POINT_PREFIX + step

    def __init__(self, app_dir: Path, record: Record):
        self.app_dir = Path(app_dir)
        self.record = record

    @classmethod
    def read(cls, app_dir: Path, name: str | None = None) -> dict | None:
        """The journal's JSON (None: no run in progress), or of another of its files (`LAST`);
        never follows a symlink."""
        try:
            return json.loads(read_bytes_nofollow(Path(app_dir) / (name or cls.FILE)))
        except FileNotFoundError:
            return None

    @classmethod
    def last(cls, app_dir: Path) -> dict | None:
        """The record of the last finished run (None: none yet)."""
        return cls.read(app_dir, cls.LAST)

    def _write(self, name: str, doc: dict) -> None:
        atomic_write_json(self.app_dir / name, doc)

    def save(self) -> None:
        self._write(self.FILE, self.record.to_json())

    def mark(self, step: StrEnum, phase: Phase) -> None:
        """Record that `step` is "started" or "done" (with what the record learned), durably."""
        point = self.POINT_PREFIX + step.value
        if phase == Phase.STARTED:
            crash_hook(point, "ahead")
        self.record.step = step
        self.record.phase = phase
        self.record.history.append({"step": step, "phase": phase, "at": now()})
        self.save()
        crash_hook(point, "before" if phase == Phase.STARTED else "after")

    def reached(self, step: StrEnum | str, phase: str = Phase.STARTED) -> bool:
        """Whether `step` was ever recorded in `phase` (a started step may have partly run)."""
        return any(h["step"] == step and h["phase"] == phase for h in self.record.history)

    def last_record(self, result: str, message: str) -> dict:
        """What the kind keeps in LAST once the run is over."""
        return self.record.to_json() | {"result": result, "message": message, "finished_at": now()}

    def finish(self, result: str, message: str = "") -> None:
        """Close the run: keep its record as the last result, then drop the live journal."""
        self._write(self.LAST, self.last_record(result, message))
        try:
            os.unlink(self.app_dir / self.FILE)
        except FileNotFoundError:
            pass


class StepRunner:
    """Drives one kind's steps through its journal: forward, undo, resume, finish."""

    def __init__(self, state: StateDir, journal: StepJournal, rules: Mapping[Any, Rule], machine, *,
                 label: str | None = None, timer: PhaseTimer | None = None, out=print):
        self.state, self.j, self.rules, self.machine = state, journal, rules, machine
        self.label, self.timer, self.out = label, timer or PhaseTimer(), out

    def step(self, step) -> None:
        """One step: "started" on disk, its action, "done" on disk; an interrupt meanwhile is raised
        only after that (or at a wait's `interrupts.check`), never inside an engine call."""
        try:
            with interrupts.deferred():
                self.j.mark(step, Phase.STARTED)
                if self.label:
                    progress.step(f"{self.label}: {step.value}")
                with self.timer.phase(step_phase(step)):
                    self.rules[step].action(self.machine)
                self.j.mark(step, Phase.DONE)
        except interrupts.Interrupted as e:
            e.unfinished = str(self.j.app_dir / self.j.FILE)  # unless the kind undoes the run (and says so)
            raise

    def forward(self, steps: Iterable) -> None:
        """Every step not yet done, in order (a started one runs again: each is idempotent)."""
        for s in steps:
            if not self.j.reached(s, Phase.DONE):
                self.step(s)

    def undo_steps(self, order: Sequence) -> list:
        """The undo steps of every step that started, in the kind's undo order."""
        needed = {self.rules[h["step"]].undo for h in self.j.record.history if h["step"] in self.rules}
        return [s for s in order if s in needed]

    def undo(self, order: Sequence, *, already_done: Callable[[Any], None] | None = None) -> None:
        """The undo steps not yet done (an interrupted undo resumes after its last completed step);
        `already_done` is told of each step a previous undo completed. Shielded: an interrupt
        does not stop an undo halfway."""
        with interrupts.shielded():
            for s in self.undo_steps(order):
                if not self.j.reached(s, Phase.DONE):
                    self.step(s)
                elif already_done:
                    already_done(s)

    def resume(self) -> Resume:
        """What recovery does: the rule of the step the journal stopped at (an undo stays an undo)."""
        r = self.j.record
        if getattr(r, "direction", Direction.FORWARD) == Direction.UNDO:
            return Resume.UNDO
        if r.step is None or r.step not in self.rules:
            return Resume.UNDO
        return self.rules[r.step].resume(r.phase)

    def finish(self, result: str, message: str, event: Callable[[], AuditEvent | None] | None = None) -> None:
        """Close the journal, then write the run's audit event."""
        self.j.finish(result, message)
        if event is not None:
            self.audit(event)

    def audit(self, event: Callable[[], AuditEvent | None]) -> None:
        """The one place a run is audited; a full disk must not turn a finished run into "nothing changed"."""
        try:
            e = event()
            if e is not None:
                write_event(self.state, e)
        except OSError as e:
            self.out(f"  could not write the audit log: {e.strerror or e}")


def live_run(state: StateDir, app_dir: Path) -> dict | None:
    """The unfinished run of an app that a live process is carrying out now: its pid (the lock's
    holder), kind and step (None: no run, or one a crash interrupted, which `bundle recover` finishes)."""
    pid = state.lock_holder()
    try:
        doc = StepJournal.read(app_dir) if pid else None
    except ValueError:
        doc = None
    if not doc:
        return None
    return {"pid": pid, "kind": doc.get("kind") or doc.get("action"), "step": doc.get("step"), "phase": doc.get("phase")}


def unfinished_line(st: dict, what: str) -> str:
    """`status`'s line for an app with a journal: in progress (a live pid holds the lock), or
    interrupted (`bundle recover` finishes or undoes it)."""
    op = st.get("operation")
    if op:
        return f"  {op['kind'] or 'an operation'} in progress, pid {op['pid']} (step {op['step']}: {op['phase']})"
    return f"  an interrupted {what} is pending: run `bundle recover`"


def pending(state: StateDir) -> list[str]:
    """App names with an unfinished run (a journal of any kind)."""
    apps = state.apps_root
    if not apps.exists():
        return []
    return sorted(d.name for d in apps.iterdir() if (d / JOURNAL).exists())
