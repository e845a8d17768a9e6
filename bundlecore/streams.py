"""What the format and patch code read from and write to: anything with `read` or `write`
(a file, the parts of a split bundle, a zstd stream, a hashing wrapper), typed once."""

from __future__ import annotations

from typing import Protocol


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...
