"""`bundle uninstall NAME [--keep-data]`: remove an application after a final backup (journaled)."""

import click

from bundlecore.text import say
from importer.options import require_confirmation, state_dir_option
from importer.state import StateDir


@click.command("uninstall")
@click.argument("name")
@click.option("--keep-data", is_flag=True, help="Keep the named volumes (the final backup is taken either way).")
@state_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(name, keep_data, state_dir, yes):
    """Stop and remove NAME's container, after a final backup of its data; clear its state."""
    from bundlecore.docker_engine import connect
    from importer.swap import kinds
    state = StateDir(state_dir)
    client = connect()
    with state.lock():
        for line in kinds.recover_all(client, state, out=say):
            say(f"recovered: {line}")
        kind = kinds.for_app(state, name)
        plan = kind.plan_uninstall(client, state, name, keep_data=keep_data)
        for line in plan.lines():
            say(line)
        require_confirmation(yes, "Uninstall?", "uninstall")
        where = kind.uninstall(client, state, plan, out=say)
    say(f"{name} is uninstalled; its final backup and records are in {where}")
