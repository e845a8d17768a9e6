"""`bundle uninstall NAME [--keep-data]`: remove an application after a final backup (journaled)."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer import metrics
from importer.options import (app_argument, confirmed_change, human_out, json_option, metrics_file_option,
                              state_dir_option, yes_option)


@click.command("uninstall")
@app_argument
@click.option("--keep-data", is_flag=True, help="Keep the named volumes (the final backup is taken either way).")
@state_dir_option
@yes_option
@json_option
@metrics_file_option
def uninstall(name, keep_data, state_dir, yes, as_json, metrics_file):
    """Stop and remove NAME's container, after a final backup of its data; clear its state."""
    out = human_out(as_json)
    with metrics.written_after(state_dir, metrics_file):
        where = confirmed_change(name, state_dir, yes, "Uninstall?", "uninstall",
                                 lambda client, state, kind: kind.plan_uninstall(client, state, name,
                                                                                 keep_data=keep_data),
                                 lambda client, state, kind, plan: kind.uninstall(client, state, plan, out=out), out)
    emit(jsondoc.document("uninstall", {"name": name, "kept_data": keep_data, "records": str(where)}), as_json,
         [f"{name} is uninstalled; its final backup and records are in {where}"])
