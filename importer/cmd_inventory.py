"""`bundle inventory`: what this engine holds, as a small file for `bundle build --have`."""

import json

import click

from bundlecore.docker_engine import connect
from bundlecore.text import say
from importer.inventory import engine_inventory
from importer.options import json_option


@click.command("inventory")
@json_option
def inventory(as_json):
    """Print the images and layer diff IDs this engine holds (--json: the file for `bundle build --have`)."""
    doc = engine_inventory(connect())
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for img in doc["images"]:
        say(f"{img['id']}  {len(img['diff_ids'])} layer(s)  {' '.join(img['tags']) or '<untagged>'}")
    say(f"{len(doc['images'])} image(s), {len({d for i in doc['images'] for d in i['diff_ids']})} distinct layers "
        f"on {doc['host']} (engine {doc['engine']})")
