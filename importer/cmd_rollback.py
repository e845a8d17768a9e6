"""`bundle rollback NAME [--to GEN]`: put a kept generation back (its container and its data)."""

import click

from bundlecore.text import say
from importer import metrics
from importer.options import confirmed_change, metrics_file_option, state_dir_option


@click.command("rollback")
@click.argument("name")
@click.option("--to", "to", type=click.IntRange(min=1), default=None, metavar="GEN",
              help="The kept generation to put back (see `bundle status NAME`); default the previous one.")
@state_dir_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@metrics_file_option
def rollback(name, to, state_dir, yes, metrics_file):
    """Put the previous generation of NAME back, with the data it had when it was replaced."""
    with metrics.written_after(state_dir, metrics_file):
        record = confirmed_change(name, state_dir, yes, "Go ahead?", "roll back",
                                  lambda client, state, kind: kind.plan_rollback(client, state, name, to),
                                  lambda client, state, kind, plan: kind.rollback(client, state, plan, out=say))
    say(f"{name} {record.get('version')} (generation {record.get('generation')}) is running")
