"""What this engine holds, for `bundle build --have` on the internet side: every image's ID, tags
and layer diff IDs (bottom first, so the chains `docker load` skips can be derived from them).
The document's shape is read back by bundlecore.inventory.parse_inventory."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

from bundlecore.engine import EngineNotFound
from bundlecore.inventory import INVENTORY_KIND
from bundlecore.timeutil import format_ts, utc_now


def inspected_images(client) -> list[dict]:
    """The engine's record (inspect) of every image it holds, those removed meanwhile left out: the
    one listing both `bundle inventory` and the importer's layer checks read. One inspect per
    image, 8 at a time, as a busy engine answers each slowly."""
    def inspect(image_id: str) -> dict | None:
        try:
            return client.inspect_image(image_id)
        except EngineNotFound:  # removed meanwhile
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [a for a in pool.map(inspect, [s["Id"] for s in client.images(all=True)]) if a is not None]


def engine_inventory(client) -> dict:
    images = [{"id": a["Id"], "tags": sorted(a.get("RepoTags") or []), "diff_ids": a["RootFS"]["Layers"]}
              for a in inspected_images(client) if a["RootFS"].get("Layers")]
    return {"kind": INVENTORY_KIND, "version": 1, "host": socket.gethostname(),
            "engine": client.version().get("Version", "unknown"), "created": format_ts(utc_now()),
            "images": sorted(images, key=lambda i: i["id"])}
