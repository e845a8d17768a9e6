"""zstd frame structure, walked without decompressing: where each frame ends (so the head frame
can be cut out exactly), no skippable frames, no trailing garbage; and frame padding."""

from __future__ import annotations

import struct

from bundlecore.format.layout import FormatError


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
