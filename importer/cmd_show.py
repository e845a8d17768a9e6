"""`bundle show NAME`: the run settings NAME's container runs with, and where each came from (the
bundle, the site file, or this host), secrets masked (like `helm get values`)."""

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
    """Show the run settings NAME runs with and where each came from: bundle, site file or this host."""
    from bundlecore.engine import connect
    from importer.kinds.container import control
    doc = control.show(connect(), StateDir(state_dir), name)
    emit(jsondoc.document("show", doc), as_json, control.show_lines(doc))
