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
nothing needs restoring) and again before a restore writes anything.
Allocation ("exactly" includes it): when a helper is at hand at backup time (`backup_mounts`'
`helper_image`), every regular file whose allocated size is below its apparent size is recorded
with its allocation (`sparse` in the manifest entry). The restore's phase 1 rewrites each such
file with a hole at every all-zero 4 KiB block (`dd seek` and `truncate`: no busybox tool writes
sparse files; its owner, mode and mtime kept), then checks every unpacked regular file before
anything live moves: its apparent size is the archived one, a recorded file's allocation is at
most its recorded one (+ ALLOC_SLACK), any other's covers its whole 4 KiB blocks. A file that fails
is a backup that does not come back exactly: exit 3, the live data untouched.
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
a single-file mount gets its content back, not its owner/mode nor its holes; a sparse file with
several hard links, or a name holding a line break, comes back allocated; files under a directory mount
that hides part of another mount's tree are restored through the nesting as in the container.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import posixpath
import shlex
import shutil
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import zstandard

from bundlecore.engine import EngineError, EngineNotFound
from bundlecore.errors import EnvironmentProblem, OperatorNeeded
from bundlecore.fsutil import atomic_write_json, fsync_dir

HELPER_LABEL = "io.bundle.helper"
HELPER_IMAGE_LABEL = "io.bundle.helper-image"   # on an image an admin keeps for the helper (any value)
STATE_LABEL = "io.bundle.state"  # sha256 of the real path of the state dir that made the container
SWAP_LABEL = "io.bundle.swap"    # the swap (journal) that made it
RESTORE_ROOT = "/bundle-restore/root"
STAGING_DIR = "/bundle-restore-staging"
# What the restore helper runs besides /bin/sh (restore_script, check_restore_space).
GO = "go"  # uploaded into STAGING_DIR once every archive is in place
HELPER_TOOLS_PROBE = ("for t in tar stat df awk mv find sort sha256sum dd truncate touch; do "
                      "command -v $t >/dev/null || exit 1; done")
BLOCK = 4096             # the unit of holes a restore makes
ALLOC_SLACK = 64 << 10   # extent-tree blocks and the like a rewritten sparse file may take beyond its record
NO_BREAKS = "$(printf '*\\n*')"  # a find -name pattern: names holding a line break are left out of listings


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

def backup_mounts(client, container_id: str, mounts: list[dict], backup_dir: Path,
                  helper_image: str | None = None) -> dict:
    """Archive every mount of the stopped container into backup_dir; returns the manifest.
    With `helper_image`, the allocation of its sparse files is recorded too (module docstring).

    The manifest (backup.json) is written last, so a backup without one is incomplete."""
    backup_dir = Path(backup_dir)
    if backup_dir.exists():
        shutil.rmtree(backup_dir)
    backup_dir.mkdir(mode=0o700, parents=True)
    try:
        return _write_backup(client, container_id, mounts, backup_dir, helper_image)
    except (OSError, EngineError, EnvironmentProblem) as e:
        # A partial backup is worthless and may be what filled the disk: drop it (our own copy only).
        shutil.rmtree(backup_dir, ignore_errors=True)
        why = e.explanation if isinstance(e, EngineError) else (e.strerror or e) if isinstance(e, OSError) else e
        raise EnvironmentProblem(f"backing up the data into {backup_dir} failed: {why}") from e


def _write_backup(client, container_id: str, mounts: list[dict], backup_dir: Path,
                  helper_image: str | None) -> dict:
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
    if helper_image and any(e["is_dir"] for e in entries):
        for i, files in _sparse_files(client, entries, helper_image).items():
            entries[i]["sparse"] = files
    manifest = {"container": container_id, "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "mounts": entries}
    atomic_write_json(backup_dir / "backup.json", manifest)
    fsync_dir(backup_dir)
    return manifest


def sparse_listing_script(mounts: list[dict], root: str = RESTORE_ROOT) -> str:
    """sh printing `<index> <size> <blocks> <block size> ./<path>` for every regular file of each
    directory mount whose allocation is below its apparent size."""
    q = shlex.quote
    lines = [f"nl={NO_BREAKS}"]
    for i, e in enumerate(mounts):
        if e["is_dir"]:
            p = q(root + e["destination"].rstrip("/"))
            lines.append(f"if [ -d {p} ]; then (cd {p} && find . -path './.bundle-restore-*' -prune -o -type f "
                         f"! -name \"$nl\" -exec stat -c '%s %b %B %n' {{}} +) | "
                         f"awk '$2 * $3 < $1 {{ print {i}, $0 }}' || exit 1; fi")
    return "\n".join(lines) + "\n"


def _sparse_files(client, entries: list[dict], helper_image: str) -> dict[int, dict[str, int]]:
    """Per directory mount: archive member name -> allocated bytes, of its sparse files."""
    out: dict[int, dict[str, int]] = {i: {} for i, e in enumerate(entries) if e["is_dir"]}
    listing = _helper_output(client, helper_image, sparse_listing_script(entries), _helper_binds(entries))
    for line in listing.splitlines():
        i, _size, blocks, unit, name = line.split(" ", 4)
        out[int(i)][f"{entries[int(i)]['top']}/{name.removeprefix('./')}"] = int(blocks) * int(unit)
    return out


def backup_volumes(client, mounts: list[dict], backup_dir: Path, image: str, helper_image: str | None = None) -> dict:
    """backup_mounts for named volumes no stopped container holds (a Swarm service's): through a
    holder container that mounts them at their destinations and is never started."""
    binds = [f"{m['name']}:{m['destination']}" for m in mounts]
    holder = _create_helper(client, image, "exit 0", binds)
    try:
        return backup_mounts(client, holder, mounts, backup_dir, helper_image)
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


def remove_unless_refused(remove, name: str, what: str, out) -> None:
    """Remove a volume or network of the app's: one already gone is fine, one the engine refuses to
    remove (in use by a container started since) is kept, and the output says so."""
    try:
        remove(name)
    except EngineNotFound:
        pass
    except EngineError as e:
        out(f"  kept {what} {name}: {e.explanation or e}")


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

def helper_search_order(candidates: Sequence[str | None], local: list[dict]) -> list[str]:
    """Which images to try as the helper, in order: the app's own (`candidates`), then the local
    images an admin labelled HELPER_IMAGE_LABEL, then every other local image, smallest first.
    Trying an image runs a container of it for a moment, and an image some container uses cannot
    be removed meanwhile: a labelled image keeps the search off other apps' images."""
    by_size = sorted(local, key=lambda i: i.get("Size", 0))
    labelled = [i["Id"] for i in by_size if HELPER_IMAGE_LABEL in (i.get("Labels") or {})]
    order: list[str] = []
    for ref in [*candidates, *labelled, *(i["Id"] for i in by_size)]:
        if ref and ref not in order:
            order.append(ref)
    return order


def find_helper_image(client, candidates: Sequence[str | None]) -> str:
    """The first image of `helper_search_order` that runs /bin/sh with the helper's tools, by trying it."""
    for ref in _helper_search(client, candidates):
        try:
            if _run_helper(client, ref, HELPER_TOOLS_PROBE, binds=[], timeout=30) == 0:
                return ref
        except (EngineError, EnvironmentProblem):
            continue
    raise EnvironmentProblem("no local image can run /bin/sh with tar, stat and df, which restoring data "
                             f"after a failed update needs; load one (e.g. busybox, labelled {HELPER_IMAGE_LABEL}) "
                             "and retry")


def _helper_search(client, candidates: Sequence[str | None]) -> Iterator[str]:
    """`helper_search_order`, the engine's images listed only once none of the app's own served (a
    listing is one more engine call, and Podman's can fail on an image removed meanwhile)."""
    own = helper_search_order(candidates, [])
    yield from own
    yield from (ref for ref in helper_search_order([], client.images()) if ref not in own)


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
                   root: str = RESTORE_ROOT, staging: str = STAGING_DIR, proofs: frozenset[int] = frozenset()) -> str:
    """sh run by the helper (busybox or any POSIX sh + tar) to make every mount hold its backup.

    The helper is started first and waits for `GO` in the staging dir (archives can only be put
    into a volume's path once the container has mounted it). Phase 1 proves the backup: each
    directory archive (uploaded as one plain file into the mount's scratch directory) is unpacked
    there by the helper's own tar, where a symlink is just
    a link whatever it points to; symlink owners (which busybox tar does not set) are applied; for
    each mount in `proofs`, its staged proof (`proof_script`) makes the holes and checks every size.
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
        if i in proofs:
            lines.append(f"out=$(sh {q(f'{staging}/{PROOF}{i}')} {q(s + '/new')} {q(s + '/sparse.tmp')} "
                         f"{q(f'{staging}/{EXPECTED}{i}')} {q(s + '/listing')} 2>&1) || "
                         f"abort {q(f'the backup of {dest} does not come back exactly: ')}\"$out\"")
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


PROOF, EXPECTED = "proof", "expected"  # staged per directory mount: proof_script and its list of sizes


@dataclass(frozen=True)
class Packed:
    """A sparse file sent without its zeros: its member's bytes in the backup [start, end) are
    replaced by `header` (the same member, its size that of its data) and its data blocks."""

    start: int                    # the member's first header (extended headers included)
    data: int                     # its data
    size: int                     # its apparent size
    runs: list[tuple[int, int]]   # its data as (first 4 KiB block, count)
    header: bytes

    @property
    def end(self) -> int:
        return self.data + -(-self.size // 512) * 512

    @property
    def data_size(self) -> int:
        return sum(min((b + n) * BLOCK, self.size) - b * BLOCK for b, n in self.runs)

    def segments(self) -> list:
        """What replaces [start, end): bytes, or (from, to) ranges of the backup."""
        ranges = [(self.data + b * BLOCK, self.data + min((b + n) * BLOCK, self.size)) for b, n in self.runs]
        return [self.header, *ranges, bytes(-self.data_size % 512)]


@dataclass
class ArchiveScan:
    """What the restore learns from one directory backup before uploading it."""

    symlink_owners: list[tuple[str, int, int]]  # (name, uid, gid) of symlinks not owned by root
    sizes: dict[str, tuple[int, int, int]]      # regular file -> (apparent size, least and most allocated
    #                                             bytes, -1: no bound)
    packed: dict[str, Packed] = field(default_factory=dict)  # sparse file -> how it is sent

    def sent_size(self, tar_bytes: int) -> int:
        """The size of the backup as sent, its sparse files packed."""
        return tar_bytes + sum(len(p.header) + p.data_size + (-p.data_size % 512) - (p.end - p.start)
                               for p in self.packed.values())

    def sent(self, chunks):
        """The backup's bytes (`chunks`, from the start) as sent: each packed file's zeros left out."""
        segments: list = []
        at = 0
        for p in sorted(self.packed.values(), key=lambda p: p.start):
            segments += [(at, p.start), *p.segments()]
            at = p.end
        return _spliced(chunks, segments + [(at, None)])


def _spliced(chunks, segments):
    """`segments` in order: bytes as they are, (from, to) ranges of the stream `chunks` (to None: its end)."""
    pos, todo = 0, iter(segments)
    seg = next(todo, None)
    for chunk in chunks:
        first, pos = pos, pos + len(chunk)
        while seg is not None:
            if isinstance(seg, bytes):
                yield seg
            else:
                lo, hi = seg
                if lo >= pos:
                    break
                cut = chunk[max(lo, first) - first:(pos if hi is None else min(hi, pos)) - first]
                if cut:
                    yield cut
                if hi is None or hi > pos:
                    break
            seg = next(todo, None)


def scan_archive(path: Path, sparse: dict[str, int] | None) -> ArchiveScan:
    """One pass over a directory backup: symlink owners (tar does not lchown), each regular file's
    size and allocation bounds, and the data blocks of each file recorded sparse (`sparse`: member
    name -> allocated bytes at backup; None when the backup recorded no allocation)."""
    owners: list[tuple[str, int, int]] = []
    sizes: dict[str, int] = {}
    data_blocks: dict[str, tuple[tarfile.TarInfo, list[tuple[int, int]]]] = {}
    links: dict[str, str] = {}
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(_decompressed_chunks(path)), 1 << 20),
                      mode="r|", bufsize=1 << 20) as t:
        for m in t:
            for seen in (sizes, data_blocks, links):
                seen.pop(m.name, None)
            if m.issym() and (m.uid or m.gid):
                owners.append((m.name, m.uid, m.gid))
            if m.islnk():
                links[m.name] = m.linkname
            elif m.isreg() and "\n" not in m.name:
                sizes[m.name] = m.size
                if sparse is not None and m.name in sparse:
                    f = t.extractfile(m)
                    data_blocks[m.name] = (m, _data_blocks(f) if f else [])
    scan = ArchiveScan(owners, {})
    linked = set(links) | set(links.values())
    for name, target in links.items():
        if target in sizes:  # the same file as its target: its holes are not made (module docstring)
            sizes[name] = sizes[target]
    for name, size in sizes.items():
        packed = _packed(*data_blocks[name]) if name in data_blocks and name not in linked else None
        if packed:
            scan.packed[name] = packed
            scan.sizes[name] = (size, 0, (sparse or {})[name] + ALLOC_SLACK)
        elif name in linked or name in data_blocks:
            scan.sizes[name] = (size, 0, -1)
        else:
            scan.sizes[name] = (size, 0 if sparse is None else size - size % BLOCK, -1)
    return scan


def _packed(m: tarfile.TarInfo, runs: list[tuple[int, int]]) -> Packed | None:
    """How a sparse file is sent (None: it has no hole to make, or its header cannot be rewritten)."""
    if sum(n for _, n in runs) >= -(-m.size // BLOCK):
        return None
    data_size = sum(min((b + n) * BLOCK, m.size) - b * BLOCK for b, n in runs)
    header = copy.copy(m)
    header.size = data_size
    header.pax_headers = {k: v for k, v in m.pax_headers.items() if k != "size"}
    try:
        buf = header.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    except (ValueError, UnicodeError):
        return None
    return Packed(m.offset, m.offset_data, m.size, runs, buf)


def _data_blocks(f: IO[bytes]) -> list[tuple[int, int]]:
    """The runs of 4 KiB blocks of `f` that hold anything but zeros, as (first block, count)."""
    runs: list[tuple[int, int]] = []
    block = 0
    zero_chunk = bytes(256 * BLOCK)
    while chunk := f.read(len(zero_chunk)):
        if chunk == zero_chunk[:len(chunk)]:
            block += -(-len(chunk) // BLOCK)
            continue
        view = memoryview(chunk)
        for off in range(0, len(chunk), BLOCK):
            piece = view[off:off + BLOCK]
            if piece != zero_chunk[:len(piece)]:
                if runs and runs[-1][0] + runs[-1][1] == block:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                else:
                    runs.append((block, 1))
            block += 1
    return runs


def proof_script(scan: ArchiveScan) -> str:
    """sh run as `sh PROOF NEW TMP EXPECTED LISTING` in phase 1, on a directory backup unpacked in
    NEW: each packed sparse file (its data blocks only, ArchiveScan.sent) written out with its holes
    (through TMP, owner, mode and mtime kept), then every regular file's apparent and allocated size
    checked against EXPECTED (expected_sizes)."""
    q = shlex.quote
    lines = ["set -u", 'cd -- "$1" || exit 1', 'tmp=$2',
             "holes() {", '  f=$1; size=$2; shift 2; at=0', '  : > "$tmp" || return 1',
             '  for run; do', f'    dd if="$f" of="$tmp" bs={BLOCK} skip="$at" seek="${{run%:*}}" '
             f'count="${{run#*:}}" conv=notrunc 2>/dev/null || return 1', '    at=$((at + ${run#*:}))', "  done",
             '  truncate -s "$size" "$tmp" && chown "$(stat -c %u:%g "$f")" "$tmp" && '
             'chmod "$(stat -c %a "$f")" "$tmp" && touch -r "$f" "$tmp" && mv -f -- "$tmp" "$f"', "}"]
    for name, p in sorted(scan.packed.items()):
        lines.append(f"holes {q('./' + name)} {p.size} " + " ".join(f"{b}:{n}" for b, n in p.runs)
                     + f" || {{ echo {q('could not make the holes of ' + name)}; exit 1; }}")
    lines += [f"nl={NO_BREAKS}",
              "find . -type f ! -name \"$nl\" -exec stat -c '%s %b %B %n' {} + > \"$4\" || exit 1",
              "awk '"
              "NR == FNR { n = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, \"\", n); size[n] = $1; lo[n] = $2; hi[n] = $3; next }"
              " { n = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, \"\", n); got[n] = 1; a = $2 * $3"
              " ; if (!(n in size)) next"
              " ; if ($1 != size[n]) { print n \" has \" $1 \" bytes, not \" size[n]; bad = 1; exit }"
              " ; if (a < lo[n] || (hi[n] >= 0 && a > hi[n])) {"
              " print n \" has \" a \" bytes allocated, not \" lo[n] \"..\" hi[n]; bad = 1; exit } }"
              " END { if (bad) exit 1; for (n in size) if (!(n in got)) { print n \" is missing\"; exit 1 } }"
              "' \"$3\" \"$4\""]
    return "\n".join(lines) + "\n"


def expected_sizes(scan: ArchiveScan) -> bytes:
    """The list proof_script checks: `<size> <least> <most allocated bytes> ./<name>` a line."""
    return b"".join(f"{size} {lo} {hi} ./{name}\n".encode("utf-8", "surrogateescape")
                    for name, (size, lo, hi) in sorted(scan.sizes.items()))


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
        self.chunks, self.buf = chunks, memoryview(b"")

    def readable(self):
        return True

    def readinto(self, b):
        while not self.buf:
            self.buf = memoryview(next(self.chunks, b""))
            if not self.buf:
                return 0
        n = min(len(b), len(self.buf))
        b[:n], self.buf = self.buf[:n], self.buf[n:]  # views: no copy of the rest of the chunk
        return n


def _wrapped_archive(dirname: str, path: Path, tar_bytes: int, scan: ArchiveScan):
    """A tar stream holding `dirname/archive.tar` = the decompressed backup as `scan` sends it, read
    as it is sent."""
    size = scan.sent_size(tar_bytes)
    d = tarfile.TarInfo(dirname)
    d.type, d.mode = tarfile.DIRTYPE, 0o700
    f = tarfile.TarInfo(f"{dirname}/archive.tar")
    f.size, f.mode = size, 0o600
    yield d.tobuf(format=tarfile.GNU_FORMAT) + f.tobuf(format=tarfile.GNU_FORMAT)
    sent = 0
    for chunk in scan.sent(_decompressed_chunks(path)):
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


def _staging_tar(n: int, files: dict[str, bytes]) -> bytes:
    """The staging dir, a directory per single-file mount, and `files` (name -> content) in it."""
    buf = io.BytesIO()
    top = STAGING_DIR.lstrip("/")
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in [top] + [f"{top}/f{i}" for i in range(n)]:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700
            t.addfile(info)
        for name, content in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(content), 0o600
            t.addfile(info, io.BytesIO(content))
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
    owners, staged, scans = {}, {}, {}
    for i, e in enumerate(mounts):
        if e["is_dir"]:
            try:
                scan = scans[i] = scan_archive(backup_dir / e["file"], e.get("sparse"))
            except (tarfile.TarError, zstandard.ZstdError) as err:
                raise RestoreError(f"the backup of {e['destination']} does not unpack: {err}",
                                   untouched(backup_dir)) from None
            owners[i] = scan.symlink_owners
            staged[f"{PROOF}{i}"] = proof_script(scan).encode("utf-8", "surrogateescape")
            staged[f"{EXPECTED}{i}"] = expected_sizes(scan)
    binds = _helper_binds(mounts)
    proofs = frozenset(i for i, e in enumerate(mounts) if e["is_dir"])
    cid = _create_helper(client, helper_image, restore_script(mounts, token, owners, proofs=proofs), binds)
    try:
        client.put_archive(cid, "/", _staging_tar(len(mounts), staged))
        client.start(cid)
        try:
            for i, e in enumerate(mounts):
                src = backup_dir / e["file"]
                if e["is_dir"]:
                    client.put_archive(cid, RESTORE_ROOT + e["destination"],
                                       _wrapped_archive(scratch_name(token), src, int(e["tar_bytes"]), scans[i]))
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
