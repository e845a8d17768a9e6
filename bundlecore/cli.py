"""The `bundle` command: one click group; each verb lives in its own thin module.

Every error a user can cause is one line on stderr and an exit code from bundlecore.errors;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback

import click

from bundlecore import __version__
from bundlecore.errors import BundleError

# verb -> "module:function"; imported only when the verb runs, so the intranet side never
# loads the internet-side modules (and their dependencies) it does not use.
COMMANDS = {
    "build": "bundler.cmd_build:build",
    "approve": "bundler.cmd_approve:approve",
    "inspect": "importer.cmd_inspect:inspect_cmd",
    "verify": "importer.cmd_verify:verify",
    "import": "importer.cmd_import:import_cmd",
    "status": "importer.cmd_status:status",
    "rollback": "importer.cmd_rollback:rollback",
    "recover": "importer.cmd_recover:recover",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, func = target.split(":")
        try:
            mod = __import__(module, fromlist=[func])
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in ("bundler", "importer"):
                return None  # verb not shipped in this installation
            raise
        return getattr(mod, func)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="bundle")
@click.pass_context
def cli(ctx, debug):
    """Carry a containerized application across an air gap, safely."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv=None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="bundle", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:  # bad options or arguments: one line too (see --help)
        click.echo(f"error: {e.format_message()} (see 'bundle --help')", err=True)
        sys.exit(e.exit_code)
    except BundleError as e:
        if debug:
            traceback.print_exc()
        click.echo(e.line(), err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(1)
    except Exception as e:  # a bug or an unexpected environment failure: still one line
        if debug:
            traceback.print_exc()
        else:
            click.echo(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
