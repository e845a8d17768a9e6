"""Timestamps and durations as the spec and manifest write them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int) -> int:
    """'90d', '60s', '2m' (or a plain integer of seconds) -> seconds."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"([0-9]+)([smhdw])", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 60s, 5m, 90d)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def format_ts(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def plus(dt: datetime, seconds: int) -> datetime:
    return dt + timedelta(seconds=seconds)
