"""The durable record of one swap: which step it is at, and everything needed to finish or undo it.

The journal is the swap's state machine state. Every step is written (fsync, atomic rename) as
"started" before it runs and as "done" after it ran, so a process killed at any point leaves a
journal that says what may have happened; `recover()` reads it and brings the system back to a
healthy version. A finished swap's journal is moved to `last-swap.json` (what `bundle status`
shows as the last result) and removed from `journal.json`, which therefore exists only while a
swap is unfinished.

Test hook: BUNDLE_CRASH_AT=<step> (and BUNDLE_CRASH_WHEN=before|after, default after) kills
the process with SIGKILL right after that step's record is durable, to prove crash safety.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from bundlecore.fsutil import atomic_write_json
from bundlecore.timeutil import format_ts, utc_now

# Forward steps of each kind of swap, in order. "commit" is the point after which recovery
# finishes the swap instead of undoing it (the new version passed its health gate).
FORWARD_STEPS = {
    "install": ["begin", "create_new", "backup", "start_new", "commit", "prune"],
    "upgrade": ["begin", "stop_old", "rename_old", "backup", "create_new", "start_new", "commit", "prune"],
    "rollback": ["begin", "stop_old", "rename_old", "backup", "restore_target", "rename_target",
                 "start_new", "commit", "prune"],
}
# Steps of the undo path (a failed or interrupted swap before commit), in order.
UNDO_STEPS = ["remove_new", "restore_data", "rename_back", "start_old"]
ALL_STEPS = sorted({s for steps in FORWARD_STEPS.values() for s in steps} | set(UNDO_STEPS))


def now() -> str:
    return format_ts(utc_now())


class SwapJournal:
    """The journal file of one application's swap in progress (apps/<name>/journal.json)."""

    FILE = "journal.json"
    LAST = "last-swap.json"

    def __init__(self, app_dir: Path, data: dict):
        self.app_dir = Path(app_dir)
        self.data = data

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def start(cls, app_dir: Path, data: dict) -> "SwapJournal":
        data = dict(data)
        data.setdefault("history", [])
        data.setdefault("direction", "forward")
        data["started_at"] = now()
        data["pid"] = os.getpid()
        j = cls(app_dir, data)
        return j

    @classmethod
    def load(cls, app_dir: Path) -> "SwapJournal | None":
        path = Path(app_dir) / cls.FILE
        try:
            return cls(app_dir, json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    @classmethod
    def last(cls, app_dir: Path) -> dict | None:
        try:
            return json.loads((Path(app_dir) / cls.LAST).read_text())
        except FileNotFoundError:
            return None

    def finish(self, result: str, message: str = "") -> None:
        """Close the swap: keep its record as the last result, then drop the live journal."""
        self.data["result"] = result
        self.data["message"] = message
        self.data["finished_at"] = now()
        atomic_write_json(self.app_dir / self.LAST, self.data)
        try:
            os.unlink(self.app_dir / self.FILE)
        except FileNotFoundError:
            pass

    # -- steps ---------------------------------------------------------------------------
    def save(self) -> None:
        atomic_write_json(self.app_dir / self.FILE, self.data)

    def mark(self, step: str, phase: str, **facts) -> None:
        """Record that `step` is "started" or "done" (with any facts learned), durably."""
        self.data.update(facts)
        self.data["step"] = step
        self.data["phase"] = phase
        self.data["history"].append({"step": step, "phase": phase, "at": now()})
        self.save()
        _crash_hook(step, "before" if phase == "started" else "after")

    def reached(self, step: str, phase: str = "started") -> bool:
        """Whether `step` was ever recorded in `phase` (a started step may have partly run)."""
        return any(h["step"] == step and h["phase"] == phase for h in self.data["history"])

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def direction(self) -> str:
        return self.data.get("direction", "forward")


def _crash_hook(step: str, when: str) -> None:
    """SIGKILL ourselves at the step named by BUNDLE_CRASH_AT (tests of crash safety only)."""
    at = os.environ.get("BUNDLE_CRASH_AT")
    if not at or at != step:
        return
    if os.environ.get("BUNDLE_CRASH_WHEN", "after") != when:
        return
    os.kill(os.getpid(), signal.SIGKILL)
