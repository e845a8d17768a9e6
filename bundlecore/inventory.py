"""The engine inventory: what an intranet engine holds (`bundle inventory --json`, written by
importer/inventory.py), read back by `bundle build --have`. A listing of an engine, not part of
the bundle format; the same strict JSON rules apply (bundlecore.format)."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable

from bundlecore import format as fmt

INVENTORY_KIND = "bundle-inventory"
MAX_INVENTORY = 16 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse_inventory(raw: bytes) -> dict[str, Any]:
    """Strictly read an inventory: {kind, version 1, host, engine, images: [{id, tags, diff_ids}]}."""
    if len(raw) > MAX_INVENTORY:
        raise fmt.FormatError("cap", f"the inventory is over its cap of {MAX_INVENTORY} bytes")
    doc = fmt.loads_strict_json(raw, "the inventory")
    if not isinstance(doc, dict) or doc.get("kind") != INVENTORY_KIND or doc.get("version") != 1:
        raise fmt.FormatError("inventory", f"not a {INVENTORY_KIND} version 1 document")
    if not isinstance(doc.get("host"), str) or not isinstance(doc.get("images"), list):
        raise fmt.FormatError("inventory", "the inventory needs a host and a list of images")
    for img in doc["images"]:
        ids = img.get("diff_ids") if isinstance(img, dict) else None
        if not isinstance(ids, list) or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in ids):
            raise fmt.FormatError("inventory", "an inventory image has no list of sha256 diff IDs")
    return doc


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain ID of each layer (Docker's: the first layer's diff ID, then sha256 of the chain
    below and the layer's diff ID), bottom first. A layer is the same layer for `docker load` only
    with the same chain below it; comparing chain IDs instead of prefixes of the diff ID list keeps
    an image of 40,000 layers linear in time and memory (the prefixes were quadratic)."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def known_chains(diff_id_lists: Iterable[Iterable[str]]) -> set[str]:
    """The chain IDs of every layer of every image listed."""
    return {chain for ids in diff_id_lists for chain in chain_ids(ids)}
