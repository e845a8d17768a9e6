"""Small durable file operations: write to a temp name, fsync, rename.

Every open here refuses to follow a symlink (O_NOFOLLOW) and every file is created with O_EXCL
under a fresh random name, so a link planted in a directory cannot redirect a write or a read
(the importer's state dir is checked for owner and mode separately: importer.state).
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from bundlecore.errors import EnvironmentProblem
from bundlecore.format import dumps_canonical

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses a symlink in the last component with one clear line."""
    try:
        return os.open(path, flags | NOFOLLOW | CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise EnvironmentProblem(f"unsafe state file {path}: it is a symlink; refusing to follow it") from None
        raise


def read_bytes_nofollow(path: Path) -> bytes:
    """The content of a regular file, never through a symlink (FileNotFoundError if absent)."""
    fd = open_nofollow(path, os.O_RDONLY)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new content."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)  # rename replaces a planted link itself, never what it points to
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: object, mode: int = 0o600) -> None:
    atomic_write_bytes(path, dumps_canonical(obj), mode)


def append_line_durably(path: Path, line: str) -> None:
    """Append one line and fsync, for append-only logs."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
