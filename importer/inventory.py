"""What this engine holds, for `bundle build --have` on the internet side: every image's ID, tags
and layer diff IDs (bottom first, so the chains `docker load` skips can be derived from them).
The document's shape is read back by bundlecore.inventory.parse_inventory."""

from __future__ import annotations

import socket

import docker

from bundlecore.inventory import INVENTORY_KIND
from bundlecore.timeutil import format_ts, utc_now


def engine_inventory(client) -> dict:
    images = []
    for summary in client.api.images(all=True):
        try:
            attrs = client.api.inspect_image(summary["Id"])
        except docker.errors.NotFound:  # removed meanwhile
            continue
        diff_ids = attrs["RootFS"].get("Layers") or []
        if diff_ids:
            images.append({"id": attrs["Id"], "tags": sorted(attrs.get("RepoTags") or []), "diff_ids": diff_ids})
    return {"kind": INVENTORY_KIND, "version": 1, "host": socket.gethostname(),
            "engine": client.version().get("Version", "unknown"), "created": format_ts(utc_now()),
            "images": sorted(images, key=lambda i: i["id"])}
