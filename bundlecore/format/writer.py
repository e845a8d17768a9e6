"""Writing a bundle: the payload frame streamed through sha256 and zstd, the head frame, and the
two frames assembled into one file."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import zstandard

from bundlecore.format.layout import (CHUNK, COMPRESSION_LEVEL, HEAD_MEMBERS, JOB_SIZE, MANIFEST, MAX_MANIFEST,
                                      MAX_SIGNATURES, MAX_SUMS, SIGNATURES, SUMS, TAR_END)
from bundlecore.format.tar import pad, tar_member, tar_member_header
from bundlecore.fsutil import create_fresh


_PAYLOAD_NAME = re.compile(r"^images/(?:[A-Za-z0-9._-]+/)*[A-Za-z0-9._-]+$")


def compress_head(manifest: bytes, sums: bytes, signatures: bytes, mtime: int) -> bytes:
    """The first frame: the three head members, without a tar end marker."""
    tar = tar_member(MANIFEST, manifest, mtime) + tar_member(SUMS, sums, mtime) + tar_member(SIGNATURES, signatures, mtime)
    if len(signatures) > MAX_SIGNATURES or len(manifest) > MAX_MANIFEST or len(sums) > MAX_SUMS:
        raise ValueError("head member over its size cap")
    return zstandard.ZstdCompressor(level=19, write_checksum=True).compress(tar)


@dataclass
class PayloadFile:
    path: str
    size: int
    sha256: str


class PayloadWriter:
    """Streams payload files through sha256 and zstd into `fh`, in the order they are added.

    Compression runs on zstd's own worker threads, so hashing, compressing and the producer
    (docker save) overlap; memory stays flat whatever the file sizes."""

    def __init__(self, fh: BinaryIO, mtime: int, level: int = COMPRESSION_LEVEL, threads: int = -1):
        # Small jobs keep the worker threads' buffers (and so the RSS) small at no cost in ratio;
        # the level's own window (2 MiB at level 3) stays far under the reader's MAX_WINDOW.
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=threads, job_size=JOB_SIZE, write_checksum=True)
        self._writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(fh, closefd=False)
        self._mtime = mtime
        self.files: list[PayloadFile] = []
        self.bytes_in = 0

    def add(self, path: str, size: int, chunks: Iterable[bytes | memoryview],
            on_bytes: Callable[[int], None] | None = None) -> PayloadFile:
        if not _PAYLOAD_NAME.fullmatch(path) or path in HEAD_MEMBERS:
            raise ValueError(f"not a valid payload path: {path}")
        self._writer.write(tar_member_header(path, size, self._mtime))
        h = hashlib.sha256()
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            if seen > size:
                raise ValueError(f"{path}: more bytes than its declared size {size}")
            h.update(chunk)
            self._writer.write(chunk)
            if on_bytes:
                on_bytes(len(chunk))
        if seen != size:
            raise ValueError(f"{path}: {seen} bytes, expected {size}")
        self._writer.write(b"\0" * pad(size))
        self.bytes_in += size
        entry = PayloadFile(path, size, h.hexdigest())
        self.files.append(entry)
        return entry

    def add_bytes(self, path: str, data: bytes) -> PayloadFile:
        return self.add(path, len(data), [data])

    def close(self) -> None:
        self._writer.write(TAR_END)
        self._writer.close()  # ends the one payload frame


def _copy_range(src: BinaryIO, dst: BinaryIO, offset: int) -> None:
    """Copy src from `offset` to its end onto dst's end, in the kernel where it can."""
    src.seek(offset)
    dst.flush()
    try:
        while os.copy_file_range(src.fileno(), dst.fileno(), 64 * CHUNK):
            pass
    except OSError as e:  # filesystems or kernels without copy_file_range: plain copy
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        src.seek(offset)
        dst.seek(0, os.SEEK_END)
        while chunk := src.read(4 * CHUNK):
            dst.write(chunk)


def hash_file(h: hashlib._Hash, path: Path, offset: int) -> None:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(4 * CHUNK):
            h.update(chunk)


def assemble(out_path: Path, head_frame: bytes, payload_path: Path, payload_offset: int = 0) -> str:
    """Write head + payload frames to `out_path` (a temp name the caller renames, created fresh
    here: bundlecore.fsutil.create_fresh); returns its sha256.

    The payload is copied in the kernel while a second thread hashes it (sha256 releases the GIL),
    so the copy costs about one sha256 pass."""
    h = hashlib.sha256(head_frame)
    hasher = threading.Thread(target=hash_file, args=(h, payload_path, payload_offset))
    hasher.start()
    try:
        with create_fresh(out_path, 0o666) as out, open(payload_path, "rb") as src:
            out.write(head_frame)
            _copy_range(src, out, payload_offset)
            out.flush()
            os.fsync(out.fileno())
    finally:
        hasher.join()
    return h.hexdigest()
