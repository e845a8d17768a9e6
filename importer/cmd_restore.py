"""`bundle restore NAME --from-uninstall`: the named volumes of NAME's last uninstall put back from
its final backup (only while NAME is not installed, only into volumes that do not exist)."""

import click

from bundlecore import jsondoc
from bundlecore.errors import UsageProblem
from bundlecore.text import emit
from importer import metrics
from importer.options import (app_argument, human_out, json_option, metrics_file_option, require_confirmation,
                              state_dir_option, yes_option)
from importer.state import StateDir


@click.command("restore")
@app_argument
@click.option("--from-uninstall", is_flag=True, help="From the final backup `bundle uninstall` kept (the only source).")
@state_dir_option
@yes_option
@json_option
@metrics_file_option
def restore(name, from_uninstall, state_dir, yes, as_json, metrics_file):
    """Put back the data of an uninstalled app from the final backup its uninstall kept."""
    from bundlecore.engine import connect
    from importer.kinds.container import control
    if not from_uninstall:
        raise UsageProblem("say where the data comes from: --from-uninstall (the final backup of its last uninstall)")
    out = human_out(as_json)
    state = StateDir(state_dir)
    client = connect()
    plan = control.plan_restore(client, state, name)
    for line in plan.lines():
        out(line)
    require_confirmation(yes, "Restore?", "restore")
    with metrics.written_after(state_dir, metrics_file):
        done = control.restore(client, state, plan, out=out)
    emit(jsondoc.document("restore", done), as_json,
         [f"the data of {name} is back in volume(s) {', '.join(done['volumes'])}; `bundle import` its bundle to run it"])
