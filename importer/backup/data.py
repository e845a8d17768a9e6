"""Backup and exact restore of a container's mounts, through the Docker API only.

Backup: `get_archive(path)` of the STOPPED old container for every writable mount (named,
anonymous and bind, directory or single file); nothing runs, so it works for images without a
shell and whatever the host layout (remote engine, rootless, Docker Desktop). Each archive is
zstd-compressed into the state dir with its sha256 and size in `backup.json`.

Restore ("exactly its backed-up content": files the new version created are gone, files it
deleted are back) must never half-fail. A short-lived helper container mounts every mount at
`/bundle-restore/root<destination>` (the container's own layout, so nested mounts nest the same
way). Each directory backup is copied as ONE plain file into a scratch directory at the top of
its own mount and unpacked there by the helper's own tar, where a symlink is just a link (the
engine's archive upload refuses links that climb out of the mount): that is the proof. Only when
every backup unpacked are the live entries moved aside (renames, same filesystem) and the
unpacked ones moved in; then the scratch directories go. A restore that stops before that leaves
the live data untouched; one that stops during the renames keeps what it moved aside in the
scratch directory; RestoreError says which, and where the backup is.
Space: the engine's archive stream is not sparse (a 2 GiB sparse file comes as 2 GiB of zeros, and
busybox tar writes them), so the archive and its unpacked copy need twice the apparent size free
on each mount's filesystem; this is checked right after the backup (the swap is refused while
nothing needs restoring) and again before a restore writes anything. Sparse files are restored
allocated when there is room.
The helper's image is the first of: the old image, the new image, any other local image, that
can run `/bin/sh` with tar, stat and df (checked in preflight, before anything is stopped).
Every helper carries the identity of the state dir and the swap that made it (HelperOwner, set
around a swap with `helpers_owned_by`); recovery removes only the stale helpers of its own swap,
never another state dir's, nor an app container that merely carries `io.bundle.helper`.

Fingerprint (`fingerprint_mounts`): one sha256 per mount over the path, type, size, mtime,
ctime, mode and owner of every entry (the helper's find + stat), the mount root by type, mode
and owner only (the restore's scratch directory comes and goes there) and entries named
`.bundle-restore-*` at the top left out. Taken when the new version is stopped and after a
restore, it tells an undo whether anyone wrote to the data since (then it must not restore).

Limits: read-only mounts and tmpfs are not backed up (the new version cannot change them);
a single-file mount gets its content back, not its owner/mode; files under a directory mount
that hides part of another mount's tree are restored through the nesting as in the container.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shlex
import shutil
import tarfile
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from bundlecore.engine import EngineError
from bundlecore.errors import EnvironmentProblem, OperatorNeeded
from bundlecore.fsutil import atomic_write_json, fsync_dir

HELPER_LABEL = "io.bundle.helper"
STATE_LABEL = "io.bundle.state"  # sha256 of the real path of the state dir that made the container
SWAP_LABEL = "io.bundle.swap"    # the swap (journal) that made it
RESTORE_ROOT = "/bundle-restore/root"
STAGING_DIR = "/bundle-restore-staging"
# What the restore helper runs besides /bin/sh (restore_script, check_restore_space).
GO = "go"  # uploaded into STAGING_DIR once every archive is in place
HELPER_TOOLS_PROBE = ("for t in tar stat df awk mv find sort sha256sum; do command -v $t >/dev/null || exit 1; "
                      "done")


def backed_up_mounts(container_inspect: dict) -> list[dict]:
    """The mounts whose content a new version could change: writable volumes and bind mounts."""
    out = []
    for m in container_inspect.get("Mounts") or []:
        if m.get("Type") not in ("volume", "bind") or not m.get("RW", True):
            continue
        out.append({"type": m["Type"], "name": m.get("Name"), "source": m.get("Source"),
                    "destination": m["Destination"]})
    out.sort(key=lambda m: m["destination"])
    return out


def estimate_sizes(client, mounts: list[dict]) -> list[int | None]:
    """Bytes used by each mount (volumes from the engine's disk usage, bind mounts when local)."""
    sizes: dict[str, int] = {}
    if any(m["type"] == "volume" for m in mounts):
        try:
            for v in client.disk_usage().get("Volumes") or []:
                size = (v.get("UsageData") or {}).get("Size", -1)
                if size is not None and size >= 0:
                    sizes[v["Name"]] = size
        except EngineError:
            pass
    out = []
    for m in mounts:
        if m["type"] == "volume":
            out.append(sizes.get(m["name"]))
        else:
            out.append(_local_size(m["source"]))
    return out


def _local_size(path: str | None) -> int | None:
    if not path or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


# -- backup -------------------------------------------------------------------------------

def backup_mounts(client, container_id: str, mounts: list[dict], backup_dir: Path) -> dict:
    """Archive every mount of the stopped container into backup_dir; returns the manifest.

    The manifest (backup.json) is written last, so a backup without one is incomplete."""
    backup_dir = Path(backup_dir)
    if backup_dir.exists():
        shutil.rmtree(backup_dir)
    backup_dir.mkdir(mode=0o700, parents=True)
    try:
        return _write_backup(client, container_id, mounts, backup_dir)
    except (OSError, EngineError) as e:
        # A partial backup is worthless and may be what filled the disk: drop it (our own copy only).
        shutil.rmtree(backup_dir, ignore_errors=True)
        why = e.explanation if isinstance(e, EngineError) else (e.strerror or e)
        raise EnvironmentProblem(f"backing up the data into {backup_dir} failed: {why}") from e


def _write_backup(client, container_id: str, mounts: list[dict], backup_dir: Path) -> dict:
    entries = []
    for i, m in enumerate(mounts):
        fname = f"mount-{i}.tar.zst"
        stream, stat = client.get_archive(container_id, m["destination"], chunk_size=1 << 20)
        is_dir = bool(stat.get("mode", 0) & (1 << 31))  # Go's os.ModeDir
        h = hashlib.sha256()
        raw = 0
        try:
            with open(backup_dir / fname, "wb") as f:
                cctx = zstandard.ZstdCompressor(level=3, threads=-1)
                with cctx.stream_writer(cast(IO[bytes], _HashingWriter(f, h)), closefd=False) as z:
                    for chunk in stream:
                        raw += len(chunk)
                        z.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            _drain(stream)
            raise
        entries.append(dict(m, file=fname, sha256=h.hexdigest(), size=(backup_dir / fname).stat().st_size,
                            tar_bytes=raw, is_dir=is_dir, top=stat.get("name")))
    manifest = {"container": container_id, "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "mounts": entries}
    atomic_write_json(backup_dir / "backup.json", manifest)
    fsync_dir(backup_dir)
    return manifest


def backup_volumes(client, mounts: list[dict], backup_dir: Path, image: str) -> dict:
    """backup_mounts for named volumes no stopped container holds (a Swarm service's): through a
    holder container that mounts them at their destinations and is never started."""
    binds = [f"{m['name']}:{m['destination']}" for m in mounts]
    holder = _create_helper(client, image, "exit 0", binds)
    try:
        return backup_mounts(client, holder, mounts, backup_dir)
    finally:
        client.remove_container(holder)


def _drain(stream) -> None:
    """Read an abandoned archive stream to its end: until then the engine holds the container's
    lock, and every later call on it (the rename back, the start) hangs."""
    try:
        for _ in stream:
            pass
    except Exception:
        pass


class _HashingWriter:
    def __init__(self, f, h):
        self.f, self.h = f, h

    def write(self, b):
        self.h.update(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def load_backup(backup_dir: Path) -> dict | None:
    try:
        return json.loads((Path(backup_dir) / "backup.json").read_text())
    except FileNotFoundError:
        return None


def verify_backup(backup_dir: Path, manifest: dict) -> None:
    """Every archive is there with its recorded sha256 (before we empty anything with it)."""
    for e in manifest["mounts"]:
        h = hashlib.sha256()
        try:
            with open(Path(backup_dir) / e["file"], "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except FileNotFoundError:
            raise EnvironmentProblem(f"backup {backup_dir}/{e['file']} is missing") from None
        if h.hexdigest() != e["sha256"]:
            raise EnvironmentProblem(f"backup {backup_dir}/{e['file']} does not match its sha256")


# -- helper container ---------------------------------------------------------------------

def find_helper_image(client, candidates: list[str]) -> str:
    """The first image (candidates first, then any local one) that runs /bin/sh, by trying it."""
    seen = []
    for ref in candidates + [img["Id"] for img in sorted(client.images(), key=lambda i: i.get("Size", 0))]:
        if not ref or ref in seen:
            continue
        seen.append(ref)
        try:
            if _run_helper(client, ref, HELPER_TOOLS_PROBE, binds=[], timeout=30) == 0:
                return ref
        except (EngineError, EnvironmentProblem):
            continue
    raise EnvironmentProblem("no local image can run /bin/sh with tar, stat and df, which restoring data "
                             "after a failed update needs; load one (e.g. busybox) and retry")


@dataclass(frozen=True)
class HelperOwner:
    """Which state dir and which swap a helper (or a created container) belongs to."""

    state: str  # importer.state.StateDir.identity
    swap: str   # the journal's swap_id

    def labels(self) -> dict[str, str]:
        return {STATE_LABEL: self.state, SWAP_LABEL: self.swap}


_owner: ContextVar[HelperOwner | None] = ContextVar("helper_owner", default=None)


@contextmanager
def helpers_owned_by(owner: HelperOwner):
    """Every helper created inside this block is labelled with `owner`."""
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)


def _create_helper(client, image: str, script: str, binds: list[str]) -> str:
    owner = _owner.get()
    cfg = {
        "Image": image, "Entrypoint": ["/bin/sh", "-c", script], "Cmd": None, "User": "0:0",
        "Labels": {HELPER_LABEL: "restore", **(owner.labels() if owner else {})},
        "NetworkDisabled": True, "WorkingDir": "/",
        "HostConfig": {"Binds": binds, "NetworkMode": "none", "LogConfig": {"Type": "json-file", "Config": {}}},
    }
    return client.create_container(cfg)


def _run_helper(client, image: str, script: str, binds: list[str], timeout: int = 600,
                before_start=None) -> int:
    cid = _create_helper(client, image, script, binds)
    try:
        if before_start:
            before_start(cid)
        client.start(cid)
        rc = client.wait(cid, timeout=timeout)
        if rc != 0:
            logs = client.logs(cid, stdout=True, stderr=True, tail=5).decode(errors="replace").strip()
            if logs:
                raise EnvironmentProblem(f"restore helper failed ({rc}): {logs.splitlines()[-1]}")
        return rc
    finally:
        client.remove_container(cid, volumes=True)


def remove_stale_helpers(client, owner: HelperOwner) -> None:
    """Remove the helpers a crash left behind: only those of this state dir and this swap."""
    wanted = [HELPER_LABEL] + [f"{k}={v}" for k, v in owner.labels().items()]
    for c in client.containers(all=True, filters={"label": wanted}):
        try:
            client.remove_container(c["Id"], volumes=True)
        except EngineError:
            pass


# -- restore ------------------------------------------------------------------------------

class RestoreError(OperatorNeeded):
    """The restore could not finish; `data_state` says exactly what the live mounts hold now."""

    def __init__(self, message: str, data_state: str):
        super().__init__(f"{message}; {data_state}")
        self.data_state = data_state


class RestoreSpaceShort(RestoreError):
    """A mount's filesystem has no room to unpack its backup beside the live data (which is kept
    until the unpacked copy is proven): refused before anything is written."""


def untouched(backup_dir) -> str:
    return f"nothing in the mounts was removed or changed by the restore; the backup is in {backup_dir}"


def scratch_name(token: str) -> str:
    """The scratch directory made at the top of each directory mount (same filesystem: renames)."""
    return f".bundle-restore-{token}"


def restore_script(mounts: list[dict], token: str, symlink_owners: dict[int, list] | None = None,
                   root: str = RESTORE_ROOT, staging: str = STAGING_DIR) -> str:
    """sh run by the helper (busybox or any POSIX sh + tar) to make every mount hold its backup.

    The helper is started first and waits for `GO` in the staging dir (archives can only be put
    into a volume's path once the container has mounted it). Phase 1 proves the backup: each
    directory archive (uploaded as one plain file into the mount's scratch directory) is unpacked
    there by the helper's own tar, where a symlink is just
    a link whatever it points to; symlink owners (which busybox tar does not set) are applied.
    Any failure removes the scratch directories and exits 3: the live data was not touched.
    Phase 2 swaps by renames: every live entry moves into scratch/old, every unpacked entry moves
    in, the mount root gets the archived owner and mode, single files are rewritten in place
    (`cat >` keeps a bind-mounted inode); then the scratch directories go. Nested mount points
    (and the scratch directories) are left where they are; their ancestors are walked into.
    Every path is quoted: names come from the container and may hold anything but NUL."""
    q = shlex.quote
    symlink_owners = symlink_owners or {}
    dirs = [(i, e) for i, e in enumerate(mounts) if e["is_dir"]]
    live = {i: root + e["destination"].rstrip("/") for i, e in dirs}
    scratch = {i: f"{live[i]}/{scratch_name(token)}" for i, _ in dirs}
    dests = [e["destination"] for _, e in dirs]
    skip, ancestors = set(scratch.values()), set()
    for d in [e["destination"] for e in mounts]:
        for p in dests:
            if d != p and d.startswith(p.rstrip("/") + "/"):
                skip.add(root + d)
                a = posixpath.dirname(d)
                while a != p and a.startswith(p):
                    ancestors.add(root + a)
                    a = posixpath.dirname(a)
    every = '"$1"/* "$1"/.[!.]* "$1"/..?*'
    cases = []
    if skip:
        cases.append("      " + "|".join(q(p) for p in sorted(skip)) + ") ;;")
    lines = ["set -u", "n=0", f"while [ ! -e {q(staging + '/' + GO)} ]; do sleep 1; done", "abort() {"]
    if scratch:
        lines.append("  rm -rf -- " + " ".join(q(s) for s in scratch.values()))
    lines += ['  echo "$1" >&2', "  exit 3", "}"]
    # Phase 1: prove every backup unpacks.
    for i, e in dirs:
        s, dest = scratch[i], e["destination"]
        why = q(f"the backup of {dest} does not unpack")
        lines += [f"mkdir -- {q(s + '/new')} || abort {why}",
                  f"tar -xp --numeric-owner -f {q(s + '/archive.tar')} -C {q(s + '/new')} || abort {why}",
                  f"rm -f -- {q(s + '/archive.tar')}",
                  f"[ -d {q(s + '/new/' + e['top'])} ] || abort {why}"]
        for name, uid, gid in symlink_owners.get(i, []):
            lines.append(f"chown -h {int(uid)}:{int(gid)} {q(s + '/new/' + name)} || abort {why}")
    for i, e in enumerate(mounts):
        if not e["is_dir"]:
            lines.append(f"[ -f {q(f'{staging}/f{i}/' + e['top'])} ] || abort "
                         + q(f"the backup of {e['destination']} was not staged"))
    # Phase 2: swap by renames.
    lines += ["set -e",
              "park() {", f"  for f in {every}; do", '    [ -e "$f" ] || [ -L "$f" ] || continue', '    case "$f" in']
    lines += cases
    if ancestors:
        lines.append("      " + "|".join(q(p) for p in sorted(ancestors)) + ') park "$f" "$2" ;;')
    lines += ['      *) n=$((n+1)); mv -- "$f" "$2/$n" ;;', "    esac", "  done", "}",
              "fill() {", f"  for f in {every}; do", '    [ -e "$f" ] || [ -L "$f" ] || continue',
              '    d="$2/${f##*/}"', '    case "$d" in']
    lines += cases
    if ancestors:
        lines.append("      " + "|".join(q(p) for p in sorted(ancestors)) + ') fill "$f" "$d" ;;')
    lines += ['      *) mv -- "$f" "$d" ;;', "    esac", "  done", "}"]
    for i, e in dirs:
        s, top = scratch[i], q(f"{scratch[i]}/new/{e['top']}")
        lines += [f"mkdir -- {q(s + '/old')}", f"park {q(live[i])} {q(s + '/old')}", f"fill {top} {q(live[i])}",
                  f'chown "$(stat -c %u:%g {top})" {q(live[i])}', f'chmod "$(stat -c %a {top})" {q(live[i])}']
    for i, e in enumerate(mounts):
        if not e["is_dir"]:
            lines.append(f"cat {q(f'{staging}/f{i}/' + e['top'])} > {q(root + e['destination'])}")
    if scratch:
        lines.append("rm -rf -- " + " ".join(q(s) for s in scratch.values()))
    return "\n".join(lines) + "\n"


def _helper_binds(mounts: list[dict]) -> list[str]:
    binds = []
    for e in mounts:
        src = e["name"] if e["type"] == "volume" else e["source"]
        binds.append(f"{src}:{RESTORE_ROOT}{e['destination']}")
    return binds


def _decompressed_chunks(path: Path):
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as f, dctx.stream_reader(f, read_across_frames=True) as r:
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                return
            yield chunk


class _ChunkReader(io.RawIOBase):
    """A file-like view of a chunk generator (for tarfile's stream mode)."""

    def __init__(self, chunks):
        self.chunks, self.buf = chunks, b""

    def readable(self):
        return True

    def readinto(self, b):
        while not self.buf:
            self.buf = next(self.chunks, b"")
            if not self.buf:
                return 0
        n = min(len(b), len(self.buf))
        b[:n], self.buf = self.buf[:n], self.buf[n:]
        return n


def symlink_owners(path: Path) -> list[tuple[str, int, int]]:
    """(name, uid, gid) of every symlink in an archive not owned by root (tar does not lchown)."""
    out = []
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(_decompressed_chunks(path))), mode="r|") as t:
        for m in t:
            if m.issym() and (m.uid or m.gid):
                out.append((m.name, m.uid, m.gid))
    return out


def _wrapped_archive(dirname: str, path: Path, size: int):
    """A tar stream holding `dirname/archive.tar` = the decompressed backup, read as it is sent."""
    d = tarfile.TarInfo(dirname)
    d.type, d.mode = tarfile.DIRTYPE, 0o700
    f = tarfile.TarInfo(f"{dirname}/archive.tar")
    f.size, f.mode = size, 0o600
    yield d.tobuf(format=tarfile.GNU_FORMAT) + f.tobuf(format=tarfile.GNU_FORMAT)
    sent = 0
    for chunk in _decompressed_chunks(path):
        sent += len(chunk)
        yield chunk
    if sent != size:
        raise EnvironmentProblem(f"backup {path} holds {sent} bytes, not the {size} recorded")
    yield b"\0" * ((-size) % 512) + b"\0" * 1024


def _go_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.addfile(tarfile.TarInfo(GO), io.BytesIO(b""))
    return buf.getvalue()


def _staging_dirs_tar(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in [STAGING_DIR.lstrip("/")] + [f"{STAGING_DIR.lstrip('/')}/f{i}" for i in range(n)]:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700
            t.addfile(info)
    return buf.getvalue()


# Unpacking a directory backup next to the live data needs the archive plus its unpacked copy
# (the archive is not sparse: the engine's archive stream is not, so apparent sizes count).
RESTORE_SLACK_KIB = 1024


def space_shortfalls(mounts: list[dict], probes: dict[int, tuple[str, int]]) -> list[str]:
    """One line per filesystem that cannot hold the unpacking of the directory backups on it.

    `probes` maps a mount's index to (filesystem id, KiB available) as the helper saw them."""
    need: dict[str, int] = {}
    dests: dict[str, list[str]] = {}
    for i, e in enumerate(mounts):
        if e["is_dir"] and i in probes:
            dev = probes[i][0]
            need[dev] = need.get(dev, RESTORE_SLACK_KIB) + -(-2 * int(e.get("tar_bytes") or 0) // 1024)
            dests.setdefault(dev, []).append(e["destination"])
    avail = {probes[i][0]: probes[i][1] for i in probes}
    return [f"the filesystem of {', '.join(dests[dev])} has {avail[dev]} KiB free; restoring needs {n} KiB"
            for dev, n in sorted(need.items()) if avail[dev] < n]


def _helper_output(client, image: str, script: str, binds: list[str]) -> str:
    cid = _create_helper(client, image, script, binds)
    try:
        client.start(cid)
        rc = client.wait(cid, timeout=120)
        out = client.logs(cid, stdout=True, stderr=False).decode(errors="replace")
        if rc != 0:
            err = client.logs(cid, stdout=False, stderr=True, tail=3).decode(errors="replace").strip()
            raise EnvironmentProblem(f"the restore helper failed ({rc}): {err[-300:]}")
        return out
    finally:
        try:
            client.remove_container(cid, volumes=True)
        except EngineError:
            pass


def check_restore_space(client, backup_dir: Path, manifest: dict, helper_image: str) -> None:
    """Refuse (RestoreSpaceShort) when a mount's filesystem cannot take the restore of its backup."""
    mounts = manifest["mounts"]
    idx = [i for i, e in enumerate(mounts) if e["is_dir"]]
    if not idx:
        return
    q = shlex.quote
    script = "\n".join(f"p={q(RESTORE_ROOT + mounts[i]['destination'])}; "
                       f"echo {i} \"$(stat -c %d \"$p\")\" \"$(df -Pk \"$p\" | awk 'NR==2{{print $4}}')\""
                       for i in idx)
    probes = {}
    for line in _helper_output(client, helper_image, script, _helper_binds(mounts)).splitlines():
        i, dev, kib = line.split()
        probes[int(i)] = (dev, int(kib))
    short = space_shortfalls(mounts, probes)
    if short:
        raise RestoreSpaceShort(f"not enough space to restore the data: {'; '.join(short)}", untouched(backup_dir))


def restore_mounts(client, backup_dir: Path, manifest: dict, helper_image: str) -> None:
    """Make every backed-up mount hold exactly its backup again (see restore_script): the backup
    is proven to unpack on each mount's own filesystem before anything live is moved aside.
    Raises RestoreError saying whether the live data is untouched or partially restored."""
    backup_dir = Path(backup_dir)
    try:
        verify_backup(backup_dir, manifest)
    except EnvironmentProblem as err:
        raise RestoreError(str(err), untouched(backup_dir)) from None
    mounts = manifest["mounts"]
    if not mounts:
        return
    check_restore_space(client, backup_dir, manifest, helper_image)
    token = os.urandom(6).hex()
    owners = {}
    for i, e in enumerate(mounts):
        if e["is_dir"]:
            try:
                owners[i] = symlink_owners(backup_dir / e["file"])
            except (tarfile.TarError, zstandard.ZstdError) as err:
                raise RestoreError(f"the backup of {e['destination']} does not unpack: {err}",
                                   untouched(backup_dir)) from None
    binds = _helper_binds(mounts)
    cid = _create_helper(client, helper_image, restore_script(mounts, token, owners), binds)
    try:
        client.put_archive(cid, "/", _staging_dirs_tar(len(mounts)))
        client.start(cid)
        try:
            for i, e in enumerate(mounts):
                src = backup_dir / e["file"]
                if e["is_dir"]:
                    client.put_archive(cid, RESTORE_ROOT + e["destination"],
                                           _wrapped_archive(scratch_name(token), src, int(e["tar_bytes"])))
                else:
                    client.put_archive(cid, f"{STAGING_DIR}/f{i}", _decompressed_chunks(src))
            client.put_archive(cid, STAGING_DIR, _go_tar())
        except (EngineError, EnvironmentProblem, OSError) as e:
            client.remove_container(cid, volumes=True)
            _remove_scratch(client, helper_image, mounts, token)
            why = e.explanation if isinstance(e, EngineError) else e
            raise RestoreError(f"the backup could not be copied next to the data: {why}",
                               untouched(backup_dir)) from None
        rc = client.wait(cid, timeout=3600)
        if rc != 0:
            logs = client.logs(cid, stdout=True, stderr=True, tail=5).decode(errors="replace").strip()
            why = logs.splitlines()[-1] if logs else f"exit {rc}"
            if rc == 3:
                raise RestoreError(f"the backup was not restored: {why}", untouched(backup_dir))
            raise RestoreError(
                f"restoring the data failed half-way: {why}",
                f"the mounts are partially restored: what they held is kept in {scratch_name(token)}/old "
                f"inside each mount; the backup is in {backup_dir}")
    finally:
        try:
            client.remove_container(cid, volumes=True)
        except EngineError:
            pass


# -- fingerprint --------------------------------------------------------------------------

FINGERPRINT_STAT = "%n|%F|%s|%y|%z|%a|%u|%g"


def fingerprint_script(mounts: list[dict], root: str = RESTORE_ROOT) -> str:
    """sh printing `<index> <sha256>` for every mount (see the module docstring)."""
    q = shlex.quote
    lines = []
    for i, e in enumerate(mounts):
        p = q(root + e["destination"].rstrip("/"))
        lines.append(
            f"if [ -d {p} ]; then h=$( (cd {p} && stat -c '%F|%a|%u|%g' . && find . -path './.bundle-restore-*' "
            f"-prune -o ! -path . -exec stat -c {q(FINGERPRINT_STAT)} {{}} + | sort) | sha256sum); "
            f"else h=$(stat -c {q(FINGERPRINT_STAT)} {p} | sha256sum); fi; echo {i} \"${{h%% *}}\"")
    return "\n".join(lines) + "\n"


def fingerprint_mounts(client, mounts: list[dict], helper_image: str) -> dict[str, str]:
    """destination -> fingerprint of what the mount holds now (read only, through a helper)."""
    if not mounts:
        return {}
    out = {}
    for line in _helper_output(client, helper_image, fingerprint_script(mounts), _helper_binds(mounts)).splitlines():
        i, h = line.split()
        out[mounts[int(i)]["destination"]] = h
    return out


def changed_mounts(before: dict[str, str] | None, now: dict[str, str], mounts: list[dict]) -> list[str]:
    """The mounts (`volume NAME` / `bind mount SOURCE`) whose fingerprint differs from `before`."""
    if before is None:
        return []
    return [describe(e) for e in mounts if before.get(e["destination"]) != now.get(e["destination"])]


def describe(mount: dict) -> str:
    return f"volume {mount['name']}" if mount["type"] == "volume" else f"bind mount {mount['source']}"


class DataChangedSince(RestoreError):
    """A mount no longer holds what it held when the new version was stopped: someone wrote to it
    since (say, users of the old version running again). Restoring would throw that away."""


def _remove_scratch(client, image: str, mounts: list[dict], token: str) -> None:
    paths = [f"{RESTORE_ROOT}{e['destination'].rstrip('/')}/{scratch_name(token)}" for e in mounts if e["is_dir"]]
    try:
        _run_helper(client, image, "rm -rf -- " + " ".join(shlex.quote(p) for p in paths), _helper_binds(mounts))
    except (EngineError, EnvironmentProblem):
        pass
