"""`bundle promote APP` and `bundle abort APP`: a person's word on a staged service release paused
between its stages (importer.kinds.service.control)."""

import click

from bundlecore import jsondoc
from bundlecore.errors import ExitCode
from bundlecore.text import emit
from importer import metrics
from importer.options import (app_argument, app_status_now, confirmed_change, human_out, json_option,
                              metrics_file_option, state_dir_option, yes_option)


@click.command("promote")
@app_argument
@state_dir_option
@yes_option
@json_option
@metrics_file_option
def promote(name, state_dir, yes, as_json, metrics_file):
    """Continue APP's paused staged release with its next stage (each stage's analysis still applies)."""
    from importer.kinds.service import control
    out = human_out(as_json)
    with metrics.written_after(state_dir, metrics_file):
        rec = confirmed_change(name, state_dir, yes, "Promote?", "promote",
                               lambda client, state, kind: control.plan_promote(client, state, name),
                               lambda client, state, kind, plan: control.promote(client, state, plan, out=out), out)
    paused = rec.get("paused_after_stage")
    code = int(ExitCode.PAUSED if paused is not None else ExitCode.DONE)  # paused again by a later stage
    return _done("promote", name, state_dir, as_json, code,
                 {"version": rec.get("version"), "services": rec.get("services") or {},
                  "paused_after_stage": paused, "stopped_after_stage": rec.get("stopped_after_stage")})


@click.command("abort")
@app_argument
@state_dir_option
@yes_option
@json_option
@metrics_file_option
def abort(name, state_dir, yes, as_json, metrics_file):
    """Roll APP's staged release back everywhere it went, stage by stage in reverse order, with data."""
    from importer.kinds.service import control
    out = human_out(as_json)
    with metrics.written_after(state_dir, metrics_file):
        done = confirmed_change(name, state_dir, yes, "Abort the release and roll it back?", "abort",
                                lambda client, state, kind: control.plan_abort(client, state, name),
                                lambda client, state, kind, plan: control.abort(client, state, plan, out=out), out)
    return _done("abort", name, state_dir, as_json, 0, {"version": done.get("version"),
                                                         "services": done.get("services") or {}})


def _done(command: str, name: str, state_dir, as_json: bool, code: int, body: dict) -> int:
    """The --json document (the app's status afterwards included); the lines were printed on the way."""
    if as_json:
        from importer.state import StateDir
        emit(jsondoc.document(command, {"name": name, **body, "app": app_status_now(StateDir(state_dir), name)},
                              code), True)
    return code
