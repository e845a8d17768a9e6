"""`bundle start|stop|restart NAME`: the installed container started, stopped (`status` then says
"stopped by admin") or restarted, under the lock, audited (importer.kinds.container.control)."""

import click

from bundlecore import jsondoc
from bundlecore.errors import NotActive
from bundlecore.text import emit
from importer import metrics
from importer.options import app_argument, human_out, json_option, metrics_file_option, state_dir_option

wait_option = click.option("--wait", type=click.IntRange(min=0), default=60, show_default=True, metavar="SECONDS",
                           help="How long to wait for the app to run its installed version healthy.")


def _run(name, action, state_dir, as_json, metrics_file, wait=0):
    from bundlecore.engine import connect
    from importer.kinds.container import control
    from importer.kinds.container.status import status_lines
    from importer.state import StateDir
    state = StateDir(state_dir)
    client = connect()
    with metrics.written_after(state_dir, metrics_file):
        st = control.control(client, state, name, control.Action(action), wait=wait, out=human_out(as_json))
    if action != control.Action.STOP and st["state"] != "active":
        e = NotActive(f"{name} was {action}ed but is {st['state']}: {' / '.join(s.strip() for s in status_lines(st)[1:2])} "
                      f"(see `bundle logs {name}`)")
        e.partial = {"name": name, "action": action, "app": jsondoc.app_status(st)}
        raise e
    emit(jsondoc.document(action, {"name": name, "action": action, "app": jsondoc.app_status(st)}), as_json,
         status_lines(st))


@click.command("start")
@app_argument
@wait_option
@state_dir_option
@json_option
@metrics_file_option
def start(name, wait, state_dir, as_json, metrics_file):
    """Start NAME's installed container (after `bundle stop`) and wait until it is healthy."""
    _run(name, "start", state_dir, as_json, metrics_file, wait)


@click.command("stop")
@app_argument
@state_dir_option
@json_option
@metrics_file_option
def stop(name, state_dir, as_json, metrics_file):
    """Stop NAME's container; `bundle status` then says it was stopped by an admin."""
    _run(name, "stop", state_dir, as_json, metrics_file)


@click.command("restart")
@app_argument
@wait_option
@state_dir_option
@json_option
@metrics_file_option
def restart(name, wait, state_dir, as_json, metrics_file):
    """Restart NAME's installed container and wait until it is healthy."""
    _run(name, "restart", state_dir, as_json, metrics_file, wait)
