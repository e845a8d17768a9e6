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
from bundlecore.text import printable

# verb -> ("module:function", one-line summary). A verb's module is imported only when that verb
# runs, so `bundle --help` loads none of them and the intranet side never loads the internet-side
# modules (and their dependencies) it does not use. The summary is shown by `bundle --help`; a
# unit test keeps it equal to the first line of the command's own docstring.
COMMANDS = {
    "build": ("bundler.cmd_build:build", "Pack pinned images, a manifest, SHA256SUMS and a signature into one zstd file."),
    "approve": ("bundler.cmd_approve:approve",
                "Verify a bundle, then add your signature to it (rewrites its first frame only)."),
    "check": ("bundler.cmd_check:check",
              "Ask upstream's GitHub Releases for a newer version (exit 10), optionally build and announce it."),
    "inspect": ("importer.cmd_inspect:inspect_cmd",
                "Show a bundle's manifest summary from its first frame only. NOTHING here is verified."),
    "verify": ("importer.cmd_verify:verify",
               "Check a bundle completely (exit 0 trusted, 3 refused) without changing anything."),
    "import": ("importer.cmd_import:import_cmd", "Verify a bundle, load its images and swap the running application."),
    "status": ("importer.cmd_status:status",
               "Show the installed version, previous generations and the last import result."),
    "rollback": ("importer.cmd_rollback:rollback",
                 "Put the previous generation of NAME back, with the data it had when it was replaced."),
    "recover": ("importer.cmd_recover:recover",
                "Bring every application with an interrupted swap back to a healthy version."),
    "list": ("importer.cmd_list:list_cmd", "List the installed applications with their version, container and health."),
    "history": ("importer.cmd_history:history",
                "Show every install, upgrade, rollback and uninstall of NAME with its bundle, signers and result."),
    "uninstall": ("importer.cmd_uninstall:uninstall",
                  "Stop and remove NAME's container, after a final backup of its data; clear its state."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def format_commands(self, ctx, formatter):
        """The verb list from the registry's summaries: no command module is imported."""
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, func = target[0].split(":")
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
        click.echo(printable(f"error: {e.format_message()} (see 'bundle --help')"), err=True)
        sys.exit(e.exit_code)
    except BundleError as e:
        if debug:
            traceback.print_exc()
        click.echo(printable(e.line()), err=True)  # the message may quote signed or engine text
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(1)
    except Exception as e:  # a bug or an unexpected environment failure: still one line
        if debug:
            traceback.print_exc()
        else:
            click.echo(printable(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)"), err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
