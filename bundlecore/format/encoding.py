"""The head's two text encodings: SHA256SUMS (coreutils format, parsed strictly) and JSON (read
strictly, written in one canonical form)."""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, NoReturn

from bundlecore.format.layout import FormatError


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
