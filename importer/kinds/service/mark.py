"""Where a staged service release stands between its first stage and its last: its mark
(apps/<target>/release.json, `ReleaseMark`), the phase that mark means (`Phase`) and the next
action an operator is told. Read by status, promote, abort, recover and `--resume`; written only
by the release's run (importer.kinds.service.release) and its controls (importer.kinds.service.control)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum

from bundlecore.fsutil import atomic_write_json
from bundlecore.release import PROMOTE
from bundlecore.timeutil import format_ts, parse_ts, plus, utc_now
from importer.state import StateDir

TIMED = "timed"  # ReleaseMark.pause of a stage's timed pause (PROMOTE: until `bundle promote`)
RELEASE = "release.json"


def release_path(state: StateDir, name: str):
    return state.app_dir(name) / RELEASE


@dataclass
class ReleaseMark:
    """apps/<target>/release.json: a release between its first stage and its last, written before
    each stage acts (`running`: the stage being rolled or watched) and when it stops for a long
    soak (`resume_after`). A kill -9 leaves it `running`: `recover` rolls that stage back and
    leaves the release stopped after the stages before it, for `--resume` (recover_release)."""

    image_id: str
    version: str | None
    done: int                                   # stages completed
    stages: int
    resume_after: str | None = None             # stopped: --resume after this time
    running: int | None = None                  # the stage (1-based) in progress; None: stopped
    app: str | None = None
    image: str | None = None                    # the pinned reference the release rolls out
    services: list[list[str]] = field(default_factory=list)   # each stage's services
    before: dict[str, str | None] = field(default_factory=dict)  # service -> image before the release
    watch: list[float] = field(default_factory=list)  # seconds each stage is watched (soak, analysis) inline
    replicas: list = field(default_factory=list)  # each stage's canary replicas as signed (None: rolled whole)
    pause: str | None = None                    # stopped by a stage's pause: PROMOTE, or TIMED (until resume_after)
    aborting: bool = False                      # `bundle abort` under way: recover finishes it
    target: dict = field(default_factory=dict)  # the target as journaled: `bundle promote` rolls the rest with it
    record: dict = field(default_factory=dict)  # the installed record each service of the release gets

    @classmethod
    def load(cls, state: StateDir, name: str) -> "ReleaseMark | None":
        doc = pending_release(state, name)
        return cls(**doc) if doc is not None else None

    def save(self, state: StateDir, name: str) -> None:
        state.ensure_app_dir(name)
        atomic_write_json(release_path(state, name), asdict(self))

    def canary_replicas(self, k: int):
        """Stage k's canary replicas as signed; None: it rolls its services whole."""
        return self.replicas[k] if k < len(self.replicas) else None

    def stop(self, state: StateDir, name: str, done: int) -> None:
        """Stage `done`+1 failed or was rolled back: the release is stopped after the stages before
        it (`--resume` or `bundle promote` retries it); with none done, nothing of it runs and the mark goes."""
        if done == 0:
            forget_release(state, name)
            return
        self.done, self.running, self.resume_after, self.pause = done, None, format_ts(utc_now()), None
        self.save(state, name)

    def enter_pause(self, state: StateDir, name: str, done: int, pause: int | str,
                    start: datetime | None = None) -> int:
        """Stopped after stage `done` by its pause (from `start`, e.g. the end of a long soak, else
        now); journaled before the release waits. The pause's seconds (0: until promote)."""
        seconds = 0 if pause == PROMOTE else int(pause)
        self.done, self.running, self.pause = done, None, PROMOTE if pause == PROMOTE else TIMED
        self.resume_after = format_ts(plus(start or utc_now(), seconds))
        self.save(state, name)
        return seconds


class Phase(StrEnum):
    """Where a release between its first stage and its last stands (status, promote, abort, recover)."""

    INTERRUPTED = "interrupted"  # killed inside a stage: `bundle recover`
    ABORTING = "aborting"        # killed inside `bundle abort`: `bundle recover` finishes the abort
    PAUSED = "paused"            # a stage's pause: `bundle promote` (or its end, then --resume)
    SOAKING = "soaking"          # stopped for a long soak: --resume once it is over
    STOPPED = "stopped"          # stopped after a stage (soak over, or a stage rolled back): --resume or promote


def phase_of(mark: dict) -> Phase:
    if mark.get("aborting"):
        return Phase.ABORTING
    if mark.get("running"):
        return Phase.INTERRUPTED
    if mark.get("pause"):
        return Phase.PAUSED
    return Phase.SOAKING if utc_now() < parse_ts(mark["resume_after"]) else Phase.STOPPED


def next_action(mark: dict) -> str:
    """Where a release stands and what to run next (status, the import's and promote's last line)."""
    app, n, k, until = mark.get("app") or "APP", mark["stages"], mark["done"], mark.get("resume_after")
    version = f"release {mark['version']} of {app}"
    phase = phase_of(mark)
    if phase is Phase.ABORTING:
        return f"the abort of {version} was interrupted: run `bundle recover` to finish it"
    if phase is Phase.INTERRUPTED:
        return f"{version} was interrupted in stage {mark['running']} of {n}: run `bundle recover`"
    if phase is Phase.PAUSED and mark["pause"] == PROMOTE:
        return (f"{version} is paused after stage {k} of {n}: continue with `bundle promote {app}`, "
                f"or roll it back with `bundle abort {app}`")
    if phase is Phase.PAUSED:
        over = " (over)" if until and utc_now() >= parse_ts(until) else ""
        return (f"{version} is paused after stage {k} of {n} until {until}{over}: continue with `bundle promote "
                f"{app}` (or `bundle import BUNDLE --resume` after {until}), or roll it back with `bundle abort {app}`")
    return (f"{version} is stopped after stage {k} of {n}: continue with `bundle import BUNDLE --resume` after "
            f"{until}, or roll it back with `bundle abort {app}`")


def pending_release(state: StateDir, name: str) -> dict | None:
    try:
        return json.loads(release_path(state, name).read_text())
    except FileNotFoundError:
        return None


def release_of_app(state: StateDir, app: str) -> tuple[str, ReleaseMark] | None:
    """(the target name it is kept under, the mark) of app `app`'s release between its first stage
    and its last; `app` may also be that target's name."""
    if not state.apps_root.exists():
        return None
    for d in sorted(state.apps_root.iterdir()):
        mark = pending_release(state, d.name) if d.is_dir() else None
        if mark and (mark.get("app") == app or d.name == app):
            return d.name, ReleaseMark(**mark)
    return None


def forget_release(state: StateDir, name: str) -> None:
    try:
        os.unlink(release_path(state, name))
    except FileNotFoundError:
        pass


def pause_over(mark: ReleaseMark) -> str:
    """The line a continued pause gets: when it ended (or that a person cut it short)."""
    k = mark.done
    if mark.pause is None:  # stopped after a stage (its long soak over, or a stage after it rolled back)
        return f"stage {k} of {mark.stages} done before; continuing with stage {k + 1}"
    if mark.pause == PROMOTE:
        return f"stage {k} of {mark.stages}: promoted; continuing with stage {k + 1}"
    until = mark.resume_after or ""
    if until and utc_now() < parse_ts(until):
        return f"stage {k} of {mark.stages}: its pause until {until} cut short by promote; continuing with stage {k + 1}"
    return f"stage {k} of {mark.stages}: its pause ended at {until}; continuing with stage {k + 1}"


def installed_versions(state: StateDir, stages: list[list[str]]) -> dict[str, str | None]:
    """Each service's installed version (what the import's audit event records)."""
    return {s: (state.installed(s) or {}).get("version") for services in stages for s in services}
