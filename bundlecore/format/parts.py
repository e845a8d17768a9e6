"""Split bundles: OUT.part001, OUT.part002, ... written, read as one stream (each part checked
against the sidecar OUT.sha256 as it passes) and joined."""

from __future__ import annotations

import hashlib
import io
import os
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bundlecore.format.encoding import parse_sha256sums
from bundlecore.fsutil import create_fresh, temp_name
from bundlecore.format.layout import CHUNK, MAX_SUMS, FormatError


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


class HashBeside:
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
        self._hash: HashBeside | None = None
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
        self._hash = HashBeside()
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
        self._hash = HashBeside(h)
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


def write_parts(src: Path, out: Path, part_size: int) -> list[tuple[Path, Path, str]]:
    """Copy `src` into parts of `part_size` bytes, each a fresh file under an unpredictable temp
    name (bundlecore.fsutil: a link planted in a shared output directory is never followed);
    returns [(temp, final, sha256)] in order. The caller renames them (and removes the temps on failure)."""
    written: list[tuple[Path, Path, str]] = []
    try:
        _write_parts(src, out, part_size, written)
    except BaseException:
        for tmp, _, _ in written:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        raise
    return written


def _write_parts(src: Path, out: Path, part_size: int, written: list[tuple[Path, Path, str]]) -> None:
    with open(src, "rb") as f:
        n = 1
        while True:
            chunk = f.read(min(part_size, 4 * CHUNK))
            if not chunk:
                break
            final = part_path(out, n)
            tmp = temp_name(final)
            h, left = hashlib.sha256(), part_size
            with create_fresh(tmp, 0o666) as dst:
                written.append((tmp, final, ""))
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
    """Write the parts `path` names as the single file `out` (a fresh file under an unpredictable
    temp name, then renamed); returns its sha256. Each part is checked against the sidecar as it
    passes, the whole too when the sidecar lists it."""
    files = BundleFiles.of(path)
    if not files.split:
        raise FormatError("parts", f"{path} is not a split bundle (no {part_path(files.stem, 1).name})")
    tmp = temp_name(out, "join")
    dst = create_fresh(tmp, 0o666)
    h = hashlib.sha256()
    try:
        with files.open() as src, dst:
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
