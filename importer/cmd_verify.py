"""`bundle verify`: every check of the trust gate, no side effects."""

import json

import click

from bundlecore.text import say
from bundlecore.trust import TrustStore
from importer.options import bundle_argument, json_option, keys_option, state_dir_option
from importer.pipeline import verify_bundle
from importer.state import StateDir


@click.command()
@bundle_argument
@keys_option
@state_dir_option
@click.option("--allow-downgrade", is_flag=True, help="Accept a sequence not above the installed one.")
@json_option
def verify(bundle, keys_dir, state_dir, allow_downgrade, as_json):
    """Check a bundle completely (exit 0 trusted, 3 refused) without changing anything."""
    result = verify_bundle(bundle, TrustStore.load(keys_dir), StateDir(state_dir), allow_downgrade=allow_downgrade)
    report = result.report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    say(f"checked: {', '.join(report['checks'])}")
    for s in report["signers"]:
        say(f"signed by: {s['fingerprint']}" + (f" ({', '.join(s['roles'])})" if s["roles"] else ""))
    for note in report["notes"]:
        say(f"note: {note}")
    for line in report["host_access"]:
        say(line)
    say(f"trusted: {report['name']} {report['version']} sequence {report['sequence']}, "
               f"expires {report['expires']}, {len(report['images'])} image(s), {report['payload_bytes']} payload bytes")
