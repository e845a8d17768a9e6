"""The head put in front of the payload in place (`bundle build`), and a head rewritten with new
signatures (`bundle approve`)."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
from pathlib import Path

from bundlecore.format.frames import pad_frame
from bundlecore.format.layout import MAX_HEAD_FRAME
from bundlecore.format.parts import BundleFiles
from bundlecore.format.reader import Head
from bundlecore.format.writer import assemble, compress_head, hash_file


# `bundle build` writes the payload frame at PAYLOAD_OFFSET of the output's temp file (the space in
# front is a hole: no disk), then puts the head right before it and drops the space in front with
# fallocate(COLLAPSE_RANGE), which moves no data -- instead of copying the payload behind the head.
# COLLAPSE_RANGE takes whole filesystem blocks, so the head frame is padded to end on one with
# empty zstd blocks (3 bytes each, or 4 for an empty RLE block; they decompress to nothing).
FS_BLOCK = 4096
PAYLOAD_OFFSET = -(-(MAX_HEAD_FRAME + 2 * FS_BLOCK) // FS_BLOCK) * FS_BLOCK
_FALLOC_FL_COLLAPSE_RANGE = 0x08


def _collapse_front(fd: int, length: int) -> bool:
    """Drop the first `length` bytes (whole blocks) of the file without moving data; False where
    the filesystem cannot (tmpfs, overlayfs, btrfs, ...)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fallocate = getattr(libc, "fallocate", None)
    if fallocate is None:
        return False
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if fallocate(fd, _FALLOC_FL_COLLAPSE_RANGE, 0, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err))


def _collapse_works(directory: Path) -> bool:
    """Tried on a two-block scratch file, so a filesystem without it costs no hashing pass."""
    with tempfile.TemporaryFile(dir=directory) as f:
        f.write(b"\0" * (2 * FS_BLOCK))
        f.flush()
        return _collapse_front(f.fileno(), FS_BLOCK)


def place_head(path: Path, head_frame: bytes, payload_offset: int = PAYLOAD_OFFSET) -> str | None:
    """Make `path` (its payload frame at `payload_offset`) the bundle in place: the head, padded
    to end on a block boundary, right before the payload, the space in front dropped; returns the
    file's sha256. None where the filesystem cannot drop the front (nothing done: the caller
    copies the payload behind the head with `assemble`).

    The hash is taken from the page cache while the payload is flushed to disk, both before the
    collapse (which drops the file's cached pages)."""
    if len(head_frame) + FS_BLOCK + 8 > MAX_HEAD_FRAME or not _collapse_works(Path(path).parent):
        return None
    pad = (payload_offset - len(head_frame)) % FS_BLOCK
    head = pad_frame(head_frame, pad + (FS_BLOCK if pad in (1, 2, 5) else 0))
    front = payload_offset - len(head)
    h = hashlib.sha256(head)
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), head, front)
        hasher = threading.Thread(target=hash_file, args=(h, path, payload_offset))
        hasher.start()
        try:
            os.fsync(f.fileno())
        finally:
            hasher.join()
        if not _collapse_front(f.fileno(), front):
            raise OSError(errno.EOPNOTSUPP, "fallocate(COLLAPSE_RANGE) stopped working")
        os.fsync(f.fileno())
    return h.hexdigest()


def rewrite_head(bundle: Path, out_path: Path, head: Head, signatures: bytes) -> str:
    """Copy `bundle` to `out_path` with a new first frame carrying `signatures`; returns the sha256."""
    new_head = compress_head(head.manifest, head.sums, signatures, head.mtime)
    return assemble(out_path, new_head, bundle, payload_offset=head.frame_size)


def rewrite_split_head(files: BundleFiles, out_path: Path, head: Head, signatures: bytes) -> tuple[str, str]:
    """A split bundle's first part with a new head frame, written to `out_path` (the head lies in
    the first part; the other parts are only read); returns (sha256 of the new first part, of the whole)."""
    first = rewrite_head(files.first, out_path, head, signatures)
    whole = hashlib.sha256()
    for part in (out_path, *files.parts[1:]):
        hash_file(whole, part, 0)
    return first, whole.hexdigest()
