"""Options and the confirmation rule shared by the intranet-side commands."""

import sys

import click

from bundlecore.errors import UsageProblem

keys_option = click.option("--keys", "keys_dir", type=click.Path(), default=None,
                           help="Trust store directory (default $BUNDLE_KEYS, else /etc/bundle/keys).")
state_dir_option = click.option("--state-dir", type=click.Path(), default=None,
                                help="Importer state directory (default $BUNDLE_STATE_DIR or /var/lib/bundle).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")


def require_confirmation(yes: bool, question: str, action: str) -> None:
    """Ask on a terminal unless --yes was given; refuse (exit 2) when nobody can answer."""
    if yes:
        return
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageProblem(f"not a terminal: pass --yes to {action} without confirmation")
    if not click.confirm(question, default=False):
        raise UsageProblem("not confirmed; nothing changed")
