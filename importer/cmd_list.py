"""`bundle list`: one line per installed application: version, container, health (a service bundle:
each service, and its app with its stages)."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer.options import app_statuses, json_option, state_dir_option
from importer.state import StateDir


@click.command("list")
@state_dir_option
@json_option
def list_cmd(state_dir, as_json):
    """List the installed applications with their version, container and health."""
    from bundlecore.engine import connect
    from bundlecore.errors import EnvironmentProblem
    from importer.kinds.container.status import list_row
    from importer.kinds.service.status import apps_of_services, list_line
    state = StateDir(state_dir)
    names = sorted(state.installed_apps() + apps_of_services(state))  # a service bundle's app too
    try:
        client = connect()
    except EnvironmentProblem as e:  # exit 1 like every command that needs the engine (`status` has its 8)
        e.partial = {"engine_answers": False,
                     "apps": [jsondoc.app_status(st) for st in app_statuses(state, names, None)]}
        raise
    reports = app_statuses(state, names, client)
    emit(jsondoc.document("list", {"engine_answers": client is not None,
                                   "apps": [jsondoc.app_status(st) for st in reports]}),
         as_json, _lines(state, client, [list_line(st) if st.get("kind") == "service" else list_row(st)
                                         for st in reports]))


def _lines(state, client, rows):
    if not rows:
        yield f"nothing installed (state dir {state.root})"
    for r in rows:
        if isinstance(r, str):  # a service, or the app of a service bundle (importer.kinds.service.status)
            yield r
            continue
        health = r["health"] or r["status"] or "unknown"
        kept = f", kept generations {', '.join(map(str, r['previous']))}" if r["previous"] else ""
        yield (f"{r['name']} {r['version']} (generation {r['generation']}) container {r['container']}: "
               f"{health} [{r['state']}]{kept}")
