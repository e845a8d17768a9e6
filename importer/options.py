"""Options and the confirmation rule shared by the intranet-side commands."""

import re
import sys
from pathlib import Path

import click

from bundlecore.errors import EnvironmentProblem, UsageProblem
from bundlecore.jsondoc import json_option  # noqa: F401  (every command's --json, both sides)

keys_option = click.option("--keys", "keys_dir", type=click.Path(), default=None,
                           help="Trust store directory (default $BUNDLE_KEYS, else /etc/bundle/keys).")
state_dir_option = click.option("--state-dir", type=click.Path(), default=None,
                                help="Importer state directory (default $BUNDLE_STATE_DIR or /var/lib/bundle).")
metrics_file_option = click.option(
    "--metrics-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Prometheus textfile to rewrite from the audit log afterwards, whatever the result "
         "(default STATE_DIR/metrics/bundle.prom; docs/metrics.md).")


REMOVED_DIR = re.compile(r"^(?P<app>.+)-\d{8}T\d{6}Z(-[0-9a-f]{8})?$")  # removed/<app>-<time>-<id> (uninstall)


def _state_for_completion(ctx: click.Context):
    from importer.state import StateDir
    return StateDir(ctx.params.get("state_dir"))


def complete_app_names(ctx: click.Context, param, incomplete: str) -> list[str]:
    """Shell completion of NAME from the state dir: the installed apps (for `restore`, the
    uninstalled ones; for `promote` and `abort`, the apps with a staged release under way); nothing
    when the state dir cannot be read. Never raises: a completion that fails must not print a
    traceback into the admin's shell."""
    try:
        state = _state_for_completion(ctx)
        if ctx.info_name == "restore":
            names = {m["app"] for p in (state.root / "removed").iterdir() if (m := REMOVED_DIR.match(p.name))}
        elif ctx.info_name in ("promote", "abort"):
            from importer.kinds.service.release import pending_release
            names = {r["app"] for p in state.apps_root.iterdir() if (r := pending_release(state, p.name)) and r.get("app")}
        else:
            names = set(state.installed_apps())
        return sorted(n for n in names if n.startswith(incomplete))
    except Exception:
        return []


def complete_generations(ctx: click.Context, param, incomplete: str) -> list[str]:
    """Shell completion of `rollback NAME --to GEN`: the generations kept for NAME."""
    try:
        from importer.kinds.container.generations import Generations
        state = _state_for_completion(ctx)
        name = ctx.params.get("name") or ctx.args[0]  # while an option's value is completed, NAME is in args
        gens = [str(i["generation"]) for i in Generations(state.app_dir(name)).previous()]
        return [g for g in gens if g.startswith(incomplete)]
    except Exception:
        return []


app_argument = click.argument("name", shell_complete=complete_app_names)
yes_option = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")


def app_statuses(state, names, client) -> list[dict]:
    """Each app's status report from its target kind (client None: the engine does not answer)."""
    from importer import kinds
    return [kinds.for_app(state, n).status(client, state, n) for n in names]


def app_status_now(state, name: str) -> dict:
    """The --json shape of one app's status right after a command changed it."""
    from bundlecore import jsondoc
    from bundlecore.engine import connect_or_none
    return jsondoc.app_status(app_statuses(state, [name], connect_or_none())[0])


def human_out(as_json: bool):
    """Where a command's progress and plan lines go: stderr when stdout carries the JSON document."""
    from bundlecore.text import say
    return (lambda line: say(line, err=True)) if as_json else say


def require_confirmation(yes: bool, question: str, action: str) -> None:
    """Ask on a terminal unless --yes was given; refuse (exit 2) when nobody can answer."""
    if yes:
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageProblem(f"not a terminal: pass --yes to {action} without confirmation")
    if not click.confirm(question, default=False):
        raise UsageProblem("not confirmed; nothing changed")


def _existing_bundle(ctx, param, value):
    from bundlecore.format import BundleFiles  # one file, or its parts OUT.part001, ...

    if not BundleFiles.exists(value):
        raise click.BadParameter(f"bundle {value} not found (a file, a part OUT.part001 or the prefix OUT of parts)")
    return value


bundle_argument = click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path), callback=_existing_bundle)


def confirmed_change(name: str, state_dir, yes: bool, question: str, action: str, make_plan, apply, say=None,
                     dry_run: bool = False):
    """What `rollback` and `uninstall` of app `name` share: under the lock, finish interrupted swaps
    first, show the plan `make_plan(client, state, kind)` made (through `say`), confirm, then
    `apply(client, state, kind, plan)` and return what it returns. `dry_run`: return the plan
    once shown; nothing is asked or changed."""
    from bundlecore.engine import connect
    from importer.state import StateDir
    say = say or human_out(False)
    from importer import kinds
    from importer.steps import pending
    state = StateDir(state_dir)
    client = connect()
    with state.lock():
        if dry_run and pending(state):
            raise EnvironmentProblem(f"an interrupted swap is pending ({', '.join(pending(state))}); a dry run "
                                     f"changes nothing: run `bundle recover` first")
        for line in kinds.recover_all(client, state, out=say):
            say(f"recovered: {line}")
        kind = kinds.for_app(state, name)
        plan = make_plan(client, state, kind)
        for line in plan.lines():
            say(line)
        if dry_run:
            return plan
        require_confirmation(yes, question, action)
        return apply(client, state, kind, plan)
