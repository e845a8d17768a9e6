"""`status` tells a live operation from an interrupted one by the kernel's flock table."""

import fcntl
import os

from importer.state import StateDir, flock_holder

TABLE = ("1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146448 0 EOF\n"
         "1: -> FLOCK  ADVISORY  WRITE 999 fe:00:2146448 0 EOF\n"
         "2: POSIX  ADVISORY  WRITE 77 fe:00:55 0 EOF\n")


def test_the_holder_is_the_flock_line_of_that_file_not_a_waiter_or_another_file():
    assert flock_holder(TABLE, 0xfe, 0, 2146448) == 1234
    assert flock_holder(TABLE, 0xfe, 0, 55) is None      # a POSIX lock is not the state dir's flock
    assert flock_holder(TABLE, 0xfe, 1, 2146448) is None  # same inode, another device
    assert flock_holder("", 0xfe, 0, 2146448) is None


def test_a_held_lock_names_this_process_and_a_released_one_nobody(tmp_path):
    state = StateDir(tmp_path / "state")
    assert state.lock_holder() is None  # no lock file yet
    with state.lock():
        assert state.lock_holder() == os.getpid()
    assert state.lock_holder() is None
    fd = os.open(state.root / "lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # whoever holds it
    try:
        assert state.lock_holder() == os.getpid()
    finally:
        os.close(fd)
