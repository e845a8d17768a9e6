"""`bundle status`: what is installed, which generations are kept, how the last import ended;
the exit code says whether every app asked runs its installed version healthy (AppState)."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer.options import app_statuses, json_option, state_dir_option
from importer.state import StateDir


@click.command("status")
@click.argument("name", required=False)
@state_dir_option
@json_option
def status(name, state_dir, as_json):
    """Show the installed version, previous generations and the last import result."""
    from bundlecore.engine import connect_or_none
    from bundlecore.errors import AppState
    from importer import kinds
    from importer.kinds.container.status import known_apps, overall
    state = StateDir(state_dir)
    client = connect_or_none()
    names = [name] if name else known_apps(state)
    result = app_statuses(state, names, client)
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
    for st in result:
        yield from kinds.for_app(state, st["name"]).status_lines(st)
