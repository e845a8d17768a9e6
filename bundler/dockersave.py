"""Reading the `docker save` tar stream as it arrives, with few copies: big reads straight from
the HTTP response into sha256 and zstd. The input is the local engine's own output (trusted),
so this reader is lenient where bundlecore.format's is strict: it understands the pax and GNU
extensions Go's archive/tar writes and reports links and directories instead of refusing them."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from bundlecore.errors import EnvironmentProblem
from bundlecore.format import BLOCK, CHUNK, FormatError, read_exact
from bundlecore.streams import Readable


@dataclass
class SavedMember:
    name: str
    size: int
    kind: str          # "file", "symlink", "hardlink", "dir", "other"
    linkname: str = ""


def _read(raw: Readable, n: int) -> bytes:
    try:
        return read_exact(raw, n, "docker save")
    except FormatError:
        raise EnvironmentProblem("docker save stream ended early") from None


def _number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").lstrip(b" ")
    return int(text, 8) if text else 0


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(body: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(body):
        space = body.index(b" ", pos)
        length = int(body[pos:space])
        key, _, value = body[space + 1:pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class Prefetcher:
    """Reads `raw` ahead on its own thread (a few MiB at most), so receiving the stream overlaps
    with hashing and compressing it. `read(n)` returns exactly n bytes unless the stream ends."""

    def __init__(self, raw: BinaryIO, depth: int = 8):
        self._raw = raw
        self._chunks: queue.Queue = queue.Queue(maxsize=depth)
        self._buf = b""
        self._pos = 0
        self._eof = False
        threading.Thread(target=self._run, name="docker-save-reader", daemon=True).start()

    def _run(self) -> None:
        try:
            while chunk := self._raw.read(CHUNK):
                self._chunks.put(chunk)
            self._chunks.put(b"")
        except BaseException as e:  # handed to the reading side
            self._chunks.put(e)

    def _next(self) -> bool:
        item = self._chunks.get()
        if isinstance(item, BaseException):
            raise EnvironmentProblem(f"reading the docker save stream failed: {item}")
        if not item:
            self._eof = True
            return False
        self._buf, self._pos = item, 0
        return True

    def read(self, n: int) -> bytes:
        if self._pos == len(self._buf) and (self._eof or not self._next()):
            return b""
        if self._pos == 0 and n >= len(self._buf):  # a whole chunk: hand it over without copying
            self._pos = len(self._buf)
            return self._buf
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def read_some(self, n: int) -> memoryview:
        """Up to n bytes, as many as the chunk at hand still holds: a view, never a copy (file
        data crosses the prefetched chunks' borders, and joining them costs a copy per chunk)."""
        if self._pos == len(self._buf) and (self._eof or not self._next()):
            return memoryview(b"")
        out = memoryview(self._buf)[self._pos:self._pos + n]
        self._pos += len(out)
        return out


class DockerSaveReader:
    """Iterate members; for files, `chunks(member)` must be consumed before the next member."""

    KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"2": "symlink", b"1": "hardlink", b"5": "dir"}

    def __init__(self, raw: BinaryIO):
        self.raw = Prefetcher(raw)

    def members(self) -> Iterator[SavedMember]:
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            block = _read(self.raw, BLOCK)
            if block == b"\0" * BLOCK:
                return
            flag = block[156:157]
            size = _number(block[124:136])
            if flag in (b"x", b"g", b"L", b"K"):
                body = _read(self.raw, size + (-size % BLOCK))[:size]
                if flag == b"x":
                    pax = _pax(body)
                elif flag == b"L":
                    long_name = _cstr(body)
                elif flag == b"K":
                    long_link = _cstr(body)
                continue
            name = _cstr(block[0:100])
            prefix = _cstr(block[345:500]) if block[257:263] == b"ustar\x00" else ""
            name = pax.get("path") or long_name or (f"{prefix}/{name}" if prefix else name)
            linkname = pax.get("linkpath") or long_link or _cstr(block[157:257])
            size = int(pax["size"]) if "size" in pax else size
            pax, long_name, long_link = {}, None, None
            member = SavedMember(name, size, self.KINDS.get(flag, "other"), linkname)
            if member.kind != "file":
                self._skip(size)
                yield member
                continue
            self._pending = size
            yield member
            if self._pending:
                self._skip(self._pending)
            self._skip(-size % BLOCK)

    def chunks(self, member: SavedMember) -> Iterator[memoryview]:
        """The file's bytes as views of the stream's own chunks (no copy), each used before the next."""
        while self._pending:
            chunk = self.raw.read_some(self._pending)
            if not chunk:
                raise EnvironmentProblem("docker save stream ended early")
            self._pending -= len(chunk)
            yield chunk

    def _skip(self, n: int) -> None:
        while n:
            n -= len(_read(self.raw, min(CHUNK, n)))
