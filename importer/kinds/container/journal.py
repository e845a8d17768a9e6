"""The durable record of one swap: which step it is at, and everything needed to finish or undo it.

The journal is the swap's state machine state, written by the one step runner (importer.steps:
"started" before a step runs, "done" after, the crash hook of the kill -9 matrix). `recover()`
reads it and brings the system back to a healthy version. A finished swap's record is kept in
`last-swap.json` (what `bundle status` shows as the last result).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar
from enum import StrEnum
from pathlib import Path

from bundlecore.fsutil import atomic_write_json
from bundlecore.release import Result
from importer.audit import now
from importer.steps import Direction, StepJournal


class SwapKind(StrEnum):
    INSTALL = "install"
    UPGRADE = "upgrade"
    ROLLBACK = "rollback"
    UNINSTALL = "uninstall"


class Step(StrEnum):
    """Every step a journal can record (the values are what the journal file says)."""

    BEGIN = "begin"
    STOP_OLD = "stop_old"
    RENAME_OLD = "rename_old"
    BACKUP = "backup"
    CREATE_NEW = "create_new"
    RESTORE_TARGET = "restore_target"
    RENAME_TARGET = "rename_target"
    START_NEW = "start_new"
    PROBATION = "probation"
    COMMIT = "commit"
    PRUNE = "prune"
    REMOVE_NEW = "remove_new"
    RESTORE_DATA = "restore_data"
    RENAME_BACK = "rename_back"
    START_OLD = "start_old"
    REMOVE_OLD = "remove_old"
    REMOVE_VOLUMES = "remove_volumes"
    CLEAR_STATE = "clear_state"


S = Step
# Forward steps of each kind of swap, in order. COMMIT is the point after which recovery
# finishes the swap instead of undoing it (the new version passed its health gate). PROBATION
# (a no-op unless the health settings ask for it) watches the new version with the old one still
# parked; recovery resumes its window (same deadline, same restart base) before committing.
FORWARD_STEPS: dict[SwapKind, list[Step]] = {
    SwapKind.INSTALL: [S.BEGIN, S.CREATE_NEW, S.BACKUP, S.START_NEW, S.PROBATION, S.COMMIT, S.PRUNE],
    SwapKind.UPGRADE: [S.BEGIN, S.STOP_OLD, S.RENAME_OLD, S.BACKUP, S.CREATE_NEW, S.START_NEW, S.PROBATION,
                       S.COMMIT, S.PRUNE],
    SwapKind.ROLLBACK: [S.BEGIN, S.STOP_OLD, S.RENAME_OLD, S.BACKUP, S.RESTORE_TARGET, S.RENAME_TARGET,
                        S.START_NEW, S.PROBATION, S.COMMIT, S.PRUNE],
}
# Steps of the undo path (a failed or interrupted swap before commit), in order.
UNDO_STEPS: list[Step] = [S.REMOVE_NEW, S.RESTORE_DATA, S.RENAME_BACK, S.START_OLD]
# `bundle uninstall` (importer.kinds.container.uninstall): a complete final BACKUP is its point of no return;
# before it, the undo is START_OLD alone.
UNINSTALL_STEPS: list[Step] = [S.BEGIN, S.STOP_OLD, S.BACKUP, S.REMOVE_OLD, S.REMOVE_VOLUMES, S.CLEAR_STATE]
del S


# -- the records the journal holds --------------------------------------------------------
# Each reads and writes the journal's JSON keys as they have always been. A field marked
# _optional exists only in some kinds of swap: it is left out of the JSON when None.

def _optional(default=None):
    return field(default=default, metadata={"optional": True})


class _Record:
    __dataclass_fields__: ClassVar[dict[str, Any]]  # a base of dataclasses only

    @classmethod
    def from_json(cls, data: dict):
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.metadata.get("optional"):
                continue
            out[f.name] = v.to_json() if isinstance(v, _Record) else v
        return out


@dataclass
class DisplacedContainer(_Record):
    """The container being replaced: enough to park it, back up its data and put it back."""

    id: str
    generation: int
    parked_name: str
    image_id: str
    image_ref: str | None
    version: str | None
    sequence: int | None
    was_running: bool
    restart_policy: dict
    mounts: list[dict]          # importer.backup.data.backed_up_mounts
    backup_dir: str             # relative to the app dir
    bundle: dict | None = _optional()  # rollback only: the bundle it came from
    # Its own health settings (from the bundle that installed it; None for an adopted container:
    # the image's HEALTHCHECK or "still running" decides). The undo checks it with these.
    health: dict | None = _optional()

    @property
    def backup_source(self) -> str:
        return self.id


@dataclass
class PreexistingData(_Record):
    """First install: data already in the volumes/bind mounts before the new container existed."""

    named_volumes: list[str]
    mounts: list[dict]
    backup_dir: str
    container_id: str | None = _optional()  # the created container the backup reads through

    @property
    def backup_source(self) -> str | None:
        return self.container_id


@dataclass
class IncomingContainer(_Record):
    """The version being put in place: a container to create (install, upgrade) or a parked
    generation to put back (rollback)."""

    id: str | None
    image_id: str
    image_ref: str | None
    generation: int
    version: str | None
    sequence: int | None
    bundle: dict | None
    create: dict | None = _optional()          # install/upgrade: importer.kinds.container.config body
    parked_name: str | None = _optional()      # rollback: where it is parked
    backup_dir: str | None = _optional()       # rollback: the data it had when displaced
    restart_policy: dict | None = _optional()  # rollback: its policy before it was parked


@dataclass
class JournalRecord(_Record):
    """Everything in journal.json (and, once finished, last-swap.json)."""

    kind: SwapKind
    name: str
    steps: list[Step]
    keep: int
    health: dict | None
    bundle: dict
    helper_image: str | None
    t0: float
    installed_before: dict | None
    generations_before: dict
    new: IncomingContainer | None = None
    old: DisplacedContainer | None = None
    preexisting: PreexistingData | None = _optional()
    created_volumes: list[str] | None = _optional()
    history: list[dict] = field(default_factory=list)
    # Marks the helpers and the new container this swap made (importer.backup.data.HelperOwner):
    # recovery acts only on containers that carry it.
    swap_id: str | None = _optional()
    direction: Direction = Direction.FORWARD
    started_at: str | None = _optional()
    pid: int | None = _optional()
    step: Step | None = _optional()
    phase: str | None = _optional()
    failure: str | None = _optional()
    operator_needed: str | None = _optional()
    data_restored: bool | None = _optional()
    # importer.backup.data.fingerprint_mounts of the data side when the new version was stopped
    # (remove_new) and right after the restore: no restore overwrites data written since.
    fingerprint_stopped: dict | None = _optional()
    fingerprint_restored: dict | None = _optional()
    # Probation: its end (wall clock, seconds since the epoch) and the RestartCount it counts from.
    probation_until: float | None = _optional()
    probation_base_restarts: int | None = _optional()
    result: str | None = _optional()
    message: str | None = _optional()
    finished_at: str | None = _optional()
    app: str | None = _optional()  # the app whose state this is (`name` is its container); None: same name
    failed_logs: str | None = _optional()  # the removed new container's `docker logs` tail (relative path)
    uninstall: dict | None = _optional()  # uninstall only: keep_data, volumes, parked, removed_to
    # The systemd unit the commit writes (importer.units): {"path"}, and once written its "mark" (an
    # undo after the commit puts the unit it replaced back).
    unit: dict | None = _optional()

    @property
    def key(self) -> str:
        """The app name the state dir keys this swap by."""
        return self.app or self.name

    @classmethod
    def from_json(cls, data: dict) -> "JournalRecord":
        r = super().from_json(data)
        r.kind = SwapKind(r.kind)
        r.steps = [Step(s) for s in r.steps]
        r.direction = Direction(r.direction)
        r.step = Step(r.step) if r.step is not None else None
        r.new = IncomingContainer.from_json(r.new) if r.new is not None else None
        r.old = DisplacedContainer.from_json(r.old) if r.old is not None else None
        r.preexisting = PreexistingData.from_json(r.preexisting) if r.preexisting is not None else None
        return r

    @property
    def data_side(self) -> DisplacedContainer | PreexistingData:
        """Whose data a failure must restore: the old container's, or (first install) what was
        in the volumes and bind mounts before."""
        side = self.old if self.old is not None else self.preexisting
        assert side is not None  # a swap journal records one or the other
        return side


class SwapJournal(StepJournal):
    """The journal file of one application's swap in progress (apps/<name>/journal.json)."""

    LAST = "last-swap.json"

    def __init__(self, app_dir: Path, record: JournalRecord):
        super().__init__(app_dir, record)
        self.record: JournalRecord = record

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def start(cls, app_dir: Path, record: JournalRecord) -> "SwapJournal":
        """A new journal, with its disk space reserved before the swap touches anything."""
        record.started_at = now()
        record.pid = os.getpid()
        j = cls(app_dir, record)
        j.reserve_space()
        return j

    # -- space for the undo records -------------------------------------------------------
    # A full disk (say, the backup filled it) must not stop the journal from recording the undo:
    # RESERVE_BYTES of real blocks are written before the old container is stopped, and given
    # back the first time a journal write finds no space.
    RESERVE = "journal.reserve"
    RESERVE_BYTES = 1 << 20

    def reserve_space(self) -> None:
        path = self.app_dir / self.RESERVE
        with open(path, "wb") as f:
            for _ in range(self.RESERVE_BYTES // (1 << 16)):
                f.write(b"\0" * (1 << 16))  # written, not truncated: a sparse file reserves nothing
            f.flush()
            os.fsync(f.fileno())

    def _release_reserve(self) -> bool:
        try:
            os.unlink(self.app_dir / self.RESERVE)
            return True
        except FileNotFoundError:
            return False

    def _write(self, name: str, doc: dict) -> None:
        try:
            atomic_write_json(self.app_dir / name, doc)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._release_reserve():
                raise
            atomic_write_json(self.app_dir / name, doc)

    @classmethod
    def load(cls, app_dir: Path) -> "SwapJournal | None":
        data = cls.read(app_dir)
        if data is None:
            return None
        record = JournalRecord.from_json(data)
        if record.app is None:  # written before the state was keyed by app: its directory is its app
            record.app = Path(app_dir).name
        return cls(app_dir, record)

    def last_record(self, result: str, message: str) -> dict:
        self.record.result = status_text(Result(result), self.record.kind)
        self.record.message = message
        self.record.finished_at = now()
        return self.record.to_json()

    def finish(self, result: str, message: str = "") -> None:
        """Close the swap: keep its record as the last result, then drop the live journal."""
        super().finish(result, message)
        self._release_reserve()


# What `bundle status` shows as a finished swap's result (last-swap.json `result`): display text made
# from the Result the swap ended in, never read back into one.
_STATUS_TEXT = {Result.DONE: "installed", Result.ROLLED_BACK: "rolled back", Result.INSTALL_UNDONE: "rolled back",
                Result.OPERATOR_NEEDED: "operator needed"}
_UNINSTALL_STATUS_TEXT = {Result.DONE: "uninstalled", Result.NOT_DONE: "not uninstalled"}


def status_text(result: Result, kind: "SwapKind") -> str:
    return (_UNINSTALL_STATUS_TEXT if kind == SwapKind.UNINSTALL else _STATUS_TEXT).get(result, str(result))
