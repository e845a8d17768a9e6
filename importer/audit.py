"""The audit log's one writer: every event (import, refusal, swap, rollback, recovery) says who
ran it and when in the same way, so the log can be read without knowing which code wrote a line."""

from __future__ import annotations

import getpass
import os

from bundlecore.timeutil import format_ts, utc_now
from importer.state import StateDir


def who() -> str:
    """The person behind the command: the sudo caller when run through sudo, else the login user."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return str(os.getuid())


def now() -> str:
    return format_ts(utc_now())


def audit_event(state: StateDir, event: dict) -> None:
    """Append one event (it has at least "event" and "result") with user, uid and time filled in."""
    state.audit({"user": who(), "uid": os.getuid(), "at": now(), **event})
