"""The importer's state directory: what is installed, the audit log, staging, locks.

Layout (all under one root, default /var/lib/bundle, else $BUNDLE_STATE_DIR or --state-dir):
  lock                      flock held by the one import/rollback/recover running
  sequences/<app>.json      the anti-rollback mark: the highest sequence ever installed for that app
  installed/<app>.json      what app <app> runs (its target container, version, sequence, images, ...)
  apps/<app>/               per-application working area of the swap (journal, backups, generations,
                            stopped-by-admin.json after `bundle stop`)
  removed/<app>-<time>/     what `bundle uninstall` kept: the final data backup and the last records
  staging/<random>/         a patched layer's patch and rebuilt layer during an import, removed afterwards
  metrics/bundle.prom       Prometheus metrics (docs/metrics.md) unless --metrics-file says where
  registry-tags.json        which app pushed each registry tag (importer.pushes)
  audit.log                 append-only JSON lines, one per import/rollback/recover result

Whoever can write the state dir decides what root's `recover` removes and restores, so it is
checked before anything in it is read, like OpenSSH's StrictModes: the state dir and every
directory above it must be owned by the running user or root and not writable by group or
others; a root-owned sticky directory (/tmp) is a safe ancestor, since nobody else can replace
what root made inside it. State files are opened with O_NOFOLLOW and created with O_EXCL
(bundlecore.fsutil), so a planted symlink cannot redirect a read or a write.

Everything is keyed by the bundle's app name (`manifest.name`); the target container's name is
the installed record's `container` property. Layout 1 keyed installed/ and apps/ by container
name and kept owners/<container>.json; it is migrated on first use (`migrate_layout`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from bundlecore.errors import EnvironmentProblem
from bundlecore.fsutil import append_line_durably, atomic_write_json, open_nofollow, read_bytes_nofollow
from bundlecore.release import ContainerTarget, installed_kind

DEFAULT_STATE_DIR = "/var/lib/bundle"


def highest_sequence_after(installed: dict | None, sequence) -> int | None:
    """The installed record's highest_sequence once `sequence` is installed over `installed`."""
    rec = installed or {}
    return max([s for s in (rec.get("highest_sequence"), rec.get("sequence"), sequence) if isinstance(s, int)],
               default=None)


def default_state_dir() -> Path:
    return Path(os.environ.get("BUNDLE_STATE_DIR") or DEFAULT_STATE_DIR)


class UnsafeStateDir(EnvironmentProblem):
    """The state dir, or a directory above it, can be changed by someone other than us or root."""


def unsafe_reason(st: os.stat_result, uid: int, *, is_ancestor: bool) -> str | None:
    """Why a directory with this lstat is not safe to hold (or lead to) the state dir, else None."""
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid not in (uid, 0):
        return f"owned by uid {st.st_uid}, not by uid {uid} or root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if is_ancestor and st.st_uid == 0 and st.st_mode & stat.S_ISVTX:
            return None  # /tmp: root-owned and sticky, nobody else can replace what root made in it
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_state_dir(root: Path, uid: int | None = None) -> Path:
    """The real path of `root` once it and every directory above it are safe (raises UnsafeStateDir).
    A state dir not created yet is fine if its nearest existing ancestor chain is safe."""
    uid = os.geteuid() if uid is None else uid
    real = Path(os.path.realpath(root))
    path, is_ancestor = real, False
    while True:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise UnsafeStateDir(f"unsafe state dir {root}: cannot check {path}: {e.strerror}") from None
        if st is not None:
            why = unsafe_reason(st, uid, is_ancestor=is_ancestor)
            if why:
                where = "" if path == real else f" (its ancestor {path})"
                raise UnsafeStateDir(f"unsafe state dir {root}{where}: {why}")
        if path.parent == path:
            return real
        path, is_ancestor = path.parent, True


class StateDir:
    """One importer state directory (created 0700 on first use), checked before first use."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root else default_state_dir()
        self.real_root = check_state_dir(self.root)
        if self.root.is_dir():
            self._migrate()

    @property
    def identity(self) -> str:
        """sha256 of the state dir's real path: the label that marks helpers this state dir made."""
        return hashlib.sha256(str(self.real_root).encode()).hexdigest()

    def read_json(self, path: Path) -> dict | None:
        """A state file's JSON (never through a symlink), or None if it does not exist."""
        return _json_or_none(path)

    def ensure(self) -> "StateDir":
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise EnvironmentProblem(f"cannot create state dir {self.root}: {e.strerror}") from e
        self._migrate()
        return self

    def _migrate(self) -> None:
        """Bring a layout-1 state dir to the current layout, once, under the lock (see migrate_layout)."""
        if not needs_migration(self.root):
            return
        fd = _open_lock_file(self.root / "lock")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EnvironmentProblem(f"the state dir {self.root} needs its one-time migration, but another "
                                         f"bundle operation holds its lock; try again when it ends") from None
            migrate_layout(self.root)
        finally:
            os.close(fd)

    # -- what is installed -------------------------------------------------------------
    def installed_path(self, app: str) -> Path:
        return self.root / "installed" / f"{app}.json"

    def installed(self, app: str) -> dict | None:
        """The installed record of app `app`, or None if nothing is installed for it."""
        return self.read_json(self.installed_path(app))

    def record_installed(self, app: str, record: dict) -> None:
        self.ensure()
        self.installed_path(app).parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write_json(self.installed_path(app), record)

    def installed_apps(self) -> list[str]:
        d = self.root / "installed"
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    def container_of(self, app: str) -> str:
        """The target container of `app` (its installed record's `container`; the app name if unknown)."""
        return container_of(app, self.installed(app))

    def app_of_container(self, container: str) -> str | None:
        """The app whose installed record names `container` as its target, if any."""
        for app in self.installed_apps():
            if self.container_of(app) == container:
                return app
        return None

    def highest_sequence(self, name: str) -> int | None:
        """The anti-rollback high-water mark: the largest sequence ever installed for app `name`."""
        rec = self.read_json(self.root / "sequences" / f"{name}.json")
        return None if rec is None else rec["highest_sequence"]

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
        fd = _open_lock_file(self.root / "lock")
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

    def lock_holder(self) -> int | None:
        """The pid of the live process holding the lock now (None: nobody). Read from the kernel's
        table of flock locks (/proc/locks), not from the pid the lock file remembers: a process that
        died holds nothing, and looking never takes the lock (which would refuse a starting import)."""
        try:
            st = os.stat(self.root / "lock", follow_symlinks=False)
            table = Path("/proc/locks").read_text()
        except OSError:
            return None
        return flock_holder(table, os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)

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


def flock_holder(table: str, major: int, minor: int, inode: int) -> int | None:
    """The pid holding a flock on the file (major, minor, inode) in a /proc/locks table; waiters
    (`->` lines) hold nothing. A line: `1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146448 0 EOF`."""
    for line in table.splitlines():
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[5] == f"{major:02x}:{minor:02x}:{inode}" and f[4].isdigit():
            return int(f[4])
    return None


def container_of(app: str, record: dict | None) -> str:
    return (record or {}).get("container") or app


# -- layout migration -------------------------------------------------------------------------
MIGRATION_PLAN = "migration.json"
JOURNAL = "journal.json"  # a journaled run in progress, of any kind (importer.steps)
JOURNALS = (JOURNAL, "last-swap.json")


def _is_layout1(record: dict | None) -> bool:
    """A container record of layout 1: no `container` (layout 2 writes it into every container
    record). Swarm service records (`kind` service) are keyed by service name and never migrate."""
    return record is not None and "container" not in record and installed_kind(record) == ContainerTarget.KIND


def old_layout_keys(root: Path) -> set[str]:
    """Layout-1 keys. Journals are not rewritten: one without `app` belongs to the app of the
    directory it is in."""
    d = root / "installed"
    return {p.stem for p in d.glob("*.json") if _is_layout1(_json_or_none(p))} if d.is_dir() else set()


def needs_migration(root: Path) -> bool:
    return (root / MIGRATION_PLAN).exists() or (root / "owners").exists() or bool(old_layout_keys(root))


def app_of_old_key(root: Path, key: str) -> str:
    """Layout 1: the app that installed container `key`: its owner record, else the bundle named in
    its journals, else the container name itself."""
    owner = _json_or_none(root / "owners" / f"{key}.json") or {}
    if owner.get("app"):
        return owner["app"]
    for f in JOURNALS:
        b = (_json_or_none(root / "apps" / key / f) or {}).get("bundle") or {}
        if b.get("name"):
            return b["name"]
    return key


def migrate_layout(root: Path) -> dict[str, str]:
    """Layout 1 -> 2: re-key installed/<container>.json and apps/<container>/ by app name (the record
    gets `container`) and fold owners/<container>.json into it.

    Atomic per file and idempotent: the container -> app map is written first (migration.json) and
    reused after a crash, every move is a rename or an atomic write that is skipped once done, and
    the plan file is removed last. A map that would merge two containers into one app, or move
    onto a key in use, is refused before anything moves. Returns the map used."""
    plan_path = root / MIGRATION_PLAN
    mapping = _json_or_none(plan_path)
    if mapping is None:
        mapping = {k: app_of_old_key(root, k) for k in sorted(old_layout_keys(root))}
        targets = list(mapping.values())

        def taken(a: str) -> bool:  # state of another container, or of an app already in layout 2
            return a in mapping or (root / "installed" / f"{a}.json").exists() or (root / "apps" / a).exists()
        clash = sorted({a for k, a in mapping.items() if targets.count(a) > 1 or (a != k and taken(a))})
        if clash:
            raise EnvironmentProblem(f"cannot migrate state dir {root}: app name(s) {', '.join(clash)} would take "
                                     f"the place of another container's state; move them by hand")
        if mapping:
            atomic_write_json(plan_path, mapping)
    for key, app in mapping.items():
        _migrate_one(root, key, app)
    shutil.rmtree(root / "owners", ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(plan_path)
    return mapping


def _migrate_one(root: Path, container: str, app: str) -> None:
    old, new = root / "installed" / f"{container}.json", root / "installed" / f"{app}.json"
    rec = _json_or_none(old)
    if _is_layout1(rec):
        atomic_write_json(new, {**rec, "app": app, "container": container})
        if app != container:
            os.unlink(old)
    src, dst = root / "apps" / container, root / "apps" / app
    if src != dst and src.is_dir() and not dst.exists():
        os.rename(src, dst)


def _json_or_none(path: Path):
    try:
        return json.loads(read_bytes_nofollow(path))
    except FileNotFoundError:
        return None


def _open_lock_file(path: Path) -> int:
    """The lock file: created with O_EXCL, else opened as it is, never through a symlink, and only
    if it is a plain file of ours (a hard link to another file is refused: we truncate it)."""
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        fd = open_nofollow(path, os.O_RDWR | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid not in (os.geteuid(), 0):
        os.close(fd)
        raise UnsafeStateDir(f"unsafe state file {path}: not a plain file of this user")
    return fd
