"""The audit log's one writer (and reader): every event (import, refusal, install, upgrade, rollback,
recovery, uninstall) is one typed record, `AuditEvent`, written as one JSON object per line in the
state dir's audit.log, in the one shape schemas/audit-event.schema.json describes (docs/audit.md).

Rules:
- one record type for every event kind, so the log can be read without knowing which code wrote a line;
- the result is an enum and the exit code is recorded with it: a script never parses a message;
- each command run has one `run` id; the events it writes (an import's swap and the import itself)
  share it, so the metrics (importer.metrics) can tell what the last run of an app did;
- the result is `bundlecore.release.Result`, the enum a swap, an uninstall and a rollout end in:
  the log records it as it is, never maps display text back to it;
- lines written before this schema (no "format", a free-text result) are read into the record on
  the fly by one conversion, `from_format1`, never rewritten.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from bundlecore.errors import BundleError, Refused
from bundlecore.release import Result, Signer, signers_of
from bundlecore.timeutil import format_ts, utc_now
from importer.state import StateDir

FORMAT = 2          # the "format" every line written by this module carries; older lines have none
SCHEMA = "audit-event.schema.json"
RUN_ID = uuid.uuid4().hex  # one per process: one command run


def _new_run() -> None:
    """A forked child runs a command of its own (a fork server's child, say): a run of its own."""
    global RUN_ID
    RUN_ID = uuid.uuid4().hex


os.register_at_fork(after_in_child=_new_run)


class EventKind(StrEnum):
    """What happened (docs/audit.md lists them)."""

    IMPORT = "import"                  # one per `bundle import` run, refused and dry runs included
    INSTALL = "install"                # the swap of a first install (inside an import)
    UPGRADE = "upgrade"                # the swap of an upgrade (inside an import)
    ROLLBACK = "rollback"              # `bundle rollback`
    RECOVER = "recover"                # an interrupted swap finished or undone (`bundle recover`, or
                                       # before any other command that takes the lock)
    UNINSTALL = "uninstall"            # `bundle uninstall`
    SERVICE_UPDATE = "service-update"  # one Swarm service updated by an import of a service target
    START = "start"                    # `bundle start`
    STOP = "stop"                      # `bundle stop` (status then says "stopped by admin")
    RESTART = "restart"                # `bundle restart`
    RESTORE = "restore"                # `bundle restore --from-uninstall`: an uninstall's final backup put back
    PROMOTE = "promote"                # `bundle promote`: a paused staged release continued
    ABORT = "abort"                    # `bundle abort` (or recover finishing one): a staged release rolled back


# The phase each swap step's time is counted in (steps not listed: "switch", the renames and starts
# of the swap itself). The import adds verify, load and push.
STEP_PHASES = {"backup": "backup", "start_new": "health", "probation": "probation",
               "restore_target": "restore", "restore_data": "restore",
               "remove_new": "undo", "rename_back": "undo", "start_old": "undo",
               "remove_old": "remove", "remove_volumes": "remove", "clear_state": "remove"}


def step_phase(step: str) -> str:
    return STEP_PHASES.get(str(step), "switch")


@dataclass
class BundleRef:
    """The bundle an event is about (null fields: not known, e.g. refused before its manifest was trusted)."""

    sha256: str | None = None
    name: str | None = None
    version: str | None = None
    sequence: int | None = None


@dataclass
class Operator:
    user: str
    uid: int


def operator() -> Operator:
    """The person behind the command: the sudo caller when run through sudo, else the login user."""
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        user = str(os.getuid())
    return Operator(user, os.getuid())


def now() -> str:
    return format_ts(utc_now())


@dataclass
class AuditEvent:
    """One line of the audit log."""

    event: EventKind
    result: Result
    exit_code: int
    app: str | None = None                  # the trusted app name; null for a bundle refused before that
    bundle: BundleRef = field(default_factory=BundleRef)
    signers: tuple[Signer, ...] = ()
    version_from: str | None = None
    version_to: str | None = None
    check: str | None = None                # the failed check of a refusal (bundlecore.refusals.Check)
    message: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    started: str | None = None
    finished: str = field(default_factory=now)
    operator: Operator = field(default_factory=operator)
    run: str = field(default_factory=lambda: RUN_ID)
    details: dict = field(default_factory=dict)  # what only this kind has (logs, steps, keep_data, ...)
    format: int = FORMAT

    def to_json(self) -> dict:
        d = asdict(self)
        d["versions"] = {"from": d.pop("version_from"), "to": d.pop("version_to")}
        d["event"], d["result"] = str(self.event), str(self.result)
        d["signers"] = [s.to_json() for s in self.signers]
        d["phases"] = {k: round(v, 3) for k, v in self.phases.items()}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "AuditEvent":
        """A line of the log: this schema, or an older line read into it (see from_format1)."""
        if d.get("format") != FORMAT:
            return from_format1(d)
        versions = d.get("versions") or {}
        return cls(event=EventKind(d["event"]), result=Result(d["result"]), exit_code=d["exit_code"],
                   app=d.get("app"), bundle=BundleRef(**(d.get("bundle") or {})), signers=signers_of(d.get("signers")),
                   version_from=versions.get("from"), version_to=versions.get("to"), check=d.get("check"),
                   message=d.get("message") or "", phases=dict(d.get("phases") or {}), started=d.get("started"),
                   finished=d["finished"], operator=Operator(**d["operator"]), run=d.get("run") or "",
                   details=dict(d.get("details") or {}))

    @classmethod
    def of_error(cls, event: EventKind, e: BundleError, **kw) -> "AuditEvent":
        result = Result.of_error(e)
        return cls(event=event, result=result, exit_code=e.exit_code, message=e.line(),
                   check=str(e.check) if isinstance(e, Refused) and e.check else None, **kw)


class PhaseTimer:
    """Seconds spent per phase of one command (a phase entered twice adds up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t0 = time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str):
        t = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - t


def write_event(state: StateDir, event: AuditEvent) -> None:
    """Append one event (the only place a line is written)."""
    state.audit(event.to_json())


def read_events(state: StateDir) -> list[AuditEvent]:
    """Every event of the log, oldest first; unreadable lines are skipped."""
    try:
        lines = (state.root / "audit.log").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            d = json.loads(line)
            if isinstance(d, dict):
                out.append(AuditEvent.from_json(d))
        except (ValueError, TypeError, KeyError):
            continue
    return out


def events_of(state: StateDir, app: str, container: str | None = None) -> list[AuditEvent]:
    """Every logged event of app `app`, oldest first. Swap events written before the state was
    keyed by app name carry only the container's name (read into details.legacy_container), so
    `container` is matched too for those."""
    return [ev for ev in read_events(state)
            if ev.app == app or (container is not None and ev.details.get("legacy_container") == container)]


# The events an import's swap writes: the import's own event of the same run says the same again.
SWAP_EVENTS = (EventKind.INSTALL, EventKind.UPGRADE, EventKind.SERVICE_UPDATE)


def one_per_operation(events: list[AuditEvent]) -> list[AuditEvent]:
    """Each operation once (`bundle history`): an import that swapped is its swap's event (install,
    upgrade, service-update, which carry the versions, the steps and the logs); an import that
    swapped nothing (refused, dry run, failed before the swap) is its own event."""
    swapped = {(e.run, e.app) for e in events if e.event in SWAP_EVENTS and e.run}
    return [e for e in events if not (e.event == EventKind.IMPORT and (e.run, e.app) in swapped)]


# -- lines written before this schema (format 1) ---------------------------------------------------

# Format 1 wrote a result as free text; these are every text it wrote, and the Result each meant.
# A refusal was its whole line ("refused: CHECK: why"), an update that failed "update failed: why":
# the words before the first colon name the result. Nothing written today is read through this.
FORMAT1_RESULTS = {"installed": Result.DONE, "completed": Result.DONE, "uninstalled": Result.DONE,
                   "unchanged": Result.UNCHANGED, "dry-run": Result.DRY_RUN, "rolled back": Result.ROLLED_BACK,
                   "operator needed": Result.OPERATOR_NEEDED, "not uninstalled": Result.NOT_DONE,
                   "failed": Result.INSTALL_UNDONE, "undone": Result.ROLLED_BACK,
                   "refused": Result.REFUSED, "update failed": Result.ROLLED_BACK}
FORMAT1_KEYS = {"event", "name", "app", "result", "message", "user", "uid", "at", "started", "started_at",
                "duration", "duration_s", "sha256", "bundle_sha256", "signers", "version", "sequence",
                "old_version", "new_version", "new_sequence"}


def format1_result(text: str, kind: str | None) -> tuple[Result, str | None]:
    """The Result (and a refusal's check) a format-1 line's free-text result meant: the whole text,
    else the words before its first colon, looked up in FORMAT1_RESULTS (unknown text: FAILED)."""
    words, _, rest = text.partition(":")
    result = FORMAT1_RESULTS.get(text) or FORMAT1_RESULTS.get(words.strip(), Result.FAILED)
    check = rest.partition(":")[0].strip() or None if result == Result.REFUSED and ":" in rest else None
    if kind == "install" and result == Result.ROLLED_BACK:
        result = Result.INSTALL_UNDONE  # a first install has no previous version to roll back to
    return result, check


def from_format1(d: dict) -> AuditEvent:
    """An event as written before FORMAT 2: imports had `started`/`duration`, swaps `at`/`duration_s`
    and `old_version`/`new_version`; a result was free text (format1_result)."""
    text = str(d.get("result") or "")
    kind = d.get("event")
    result, check = format1_result(text, kind)
    swap = kind != "import"
    app = d.get("app") or d.get("name")
    duration = d.get("duration_s", d.get("duration"))
    details = {k: v for k, v in d.items() if k not in FORMAT1_KEYS}
    if swap and not d.get("app") and d.get("name"):
        details["legacy_container"] = d["name"]  # before the state was keyed by app: the container
    return AuditEvent(
        event=EventKind(kind) if isinstance(kind, str) and kind in EventKind._value2member_map_ else EventKind.IMPORT,
        result=result, exit_code=result.exit_code, app=app,
        bundle=BundleRef(sha256=d.get("sha256") or d.get("bundle_sha256"), name=None if swap else d.get("name"),
                         version=d.get("version") or d.get("new_version"),
                         sequence=d.get("sequence", d.get("new_sequence"))),
        signers=signers_of(d.get("signers")), version_from=d.get("old_version"),
        version_to=d.get("new_version") or d.get("version"), check=check, message=d.get("message") or text,
        phases={"total": float(duration)} if isinstance(duration, (int, float)) else {},
        started=d.get("started") or d.get("started_at"), finished=d.get("at") or d.get("started") or "",
        operator=Operator(str(d.get("user") or "?"), d["uid"] if isinstance(d.get("uid"), int) else -1),
        run="", details=details, format=1)
