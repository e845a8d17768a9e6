"""`bundle recover`: finish or undo any swap interrupted by a crash, a kill or a power cut."""

import click

from bundlecore.text import say
from importer import metrics
from importer.options import metrics_file_option, require_confirmation, state_dir_option
from importer.state import StateDir


@click.command("recover")
@state_dir_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@metrics_file_option
def recover(state_dir, yes, metrics_file):
    """Bring every application with an interrupted swap back to a healthy version."""
    from bundlecore.docker_engine import connect
    from importer.swap import kinds
    from importer.swap.journal import pending
    state = StateDir(state_dir)
    client = connect()
    with metrics.written_after(state_dir, metrics_file), state.lock():
        names = pending(state)
        if not names:
            say("no interrupted swap")
            return
        say("interrupted swap(s): " + ", ".join(names))
        require_confirmation(yes, "Finish or undo them now?", "recover")
        for line in kinds.recover_all(client, state, out=say):
            say(line)
