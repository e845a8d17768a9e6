"""The state dir's StrictModes rule and the no-follow file operations (importer.state, bundlecore.fsutil)."""

import os
import stat

import pytest

from bundlecore.errors import EnvironmentProblem
from bundlecore.fsutil import append_line_durably, atomic_write_bytes, read_bytes_nofollow
from importer.state import StateDir, UnsafeStateDir, check_state_dir, unsafe_reason
from importer.backup.data import HelperOwner

ME, OTHER = 1000, 1001


def _st(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


D = stat.S_IFDIR
RULES = [
    # (mode, owner, is_ancestor, refused because)
    (D | 0o700, ME, False, None),
    (D | 0o755, 0, False, None),
    (D | 0o755, 0, True, None),
    (D | 0o1777, 0, True, None),  # /tmp: root-owned and sticky
    (D | 0o700, OTHER, False, "owned by uid 1001, not by uid 1000 or root"),
    (D | 0o755, OTHER, True, "owned by uid 1001, not by uid 1000 or root"),
    (D | 0o777, ME, False, "writable by group or others (mode 0777)"),
    (D | 0o770, ME, True, "writable by group or others (mode 0770)"),
    (D | 0o1777, 0, False, "writable by group or others (mode 1777)"),  # sticky is no excuse for the dir itself
    (D | 0o1777, ME, True, "writable by group or others (mode 1777)"),  # sticky but not root's
    (stat.S_IFREG | 0o600, ME, False, "not a directory"),
]


@pytest.mark.parametrize("mode,uid,is_ancestor,why", RULES)
def test_strict_modes_rule(mode, uid, is_ancestor, why):
    assert unsafe_reason(_st(mode, uid), ME, is_ancestor=is_ancestor) == why


def test_a_group_writable_ancestor_is_named(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o775)
    with pytest.raises(UnsafeStateDir, match=f"^unsafe state dir {parent}/state \\(its ancestor {parent}\\): "
                                             "writable by group or others \\(mode 0775\\)$"):
        StateDir(parent / "state")


def test_a_state_dir_not_created_yet_under_safe_parents_is_fine_and_created_private(tmp_path):
    s = StateDir(tmp_path / "a" / "state").ensure()
    assert stat.S_IMODE(os.stat(s.root).st_mode) == 0o700


def test_a_symlinked_state_dir_is_checked_where_it_really_is(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    real.chmod(0o777)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafeStateDir, match="mode 0777"):
        check_state_dir(tmp_path / "link", uid=os.geteuid())
    real.chmod(0o700)
    assert check_state_dir(tmp_path / "link", uid=os.geteuid()) == real.resolve()


def test_identity_is_the_hash_of_the_real_path(tmp_path):
    (tmp_path / "s").mkdir(mode=0o700)
    (tmp_path / "l").symlink_to(tmp_path / "s")
    assert StateDir(tmp_path / "l").identity == StateDir(tmp_path / "s").identity != StateDir(tmp_path / "t").identity


def test_atomic_write_replaces_a_planted_link_not_its_target(tmp_path):
    target = tmp_path / "target"
    target.write_text("precious")
    (tmp_path / "rec.json").symlink_to(target)
    atomic_write_bytes(tmp_path / "rec.json", b"{}")
    assert target.read_text() == "precious"
    assert not (tmp_path / "rec.json").is_symlink() and (tmp_path / "rec.json").read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.json", "target"]  # no temp file left


def test_reads_and_appends_refuse_a_planted_link(tmp_path):
    target = tmp_path / "target"
    target.write_text("precious")
    (tmp_path / "journal.json").symlink_to(target)
    (tmp_path / "audit.log").symlink_to(target)
    with pytest.raises(EnvironmentProblem, match="journal.json: it is a symlink"):
        read_bytes_nofollow(tmp_path / "journal.json")
    with pytest.raises(EnvironmentProblem, match="audit.log: it is a symlink"):
        append_line_durably(tmp_path / "audit.log", "{}")
    assert target.read_text() == "precious"


def test_the_lock_refuses_a_link_or_a_hard_link_and_leaves_the_target_alone(tmp_path):
    target = tmp_path / "target"
    target.write_text("precious")
    s = StateDir(tmp_path / "state").ensure()
    os.link(target, s.root / "lock")
    with pytest.raises(UnsafeStateDir, match="lock: not a plain file of this user"):
        with s.lock():
            pass
    os.unlink(s.root / "lock")
    (s.root / "lock").symlink_to(target)
    with pytest.raises(EnvironmentProblem, match="lock: it is a symlink"):
        with s.lock():
            pass
    assert target.read_text() == "precious"


def test_helpers_carry_state_and_swap():
    assert HelperOwner("ab" * 32, "cd" * 16).labels() == {"io.bundle.state": "ab" * 32, "io.bundle.swap": "cd" * 16}
