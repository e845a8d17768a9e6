"""The audit log's one writer: every event (import, refusal, swap, rollback, recovery) says who
ran it and when in the same way, so the log can be read without knowing which code wrote a line."""

from __future__ import annotations

import getpass
import json
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


def events_of(state: StateDir, app: str, container: str | None = None) -> list[dict]:
    """Every logged event of app `app`, oldest first. Events name their app in `app` (swaps) or
    `name` (imports); swap events written before the state was keyed by app name carry only the
    container's name, so `container` is matched too for those. Unreadable lines are skipped."""
    try:
        lines = (state.root / "audit.log").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        names = {ev.get("app")} if ev.get("app") else {ev.get("name")}
        if app in names or (container is not None and not ev.get("app") and container in names
                            and ev.get("event") != "import"):
            out.append(ev)
    return out
