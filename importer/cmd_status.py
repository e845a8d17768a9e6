"""`bundle status`: what is installed, which generations are kept, how the last import ended;
the exit code says whether every app asked runs its installed version healthy (AppState).
`--metrics` also rewrites the metrics file with the live gauges (the shipped timer runs it)."""

import time

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer.options import app_statuses, complete_app_names, json_option, metrics_file_option, state_dir_option
from importer.state import StateDir


@click.command("status")
@click.argument("name", required=False, shell_complete=complete_app_names)
@state_dir_option
@click.option("--metrics", "write_metrics", is_flag=True,
              help="Also rewrite the metrics file with every app's up/healthy gauges (docs/metrics.md).")
@json_option
@metrics_file_option
def status(name, state_dir, write_metrics, as_json, metrics_file):
    """Show the installed version, previous generations and the last import result."""
    from bundlecore.engine import connect_or_none
    from bundlecore.errors import AppState
    from importer import kinds, metrics
    from importer.kinds.container.status import known_apps, overall
    state = StateDir(state_dir)
    client = connect_or_none()
    names = [name] if name else known_apps(state)
    result = app_statuses(state, names, client)
    if write_metrics or metrics_file:
        every = app_statuses(state, state.installed_apps(), client) if name else result
        metrics.update(state_dir, metrics_file, metrics.live_of(every, client is not None, time.time()))
    # Without NAME, apps that are not installed (a failed first install) are shown but not judged.
    judged = [AppState(st["exit_code"]) for st in result if name or st["installed"]]
    code = overall(judged)
    error = None
    if code:
        worst = [st["name"] for st in result if st["exit_code"] == code] or ["nothing installed"]
        error = jsondoc.error(int(code), f"{code.label}: {', '.join(worst)}")
    emit(jsondoc.document("status", {"engine_answers": client is not None,
                                     "apps": [jsondoc.app_status(st) for st in result]}, int(code), error),
         as_json, _lines(state, client, kinds, result))
    return int(code)


def _lines(state, client, kinds, result):
    if not result:
        yield f"nothing installed (state dir {state.root})"
    if client is None:
        yield "the Docker engine does not answer: the containers' state is unknown"
    holder = state.lock_holder()
    if holder and not any(st.get("operation") for st in result):
        yield f"a bundle operation is in progress, pid {holder} (nothing swapped yet)"
    for st in result:
        yield from kinds.for_app(state, st["name"]).status_lines(st)
