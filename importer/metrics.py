"""Prometheus metrics for node_exporter's textfile collector: the audit log's history, and the
live gauges (engine up, each app up / healthy / stopped by an admin) measured when written.

Rules (docs/metrics.md names every metric):
- the audit log (importer.audit) is the single source of truth: every file is computed from the
  whole log, so totals survive restarts and a lost or hand-edited .prom file cannot drift from it;
- a label value is escaped per the text exposition format (backslash, double quote, newline): the
  version is signed text, older log lines are anybody's text;
- a refused bundle whose manifest could not be trusted has no app: it counts in
  bundle_refusals_total{check} and bundle_imports_total{result="refused"} only, never per app;
- the file is written to a temp name in its directory (not ending in .prom, which the collector
  would read half-written) and renamed over the target: a symlink there is replaced, not followed;
- it is rewritten after a command that logged an event, never after one that changed nothing,
  and by `bundle status --metrics` (the shipped timer), which keeps the live gauges current;
- label values that are words (check, result, phase) are snake case (`host_policy`, `rolled_back`);
- writing it is never the command's result: a failure is one warning line on stderr.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bundlecore.errors import BundleError
from bundlecore.fsutil import atomic_write_bytes
from bundlecore.refusals import Check
from bundlecore.text import say
from bundlecore.timeutil import parse_ts
from importer.audit import AuditEvent, EventKind, Result, read_events

# importer.kinds.service.mark.Phase's values (a unit test holds them equal: this module does not
# import a kind)
RELEASE_PHASES = ("interrupted", "aborting", "paused", "soaking", "stopped")
DEFAULT_NAME = "bundle.prom"  # in STATE_DIR/metrics/ unless --metrics-file says where


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # gauge | counter
    help: str


LAST_RUN_TIMESTAMP = Metric("bundle_last_run_timestamp_seconds", "gauge",
                            "When the last command that acted on the app finished (Unix time).")
LAST_RUN_RESULT = Metric("bundle_last_run_result", "gauge",
                         "Result of the last command that acted on the app: 1 for its result, 0 for the others.")
LAST_RUN_EXIT_CODE = Metric("bundle_last_run_exit_code", "gauge",
                            "Exit code of the last command that acted on the app (0 done, 3 refused, 4 rolled back, ...).")
LAST_RUN_PHASE = Metric("bundle_last_run_phase_seconds", "gauge",
                        "Seconds the last command that acted on the app spent in each phase.")
INSTALLED_SEQUENCE = Metric("bundle_installed_sequence", "gauge",
                            "Sequence of the installed release of the app; its version is the version label.")
ROLLBACKS = Metric("bundle_rollbacks_total", "counter",
                   "Times a previous version of the app was put back: failed updates and `bundle rollback`.")
REFUSALS = Metric("bundle_refusals_total", "counter", "Bundles refused by import, by the check that failed.")
IMPORTS = Metric("bundle_imports_total", "counter", "Runs of `bundle import`, by result.")
# The live gauges: what the engine said when the file was written (every command that rewrites it,
# and `bundle status --metrics`, which the shipped timer runs every minute).
ENGINE_UP = Metric("bundle_engine_up", "gauge", "1 if the Docker engine answered when the file was written.")
APP_UP = Metric("bundle_app_up", "gauge", "1 if the app's container runs its installed image.")
APP_HEALTHY = Metric("bundle_app_healthy", "gauge",
                     "1 if the app runs its installed version healthy (`bundle status` exit 0).")
APP_STOPPED_BY_ADMIN = Metric("bundle_app_stopped_by_admin", "gauge", "1 if `bundle stop` stopped the app.")
STATUS_TIMESTAMP = Metric("bundle_status_timestamp_seconds", "gauge",
                          "When the live gauges were measured (Unix time): alert when it stops moving.")
RELEASE_STAGES_DONE = Metric("bundle_release_stages_done", "gauge",
                             "Stages a staged release under way has completed (only while one is under way).")
RELEASE_STAGES = Metric("bundle_release_stages", "gauge", "Stages of the staged release under way.")
RELEASE_PHASE = Metric("bundle_release_phase", "gauge",
                       "1 for the phase the staged release under way is in (paused, soaking, stopped, interrupted, "
                       "aborting), 0 for the others.")
METRICS = (LAST_RUN_TIMESTAMP, LAST_RUN_RESULT, LAST_RUN_EXIT_CODE, LAST_RUN_PHASE, INSTALLED_SEQUENCE,
           ROLLBACKS, REFUSALS, IMPORTS, ENGINE_UP, APP_UP, APP_HEALTHY, APP_STOPPED_BY_ADMIN, STATUS_TIMESTAMP,
           RELEASE_STAGES_DONE, RELEASE_STAGES, RELEASE_PHASE)


@dataclass(frozen=True)
class AppLive:
    """One app's live verdict, from its kind's status report."""

    app: str
    up: bool
    healthy: bool
    stopped_by_admin: bool


@dataclass(frozen=True)
class ReleaseLive:
    """A staged release under way (a service bundle between its first stage and its last)."""

    app: str
    version: str
    done: int
    stages: int
    phase: str


@dataclass(frozen=True)
class Live:
    """What the engine said about every installed app when the file was written."""

    at: float
    engine_up: bool
    apps: tuple[AppLive, ...] = ()
    releases: tuple[ReleaseLive, ...] = ()


def live_of(reports: list[dict], engine_up: bool, at: float) -> Live:
    """The live gauges of these status reports (importer.kinds ... status; installed apps only)."""
    apps = []
    for st in reports:
        if not st.get("installed"):
            continue
        live = st.get("container") or {}
        healthy = st.get("exit_code") == 0
        apps.append(AppLive(st["name"], healthy or (live.get("status") == "running"
                                                    and live.get("image_id") == st["installed"].get("image_id")),
                            healthy, bool(st.get("stopped_by_admin"))))
    releases = {}
    for st in reports:  # the release mark lives under the service bundle's target name
        rel = st.get("release") or {}
        if rel.get("stages"):
            app = rel.get("app") or st["name"]
            releases[app] = ReleaseLive(app, str(rel.get("version") or ""), int(rel.get("done") or 0),
                                        int(rel["stages"]), str(rel.get("phase") or ""))
    return Live(at, engine_up, tuple(apps), tuple(releases[a] for a in sorted(releases)))


def label_value(text: object) -> str:
    """A label value made of words (a check, a result, a phase) in snake case: `host policy` ->
    `host_policy`, `rolled-back` -> `rolled_back`. Signed text (a version) is escaped, not changed."""
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def escape_label(value: str) -> str:
    """A label value as the exposition format wants it between double quotes."""
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _sample(metric: Metric, labels: dict, value: float) -> str:
    inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
    return f"{metric.name}{{{inner}}} {_number(value)}" if inner else f"{metric.name} {_number(value)}"


def _is_rollback(ev: AuditEvent) -> bool:
    """A previous version put back: a swap (not the import summing it up) that rolled back, a
    `bundle rollback` that was done, or a staged release aborted."""
    if ev.event == EventKind.IMPORT:
        return False
    return ev.result in (Result.ROLLED_BACK, Result.ABORTED) or (ev.event == EventKind.ROLLBACK
                                                                 and ev.result == Result.DONE)


def _removes_app(ev: AuditEvent) -> bool:
    return ev.result == Result.DONE and (ev.event == EventKind.UNINSTALL or ev.details.get("swap") == "uninstall")


def render(events: list[AuditEvent], live: Live | None = None) -> str:
    """The whole .prom file for these events (oldest first) and, when measured, the live gauges."""
    samples: dict[Metric, list[str]] = {m: [] for m in METRICS}
    last: dict[str, AuditEvent] = {}
    installed: dict[str, tuple[str, int]] = {}
    rollbacks: dict[str, int] = {}
    refusals = {c.value: 0 for c in Check}
    imports = {r.value: 0 for r in Result}
    for ev in events:
        if ev.event == EventKind.IMPORT:
            imports[ev.result.value] += 1
        if ev.result == Result.REFUSED:
            key = ev.check or ""
            refusals[key] = refusals.get(key, 0) + 1
        if not ev.app:
            continue  # refused before the manifest was trusted: no app to speak of
        last[ev.app] = ev
        rollbacks.setdefault(ev.app, 0)
        if _is_rollback(ev):
            rollbacks[ev.app] += 1
        if _removes_app(ev):
            installed.pop(ev.app, None)
        elif ev.result == Result.DONE and isinstance(ev.bundle.sequence, int) and ev.version_to:
            installed[ev.app] = (ev.version_to, ev.bundle.sequence)
    for app, ev in sorted(last.items()):
        run = [e for e in events if e.app == app and e.run == ev.run] if ev.run else [ev]
        try:
            samples[LAST_RUN_TIMESTAMP].append(_sample(LAST_RUN_TIMESTAMP, {"app": app},
                                                       parse_ts(ev.finished).timestamp()))
        except ValueError:
            pass  # an older line without a readable time
        for r in Result:
            samples[LAST_RUN_RESULT].append(_sample(LAST_RUN_RESULT, {"app": app, "result": label_value(r)},
                                                    int(r == ev.result)))
        samples[LAST_RUN_EXIT_CODE].append(_sample(LAST_RUN_EXIT_CODE, {"app": app}, ev.exit_code))
        phases: dict[str, float] = {}
        for e in run:
            for phase, seconds in e.phases.items():
                phases[phase] = phases.get(phase, 0.0) + seconds
        for phase, seconds in sorted(phases.items()):
            samples[LAST_RUN_PHASE].append(_sample(LAST_RUN_PHASE, {"app": app, "phase": label_value(phase)}, round(seconds, 3)))
        samples[ROLLBACKS].append(_sample(ROLLBACKS, {"app": app}, rollbacks[app]))
    for app, (version, sequence) in sorted(installed.items()):
        samples[INSTALLED_SEQUENCE].append(_sample(INSTALLED_SEQUENCE, {"app": app, "version": version}, sequence))
    samples[REFUSALS] = [_sample(REFUSALS, {"check": label_value(c)}, n) for c, n in sorted(refusals.items())]
    samples[IMPORTS] = [_sample(IMPORTS, {"result": label_value(r)}, n) for r, n in sorted(imports.items())]
    if live is not None:
        samples[ENGINE_UP] = [_sample(ENGINE_UP, {}, int(live.engine_up))]
        samples[STATUS_TIMESTAMP] = [_sample(STATUS_TIMESTAMP, {}, round(live.at, 3))]
        for a in sorted(live.apps, key=lambda a: a.app):
            samples[APP_UP].append(_sample(APP_UP, {"app": a.app}, int(a.up)))
            samples[APP_HEALTHY].append(_sample(APP_HEALTHY, {"app": a.app}, int(a.healthy)))
            samples[APP_STOPPED_BY_ADMIN].append(_sample(APP_STOPPED_BY_ADMIN, {"app": a.app}, int(a.stopped_by_admin)))
        for rel in live.releases:
            labels = {"app": rel.app, "version": rel.version}
            samples[RELEASE_STAGES_DONE].append(_sample(RELEASE_STAGES_DONE, labels, rel.done))
            samples[RELEASE_STAGES].append(_sample(RELEASE_STAGES, labels, rel.stages))
            for phase in RELEASE_PHASES:
                samples[RELEASE_PHASE].append(_sample(RELEASE_PHASE, {**labels, "phase": phase}, int(phase == rel.phase)))
    lines = []
    for m in METRICS:
        lines += [f"# HELP {m.name} {_help_text(m.help)}", f"# TYPE {m.name} {m.kind}", *samples[m]]
    return "\n".join(lines) + "\n"


def write_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, mode 0644 (node_exporter runs as another user), through
    a fresh file under an unpredictable temp name (bundlecore.fsutil)."""
    atomic_write_bytes(path, text.encode(), 0o644)


def measure(state) -> Live:
    """The live verdict of every installed app, asked of the engine now (down: engine_up 0, apps down)."""
    from bundlecore.engine import EngineError, connect_or_none
    from importer.options import app_statuses
    client = connect_or_none()
    try:
        reports = app_statuses(state, state.installed_apps(), client)
    except EngineError:  # it stopped answering half-way: as down, for every app
        client, reports = None, app_statuses(state, state.installed_apps(), None)
    return live_of(reports, client is not None, time.time())


def update(state_dir, metrics_file: Path | None, live: Live | None = None) -> None:
    """Rewrite the metrics file from the state dir's audit log and the engine's answer now (`live`,
    when the caller already asked); a failure is a warning only."""
    from importer.state import StateDir
    path = Path(metrics_file) if metrics_file else None
    try:
        state = StateDir(state_dir)
        if path is None:
            path = state.root / "metrics" / DEFAULT_NAME
            path.parent.mkdir(mode=0o755, exist_ok=True)
        write_file(path, render(read_events(state), live or measure(state)))
    except (OSError, BundleError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        say(f"warning: metrics not written to {path or 'the state dir'}: {why}", err=True)


def _log_size(state_dir) -> int | None:
    from importer.state import StateDir
    try:
        return (StateDir(state_dir).root / "audit.log").stat().st_size
    except (OSError, BundleError):
        return None


@contextlib.contextmanager
def written_after(state_dir, metrics_file: Path | None):
    """Around a command: the metrics are rewritten however it ended (done, refused, rolled back...)
    if it logged an event; one that changed nothing (a usage error, nothing to recover) leaves the
    state dir and the file as they were."""
    before = _log_size(state_dir)
    try:
        yield
    finally:
        if _log_size(state_dir) not in (before, None):
            update(state_dir, metrics_file)
