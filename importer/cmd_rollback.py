"""`bundle rollback NAME [--to GEN]`: put a kept generation back (its container and its data)."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer import metrics
from importer.options import app_status_now, confirmed_change, human_out, json_option, metrics_file_option, state_dir_option


@click.command("rollback")
@click.argument("name")
@click.option("--to", "to", type=click.IntRange(min=1), default=None, metavar="GEN",
              help="The kept generation to put back (see `bundle status NAME`); default the previous one.")
@state_dir_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@metrics_file_option
def rollback(name, to, state_dir, yes, as_json, metrics_file):
    """Put the previous generation of NAME back, with the data it had when it was replaced."""
    out = human_out(as_json)
    with metrics.written_after(state_dir, metrics_file):
        record = confirmed_change(name, state_dir, yes, "Go ahead?", "roll back",
                                  lambda client, state, kind: kind.plan_rollback(client, state, name, to),
                                  lambda client, state, kind, plan: kind.rollback(client, state, plan, out=out), out)
    doc = {"name": name, "version": record.get("version"), "generation": record.get("generation")}
    if as_json:
        from importer.state import StateDir
        doc["app"] = app_status_now(StateDir(state_dir), name)
    emit(jsondoc.document("rollback", doc), as_json,
         [f"{name} {record.get('version')} (generation {record.get('generation')}) is running"])
