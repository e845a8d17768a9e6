"""Small durable file operations: write to a temp name, fsync, rename; and the one way this tool
creates a file and reads an input file.

Every open here refuses to follow a symlink (O_NOFOLLOW) and every file is created with O_EXCL
under a fresh random name (`temp_name`, `create_fresh`), so a link planted in a directory (a
shared output directory, a state dir) cannot redirect a write or a read (the importer's state dir
is checked for owner and mode separately: importer.state). An input file (an inventory, a site
file, a policy) is read with its cap enforced while reading (`read_capped`), never read whole first.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from bundlecore.errors import EnvironmentProblem

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


class TooLarge(ValueError):
    """An input file over its cap (found while reading, after at most cap + 1 bytes)."""


def read_capped(path: Path, cap: int) -> bytes:
    """The content of the file at `path`, refused (TooLarge) as soon as it passes `cap` bytes: a
    huge file, or a device or FIFO that never ends, is never read whole."""
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise TooLarge(f"{path} is over its cap of {cap} bytes")
    return data


MAX_CONFIG = 1 << 20  # a site file, a host policy, a trust policy: an admin's few lines


def read_toml(path: Path, cap: int = MAX_CONFIG) -> dict[str, Any]:
    """An admin's TOML file, read with its cap held while reading; ValueError saying what is wrong
    ("over its cap of N bytes", "nested too deeply to be read", "not valid TOML: ...") otherwise,
    never a RecursionError from the parser; OSError as open() raises it."""
    import tomllib

    try:
        return tomllib.loads(read_capped(path, cap).decode("utf-8"))
    except TooLarge:
        raise ValueError(f"over its cap of {cap} bytes") from None
    except RecursionError:
        raise ValueError("nested too deeply to be read") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"not valid TOML: {e}") from None


def temp_name(path: Path, tag: str = "tmp") -> Path:
    """An unpredictable name beside `path`, for a file renamed onto it once complete:
    `.NAME.TAG-<64 random bits>` (a pid or a counter could be guessed and a link planted there)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(8)}")


def create_fresh(path: Path, mode: int = 0o600, readable: bool = False) -> BinaryIO:
    """A new, empty file at `path`, opened for writing (and reading with `readable`):
    O_CREAT|O_EXCL|O_NOFOLLOW, so never an existing file nor what a link planted there points to
    (FileExistsError). `mode` goes through the umask, as open() does."""
    fd = open_nofollow(path, (os.O_RDWR if readable else os.O_WRONLY) | os.O_CREAT | os.O_EXCL, mode)
    return os.fdopen(fd, "w+b" if readable else "wb")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new content."""
    path = Path(path)
    tmp = temp_name(path)
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)  # rename replaces a planted link itself, never what it points to
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: object, mode: int = 0o600) -> None:
    from bundlecore.format.encoding import dumps_canonical  # here: bundlecore.format creates its files through this module

    atomic_write_bytes(path, dumps_canonical(obj), mode)


def append_line_durably(path: Path, line: str) -> None:
    """Append one line and fsync, for append-only logs."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
