"""`bundle approve`: parse options, call bundler.approve."""

from pathlib import Path

import click

from bundlecore import jsondoc
from bundlecore.text import emit
from bundler.approve import approve as approve_bundle


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sign-key", required=True, help="Fingerprint of the approver's signing key.")
@click.option("--gnupghome", envvar="GNUPGHOME", help="Keyring holding the approver's key (default $GNUPGHOME).")
@click.option("--keys", "keys_dir", type=click.Path(), default=None,
              help="Trust store holding the builders' public keys, to verify the bundle before signing.")
@jsondoc.json_option
def approve(bundle, sign_key, gnupghome, keys_dir, as_json):
    """Verify a bundle, then add your signature to it (rewrites its first frame only)."""
    digest, before = approve_bundle(bundle, sign_key, gnupghome, keys_dir)
    doc = {"bundle": str(bundle), "sha256": digest, "approved_by": jsondoc.signer(sign_key),
           "signed_before": [jsondoc.signer(fp) for fp in before]}
    emit(jsondoc.document("approve", doc), as_json, [f"approved {bundle}: signed after {', '.join(before)}; "
                                                      f"new sha256 {digest}"])
