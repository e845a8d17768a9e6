"""`bundle status`: what is installed, which generations are kept, how the last import ended;
the exit code says whether every app asked runs its installed version healthy (AppState)."""

import json

import click

from bundlecore.text import say
from importer.options import state_dir_option
from importer.state import StateDir


@click.command("status")
@click.argument("name", required=False)
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
def status(name, state_dir, as_json):
    """Show the installed version, previous generations and the last import result."""
    from bundlecore.docker_engine import connect_or_none
    from bundlecore.errors import AppState
    from importer.swap import kinds
    from importer.swap.status import known_apps, overall
    state = StateDir(state_dir)
    client = connect_or_none()
    names = [name] if name else known_apps(state)
    result = [kinds.for_app(state, n).status(client, state, n) for n in names]
    # Without NAME, apps that are not installed (a failed first install) are shown but not judged.
    judged = [AppState(st["exit_code"]) for st in result if name or st["installed"]]
    code = overall(judged)
    if as_json:
        click.echo(json.dumps(result if not name else result[0], indent=2, default=str))
        return int(code)
    if not result:
        say(f"nothing installed (state dir {state.root})")
    if client is None:
        say("the Docker engine does not answer: the containers' state is unknown")
    for st in result:
        for line in kinds.for_app(state, st["name"]).status_lines(st):
            say(line)
    return int(code)
