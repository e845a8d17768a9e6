"""`bundle inspect`: what the head frame says, read without verifying anything."""

import json

import click

from bundlecore.text import say
from bundlecore import format as fmt
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
        "signers_unverified": signature_key_ids(head.signatures),
        "images": [{"ref": i.get("ref"), "id": i.get("id"),
                    "size": sum(sizes.get(p, 0) for p in [i.get("config"), *i.get("layers", [])])}
                   for i in m.get("images", [])],
        "payload_bytes": sum(sizes.values()),
        "delta": m.get("delta"),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    say(f"{info['name']} {info['version']} (sequence {info['sequence']}) for {info['platform']}")
    say(f"created {info['created']}, expires {info['expires']}")
    say(f"signed by (NOT verified, run `bundle verify`): {', '.join(info['signers_unverified']) or 'nobody'}")
    delta = info["delta"]
    if not delta:
        say("full bundle: carries every layer")
    else:
        base = delta.get("base") or {}
        say(f"delta bundle: {len(delta.get('omitted') or [])} layer(s) left out, which the engine must hold; base: "
            f"{base.get('kind')} {base.get('name')} {base.get('version', '')} sequence {base.get('sequence', '-')} "
            f"sha256 {base.get('sha256')}")
        for p in delta.get("patched") or []:
            say(f"patched layer {p.get('diff_id')}: {sizes.get(p.get('patch'), 0)} byte patch against "
                f"base layer {p.get('base_diff_id')}, which the engine must hold")
    for i in info["images"]:
        say(f"image {i['ref']}  {i['id']}  {i['size']} bytes")
