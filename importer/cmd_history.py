"""`bundle history NAME`: every install, upgrade, rollback, recovery and uninstall of an app, from
the audit log (importer.audit), with the failed containers' saved logs."""

import click

from bundlecore import jsondoc
from bundlecore.release import Result
from bundlecore.text import emit
from importer.options import app_argument, json_option, state_dir_option
from importer.state import StateDir

SHOWN_LOG_LINES = 20


@click.command("history")
@app_argument
@state_dir_option
@json_option
def history(name, state_dir, as_json):
    """Show every install, upgrade, rollback and uninstall of NAME with its bundle, signers and result."""
    from importer.audit import events_of, one_per_operation
    from importer.kinds.container.control import saved_logs_path
    state = StateDir(state_dir)
    events = one_per_operation(events_of(state, name, state.container_of(name)))
    for ev in events:
        if ev.details.get("logs"):
            ev.details["logs_path"] = str(saved_logs_path(state, name, ev.details["logs"]))
    doc = jsondoc.document("history", {"name": name, "events": [ev.to_json() for ev in events]})
    emit(doc, as_json, _lines(state, name, events))


def _lines(state: StateDir, name: str, events: list):
    if not events:
        yield f"no history of {name} in {state.root / 'audit.log'}"
    for ev in events:
        yield event_line(ev)
        if ev.details.get("services"):  # a service release: each service's version afterwards
            yield "  services: " + ", ".join(f"{s} {v}" for s, v in ev.details["services"].items())
        if ev.details.get("logs_path"):
            yield f"  logs of the failed container: {ev.details['logs_path']}"
            for line in _tail(ev.details["logs_path"]):
                yield f"    {line}"


def event_line(ev) -> str:
    """One audit event (importer.audit.AuditEvent) as a line: when, what, result, versions, bundle
    sha256 and signers, and why when it did not end well (the message: a check names only which)."""
    old, new = ev.version_from, ev.version_to
    versions = f"{old} -> {new}" if old and new else (old or new or "")
    sha = ev.bundle.sha256
    what = f"{ev.event} (dry run)" if ev.details.get("dry_run") else str(ev.event)
    why = ev.message if ev.message and ev.result not in (Result.DONE, Result.UNCHANGED, Result.DRY_RUN) else ""
    parts = [ev.finished or ev.started or "?", what, versions, f"result: {ev.result}",
             f"check: {ev.check}" if ev.check else "", f"bundle sha256 {sha[:16]}…" if sha else "",
             f"signed by {', '.join(s.fingerprint for s in ev.signers)}" if ev.signers else "",
             f"by {ev.operator.user}", f"({why})" if why else ""]
    return "  ".join(p for p in parts if p)


def _tail(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").splitlines()[-SHOWN_LOG_LINES:]
    except OSError:
        return ["(the saved logs are gone)"]
