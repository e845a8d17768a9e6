"""`bundle rollback NAME`: put the previous generation back (its container and its data)."""

import click

from bundlecore.text import say
from importer.options import require_confirmation, state_dir_option
from importer.state import StateDir


@click.command("rollback")
@click.argument("name")
@state_dir_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rollback(name, state_dir, yes):
    """Put the previous generation of NAME back, with the data it had when it was replaced."""
    from bundlecore.docker_engine import connect
    from importer.swap import kinds
    state = StateDir(state_dir)
    client = connect()
    with state.lock():
        for line in kinds.recover_all(client, state, out=say):
            say(f"recovered: {line}")
        kind = kinds.for_app(state, name)
        plan = kind.plan_rollback(client, state, name)
        for line in plan.lines():
            say(line)
        require_confirmation(yes, "Go ahead?", "roll back")
        record = kind.rollback(client, state, plan, out=say)
    say(f"{name} {record.get('version')} (generation {record.get('generation')}) is running")
