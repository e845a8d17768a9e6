"""The helper's emptying script (importer.swap.data.emptying_script), run by a real /bin/sh on a
scratch tree: it empties exactly the directory mounts, keeps nested mounts, rewrites single-file
mounts in place, and names from the container cannot break out of their quotes."""

import os
import subprocess
from pathlib import Path

import pytest

from importer.swap.data import emptying_script

HOSTILE = ["/data", "/we'ird dir", "/new\nline", "/-rf", '/dq"$(touch PWNED)`x`', "/sp ace/*"]


def _populate(d: Path):
    d.mkdir(parents=True, exist_ok=True)
    for name in ("a.txt", ".hidden", "..dots", "-n", "with space", "q'uote", "star*"):
        (d / name).write_text("x")
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "deep").write_text("x")
    os.symlink("/etc/passwd", d / "link")


def _run(script: str, cwd: Path):
    r = subprocess.run(["/bin/sh", "-c", script], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("dest", HOSTILE)
def test_a_directory_mount_with_a_hostile_name_is_emptied_and_nothing_else(tmp_path, dest):
    root, staging = tmp_path / "root", tmp_path / "staging"
    _populate(root / dest.lstrip("/"))
    bystanders = [root / "we", root / "data2", tmp_path / "outside"]
    for b in bystanders:
        _populate(b)
    _run(emptying_script([{"destination": dest, "is_dir": True}], str(root), str(staging)), tmp_path)
    assert list((root / dest.lstrip("/")).iterdir()) == []
    assert all(len(list(b.iterdir())) == 9 for b in bystanders)
    assert not (tmp_path / "PWNED").exists() and os.path.exists("/etc/passwd")


def test_a_nested_mount_point_survives_while_everything_around_it_is_emptied(tmp_path):
    root = tmp_path / "root"
    _populate(root / "data")
    _populate(root / "data" / "a" / "cache")
    (root / "data" / "a" / "sibling").write_text("x")
    mounts = [{"destination": "/data", "is_dir": True}, {"destination": "/data/a/cache", "is_dir": True}]
    _run(emptying_script(mounts, str(root), str(tmp_path / "staging")), tmp_path)
    assert sorted(p.name for p in (root / "data").iterdir()) == ["a"]
    assert sorted(p.name for p in (root / "data" / "a").iterdir()) == ["cache"]  # the mount point itself
    assert list((root / "data" / "a" / "cache").iterdir()) == []  # emptied by its own entry


def test_a_single_file_mount_is_rewritten_in_place_from_its_staged_copy(tmp_path):
    root, staging = tmp_path / "root", tmp_path / "staging"
    (root / "etc").mkdir(parents=True)
    target = root / "etc" / "it's conf"
    target.write_text("changed by the new version\n")
    inode = target.stat().st_ino
    (staging / "f0").mkdir(parents=True)
    (staging / "f0" / "it's conf").write_text("original\n")
    _run(emptying_script([{"destination": "/etc/it's conf", "is_dir": False, "top": "it's conf"}],
                         str(root), str(staging)), tmp_path)
    assert target.read_text() == "original\n" and target.stat().st_ino == inode  # same inode: bind mounts keep it
