"""Reading a bundle, trusting nothing: the head frame cut out by its zstd structure and capped,
the payload members streamed strictly in the order the manifest lists them."""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Generator, Iterator, cast

import zstandard

from bundlecore.format.frames import ZSTD_MAGIC, ZstdFrameScanner
from bundlecore.format.layout import (BLOCK, CHUNK, HEAD_MEMBERS, MANIFEST, MAX_HEAD_FRAME, MAX_HEAD_TAR, MAX_MANIFEST,
                                      MAX_SIGNATURES, MAX_SUMS, MAX_WINDOW, SIGNATURES, SUMS, TAR_END, FormatError)
from bundlecore.format.parts import BundleFiles, HashBeside, PartsReader
from bundlecore.format.tar import TarMember, pad, parse_octal, parse_pax_size, parse_tar_header
from bundlecore.streams import Readable


@dataclass
class Head:
    """The first frame's three members, as raw bytes (nothing parsed or trusted yet)."""

    manifest: bytes
    sums: bytes
    signatures: bytes
    frame: bytes     # the compressed head frame; the payload starts right after it
    mtime: int

    @property
    def frame_size(self) -> int:
        return len(self.frame)


def read_exact(stream: Readable, n: int, what: str) -> bytes:
    """Exactly n bytes from `stream` (which may return fewer per read); FormatError if it ends."""
    first = stream.read(n)
    if len(first) == n:  # the usual case: no copy
        return first
    buf = bytearray(first)
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise FormatError("truncated", f"bundle is truncated ({what})")
        buf += chunk
    return bytes(buf)


def read_head(path: Path) -> Head:
    """Cut the first zstd frame out of the file (the first part) and read the three head members from it."""
    files = BundleFiles.of(path)
    with open(files.first, "rb") as f:
        start = f.read(MAX_HEAD_FRAME + 4)
    try:
        return _head_from(start)
    except FormatError as e:
        if files.split and e.check == "truncated":
            raise FormatError("parts", f"the head frame is not inside the first part {files.first.name}") from None
        raise


def _head_from(start: bytes) -> Head:
    if len(start) < 4 or struct.unpack("<I", start[:4])[0] != ZSTD_MAGIC:
        raise FormatError("zstd", "not a bundle: the file does not start with a zstd frame")
    scanner = ZstdFrameScanner()
    try:
        scanner.feed(start)
    except FormatError:
        if not scanner.frame_ends:
            raise
    if not scanner.frame_ends:
        if len(start) > MAX_HEAD_FRAME:
            raise FormatError("cap", f"head frame is larger than its cap of {MAX_HEAD_FRAME} bytes")
        raise FormatError("truncated", "bundle is truncated (inside the head frame)")
    size = scanner.frame_ends[0]
    try:
        # zstandard ignores max_output_size when the frame declares its content size: check that first
        if zstandard.frame_content_size(start[:size]) > MAX_HEAD_TAR:
            raise FormatError("cap", "head frame declares a decompressed size past its cap")
        raw = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompress(start[:size], max_output_size=MAX_HEAD_TAR)
    except zstandard.ZstdError as e:
        raise FormatError("zstd", f"head frame does not decompress: {e}") from None
    if len(raw) > MAX_HEAD_TAR:
        raise FormatError("cap", "head frame decompresses past its cap")
    stream = io.BytesIO(raw)
    members: dict[str, bytes] = {}
    caps = {MANIFEST: MAX_MANIFEST, SUMS: MAX_SUMS, SIGNATURES: MAX_SIGNATURES}
    mtime = 0
    for expected in HEAD_MEMBERS:
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            raise FormatError("head", f"head frame ends before {expected}")
        member = parse_tar_header(block)
        if member is None or member.size < 0:
            raise FormatError("head", f"head frame must hold {expected} here")
        if member.name != expected:
            raise FormatError("head", f"unexpected member {member.name!r} in the head (expected {expected})")
        if member.size > caps[expected]:
            raise FormatError("cap", f"{expected} is {member.size} bytes, over its cap of {caps[expected]}")
        mtime = parse_octal(block[136:148], "mtime")
        members[expected] = read_exact(stream, member.size, expected)
        read_exact(stream, pad(member.size), expected)
    if stream.read(1):
        raise FormatError("head", "head frame holds more than manifest.json, SHA256SUMS and SHA256SUMS.asc")
    return Head(members[MANIFEST], members[SUMS], members[SIGNATURES], start[:size], mtime)


class _ScannedSource:
    """Raw file reader that walks zstd frame structure on the bytes it hands out, and hashes them
    (beside: the whole file's hash overlaps decompressing and hashing the members)."""

    def __init__(self, f: Readable, scanner: ZstdFrameScanner, hasher: HashBeside) -> None:
        self._f = f
        self.scanner = scanner
        self.hasher = hasher

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.scanner.feed(data)
        self.hasher.update(data)
        return data


class PayloadReader:
    """Streams the payload members after the head, strictly in the order `expected` lists them.

    `expected` is [(path, size)] from the (already verified) manifest. Decompressed bytes are
    capped by those sizes plus tar overhead; after the last member come exactly two zero blocks,
    then the end of both the decompressed and the compressed stream."""

    def __init__(self, path: Path, head: Head, expected: list[tuple[str, int]]):
        self._path = path
        self._head = head
        self.file_sha256: str | None = None  # of the whole file, once members() is exhausted
        self._expected = expected
        self._limit = sum(size + pad(size) + 3 * BLOCK for _, size in expected) + len(TAR_END)
        self._read = 0
        self._parts: PartsReader | None = None

    def _read_exact(self, stream: Readable, n: int, what: str) -> bytes:
        """Every decompressed byte comes through here, so every zstd failure becomes a FormatError
        here too (naming the part, when split): member chunks are read by the caller, outside members()."""
        if self._read + n > self._limit:
            raise FormatError("cap", "payload decompresses past the sizes the manifest declares")
        with self._naming_the_part(what):
            data = read_exact(stream, n, what)
        self._read += n
        return data

    def members(self) -> Generator[tuple[str, int, Iterator[bytes]], None, None]:
        """Yields (path, size, chunks); each chunk iterator must be consumed before the next item."""
        scanner = ZstdFrameScanner()
        with contextlib.ExitStack() as stack:
            raw = BundleFiles.of(self._path).open()
            stack.callback(raw.close)
            raw.seek(self._head.frame_size)
            self._parts = raw if isinstance(raw, PartsReader) else None
            source = _ScannedSource(raw, scanner, HashBeside(hashlib.sha256(self._head.frame)))
            stack.callback(source.hasher.finish)  # the hashing thread ends however reading ends
            dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
            stream = dctx.stream_reader(cast(BinaryIO, source), read_size=CHUNK, read_across_frames=True)
            for path, size in self._expected:
                member = self._next_member(stream, path)
                if member.name != path:
                    raise FormatError("members", f"unexpected payload member {member.name!r} (expected {path})")
                if member.size != size:
                    raise FormatError("members", f"{path} is {member.size} bytes, the manifest says {size}")
                yield path, size, self._chunks(stream, path, size)
            end = self._read_exact(stream, BLOCK, "tar end")
            if end != b"\0" * BLOCK:
                member = self._member_from_block(stream, end)
                raise FormatError("members", f"extra member {member.name!r} not listed in the manifest")
            if self._read_exact(stream, BLOCK, "tar end") != b"\0" * BLOCK:
                raise FormatError("trailing", "bytes after the tar end")
            with self._naming_the_part("the end"):
                if stream.read(1):
                    raise FormatError("trailing", "bytes after the tar end")
                while source.read(CHUNK):
                    pass
                if not scanner.at_frame_boundary:
                    raise FormatError("truncated", "bundle is truncated (inside a zstd frame)")
            if scanner.frames_ended != 1:
                raise FormatError("trailing", f"the payload is {scanner.frames_ended} zstd frames, the format allows one")
            self.file_sha256 = source.hasher.finish().hexdigest()

    @contextlib.contextmanager
    def _naming_the_part(self, what: str) -> Iterator[None]:
        """Every zstd failure becomes a FormatError; in a split bundle it names the part the stream broke in."""
        try:
            yield
        except zstandard.ZstdError as e:
            raise self._in_part(FormatError("zstd", f"payload does not decompress ({what}): {e}")) from None
        except FormatError as e:
            raise self._in_part(e) from None

    def blame(self) -> FormatError | None:
        """For a member whose hash did not match: the part to blame, when the sidecar names one."""
        return self._parts.blame() if self._parts else None

    def _in_part(self, e: FormatError) -> FormatError:
        if self._parts is None or e.check == "parts":
            return e
        return self._parts.blame() or FormatError(e.check, f"{e} (the stream broke in part {self._parts.where()})")

    def _next_member(self, stream: Readable, expected_path: str) -> TarMember:
        block = self._read_exact(stream, BLOCK, f"header of {expected_path}")
        if block == b"\0" * BLOCK:
            raise FormatError("members", f"payload member {expected_path} is missing")
        return self._member_from_block(stream, block)

    def _member_from_block(self, stream: Readable, block: bytes) -> TarMember:
        member = parse_tar_header(block)
        assert member is not None  # the callers handle the zero block (the tar end)
        if member.size == -1:  # pax record: only a size for the member that follows
            body_len = parse_octal(block[124:136], "size")
            if body_len > BLOCK:
                raise FormatError("tar", "tar pax header too large")
            body = self._read_exact(stream, body_len + pad(body_len), "pax header")[:body_len]
            real = self._read_exact(stream, BLOCK, "header after pax")
            member = parse_tar_header(real, pax_size=parse_pax_size(body))
            if member is None or member.size < 0:
                raise FormatError("tar", "tar pax header not followed by a regular file")
        return member

    def _chunks(self, stream: Readable, path: str, size: int) -> Iterator[bytes]:
        left = size
        while left:
            chunk = self._read_exact(stream, min(CHUNK, left), path)
            left -= len(chunk)
            yield chunk
        self._read_exact(stream, pad(size), path)
