"""`bundle list`: one line per installed application: version, container, health."""

import json

import click

from bundlecore.text import say
from importer.options import json_option, state_dir_option
from importer.state import StateDir


@click.command("list")
@state_dir_option
@json_option
def list_cmd(state_dir, as_json):
    """List the installed applications with their version, container and health."""
    from bundlecore.docker_engine import connect_or_none
    from importer.swap import kinds
    from importer.swap.status import list_row
    state = StateDir(state_dir)
    client = connect_or_none()
    rows = [list_row(kinds.for_app(state, n).status(client, state, n)) for n in state.installed_apps()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        say(f"nothing installed (state dir {state.root})")
    if client is None:
        say("the Docker engine does not answer: health unknown")
    for r in rows:
        health = r["health"] or r["status"] or "unknown"
        kept = f", kept generations {', '.join(map(str, r['previous']))}" if r["previous"] else ""
        say(f"{r['name']} {r['version']} (generation {r['generation']}) container {r['container']}: "
            f"{health} [{r['state']}]{kept}")
