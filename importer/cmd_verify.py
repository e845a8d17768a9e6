"""`bundle verify`: every check of the trust gate, no side effects."""

import click

from bundlecore import jsondoc
from bundlecore.text import emit
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
    report = {**report, "signers": [jsondoc.signer(s["fingerprint"], s["roles"]) for s in report["signers"]],
              "images": [jsondoc.image(i["ref"], i["id"]) for i in report["images"]]}
    emit(jsondoc.document("verify", report), as_json, _lines(report))


def _lines(report: dict):
    yield f"checked: {', '.join(report['checks'])}"
    for s in report["signers"]:
        yield f"signed by: {s['fingerprint']}" + (f" ({', '.join(s['roles'])})" if s["roles"] else "")
    for note in report["notes"]:
        yield f"note: {note}"
    yield from report["host_access"]
    yield (f"trusted: {report['name']} {report['version']} sequence {report['sequence']}, "
           f"expires {report['expires']}, {len(report['images'])} image(s), {report['payload_bytes']} payload bytes")
