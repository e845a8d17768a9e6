"""`bundle doctor`: a table of what this host has for an import (importer/doctor.py)."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from importer.options import json_option, keys_option, state_dir_option


@click.command("doctor")
@keys_option
@state_dir_option
@json_option
def doctor(keys_dir, state_dir, as_json):
    """Check this host before a first import (exit 1 when something would stop it)."""
    from importer.doctor import examine
    report = examine(keys_dir, state_dir)
    code = 0 if report.ready else 1
    error = None if report.ready else jsondoc.error(code, "this host is not ready for an import (see the FAIL rows)")
    emit(jsondoc.document("doctor", report.document(), code, error), as_json, report.lines())
    return code
