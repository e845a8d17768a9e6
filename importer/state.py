"""The importer's state directory: what is installed, the audit log, staging, locks.

Layout (all under one root, default /var/lib/bundle, else $BUNDLE_STATE_DIR or --state-dir):
  lock                      flock held by the one import/rollback/recover running
  sequences/<app>.json      the anti-rollback mark: the highest sequence ever installed for that app
  installed/<name>.json     what runs as container <name> (version, sequence, images, generation, ...)
  apps/<name>/              per-application working area of the swap (journal, backups, generations)
  staging/<random>/         verified payload of the import in progress, removed afterwards
  audit.log                 append-only JSON lines, one per import/rollback/recover result
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from bundlecore.errors import EnvironmentProblem
from bundlecore.fsutil import append_line_durably, atomic_write_json

DEFAULT_STATE_DIR = "/var/lib/bundle"


def highest_sequence_after(installed: dict | None, sequence) -> int | None:
    """The installed record's highest_sequence once `sequence` is installed over `installed`."""
    rec = installed or {}
    return max([s for s in (rec.get("highest_sequence"), rec.get("sequence"), sequence) if isinstance(s, int)],
               default=None)


def default_state_dir() -> Path:
    return Path(os.environ.get("BUNDLE_STATE_DIR") or DEFAULT_STATE_DIR)


class StateDir:
    """One importer state directory (created 0700 on first use)."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root else default_state_dir()

    def ensure(self) -> "StateDir":
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise EnvironmentProblem(f"cannot create state dir {self.root}: {e.strerror}") from e
        return self

    # -- what is installed -------------------------------------------------------------
    def installed_path(self, name: str) -> Path:
        return self.root / "installed" / f"{name}.json"

    def installed(self, name: str) -> dict | None:
        """The installed record of `name`, or None if nothing was ever installed."""
        try:
            return json.loads(self.installed_path(name).read_text())
        except FileNotFoundError:
            return None

    def record_installed(self, name: str, record: dict) -> None:
        self.ensure()
        self.installed_path(name).parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write_json(self.installed_path(name), record)

    def highest_sequence(self, name: str) -> int | None:
        """The anti-rollback high-water mark: the largest sequence ever installed for app `name`."""
        try:
            return json.loads((self.root / "sequences" / f"{name}.json").read_text())["highest_sequence"]
        except FileNotFoundError:
            return None

    def raise_sequence(self, name: str, sequence: int) -> None:
        """Raise the mark of app `name` to `sequence` (never lowers it; safe to repeat)."""
        current = self.highest_sequence(name)
        if current is not None and current >= sequence:
            return
        self.ensure()
        (self.root / "sequences").mkdir(mode=0o700, exist_ok=True)
        atomic_write_json(self.root / "sequences" / f"{name}.json", {"name": name, "highest_sequence": sequence})

    # -- per-application working area ----------------------------------------------------
    @property
    def apps_root(self) -> Path:
        return self.root / "apps"

    def app_dir(self, name: str) -> Path:
        """Where the swap keeps `name`'s journal, generations and backups (a path; creates nothing)."""
        return self.apps_root / name

    def ensure_app_dir(self, name: str) -> Path:
        """app_dir(name), created 0700 (for writers)."""
        d = self.app_dir(name)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return d

    # -- audit ---------------------------------------------------------------------------
    def audit(self, event: dict) -> None:
        self.ensure()
        append_line_durably(self.root / "audit.log", json.dumps(event, sort_keys=True))

    # -- lock ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """One import/rollback/recover at a time per state dir; a second one is refused."""
        self.ensure()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                raise EnvironmentProblem(
                    f"another bundle operation holds the lock on {self.root} (pid {holder}); try again when it ends"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)

    # -- staging -------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self):
        """A private directory for verified payload, removed afterwards whatever happens."""
        self.ensure()
        base = self.root / "staging"
        base.mkdir(mode=0o700, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix="import-", dir=base))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
