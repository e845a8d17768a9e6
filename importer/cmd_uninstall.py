"""`bundle uninstall NAME [--keep-data]`: remove an application after a final backup (journaled)."""

import click

from bundlecore.text import say
from importer import metrics
from importer.options import confirmed_change, metrics_file_option, state_dir_option


@click.command("uninstall")
@click.argument("name")
@click.option("--keep-data", is_flag=True, help="Keep the named volumes (the final backup is taken either way).")
@state_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@metrics_file_option
def uninstall(name, keep_data, state_dir, yes, metrics_file):
    """Stop and remove NAME's container, after a final backup of its data; clear its state."""
    with metrics.written_after(state_dir, metrics_file):
        where = confirmed_change(name, state_dir, yes, "Uninstall?", "uninstall",
                                 lambda client, state, kind: kind.plan_uninstall(client, state, name,
                                                                                 keep_data=keep_data),
                                 lambda client, state, kind, plan: kind.uninstall(client, state, plan, out=say))
    say(f"{name} is uninstalled; its final backup and records are in {where}")
