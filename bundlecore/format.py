"""The bundle format, defined once: the writer (`bundle build`) and the reader (`bundle verify/import`).

A bundle is ONE zstd file that decompresses to ONE tar stream (docs/format.md):

  frame 1 (the head):  manifest.json, SHA256SUMS, SHA256SUMS.asc      -- no tar end marker
  frame 2 (payload):   images/... payload files, in the manifest's order, then the tar end
                       (exactly two zero blocks) and nothing after it, not even another frame

So a reader can check the signature over SHA256SUMS before it decompresses a byte of payload,
and a signature can be added by rewriting the first frame only. Every tar member is a regular
file with a fixed, plain name; the reader accepts nothing else.

The reader trusts nothing: the head frame is located by walking the zstd frame structure
(`ZstdFrameScanner`), with caps on every size; payload decompression uses a bounded window;
the tar headers are parsed here (no tarfile, no extraction) and checked against an exact
member list; bytes after the tar end, skippable frames and trailing garbage are errors.

A bundle may be split into parts (`OUT.part001`, `OUT.part002`, ... for removable media): the
reader takes them in order as ONE stream (`BundleFiles`, `PartsReader`), never joined on disk.
The head frame must lie inside the first part. When `OUT.sha256` lists the parts, the set of
parts is checked against it before anything is read and each part's sha256 as its last byte
passes; otherwise a broken stream names the part it broke in. Those per-part lines only name
the bad part: the signed SHA256SUMS still decides.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import queue
import re
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Generator, Iterable, Iterator, NoReturn, cast

import zstandard

from bundlecore.streams import Readable

FORMAT_VERSION = 1

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
SIGNATURES = "SHA256SUMS.asc"
HEAD_MEMBERS = (MANIFEST, SUMS, SIGNATURES)
PAYLOAD_PREFIX = "images/"
DOCKER_ARCHIVE_MANIFEST = PAYLOAD_PREFIX + "manifest.json"

# Caps, enforced before the bytes they bound are used.
MAX_MANIFEST = 4 << 20
MAX_SUMS = 4 << 20
MAX_SIGNATURES = 256 << 10
MAX_SIGNATURE_BLOCKS = 16
MAX_HEAD_TAR = MAX_MANIFEST + MAX_SUMS + MAX_SIGNATURES + 6 * 512
MAX_HEAD_FRAME = MAX_HEAD_TAR + (64 << 10)  # compressed head is never larger than this
MAX_WINDOW = 1 << 25  # decoder memory bound; the writer stays well under it

BLOCK = 512
TAR_END = b"\0" * (2 * BLOCK)
_USTAR_SIZE_LIMIT = 8**11  # sizes from here on need a pax header
_PAYLOAD_NAME = re.compile(r"^images/(?:[A-Za-z0-9._-]+/)*[A-Za-z0-9._-]+$")

COMPRESSION_LEVEL = 3
JOB_SIZE = 4 << 20
CHUNK = 1 << 20


class FormatError(ValueError):
    """The bytes are not a well-formed bundle; `check` names the rule they broke."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


# ---------------------------------------------------------------------------------------------
# tar headers (ustar, plus a pax 'x' record for sizes of 8 GiB and more)
# ---------------------------------------------------------------------------------------------

def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _ustar_header(name: str, size: int, mtime: int, typeflag: bytes) -> bytes:
    raw = name.encode()
    if len(raw) > 100:
        raise ValueError(f"tar member name too long for this format: {name}")
    hdr = bytearray(BLOCK)
    hdr[0:len(raw)] = raw
    hdr[100:108] = _octal(0o644, 8)
    hdr[108:116] = _octal(0, 8)
    hdr[116:124] = _octal(0, 8)
    hdr[124:136] = _octal(size if size < _USTAR_SIZE_LIMIT else 0, 12)
    hdr[136:148] = _octal(mtime, 12)
    hdr[148:156] = b" " * 8
    hdr[156:157] = typeflag
    hdr[257:265] = b"ustar\x0000"
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr)


def _pad(n: int) -> int:
    return -n % BLOCK


def tar_member_header(name: str, size: int, mtime: int) -> bytes:
    """The header block(s) of one regular file; a pax record carries sizes of 8 GiB and more."""
    if size < _USTAR_SIZE_LIMIT:
        return _ustar_header(name, size, mtime, b"0")
    body = b""
    rec = b" size=%d\n" % size
    length = len(rec)
    while len(b"%d" % length) + len(rec) != length:
        length = len(b"%d" % length) + len(rec)
    body = b"%d" % length + rec
    pax = _ustar_header("PaxHeader/" + name[-80:], len(body), mtime, b"x")
    return pax + body + b"\0" * _pad(len(body)) + _ustar_header(name, size, mtime, b"0")


def tar_member(name: str, data: bytes, mtime: int) -> bytes:
    return tar_member_header(name, len(data), mtime) + data + b"\0" * _pad(len(data))


@dataclass(frozen=True)
class TarMember:
    name: str
    size: int


def _parse_octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text or not re.fullmatch(rb"[0-7]+", text):
        raise FormatError("tar", f"tar header has a malformed {what} field")
    return int(text, 8)


def _check_member_name(name: str) -> None:
    if name.startswith("/") or "\\" in name:
        raise FormatError("tar", f"tar member {name!r} has an absolute path")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise FormatError("tar", f"tar member {name!r} has a '..', '.' or empty path component")


def parse_tar_header(block: bytes, pax_size: int | None = None) -> TarMember | None:
    """Parse one header block strictly. Returns None for a zero block (the tar end)."""
    if block == b"\0" * BLOCK:
        return None
    stored = _parse_octal(block[148:156], "checksum")
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != actual:
        raise FormatError("tar", "tar header checksum mismatch")
    if block[257:263] not in (b"ustar\x00", b"ustar "):
        raise FormatError("tar", "tar header is not ustar")
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:263] == b"ustar\x00" else b""
    if prefix:
        name = prefix + b"/" + name
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("tar", "tar member name is not UTF-8") from None
    typeflag = block[156:157]
    kinds = {b"1": "hard link", b"2": "symlink", b"3": "character device", b"4": "block device",
             b"5": "directory", b"6": "fifo", b"7": "contiguous file", b"g": "global pax header",
             b"L": "GNU long name", b"K": "GNU long link"}
    if typeflag == b"x":
        return TarMember(text, -1)  # a pax record; caller reads it
    if typeflag not in (b"0", b"\0"):
        raise FormatError("tar", f"tar member {text!r} is a {kinds.get(typeflag, 'special entry')}, not a regular file")
    _check_member_name(text)
    size = _parse_octal(block[124:136], "size") if pax_size is None else pax_size
    return TarMember(text, size)


def parse_pax_size(body: bytes) -> int:
    """Only the 'size' key is accepted in a pax record (the writer emits nothing else)."""
    m = re.fullmatch(rb"(\d+) size=(\d+)\n", body)
    if not m or int(m.group(1)) != len(body):
        raise FormatError("tar", "tar pax header carries something other than a size")
    return int(m.group(2))


# ---------------------------------------------------------------------------------------------
# zstd frame structure
# ---------------------------------------------------------------------------------------------

ZSTD_MAGIC = 0xFD2FB528


class ZstdFrameScanner:
    """Walks the structure of zstd frames as bytes pass through, without decompressing.

    It finds where each frame ends, so the head frame can be cut out exactly, and it refuses
    skippable frames and anything that is not a zstd frame (trailing garbage)."""

    def __init__(self) -> None:
        self.offset = 0          # bytes seen
        self.frames_ended = 0
        self.frame_ends: list[int] = []
        self._need = 4           # bytes still wanted by the current state
        self._buf = b""
        self._state = "magic"
        self._skip = 0           # bytes of block body / checksum to pass over
        self._checksum = False

    @property
    def at_frame_boundary(self) -> bool:
        return self._state == "magic" and not self._buf and self._skip == 0

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                if self._skip == 0 and self._state == "end":
                    self._frame_done(self.offset + pos)
                continue
            take = min(self._need - len(self._buf), n - pos)
            self._buf += data[pos:pos + take]
            pos += take
            if len(self._buf) == self._need:
                buf, self._buf = self._buf, b""
                self._step(buf, self.offset + pos)
        self.offset += n

    def _frame_done(self, end: int) -> None:
        self.frames_ended += 1
        self.frame_ends.append(end)
        self._state, self._need = "magic", 4

    def _step(self, buf: bytes, at: int) -> None:
        if self._state == "magic":
            magic = struct.unpack("<I", buf)[0]
            if 0x184D2A50 <= magic <= 0x184D2A5F:
                raise FormatError("zstd", f"skippable zstd frame at byte {at - 4}: not allowed in a bundle")
            if magic != ZSTD_MAGIC:
                raise FormatError("zstd", f"not a zstd frame at byte {at - 4} (wrong magic or trailing garbage)")
            self._state, self._need = "fhd", 1
        elif self._state == "fhd":
            fhd = buf[0]
            fcs_flag, single, reserved, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 3) & 1, (fhd >> 2) & 1, fhd & 3
            if reserved:
                raise FormatError("zstd", "zstd frame header has the reserved bit set")
            self._checksum = bool(checksum)
            fcs_size = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fcs_flag]
            rest = (0 if single else 1) + {0: 0, 1: 1, 2: 2, 3: 4}[did_flag] + fcs_size
            if rest:
                self._state, self._need = "fh_rest", rest
            else:
                self._state, self._need = "block", 3
        elif self._state == "fh_rest":
            self._state, self._need = "block", 3
        elif self._state == "block":
            hdr = buf[0] | buf[1] << 8 | buf[2] << 16
            last, btype, bsize = hdr & 1, (hdr >> 1) & 3, hdr >> 3
            if btype == 3:
                raise FormatError("zstd", "zstd block of reserved type")
            body = 1 if btype == 1 else bsize
            if last:
                self._state = "end"
                self._skip = body + (4 if self._checksum else 0)
                if self._skip == 0:
                    self._frame_done(at)
            else:
                self._skip = body
                self._need = 3


# ---------------------------------------------------------------------------------------------
# SHA256SUMS and JSON
# ---------------------------------------------------------------------------------------------

def format_sha256sums(entries: Iterable[tuple[str, str]]) -> bytes:
    """coreutils `sha256sum` text format: '<64 hex>  <name>' per line, sorted by name."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(entries)).encode()


_SUM_LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9._/-]+)")


def parse_sha256sums(raw: bytes) -> dict[str, str]:
    """Strict inverse of format_sha256sums: name -> hex digest. No duplicates, no odd lines."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("sums", "SHA256SUMS is not ASCII") from None
    if not text.endswith("\n"):
        raise FormatError("sums", "SHA256SUMS does not end with a newline")
    out: dict[str, str] = {}
    for i, line in enumerate(text[:-1].split("\n"), 1):
        m = _SUM_LINE.fullmatch(line)
        if not m:
            raise FormatError("sums", f"SHA256SUMS line {i} is not '<sha256>  <name>'")
        if m.group(2) in out:
            raise FormatError("sums", f"SHA256SUMS names {m.group(2)} twice")
        out[m.group(2)] = m.group(1)
    return out


def loads_strict_json(raw: bytes, what: str) -> Any:
    """json.loads that refuses duplicate keys (Python would keep the last one silently) and NaN/Infinity."""

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for k, v in pairs:
            if k in obj:
                raise FormatError("json", f"{what} has the key {k!r} twice")
            obj[k] = v
        return obj

    def no_constants(name: str) -> NoReturn:  # NaN, Infinity: Python's extension, not JSON (a NaN limit compares false)
        raise FormatError("json", f"{what} has {name}, which is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_dupes, parse_constant=no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError("json", f"{what} is not valid JSON: {e}") from None


def dumps_canonical(obj: object) -> bytes:
    """The one JSON form written anywhere (manifest.json, state files): sorted keys, so equal data
    gives equal bytes."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

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

    def add(self, path: str, size: int, chunks: Iterable[bytes], on_bytes: Callable[[int], None] | None = None) -> PayloadFile:
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
        self._writer.write(b"\0" * _pad(size))
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


def _hash_file(h: hashlib._Hash, path: Path, offset: int) -> None:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(4 * CHUNK):
            h.update(chunk)


def assemble(out_path: Path, head_frame: bytes, payload_path: Path, payload_offset: int = 0) -> str:
    """Write head + payload frames to `out_path` (a temp name the caller renames); returns its sha256.

    The payload is copied in the kernel while a second thread hashes it (sha256 releases the GIL),
    so the copy costs about one sha256 pass."""
    h = hashlib.sha256(head_frame)
    hasher = threading.Thread(target=_hash_file, args=(h, payload_path, payload_offset))
    hasher.start()
    try:
        with open(out_path, "wb") as out, open(payload_path, "rb") as src:
            out.write(head_frame)
            _copy_range(src, out, payload_offset)
            out.flush()
            os.fsync(out.fileno())
    finally:
        hasher.join()
    return h.hexdigest()


# `bundle build` writes the payload frame at PAYLOAD_OFFSET of the output's temp file (the space in
# front is a hole: no disk), then puts the head right before it and drops the space in front with
# fallocate(COLLAPSE_RANGE), which moves no data -- instead of copying the payload behind the head.
# COLLAPSE_RANGE takes whole filesystem blocks, so the head frame is padded to end on one with
# empty zstd blocks (3 bytes each, or 4 for an empty RLE block; they decompress to nothing).
FS_BLOCK = 4096
PAYLOAD_OFFSET = -(-(MAX_HEAD_FRAME + 2 * FS_BLOCK) // FS_BLOCK) * FS_BLOCK
_FALLOC_FL_COLLAPSE_RANGE = 0x08
_EMPTY_RAW_BLOCK = b"\0\0\0"          # not last, raw, size 0
_EMPTY_RLE_BLOCK = b"\x02\0\0\0"      # not last, RLE, size 0, its one byte


def _frame_header_size(frame: bytes) -> int:
    fhd = frame[4]
    fcs_flag, single, did_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    return 5 + (0 if single else 1) + (0, 1, 2, 4)[did_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag]


def pad_frame(frame: bytes, n: int) -> bytes:
    """`frame` made exactly `n` bytes longer by empty blocks after its header (same content,
    same checksum). n = 1, 2 and 5 cannot be made of 3s and 4s."""
    if n in (1, 2, 5) or n < 0:
        raise ValueError(f"a zstd frame cannot be padded by {n} bytes")
    rle, rest = (0, n) if n % 3 == 0 else ((1, n - 4) if n % 3 == 1 else (2, n - 8))
    at = _frame_header_size(frame)
    return frame[:at] + _EMPTY_RLE_BLOCK * rle + _EMPTY_RAW_BLOCK * (rest // 3) + frame[at:]


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
        hasher = threading.Thread(target=_hash_file, args=(h, path, payload_offset))
        hasher.start()
        try:
            os.fsync(f.fileno())
        finally:
            hasher.join()
        if not _collapse_front(f.fileno(), front):
            raise OSError(errno.EOPNOTSUPP, "fallocate(COLLAPSE_RANGE) stopped working")
        os.fsync(f.fileno())
    return h.hexdigest()


def rewrite_head(bundle: Path, out_path: Path, head: "Head", signatures: bytes) -> str:
    """Copy `bundle` to `out_path` with a new first frame carrying `signatures`; returns the sha256."""
    new_head = compress_head(head.manifest, head.sums, signatures, head.mtime)
    return assemble(out_path, new_head, bundle, payload_offset=head.frame_size)


def rewrite_split_head(files: "BundleFiles", out_path: Path, head: "Head", signatures: bytes) -> tuple[str, str]:
    """A split bundle's first part with a new head frame, written to `out_path` (the head lies in
    the first part; the other parts are only read); returns (sha256 of the new first part, of the whole)."""
    first = rewrite_head(files.first, out_path, head, signatures)
    whole = hashlib.sha256()
    for part in (out_path, *files.parts[1:]):
        _hash_file(whole, part, 0)
    return first, whole.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

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
        mtime = _parse_octal(block[136:148], "mtime")
        members[expected] = read_exact(stream, member.size, expected)
        read_exact(stream, _pad(member.size), expected)
    if stream.read(1):
        raise FormatError("head", "head frame holds more than manifest.json, SHA256SUMS and SHA256SUMS.asc")
    return Head(members[MANIFEST], members[SUMS], members[SIGNATURES], start[:size], mtime)


class _ScannedSource:
    """Raw file reader that walks zstd frame structure on the bytes it hands out, and hashes them."""

    def __init__(self, f: Readable, scanner: ZstdFrameScanner, hasher: hashlib._Hash) -> None:
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
        self._limit = sum(size + _pad(size) + 3 * BLOCK for _, size in expected) + len(TAR_END)
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
        with BundleFiles.of(self._path).open() as raw:
            raw.seek(self._head.frame_size)
            self._parts = raw if isinstance(raw, PartsReader) else None
            source = _ScannedSource(raw, scanner, hashlib.sha256(self._head.frame))
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
            self.file_sha256 = source.hasher.hexdigest()

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
            body_len = _parse_octal(block[124:136], "size")
            if body_len > BLOCK:
                raise FormatError("tar", "tar pax header too large")
            body = self._read_exact(stream, body_len + _pad(body_len), "pax header")[:body_len]
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
        self._read_exact(stream, _pad(size), path)


# ---------------------------------------------------------------------------------------------
# Split bundles: OUT.part001, OUT.part002, ... read as one stream
# ---------------------------------------------------------------------------------------------

MIN_PART_SIZE = 64 << 10  # and never smaller than the head frame, which must fit in the first part
MAX_PARTS = 999           # three-digit part numbers
_PART_NAME = re.compile(r"^(?P<stem>.+)\.part(?P<n>[0-9]{3})$")
_SIZE = re.compile(r"^([0-9]+)([KMG]?)$")


def parse_part_size(text: str) -> int:
    """'3900M' -> bytes (K, M, G are powers of 1024); at least MIN_PART_SIZE. ValueError otherwise."""
    m = _SIZE.fullmatch(text.strip().upper())
    if not m:
        raise ValueError(f"part size {text!r} is not a number with an optional K, M or G")
    size = int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]
    if size < MIN_PART_SIZE:
        raise ValueError(f"part size {text!r} is below the minimum of {MIN_PART_SIZE // 1024}K")
    return size


def part_path(out: Path, n: int) -> Path:
    return out.with_name(f"{out.name}.part{n:03d}")


def sums_path(out: Path) -> Path:
    """The sidecar `OUT.sha256`: a line for the whole bundle and, when split, one per part."""
    return out.with_name(out.name + ".sha256")


@dataclass(frozen=True)
class BundleFiles:
    """The file(s) one bundle path names: a single file, or its parts in order (with their
    sha256 from `OUT.sha256` when that file lists them)."""

    stem: Path
    parts: tuple[Path, ...]
    part_sums: dict[str, str]
    whole_sum: str | None = None

    @property
    def split(self) -> bool:
        return self.parts != (self.stem,)

    @property
    def first(self) -> Path:
        return self.parts[0]

    @staticmethod
    def exists(path: Path) -> bool:
        path = Path(path)
        return path.is_file() or part_path(path, 1).is_file()

    @classmethod
    def of(cls, path: Path) -> "BundleFiles":
        """`OUT`, `OUT.partNNN` (any part) or the prefix `OUT` of parts. FormatError('parts') when a
        part is missing or a part is there that the sidecar does not list."""
        path = Path(path)
        m = _PART_NAME.match(path.name)
        if m is None and (path.is_file() or not part_path(path, 1).exists()):
            return cls(path, (path,), {})
        stem = path.with_name(m.group("stem")) if m else path
        listed = cls._sidecar(stem)
        whole = listed.pop(stem.name, None)
        found = sorted(p.name for p in stem.parent.glob(stem.name + ".part[0-9][0-9][0-9]"))
        if listed:
            names = sorted(listed)
            missing = [n for n in names if n not in found]
            if missing:
                raise FormatError("parts", f"part {missing[0]} is missing ({len(names)} parts listed in {sums_path(stem).name})")
            extra = [n for n in found if n not in listed]
            if extra:
                raise FormatError("parts", f"part {extra[0]} is not listed in {sums_path(stem).name}")
        else:
            names = [part_path(stem, n).name for n in range(1, len(found) + 1)]
            missing = [n for n in names if n not in found]
            if missing or not names:
                raise FormatError("parts", f"part {missing[0] if missing else part_path(stem, 1).name} is missing")
        return cls(stem, tuple(stem.with_name(n) for n in names), listed, whole)

    @staticmethod
    def _sidecar(stem: Path) -> dict[str, str]:
        """name -> sha256 from `OUT.sha256`, when it is there and well-formed (it is a convenience)."""
        try:
            raw = sums_path(stem).read_bytes()
        except OSError:
            return {}
        if len(raw) > MAX_SUMS:
            return {}
        try:
            return parse_sha256sums(raw)
        except FormatError:
            return {}

    def open(self) -> PartsReader | BinaryIO:
        return PartsReader(self) if self.split else open(self.first, "rb")


class _HashBeside:
    """sha256 of a stream computed on its own thread (hashlib releases the GIL), so checking a part
    costs no time on the reader's path; at most `depth` chunks wait, so memory stays flat."""

    def __init__(self, start: hashlib._Hash | None = None, depth: int = 8) -> None:
        self._h = start or hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._h.update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def finish(self) -> hashlib._Hash:
        """The hash of everything given so far (the thread ends; nothing more may be added)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._h


class PartsReader:
    """A read-only stream over the parts in order. Each part listed in the sidecar is hashed as it
    passes and checked once its last byte was read, before any byte of the next part is handed out,
    so a swapped, truncated or corrupted part is named as itself."""

    def __init__(self, files: BundleFiles) -> None:
        self._files = files
        self._index = -1
        self._fh: BinaryIO | None = None
        self._hash: _HashBeside | None = None
        self._next_part()

    def _next_part(self) -> bool:
        if self._fh:
            self._fh.close()
            self._check_part()
        self._index += 1
        if self._index >= len(self._files.parts):
            self._fh = None
            return False
        self._fh = open(self._files.parts[self._index], "rb")
        self._hash = _HashBeside()
        return True

    def _check_part(self) -> None:
        name = self._files.parts[self._index].name
        want = self._files.part_sums.get(name)
        assert self._hash is not None  # a part is open
        if want is not None and self._hash.finish().hexdigest() != want:
            raise FormatError("parts", f"part {name} does not match its line in {sums_path(self._files.stem).name} "
                                       f"(swapped, truncated or corrupted)")

    def blame(self) -> FormatError | None:
        """When the stream broke inside a part: that part's refusal if the sidecar's line says it is bad."""
        if self._fh is None or self._hash is None:
            return None
        h = self._hash.finish()
        while chunk := self._fh.read(4 * CHUNK):
            h.update(chunk)
        self._hash = _HashBeside(h)
        try:
            self._check_part()
        except FormatError as e:
            return e
        return None

    def where(self) -> str | None:
        """The part being read (or the last one, at the end)."""
        parts = self._files.parts
        return parts[min(self._index, len(parts) - 1)].name

    def read(self, n: int = -1) -> bytes:
        while self._fh is not None:
            data = self._fh.read(n if n >= 0 else 4 * CHUNK)
            if data and self._hash is not None:
                self._hash.update(data)
                return data
            if not self._next_part():
                break
        return b""

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Only a forward skip from the start (past the head frame), read through the part hash."""
        if whence != os.SEEK_SET or self._index != 0 or self._fh is None or self._fh.tell() != 0:
            raise io.UnsupportedOperation("a split bundle is read forward only")
        left = offset
        while left:
            got = self.read(min(left, CHUNK))
            if not got:
                break
            left -= len(got)
        return offset - left

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
        if self._hash:
            self._hash.finish()  # ends its thread

    def __enter__(self) -> PartsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_parts(src: Path, out: Path, part_size: int, tmp_suffix: str) -> list[tuple[Path, Path, str]]:
    """Copy `src` into parts of `part_size` bytes under temp names; returns [(temp, final, sha256)]
    in order. The caller renames them (and removes the temps on failure)."""
    written: list[tuple[Path, Path, str]] = []
    try:
        _write_parts(src, out, part_size, tmp_suffix, written)
    except BaseException:
        for tmp, _, _ in written:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        raise
    return written


def _write_parts(src: Path, out: Path, part_size: int, tmp_suffix: str, written: list[tuple[Path, Path, str]]) -> None:
    with open(src, "rb") as f:
        n = 1
        while True:
            chunk = f.read(min(part_size, 4 * CHUNK))
            if not chunk:
                break
            final = part_path(out, n)
            tmp = final.with_name(f".{final.name}{tmp_suffix}")
            written.append((tmp, final, ""))
            h, left = hashlib.sha256(), part_size
            with open(tmp, "wb") as dst:
                while chunk:
                    h.update(chunk)
                    dst.write(chunk)
                    left -= len(chunk)
                    chunk = f.read(min(left, 4 * CHUNK)) if left else b""
                dst.flush()
                os.fsync(dst.fileno())
            written[-1] = (tmp, final, h.hexdigest())
            n += 1


def join_parts(path: Path, out: Path) -> str:
    """Write the parts `path` names as the single file `out` (temp name + rename); returns its sha256.
    Each part is checked against the sidecar as it passes, the whole too when the sidecar lists it."""
    files = BundleFiles.of(path)
    if not files.split:
        raise FormatError("parts", f"{path} is not a split bundle (no {part_path(files.stem, 1).name})")
    tmp = out.with_name(f".{out.name}.join-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with files.open() as src, open(tmp, "wb") as dst:
            while chunk := src.read(4 * CHUNK):
                h.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if files.whole_sum is not None and h.hexdigest() != files.whole_sum:
            raise FormatError("parts", f"the joined parts do not match the line for {files.stem.name} "
                                       f"in {sums_path(files.stem).name}")
        os.replace(tmp, out)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return h.hexdigest()
