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

from bundlecli.registry import COMMANDS
from bundlecore import __version__, interrupts, jsondoc, progress
from bundlecore.errors import BundleError, ExitCode, reason
from bundlecore.text import printable

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
        raise click.UsageError(f"No such command '{command}'{suggestion(command, COMMANDS)}", group_ctx)  # the list
    with click.Context(cmd, info_name=command, parent=group_ctx) as sub:
        say(cmd.get_help(sub))


def verb_and_json(argv: list[str]) -> tuple[str | None, bool]:
    """The verb on a (hoisted) command line, if it is one, and whether --json was asked for."""
    cut = argv.index("--") if "--" in argv else len(argv)
    verb = next((a for a in argv[:cut] if not a.startswith("-")), None)
    return (verb if verb in COMMANDS else None), "--json" in argv[:cut]


def help_of(e: click.ClickException) -> str:
    """Where a usage error's reader finds the right options: the subcommand's help when one was named."""
    ctx = getattr(e, "ctx", None)
    return f"{ctx.command_path if ctx is not None else 'bundle'} --help"


def fail(line: str, exit_code: int, verb: str | None, as_json: bool, e: BaseException | None = None) -> None:
    """The one way a command ends on an error: the line on stderr and, with --json, the failure
    document (bundlecore.jsondoc) on stdout."""
    line = printable(line)  # the message may quote signed or engine text
    click.echo(line, err=True)
    if as_json:
        doc = jsondoc.of_error(verb, e, line) if isinstance(e, BundleError) else jsondoc.failure(verb, exit_code, line)
        click.echo(json.dumps(doc, indent=2, default=str))
    sys.exit(exit_code)


def interrupted(e: KeyboardInterrupt, verb: str | None, as_json: bool) -> None:
    """An interrupt that reached the top: nothing changed (130), unless it left a journaled run
    unfinished (a kind that does not undo itself): then `bundle recover` is needed (5)."""
    unfinished = getattr(e, "unfinished", None)
    what = str(e) if isinstance(e, interrupts.Interrupted) else "interrupted by SIGINT"
    if unfinished:
        fail(f"operator needed: {what}; a run is unfinished ({unfinished}): `bundle recover` finishes or undoes it",
             ExitCode.OPERATOR_NEEDED, verb, as_json)
    fail(f"{what}; nothing changed", ExitCode.INTERRUPTED, verb, as_json)


def main(argv: list[str] | None = None) -> None:
    argv = hoist_global_flags(list(argv if argv is not None else sys.argv[1:]))
    debug = "--debug" in argv
    verb, as_json = verb_and_json(argv)
    interrupts.install()
    try:
        rv = cli.main(args=argv, prog_name="bundle", standalone_mode=False)
    except click.exceptions.Abort as e:  # click turns an interrupt (even at a prompt) into Abort
        cause = e.__cause__ or e.__context__
        if isinstance(cause, KeyboardInterrupt):
            interrupted(cause, verb, as_json)
        fail("aborted", ExitCode.ENVIRONMENT, verb, as_json)
    except click.ClickException as e:  # bad options or arguments: one line too (see --help)
        fail(f"error: {e.format_message()} (see '{help_of(e)}')", e.exit_code, verb, as_json)
    except BundleError as e:
        if debug:
            traceback.print_exc()
        fail(e.line(), e.exit_code, verb, as_json, e)
    except KeyboardInterrupt as e:
        interrupted(e, verb, as_json)
    except Exception as e:  # a bug or an unexpected environment failure: still one line
        if debug:
            traceback.print_exc()
        fail(f"error: {reason(e)} (run with --debug for the traceback)", ExitCode.ENVIRONMENT, verb, as_json)
    sys.exit(rv if isinstance(rv, int) else ExitCode.DONE)
