"""The `bundle` command: one click group; each verb lives in its own thin module.

Every error a user can cause is one line on stderr and an exit code from bundlecore.errors;
`--debug` shows the traceback instead. The global flags (`--debug`, `-q`, `-v`) are accepted
anywhere on the line, as admins type them (`bundle import x.zst --debug`); a mistyped verb gets a
suggestion; `bundle version` and `bundle help [CMD]` exist because people try them first.
"""

from __future__ import annotations

import difflib
import sys
import traceback

import click

from bundlecore import __version__, progress
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
    "join": ("bundlecore.cmd_join:join",
             "Write a split bundle (OUT.part001 or the prefix OUT) as one file, each part checked on the way."),
    "inventory": ("importer.cmd_inventory:inventory",
                  "Print the images and layer diff IDs this engine holds (--json: the file for `bundle build --have`)."),
    "status": ("importer.cmd_status:status",
               "Show the installed version, previous generations and the last import result."),
    "rollback": ("importer.cmd_rollback:rollback",
                 "Put the previous generation of NAME back, with the data it had when it was replaced."),
    "recover": ("importer.cmd_recover:recover",
                "Bring every application with an interrupted swap back to a healthy version."),
    "doctor": ("importer.cmd_doctor:doctor", "Check this host before a first import (exit 1 when something would stop it)."),
    "version": ("bundlecore.cli:version_cmd", "Print the version of bundle."),
    "help": ("bundlecore.cli:help_cmd", "Show the help of bundle, or of one command."),
}

# Flags of the group that may appear anywhere on the line: hoisted in front of the verb.
GLOBAL_FLAGS = {"--debug": "--debug", "-q": "--quiet", "--quiet": "--quiet", "-v": "--verbose", "--verbose": "--verbose"}


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move the group's flags from anywhere (before a lone `--`) to the front, where click wants them."""
    cut = argv.index("--") if "--" in argv else len(argv)
    flags = [GLOBAL_FLAGS[a] for a in argv[:cut] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[:cut] if a not in GLOBAL_FLAGS] + argv[cut:]
    return list(dict.fromkeys(flags)) + rest


def suggestion(name: str, verbs) -> str:
    """" (did you mean 'import'?)" for a verb close to a known one, else ""."""
    close = difflib.get_close_matches(name, sorted(verbs), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def format_commands(self, ctx, formatter):
        """The verb list from the registry's summaries: no command module is imported."""
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            raise click.UsageError(f"No such command '{name}'{suggestion(name, COMMANDS)}", ctx)
        return super().resolve_command(ctx, args)

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
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors (anywhere on the line).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines (errors and results still print).")
@click.option("-v", "--verbose", is_flag=True, help="Step-by-step progress lines.")
@click.version_option(__version__, prog_name="bundle")
@click.pass_context
def cli(ctx, debug, quiet, verbose):
    """Carry a containerized application across an air gap, safely.

    Shell completion: eval "$(_BUNDLE_COMPLETE=bash_source bundle)" in ~/.bashrc
    (zsh_source, fish_source for the other shells). Manual: man -l docs/bundle.1.
    """
    if quiet and verbose:
        raise click.UsageError("-q and -v exclude each other")
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    progress.set_verbosity(progress.QUIET if quiet else progress.VERBOSE if verbose else progress.NORMAL)


@click.command("version")
def version_cmd():
    """Print the version of bundle."""
    from bundlecore.text import say
    say(f"bundle {__version__}")


@click.command("help")
@click.argument("command", required=False)
@click.pass_context
def help_cmd(ctx, command):
    """Show the help of bundle, or of one command."""
    from bundlecore.text import say
    group_ctx = ctx.parent
    if not command:
        say(cli.get_help(group_ctx))
        return
    cmd = cli.get_command(group_ctx, command) if command in COMMANDS else None
    if cmd is None:
        raise click.UsageError(f"No such command '{command}'{suggestion(command, COMMANDS)}")
    with click.Context(cmd, info_name=command, parent=group_ctx) as sub:
        say(cmd.get_help(sub))


def main(argv=None) -> None:
    argv = hoist_global_flags(list(argv if argv is not None else sys.argv[1:]))
    debug = "--debug" in argv
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
