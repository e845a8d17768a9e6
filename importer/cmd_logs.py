"""`bundle logs NAME [-f] [--tail N] [--failed]`: the app's container output, or the log saved from
its last release that failed its health gate (kept in the state dir, also after `uninstall`)."""

import click

from bundlecore import jsondoc
from bundlecore.errors import UsageProblem
from bundlecore.text import emit, say
from importer.options import app_argument, json_option, state_dir_option
from importer.state import StateDir


@click.command("logs")
@app_argument
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing what the container writes, until it stops or Ctrl-C (exit 0 either way).")
@click.option("--tail", type=click.IntRange(min=0), default=None, metavar="N", help="Only the last N lines.")
@click.option("--failed", is_flag=True,
              help="The log saved from the last release that failed its health gate (see `bundle history NAME`).")
@state_dir_option
@json_option
def logs(name, follow, tail, failed, state_dir, as_json):
    """Print the output of NAME's container, or the saved log of its last failed release."""
    from importer.kinds.container import control
    if follow and (as_json or failed):
        raise UsageProblem("-f follows the running container: not with --json or --failed")
    state = StateDir(state_dir)
    if failed:
        path = control.failed_release_log(state, name)
        text, source = path.read_bytes().decode(errors="replace"), str(path)
    else:
        from bundlecore.engine import connect
        client = connect()
        if follow:
            _follow(control.logs(client, state, name, tail=tail, follow=True))
            return
        text, source = b"".join(control.logs(client, state, name, tail=tail, follow=False)).decode(errors="replace"), \
            "container"
    lines = text.splitlines()
    if failed and tail is not None:
        lines = lines[len(lines) - tail:] if tail else []
    emit(jsondoc.document("logs", {"name": name, "source": source, "lines": lines}), as_json, lines)


def _follow(chunks) -> None:
    """Whole lines as they come (a chunk may end inside a line); Ctrl-C ends it, like the container
    stopping does (exit 0: following changed nothing and was all that was asked)."""
    rest = ""
    try:
        for chunk in chunks:
            rest += chunk.decode(errors="replace")
            *done, rest = rest.split("\n")
            for line in done:
                say(line)
    except KeyboardInterrupt:
        pass
    if rest:
        say(rest)
