"""`bundle inspect`: what the head frame says, read without verifying anything."""

import click

from bundlecore import format as fmt
from bundlecore import jsondoc
from bundlecore.text import emit
from bundlecore.errors import UsageProblem
from bundlecore.trust import signature_key_ids
from importer.options import bundle_argument, json_option


@click.command("inspect")
@bundle_argument
@json_option
def inspect_cmd(bundle, as_json):
    """Show a bundle's manifest summary from its first frame only. NOTHING here is verified."""
    try:
        head = fmt.read_head(bundle)
        m = fmt.loads_strict_json(head.manifest, "manifest.json")
    except fmt.FormatError as e:
        raise UsageProblem(f"cannot read {bundle}: {e}") from None
    sizes = {p["path"]: p["size"] for p in m.get("payload", [])}
    info = {
        "verified": False,
        "name": m.get("name"), "version": m.get("version"), "sequence": m.get("sequence"),
        "created": m.get("created"), "expires": m.get("expires"), "platform": m.get("platform"),
        "signers": [jsondoc.signer(key) for key in signature_key_ids(head.signatures)],
        "images": [jsondoc.image(i.get("ref"), i.get("id"),
                                 sum(sizes.get(p, 0) for p in [i.get("config"), *i.get("layers", [])]))
                   for i in m.get("images", [])],
        "payload_bytes": sum(sizes.values()),
        "delta": m.get("delta"),
    }
    emit(jsondoc.document("inspect", info), as_json, _lines(info, sizes))


def _lines(info: dict, sizes: dict):
    yield f"{info['name']} {info['version']} (sequence {info['sequence']}) for {info['platform']}"
    yield f"created {info['created']}, expires {info['expires']}"
    yield (f"signed by (NOT verified, run `bundle verify`): "
           f"{', '.join(s['fingerprint'] for s in info['signers']) or 'nobody'}")
    delta = info["delta"]
    if not delta:
        yield "full bundle: carries every layer"
    else:
        base = delta.get("base") or {}
        yield (f"delta bundle: {len(delta.get('omitted') or [])} layer(s) left out, which the engine must hold; "
               f"base: {base.get('kind')} {base.get('name')} {base.get('version', '')} sequence "
               f"{base.get('sequence', '-')} sha256 {base.get('sha256')}")
        for p in delta.get("patched") or []:
            yield (f"patched layer {p.get('diff_id')}: {sizes.get(p.get('patch'), 0)} byte patch against "
                   f"base layer {p.get('base_diff_id')}, which the engine must hold")
    for i in info["images"]:
        yield f"image {i['ref']}  {i['id']}  {i['size']} bytes"
