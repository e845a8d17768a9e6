"""`bundle show NAME`: the run settings NAME's container runs with, and where each came from (the
bundle, the site file, or this host), secrets masked (like `helm get values`); for a compose
project, the effective compose file as applied (importer.kinds.compose.show)."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer.options import app_argument, json_option, state_dir_option
from importer.state import StateDir


@click.command("show")
@app_argument
@state_dir_option
@json_option
def show(name, state_dir, as_json):
    """Show the run settings NAME runs with and where each came from: bundle, site file or this host.

    For a compose project: its compose file as applied (images as loaded, secrets masked), and in
    --json each service's settings with their source."""
    from bundlecore.engine import connect
    from bundlecore.release import ComposeTarget, installed_kind
    state = StateDir(state_dir)
    if installed_kind(state.installed(name)) == ComposeTarget.KIND:
        from importer.kinds.compose import show as shown
    else:
        from importer.kinds.container import control as shown  # type: ignore[no-redef]
    doc = shown.show(connect(), state, name)
    emit(jsondoc.document("show", doc), as_json, shown.show_lines(doc))
