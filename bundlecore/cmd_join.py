"""`bundle join`: a split bundle's parts as the single file. In bundlecore because both sides use
it (the builder before an upload, the intranet before archiving) and both installations ship it."""

from pathlib import Path

import click

from bundlecore import format as fmt
from bundlecore import jsondoc
from bundlecore.errors import UsageProblem
from bundlecore.refusals import MalformedBundle
from bundlecore.text import emit


@click.command("join")
@click.argument("parts", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The single bundle file to write.")
@jsondoc.json_option
def join(parts: Path, out: Path, as_json: bool) -> None:
    """Write a split bundle (OUT.part001 or the prefix OUT) as one file, each part checked on the way."""
    if not fmt.BundleFiles.exists(parts):
        raise UsageProblem(f"bundle {parts} not found")
    if out.exists():
        raise UsageProblem(f"{out} exists: choose another name (nothing is overwritten)")
    try:
        digest = fmt.join_parts(parts, out)
    except fmt.FormatError as e:
        raise MalformedBundle(e) from None
    size = out.stat().st_size
    emit(jsondoc.document("join", {"path": str(out), "size": size, "sha256": digest}), as_json,
         [f"joined {out} ({size} bytes, sha256 {digest})"])
