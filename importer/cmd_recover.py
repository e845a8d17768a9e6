"""`bundle recover`: finish or undo any swap interrupted by a crash, a kill or a power cut."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer import metrics
from importer.options import (human_out, json_option, metrics_file_option, require_confirmation, state_dir_option,
                              yes_option)
from importer.state import StateDir


@click.command("recover")
@state_dir_option
@yes_option
@json_option
@metrics_file_option
def recover(state_dir, yes, as_json, metrics_file):
    """Bring every application with an interrupted swap back to a healthy version."""
    from bundlecore.engine import connect
    from importer import kinds
    out = human_out(as_json)
    state = StateDir(state_dir)
    client = connect()
    with metrics.written_after(state_dir, metrics_file), state.lock():
        names = kinds.interrupted(state)
        if names:
            out("interrupted swap(s): " + ", ".join(names))
            require_confirmation(yes, "Finish or undo them now?", "recover")
        done = list(kinds.recover_all(client, state, out=out)) if names else []
    emit(jsondoc.document("recover", {"pending": names, "recovered": done}), as_json,
         done or ["no interrupted swap"])
