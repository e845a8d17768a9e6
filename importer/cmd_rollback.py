"""`bundle rollback NAME [--to GEN] [--dry-run]`: put a kept generation back (its container and its data)."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer import metrics
from importer.versiontext import shown_version
from importer.options import (app_argument, app_status_now, complete_generations, confirmed_change, human_out,
                              json_option, metrics_file_option, state_dir_option, yes_option)


@click.command("rollback")
@app_argument
@click.option("--to", "to", type=click.IntRange(min=1), default=None, metavar="GEN", shell_complete=complete_generations,
              help="The kept generation to put back (see `bundle status NAME`); default the previous one.")
@click.option("--dry-run", is_flag=True, help="Print the plan, change nothing (--json: the plan in the document).")
@state_dir_option
@yes_option
@json_option
@metrics_file_option
def rollback(name, to, dry_run, state_dir, yes, as_json, metrics_file):
    """Put the previous generation of NAME back, with the data it had when it was replaced."""
    from importer import kinds
    out = human_out(as_json)
    with metrics.written_after(state_dir, metrics_file):
        done = confirmed_change(name, state_dir, yes, "Go ahead?", "roll back",
                                lambda client, state, kind: kind.plan_rollback(client, state, name, to),
                                lambda client, state, kind, plan: kind.rollback(client, state, plan, out=out), out,
                                dry_run=dry_run)
    if dry_run:
        plan = kinds.plan_json(done)
        emit(jsondoc.document("rollback", {"name": name, "dry_run": True, "version": plan["version_to"],
                                           "generation": plan["generation_to"], "plan": plan}), as_json,
             ["dry run: nothing changed"])
        return
    doc = {"name": name, "version": done.get("version"), "generation": done.get("generation")}
    if as_json:
        from importer.state import StateDir
        doc["app"] = app_status_now(StateDir(state_dir), name)
    emit(jsondoc.document("rollback", doc), as_json,
         [f"{name} {shown_version(done.get('version'), done.get('image'))} (generation {done.get('generation')}) "
          f"is running"])
