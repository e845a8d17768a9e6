"""What the uninstall of every target kind shares: the journaled run, its end, the state moved aside.

A kind's uninstall (importer.kinds.container.uninstall, importer.kinds.compose.uninstall) declares
its own steps and undo on the step runner (importer.steps) and its own audit event; this base gives
it the one contract both keep. A complete final backup is the point of no return: a failure or an
interrupt before it is undone (everything as it was, exit 1), after it the uninstall is left for
`bundle recover` to finish (exit 5), since the data is safe in the backup. Nothing of the state dir is
deleted: apps/<app>/ (with the final backup) is renamed to the journal's `removed_to`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from bundlecore.errors import EnvironmentProblem, OperatorNeeded, reason
from bundlecore.release import Result
from importer.audit import AuditEvent
from importer.state import StateDir
from importer.steps import Resume, StepRunner


class UninstallRun:
    """One journaled uninstall of an app. A kind's subclass sets `client`, `state`, `j` (its journal),
    `r` (its record, whose `uninstall` dict names `removed_to`), `out`, `runner`, `recovering`, and
    gives `app`, `what` (the name "as it was" speaks of), `forward_steps`, `undo` and `_event`."""

    client: Any
    state: StateDir
    j: Any
    r: Any
    out: Callable[[str], None]
    runner: StepRunner
    recovering: bool

    @property
    def app(self) -> str:
        raise NotImplementedError

    @property
    def what(self) -> str:
        raise NotImplementedError

    def forward_steps(self) -> Iterable:
        raise NotImplementedError

    def undo(self, why: str) -> None:
        """Everything back as it was; raises EnvironmentProblem (nothing removed) or OperatorNeeded."""
        raise NotImplementedError

    def _event(self, result: Result, message: str) -> AuditEvent:
        raise NotImplementedError

    @property
    def removed_to(self) -> Path:
        return self.state.root / self.r.uninstall["removed_to"]

    def resumes_forward(self) -> bool:
        """Recovery finishes this uninstall (its final backup is complete) instead of undoing it."""
        return self.runner.resume() == Resume.REPLAY

    def run_forward(self) -> str:
        """Every step; returns where the app's state went. A failure before the point of no return is
        undone (its EnvironmentProblem or OperatorNeeded raised), after it OperatorNeeded."""
        try:
            self.runner.forward(self.forward_steps())
        except (Exception, KeyboardInterrupt) as e:
            why = reason(e)
            if not self.resumes_forward():
                self.undo(f"the uninstall of {self.app} stopped at step {self.r.step}: {why}")
            raise OperatorNeeded(f"the uninstall of {self.app} stopped at step {self.r.step} after its final "
                                 f"backup: {why}; `bundle recover` finishes it") from e
        where = str(self.removed_to)
        self._finish(Result.DONE, f"{self.app} was uninstalled; its final backup and records are in {where}")
        return where

    def _finish(self, result: Result, message: str) -> None:
        self.runner.finish(result, message, lambda: self._event(result, message))

    def clear_state(self, _: str | None = None) -> None:
        """The installed record gone, the app's directory renamed to `removed_to` (a replay skips what
        is done)."""
        try:
            os.unlink(self.state.installed_path(self.app))
        except FileNotFoundError:
            pass
        dest = self.removed_to
        if self.j.app_dir.exists() and not dest.exists():
            dest.parent.mkdir(mode=0o700, exist_ok=True)
            os.rename(self.j.app_dir, dest)
        self.j.app_dir = dest

    def recover(self) -> list[str]:
        """Finish (final backup complete) or undo the interrupted uninstall, once its kind has checked
        that the engine matches the journal."""
        self.recovering = True
        self.out(f"recovering the interrupted uninstall of {self.app} (stopped at {self.r.step}:{self.r.phase})")
        if self.resumes_forward():
            where = self.run_forward()
            return [f"{self.app}: finished the interrupted uninstall; its final backup is in {where}"]
        try:
            self.undo(f"the uninstall of {self.app} was interrupted at {self.r.step}:{self.r.phase}")
        except EnvironmentProblem:
            return [f"{self.app}: undid the interrupted uninstall; {self.what} is as it was"]
        return []
