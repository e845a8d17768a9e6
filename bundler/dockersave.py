"""Reading the `docker save` tar stream as it arrives, with few copies: big reads straight from
the HTTP response into sha256 and zstd. The input is the local engine's own output (trusted),
so this reader is lenient where bundlecore.format's is strict: it understands the pax and GNU
extensions Go's archive/tar writes and reports links and directories instead of refusing them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator

from bundlecore.errors import EnvironmentProblem
from bundlecore.format import BLOCK, CHUNK


@dataclass
class SavedMember:
    name: str
    size: int
    kind: str          # "file", "symlink", "hardlink", "dir", "other"
    linkname: str = ""


def _read(raw: BinaryIO, n: int) -> bytes:
    data = raw.read(n)
    if len(data) == n:
        return data
    buf = bytearray(data)
    while len(buf) < n:
        more = raw.read(n - len(buf))
        if not more:
            raise EnvironmentProblem("docker save stream ended early")
        buf += more
    return bytes(buf)


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


class DockerSaveReader:
    """Iterate members; for files, `chunks(member)` must be consumed before the next member."""

    KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"2": "symlink", b"1": "hardlink", b"5": "dir"}

    def __init__(self, raw: BinaryIO):
        self.raw = raw

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

    def chunks(self, member: SavedMember) -> Iterator[bytes]:
        while self._pending:
            chunk = _read(self.raw, min(CHUNK, self._pending))
            self._pending -= len(chunk)
            yield chunk

    def _skip(self, n: int) -> None:
        while n:
            n -= len(_read(self.raw, min(CHUNK, n)))
