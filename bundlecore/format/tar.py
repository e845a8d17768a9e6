"""tar headers, written and parsed strictly: ustar, plus a pax 'x' record for sizes of 8 GiB and
more. No tarfile, no extraction: a member is a regular file with a plain name or an error."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bundlecore.format.layout import BLOCK, FormatError


_USTAR_SIZE_LIMIT = 8**11  # sizes from here on need a pax header


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


def pad(n: int) -> int:
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
    return pax + body + b"\0" * pad(len(body)) + _ustar_header(name, size, mtime, b"0")


def tar_member(name: str, data: bytes, mtime: int) -> bytes:
    return tar_member_header(name, len(data), mtime) + data + b"\0" * pad(len(data))


def tar_member_size(name: str, size: int) -> int:
    """How many bytes `tar_member` of a `size`-byte file named `name` takes: header(s), data, padding."""
    return len(tar_member_header(name, size, 0)) + size + pad(size)


@dataclass(frozen=True)
class TarMember:
    name: str
    size: int


def parse_octal(field: bytes, what: str) -> int:
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
    stored = parse_octal(block[148:156], "checksum")
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
    size = parse_octal(block[124:136], "size") if pax_size is None else pax_size
    return TarMember(text, size)


def parse_pax_size(body: bytes) -> int:
    """Only the 'size' key is accepted in a pax record (the writer emits nothing else)."""
    m = re.fullmatch(rb"(\d+) size=(\d+)\n", body)
    if not m or int(m.group(1)) != len(body):
        raise FormatError("tar", "tar pax header carries something other than a size")
    return int(m.group(2))
