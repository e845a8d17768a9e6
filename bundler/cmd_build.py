"""`bundle build`: parse options, call bundler.build."""

import json
from pathlib import Path

import click

from bundlecore.text import say
from bundler.build import build as build_bundle


@click.command()
@click.argument("spec", type=click.Path(path_type=Path), default="bundle.toml")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="The bundle file to write.")
@click.option("--sign-key", required=True, help="Fingerprint of the builder's signing key.")
@click.option("--gnupghome", envvar="GNUPGHOME", help="Keyring holding the signing key (default $GNUPGHOME).")
@click.option("--local", is_flag=True, help="Use images already in the local engine instead of pulling.")
@click.option("--allow-latest", is_flag=True, help="Accept unpinned refs (recorded in the manifest).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def build(spec, out, sign_key, gnupghome, local, allow_latest, as_json):
    """Pack pinned images, a manifest, SHA256SUMS and a signature into one zstd file."""
    result = build_bundle(spec, out, sign_key, gnupghome, local=local, allow_latest=allow_latest)
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2))
    else:
        say(f"built {result.path} ({result.size} bytes, sha256 {result.sha256}) in {result.duration:.1f}s")
