"""The helper's restore script (importer.backup.data.restore_script), run by a real /bin/sh and tar
on a scratch tree: a backup that does not unpack leaves the live data untouched; otherwise every
directory mount holds exactly its archive (symlinks climbing out of the mount included), nested
mounts are kept, single-file mounts are rewritten in place, and names from the container cannot
break out of their quotes. Also the free-space rule (space_shortfalls)."""

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from importer.backup.data import scratch_name, restore_script, space_shortfalls

HOSTILE = ["/data", "/we'ird dir", "/new\nline", "/-rf", '/dq"$(touch PWNED)`x`', "/sp ace/*"]
TOKEN = "t0k"


def _populate(d: Path):
    d.mkdir(parents=True, exist_ok=True)
    for name in ("a.txt", ".hidden", "..dots", "-n", "with space", "q'uote", "star*"):
        (d / name).write_text("x")
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "deep").write_text("x")
    os.symlink("/etc/passwd", d / "link")


def _tree(d: Path) -> dict:
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(d))
        out[rel] = (st.st_mode, os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
    return out


def _archive(top: str, entries: dict) -> bytes:
    """A tar like the engine's get_archive: `top/` then its entries (name -> bytes, or ('->', target))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        d = tarfile.TarInfo(top)
        d.type, d.mode = tarfile.DIRTYPE, 0o750
        t.addfile(d)
        for name, content in entries.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                t.addfile(info)
            elif content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.size, info.mode = len(content), 0o640
                t.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _stage(root: Path, dest: str, archive: bytes):
    """What restore_mounts uploads before the helper starts: scratch/archive.tar in the mount."""
    s = root / dest.lstrip("/") / scratch_name(TOKEN)
    s.mkdir(parents=True)
    (s / "archive.tar").write_bytes(archive)


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    staging = cwd / "st" if "/st/go" in script else cwd / "staging"
    staging.mkdir(exist_ok=True)
    (staging / "go").touch()
    return subprocess.run(["/bin/sh", "-c", script], cwd=cwd, capture_output=True, text=True)


def _dir(dest: str) -> dict:
    return {"destination": dest, "is_dir": True, "top": dest.rsplit("/", 1)[-1]}


BACKUP = {"notes.txt": b"my notes\n", "docs": None, "docs/a.bin": b"\x00\x01", ".hidden": b"h",
          "link": ("->", "../../srv/shared"), "abs": ("->", "/etc/passwd")}


@pytest.mark.parametrize("dest", HOSTILE)
def test_a_directory_mount_with_a_hostile_name_holds_exactly_its_backup_and_nothing_else_moves(tmp_path, dest):
    root, live = tmp_path / "root", tmp_path / "root" / dest.lstrip("/")
    _populate(live)
    bystanders = [root / "we", root / "data2", tmp_path / "outside"]
    for b in bystanders:
        _populate(b)
    _stage(root, dest, _archive(dest.rsplit("/", 1)[-1], BACKUP))
    r = _run(restore_script([_dir(dest)], TOKEN, root=str(root), staging=str(tmp_path / "st")), tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in live.iterdir()) == [".hidden", "abs", "docs", "link", "notes.txt"]
    assert os.readlink(live / "link") == "../../srv/shared" and (live / "docs" / "a.bin").read_bytes() == b"\x00\x01"
    assert oct(live.stat().st_mode & 0o7777) == "0o750"  # the mount root gets the archived mode
    assert all(len(list(b.iterdir())) == 9 for b in bystanders)
    assert not (tmp_path / "PWNED").exists() and os.path.exists("/etc/passwd")


@pytest.mark.parametrize("bad", ["truncated", "garbage", "missing", "wrong top"])
def test_a_backup_that_does_not_unpack_leaves_the_live_data_untouched(tmp_path, bad):
    root = tmp_path / "root"
    _populate(root / "data")
    _populate(root / "logs")
    before = {d: _tree(root / d) for d in ("data", "logs")}
    good = _archive("logs", BACKUP)
    archive = {"truncated": _archive("data", {"big": b"x" * 5000})[:1500], "garbage": b"not a tar" * 100,
               "missing": None, "wrong top": _archive("other", BACKUP)}[bad]
    _stage(root, "/logs", good)
    if archive is None:
        (root / "data" / scratch_name(TOKEN)).mkdir()
    else:
        _stage(root, "/data", archive)
    r = _run(restore_script([_dir("/data"), _dir("/logs")], TOKEN, root=str(root), staging=str(tmp_path / "st")),
             tmp_path)
    assert r.returncode == 3 and "the backup of /data does not unpack" in r.stderr
    assert {d: _tree(root / d) for d in ("data", "logs")} == before  # scratch directories gone too


def test_a_nested_mount_point_survives_and_each_mount_gets_its_own_archive(tmp_path):
    root = tmp_path / "root"
    _populate(root / "data")
    _populate(root / "data" / "a" / "cache")
    (root / "data" / "a" / "sibling").write_text("x")
    _stage(root, "/data", _archive("data", {"top.txt": b"t", "a": None, "a/kept": b"k", "a/cache": None,
                                            "a/cache/from-parent": b"no"}))
    _stage(root, "/data/a/cache", _archive("cache", {"c.txt": b"c"}))
    mounts = [_dir("/data"), _dir("/data/a/cache")]
    r = _run(restore_script(mounts, TOKEN, root=str(root), staging=str(tmp_path / "st")), tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (root / "data").iterdir()) == ["a", "top.txt"]
    assert sorted(p.name for p in (root / "data" / "a").iterdir()) == ["cache", "kept"]
    assert sorted(p.name for p in (root / "data" / "a" / "cache").iterdir()) == ["c.txt"]  # its own archive


def test_a_single_file_mount_is_rewritten_in_place_from_its_staged_copy(tmp_path):
    root, staging = tmp_path / "root", tmp_path / "staging"
    (root / "etc").mkdir(parents=True)
    target = root / "etc" / "it's conf"
    target.write_text("changed by the new version\n")
    inode = target.stat().st_ino
    (staging / "f0").mkdir(parents=True)
    (staging / "f0" / "it's conf").write_text("original\n")
    r = _run(restore_script([{"destination": "/etc/it's conf", "is_dir": False, "top": "it's conf"}], TOKEN,
                            root=str(root), staging=str(staging)), tmp_path)
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "original\n" and target.stat().st_ino == inode  # same inode: bind mounts keep it


def test_space_is_counted_per_filesystem_for_the_archive_and_its_unpacked_copy():
    mounts = [dict(_dir("/data"), tar_bytes=600 << 20), dict(_dir("/logs"), tar_bytes=100 << 20),
              {"destination": "/etc/x", "is_dir": False, "tar_bytes": 10 << 30}]
    # Both on one filesystem: 2 x 700 MiB + slack.
    short = space_shortfalls(mounts, {0: ("64", 1400 << 10), 1: ("64", 1400 << 10)})
    assert short == ["the filesystem of /data, /logs has 1433600 KiB free; restoring needs 1434624 KiB"]
    assert space_shortfalls(mounts, {0: ("64", 1500 << 10), 1: ("64", 1500 << 10)}) == []
    # Apart: each fits on its own filesystem; a single-file mount is not unpacked.
    assert space_shortfalls(mounts, {0: ("64", 1300 << 10), 1: ("65", 300 << 10)}) == []


# -- sparse-exact: holes made again, every size checked before anything live moves (issue 18, finding 9) --

MIB = 1 << 20


def _sparse_backup(tmp_path: Path, entries: dict) -> Path:
    """A zstd backup like backup_mounts writes, of `data/` holding `entries` (name -> bytes)."""
    import zstandard
    path = tmp_path / "mount-0.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(_archive("data", entries)))
    return path


def _prove(tmp_path: Path, backup: Path, sparse: dict | None, tamper=None) -> tuple:
    """The backup as restore_mounts sends it (sparse files packed), unpacked by tar, then its proof run."""
    import zstandard
    from importer.backup.data import expected_sizes, proof_script, scan_archive
    scan = scan_archive(backup, sparse)
    raw = zstandard.ZstdDecompressor().decompress(backup.read_bytes(), max_output_size=64 * MIB)
    sent = b"".join(scan.sent(raw[i:i + 7000] for i in range(0, len(raw), 7000)))  # chunks cut anywhere
    assert len(sent) == scan.sent_size(len(raw))
    new = tmp_path / "new"
    new.mkdir()
    (tmp_path / "archive.tar").write_bytes(sent)
    subprocess.run(["tar", "-xpf", str(tmp_path / "archive.tar"), "-C", str(new)], check=True)
    if tamper:
        tamper(new)
    (tmp_path / "expected").write_bytes(expected_sizes(scan))
    (tmp_path / "proof").write_text(proof_script(scan))
    r = subprocess.run(["/bin/sh", str(tmp_path / "proof"), str(new), str(tmp_path / "sparse.tmp"),
                        str(tmp_path / "expected"), str(tmp_path / "listing")], capture_output=True, text=True)
    return scan, new, r


def test_a_file_recorded_sparse_gets_its_holes_back_with_its_bytes_mode_and_mtime(tmp_path):
    big = bytearray(16 * MIB)
    big[5000:5010] = b"x" * 10           # block 1
    big[8 * MIB:8 * MIB + 4096] = b"y" * 4096   # block 2048
    big[-3:] = b"end"                    # the last block
    long = "l" * 150  # a name only a PAX header holds: its header is rewritten whole
    backup = _sparse_backup(tmp_path, {"big.img": bytes(big), "dense.bin": b"\0" * (64 << 10), "small": b"s",
                                       long: bytes(big)})
    scan, new, r = _prove(tmp_path, backup, {"data/big.img": 12 << 10, f"data/{long}": 12 << 10})
    assert r.returncode == 0, r.stdout + r.stderr
    assert scan.packed["data/big.img"].runs == [(1, 1), (2048, 1), (4095, 1)]
    assert (tmp_path / "archive.tar").stat().st_size < MIB  # 2 x 16 MiB: their zeros were never sent
    assert (new / "data" / long).read_bytes() == bytes(big) and (new / "data" / "small").read_bytes() == b"s"
    st = (new / "data" / "big.img").stat()
    assert (new / "data" / "big.img").read_bytes() == bytes(big)
    assert st.st_size == 16 * MIB and st.st_blocks * 512 <= (12 << 10) + (64 << 10)
    assert oct(st.st_mode & 0o777) == "0o640"
    # a file not recorded sparse (zeros written on purpose, say a preallocated journal) stays allocated
    assert (new / "data" / "dense.bin").stat().st_blocks * 512 >= 64 << 10


@pytest.mark.parametrize("tamper,words", [
    (lambda new: (new / "data" / "small").write_text("longer"), "./data/small has 6 bytes, not 1"),
    (lambda new: (new / "data" / "small").unlink(), "./data/small is missing"),
    (lambda new: (new / "data" / "dense.bin").write_bytes(b""), "./data/dense.bin has 0 bytes"),
])
def test_a_file_whose_size_is_not_the_archived_one_fails_the_proof(tmp_path, tamper, words):
    backup = _sparse_backup(tmp_path, {"dense.bin": b"\1" * (64 << 10), "small": b"s"})
    _, _, r = _prove(tmp_path, backup, {}, tamper)
    assert r.returncode == 1 and words in r.stdout


def test_an_allocation_beyond_the_record_fails_the_proof(tmp_path):
    """A file recorded sparse that comes back allocated (here: written whole) is not exact."""
    from importer.backup.data import ArchiveScan, expected_sizes, proof_script, scan_archive
    backup = _sparse_backup(tmp_path, {"big.img": bytes(4 * MIB) + b"end"})
    scan = scan_archive(backup, {"data/big.img": 4096})
    assert scan.packed["data/big.img"].runs == [(1024, 1)]
    new = tmp_path / "new"
    (new / "data").mkdir(parents=True)
    (new / "data" / "big.img").write_bytes(bytes(4 * MIB) + b"end")
    (tmp_path / "expected").write_bytes(expected_sizes(scan))
    r = subprocess.run(["/bin/sh", "-c", proof_script(ArchiveScan([], scan.sizes)), "sh", str(new), str(tmp_path / "t"),
                        str(tmp_path / "expected"), str(tmp_path / "listing")], capture_output=True, text=True)
    assert r.returncode == 1 and "./data/big.img has" in r.stdout and "bytes allocated, not 0..69632" in r.stdout


def test_without_an_allocation_record_only_apparent_sizes_are_checked(tmp_path):
    backup = _sparse_backup(tmp_path, {"big.img": bytes(MIB)})
    scan, new, r = _prove(tmp_path, backup, None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert scan.packed == {} and scan.sizes == {"data/big.img": (MIB, 0, -1)}


def test_the_restore_script_runs_each_mounts_proof_and_aborts_untouched_when_it_fails(tmp_path):
    root = tmp_path / "root"
    _populate(root / "data")
    before = _tree(root / "data")
    _stage(root, "/data", _archive("data", {"a.txt": b"abc"}))
    st = tmp_path / "st"
    st.mkdir()
    (st / "expected0").write_text("4 0 -1 ./data/a.txt\n")  # not what the archive holds
    from importer.backup.data import ArchiveScan, proof_script
    (st / "proof0").write_text(proof_script(ArchiveScan([], {}, {})))
    r = _run(restore_script([_dir("/data")], TOKEN, root=str(root), staging=str(st), proofs=frozenset({0})), tmp_path)
    assert r.returncode == 3 and "the backup of /data does not come back exactly: ./data/a.txt has 3 bytes, not 4" \
        in r.stderr
    assert _tree(root / "data") == before
