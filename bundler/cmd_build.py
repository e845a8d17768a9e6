"""`bundle build`: parse options, call bundler.build."""

from pathlib import Path

import click

from bundlecore import format as fmt
from bundlecore import jsondoc
from bundlecore.text import emit
from bundler.build import build as build_bundle


class PartSize(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):
        try:
            return fmt.parse_part_size(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command()
@click.argument("spec", type=click.Path(path_type=Path), default="bundle.toml")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True, help="The bundle file to write.")
@click.option("--sign-key", required=True, help="Fingerprint of the builder's signing key.")
@click.option("--gnupghome", envvar="GNUPGHOME", help="Keyring holding the signing key (default $GNUPGHOME).")
@click.option("--local", is_flag=True, help="Use images already in the local engine instead of pulling.")
@click.option("--allow-latest", is_flag=True, help="Accept unpinned refs (recorded in the manifest).")
@click.option("--split", type=PartSize(), help="Write OUT.part001, OUT.part002, ... of at most SIZE (e.g. 3900M).")
@click.option("--since", type=click.Path(path_type=Path), help="Delta: leave out the layers this older bundle carried.")
@click.option("--have", type=click.Path(path_type=Path),
              help="Delta: leave out the layers the intranet engine holds (a `bundle inventory --json` file).")
@click.option("--no-patch", is_flag=True,
              help="Delta with --since: carry changed layers whole, not as patches against the base's layers.")
@jsondoc.json_option
def build(spec, out, sign_key, gnupghome, local, allow_latest, split, since, have, no_patch, as_json):
    """Pack pinned images, a manifest, SHA256SUMS and a signature into one zstd file."""
    result = build_bundle(spec, out, sign_key, gnupghome, local=local, allow_latest=allow_latest,
                          split=split, since=since, have=have, patch=not no_patch)
    summary = result.summary()
    summary["images"] = [jsondoc.image(i["ref"], i["id"]) for i in summary["images"]]
    emit(jsondoc.document("build", summary), as_json, _lines(result, since or have))


def _lines(result, delta_asked: bool):
    yield f"built {result.path} ({result.size} bytes, sha256 {result.sha256}) in {result.duration:.1f}s"
    if result.parts:
        yield f"split into {len(result.parts)} parts: {result.parts[0].name} .. {result.parts[-1].name}"
    if result.delta:
        base = result.delta["base"]
        yield (f"delta of {base['name']} {base.get('version', '')}".rstrip()
               + f": {len(result.delta['omitted'])} layer(s) left out"
               + (f", {len(result.delta['patched'])} carried as patches" if result.delta.get("patched") else ""))
    elif delta_asked:
        yield "note: nothing in common with the base: this is a full bundle"
