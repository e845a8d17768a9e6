"""The `bundle` command: one click group; each verb lives in its own thin module.

Every error a user can cause is one line on stderr and an exit code from bundlecore.errors;
`--debug` shows the traceback instead. The global flags (`--debug`, `-q`, `-v`) are accepted
anywhere on the line, as admins type them (`bundle import x.zst --debug`); a mistyped verb gets a
suggestion; `bundle version` and `bundle help [CMD]` exist because people try them first.
"""

from __future__ import annotations

import difflib
import json
import sys
import traceback
from typing import Iterable

import click

from bundlecore import __version__, jsondoc, progress
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
    "list": ("importer.cmd_list:list_cmd", "List the installed applications with their version, container and health."),
    "history": ("importer.cmd_history:history",
                "Show every install, upgrade, rollback and uninstall of NAME with its bundle, signers and result."),
    "uninstall": ("importer.cmd_uninstall:uninstall",
                  "Stop and remove NAME's container, after a final backup of its data; clear its state."),
    "doctor": ("importer.cmd_doctor:doctor", "Check this host before a first import (exit 1 when something would stop it)."),
    "version": ("bundlecore.cli:version_cmd", "Print the version of bundle."),
    "help": ("bundlecore.cli:help_cmd", "Show the help of bundle, or of one command."),
}

# verb -> the exit codes it can end with (bundlecore.errors has their meanings): docs/cli.md and
# each command's JSON Schema are generated and checked from this table.
EXIT_CODES = {
    "build": (0, 1, 2),
    "approve": (0, 1, 2, 3),
    "check": (0, 1, 2, 10),
    "inspect": (0, 1, 2),
    "verify": (0, 1, 2, 3),
    "import": (0, 1, 2, 3, 4, 5, 9),
    "join": (0, 1, 2, 3),
    "inventory": (0, 1, 2),
    "status": (0, 1, 2, 6, 7, 8),
    "rollback": (0, 1, 2, 4, 5),
    "recover": (0, 1, 2, 5),
    "list": (0, 1, 2),
    "history": (0, 1, 2),
    "uninstall": (0, 1, 2, 5),
    "doctor": (0, 1, 2),
    "version": (0, 2),
    "help": (0, 2),
}
# `help` prints help text for people; a program reads docs/cli.md and schemas/cli/ instead.
NO_JSON = {"help"}

# Flags of the group that may appear anywhere on the line: hoisted in front of the verb.
GLOBAL_FLAGS = {"--debug": "--debug", "-q": "--quiet", "--quiet": "--quiet", "-v": "--verbose", "--verbose": "--verbose"}


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move the group's flags from anywhere (before a lone `--`) to the front, where click wants them."""
    cut = argv.index("--") if "--" in argv else len(argv)
    flags = [GLOBAL_FLAGS[a] for a in argv[:cut] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[:cut] if a not in GLOBAL_FLAGS] + argv[cut:]
    return list(dict.fromkeys(flags)) + rest


# A typo is never answered with a verb that removes things ("install" is close to "uninstall").
NEVER_SUGGESTED = {"uninstall"}


def suggestion(name: str, verbs: Iterable[str]) -> str:
    """" (did you mean 'import'?)" for a verb close to a known one, else ""."""
    close = difflib.get_close_matches(name, sorted(set(verbs) - NEVER_SUGGESTED), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The verb list from the registry's summaries: no command module is imported."""
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            raise click.UsageError(f"No such command '{name}'{suggestion(name, COMMANDS)}", ctx)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
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
        command: click.Command = getattr(mod, func)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors (anywhere on the line).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines (errors and results still print).")
@click.option("-v", "--verbose", is_flag=True, help="Step-by-step progress lines.")
@click.version_option(__version__, prog_name="bundle")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool, verbose: bool) -> None:
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
@jsondoc.json_option
def version_cmd(as_json: bool) -> None:
    """Print the version of bundle."""
    from bundlecore.text import emit
    emit(jsondoc.document("version", {"version": __version__}), as_json, [f"bundle {__version__}"])


@click.command("help")
@click.argument("command", required=False)
@click.pass_context
def help_cmd(ctx: click.Context, command: str | None) -> None:
    """Show the help of bundle, or of one command."""
    from bundlecore.text import say
    group_ctx = ctx.find_root()
    if not command:
        say(cli.get_help(group_ctx))
        return
    cmd = cli.get_command(group_ctx, command) if command in COMMANDS else None
    if cmd is None:
        raise click.UsageError(f"No such command '{command}'{suggestion(command, COMMANDS)}")
    with click.Context(cmd, info_name=command, parent=group_ctx) as sub:
        say(cmd.get_help(sub))


def verb_and_json(argv: list[str]) -> tuple[str | None, bool]:
    """The verb on a (hoisted) command line, if it is one, and whether --json was asked for."""
    cut = argv.index("--") if "--" in argv else len(argv)
    verb = next((a for a in argv[:cut] if not a.startswith("-")), None)
    return (verb if verb in COMMANDS else None), "--json" in argv[:cut]


def fail(line: str, exit_code: int, verb: str | None, as_json: bool, e: BaseException | None = None) -> None:
    """The one way a command ends on an error: the line on stderr and, with --json, the failure
    document (bundlecore.jsondoc) on stdout."""
    line = printable(line)  # the message may quote signed or engine text
    click.echo(line, err=True)
    if as_json:
        doc = jsondoc.of_error(verb, e, line) if isinstance(e, BundleError) else jsondoc.failure(verb, exit_code, line)
        click.echo(json.dumps(doc, indent=2, default=str))
    sys.exit(exit_code)


def main(argv: list[str] | None = None) -> None:
    argv = hoist_global_flags(list(argv if argv is not None else sys.argv[1:]))
    debug = "--debug" in argv
    verb, as_json = verb_and_json(argv)
    try:
        rv = cli.main(args=argv, prog_name="bundle", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 1, verb, as_json)
    except click.ClickException as e:  # bad options or arguments: one line too (see --help)
        fail(f"error: {e.format_message()} (see 'bundle --help')", e.exit_code, verb, as_json)
    except BundleError as e:
        if debug:
            traceback.print_exc()
        fail(e.line(), e.exit_code, verb, as_json, e)
    except KeyboardInterrupt:
        fail("interrupted", 1, verb, as_json)
    except Exception as e:  # a bug or an unexpected environment failure: still one line
        if debug:
            traceback.print_exc()
        fail(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", 1, verb, as_json)
    sys.exit(rv if isinstance(rv, int) else 0)
