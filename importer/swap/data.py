"""Backup and exact restore of a container's mounts, through the Docker API only.

Backup: `get_archive(path)` of the STOPPED old container for every writable mount (named,
anonymous and bind, directory or single file); nothing runs, so it works for images without a
shell and whatever the host layout (remote engine, rootless, Docker Desktop). Each archive is
zstd-compressed into the state dir with its sha256 and size in `backup.json`.

Restore ("exactly its backed-up content": files the new version created are gone, files it
deleted are back) needs the mounts EMPTIED first, which the archive API cannot do. A short-lived
helper container mounts every mount at `/bundle-restore/root<destination>` (the container's own
layout, so nested mounts nest the same way), runs `/bin/sh` to empty the directories and to
rewrite single files in place (`cat >`, which keeps the bind-mounted inode), and the directory
archives are then extracted into the stopped helper with `put_archive`.
The helper's image is the first of: the old image, the new image, any other local image, that
can run `/bin/sh` (checked in preflight, before anything is stopped).
Every helper carries the identity of the state dir and the swap that made it (HelperOwner, set
around a swap with `helpers_owned_by`); recovery removes only the stale helpers of its own swap,
never another state dir's, nor an app container that merely carries `io.bundle.helper`.

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

import docker
import zstandard

from bundlecore.errors import EnvironmentProblem
from bundlecore.fsutil import atomic_write_json, fsync_dir

HELPER_LABEL = "io.bundle.helper"
STATE_LABEL = "io.bundle.state"  # sha256 of the real path of the state dir that made the container
SWAP_LABEL = "io.bundle.swap"    # the swap (journal) that made it
RESTORE_ROOT = "/bundle-restore/root"
STAGING_DIR = "/bundle-restore-staging"


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
            for v in client.api.df().get("Volumes") or []:
                size = (v.get("UsageData") or {}).get("Size", -1)
                if size is not None and size >= 0:
                    sizes[v["Name"]] = size
        except docker.errors.APIError:
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
    entries = []
    for i, m in enumerate(mounts):
        fname = f"mount-{i}.tar.zst"
        stream, stat = client.api.get_archive(container_id, m["destination"], chunk_size=1 << 20)
        is_dir = bool(stat.get("mode", 0) & (1 << 31))  # Go's os.ModeDir
        h = hashlib.sha256()
        raw = 0
        with open(backup_dir / fname, "wb") as f:
            cctx = zstandard.ZstdCompressor(level=3, threads=-1)
            with cctx.stream_writer(_HashingWriter(f, h), closefd=False) as z:
                for chunk in stream:
                    raw += len(chunk)
                    z.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        entries.append(dict(m, file=fname, sha256=h.hexdigest(), size=(backup_dir / fname).stat().st_size,
                            tar_bytes=raw, is_dir=is_dir, top=stat.get("name")))
    manifest = {"container": container_id, "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "mounts": entries}
    atomic_write_json(backup_dir / "backup.json", manifest)
    fsync_dir(backup_dir)
    return manifest


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
    for ref in candidates + [img["Id"] for img in sorted(client.api.images(), key=lambda i: i.get("Size", 0))]:
        if not ref or ref in seen:
            continue
        seen.append(ref)
        try:
            if _run_helper(client, ref, "exit 0", binds=[], timeout=30) == 0:
                return ref
        except (docker.errors.APIError, EnvironmentProblem):
            continue
    raise EnvironmentProblem("no local image can run /bin/sh, which restoring data after a failed "
                             "update needs; load one (e.g. busybox) and retry")


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
    return client.api.create_container_from_config(cfg)["Id"]


def _run_helper(client, image: str, script: str, binds: list[str], timeout: int = 600,
                before_start=None) -> int:
    cid = _create_helper(client, image, script, binds)
    try:
        if before_start:
            before_start(cid)
        client.api.start(cid)
        rc = client.api.wait(cid, timeout=timeout)["StatusCode"]
        if rc != 0:
            logs = client.api.logs(cid, stdout=True, stderr=True, tail=5).decode(errors="replace").strip()
            if logs:
                raise EnvironmentProblem(f"restore helper failed ({rc}): {logs.splitlines()[-1]}")
        return rc
    finally:
        client.api.remove_container(cid, force=True, v=True)


def remove_stale_helpers(client, owner: HelperOwner) -> None:
    """Remove the helpers a crash left behind: only those of this state dir and this swap."""
    wanted = [HELPER_LABEL] + [f"{k}={v}" for k, v in owner.labels().items()]
    for c in client.api.containers(all=True, filters={"label": wanted}):
        try:
            client.api.remove_container(c["Id"], force=True, v=True)
        except docker.errors.APIError:
            pass


# -- restore ------------------------------------------------------------------------------

def emptying_script(mounts: list[dict], root: str = RESTORE_ROOT, staging: str = STAGING_DIR) -> str:
    """sh that empties every directory mount (under `root`, as the helper mounts them) except the
    paths where another mount nests, and rewrites single-file mounts in place from `staging`.
    Every path is quoted: names come from the container and may hold anything but NUL."""
    dests = [e["destination"] for e in mounts if e["is_dir"]]
    lines = ["set -e", "empty() {",
             '  for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do',
             '    [ -e "$f" ] || [ -L "$f" ] || continue',
             '    case "$f" in']
    nested, ancestors = set(), set()
    for d in [e["destination"] for e in mounts]:
        for p in dests:
            if d != p and d.startswith(p.rstrip("/") + "/"):
                nested.add(root + d)
                a = posixpath.dirname(d)
                while a != p and a.startswith(p):
                    ancestors.add(root + a)
                    a = posixpath.dirname(a)
    if nested:
        lines.append("      " + "|".join(shlex.quote(p) for p in sorted(nested)) + ") ;;")
    if ancestors:
        lines.append("      " + "|".join(shlex.quote(p) for p in sorted(ancestors)) + ') empty "$f" ;;')
    lines += ['      *) rm -rf -- "$f" ;;', "    esac", "  done", "}"]
    for d in sorted(dests):
        lines.append(f"empty {shlex.quote(root + d)}")
    for i, e in enumerate(mounts):
        if not e["is_dir"]:
            staged = f"{staging}/f{i}/{e['top']}"
            lines.append(f"cat {shlex.quote(staged)} > {shlex.quote(root + e['destination'])}")
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


def _staging_dirs_tar(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in [STAGING_DIR.lstrip("/")] + [f"{STAGING_DIR.lstrip('/')}/f{i}" for i in range(n)]:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700
            t.addfile(info)
    return buf.getvalue()


def restore_mounts(client, backup_dir: Path, manifest: dict, helper_image: str) -> None:
    """Make every backed-up mount hold exactly its backup again (see the module docstring)."""
    verify_backup(backup_dir, manifest)
    mounts = manifest["mounts"]
    if not mounts:
        return
    script = emptying_script(mounts)
    binds = _helper_binds(mounts)
    cid = _create_helper(client, helper_image, script, binds)
    try:
        client.api.put_archive(cid, "/", _staging_dirs_tar(len(mounts)))
        for i, e in enumerate(mounts):
            if not e["is_dir"]:
                client.api.put_archive(cid, f"{STAGING_DIR}/f{i}", _decompressed_chunks(Path(backup_dir) / e["file"]))
        client.api.start(cid)
        rc = client.api.wait(cid, timeout=3600)["StatusCode"]
        if rc != 0:
            logs = client.api.logs(cid, stdout=True, stderr=True, tail=5).decode(errors="replace").strip()
            raise EnvironmentProblem(f"emptying the mounts before restore failed ({rc}): {logs[-300:]}")
        # Extract shallow mounts first, so a nested mount's own archive has the last word.
        order = sorted((e for e in mounts if e["is_dir"]), key=lambda e: e["destination"].count("/"))
        for e in order:
            parent = posixpath.dirname(RESTORE_ROOT + e["destination"].rstrip("/"))
            client.api.put_archive(cid, parent, _decompressed_chunks(Path(backup_dir) / e["file"]))
    finally:
        try:
            client.api.remove_container(cid, force=True, v=True)
        except docker.errors.APIError:
            pass
