"""`bundle inventory`: what this engine holds, as a small file for `bundle build --have`."""

import click

from bundlecore import jsondoc
from bundlecore.engine import connect
from bundlecore.text import emit
from importer.inventory import engine_inventory
from importer.options import json_option


@click.command("inventory")
@json_option
def inventory(as_json):
    """Print the images and layer diff IDs this engine holds (--json: the file for `bundle build --have`)."""
    doc = engine_inventory(connect())
    lines = [f"{img['id']}  {len(img['diff_ids'])} layer(s)  {' '.join(img['tags']) or '<untagged>'}"
             for img in doc["images"]]
    lines.append(f"{len(doc['images'])} image(s), {len({d for i in doc['images'] for d in i['diff_ids']})} "
                 f"distinct layers on {doc['host']} (engine {doc['engine']})")
    emit(jsondoc.document("inventory", doc), as_json, lines)
