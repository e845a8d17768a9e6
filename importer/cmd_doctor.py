"""`bundle doctor`: a table of what this host has for an import (importer/doctor.py)."""

import json

import click

from bundlecore.text import say
from importer.options import json_option, keys_option, state_dir_option


@click.command("doctor")
@keys_option
@state_dir_option
@json_option
def doctor(keys_dir, state_dir, as_json):
    """Check this host before a first import (exit 1 when something would stop it)."""
    from importer.doctor import examine
    report = examine(keys_dir, state_dir)
    if as_json:
        click.echo(json.dumps(report.document(), indent=2))
    else:
        for line in report.lines():
            say(line)
    return 0 if report.ready else 1
