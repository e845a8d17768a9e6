"""apps/<name>/generations.json: every version a swap installed (generation 1, 2, ...), with its
container, image and, once displaced, where it is parked and the backup of the data it had.

`keep` counts generations kept including the installed one (default 2: the installed one and the
one `bundle rollback` returns to). Generation numbers are never reused.
"""

from __future__ import annotations

import json
from pathlib import Path

from bundlecore.fsutil import atomic_write_json
from importer.kinds.container.journal import DisplacedContainer, IncomingContainer

SUMMARY_KEYS = ("generation", "version", "sequence", "image_id", "image_ref", "parked_name", "displaced_at",
                "backup_dir")


def parked_name(name: str, gen: int) -> str:
    return f"{name}.previous-{gen}"


def summary(item: dict) -> dict:
    """What the installed record and `bundle status` show of a kept generation."""
    return {k: item.get(k) for k in SUMMARY_KEYS}


class Generations:
    """The generations file of one application (reading it creates nothing)."""

    FILE = "generations.json"

    def __init__(self, app_dir: Path):
        self.path = Path(app_dir) / self.FILE
        try:
            self.data = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.data = {"next": 1, "current": None, "items": {}}

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def item(self, gen) -> dict | None:
        return self.data["items"].get(str(gen)) if gen is not None else None

    @property
    def current(self) -> dict | None:
        return self.item(self.data.get("current"))

    def allocate(self) -> int:
        g = self.data["next"]
        self.data["next"] = g + 1
        return g

    def previous(self) -> list[dict]:
        """Displaced generations still kept, most recently displaced first."""
        items = [i for k, i in self.data["items"].items() if int(k) != self.data.get("current") and not i.get("pruned")]
        return sorted(items, key=lambda i: (i.get("displaced_at") or "", i["generation"]), reverse=True)

    def record_displaced(self, old: DisplacedContainer, at: str) -> None:
        item = self.item(old.generation) or {}
        item.update({
            "generation": old.generation, "container_id": old.id, "parked_name": old.parked_name,
            "image_id": old.image_id, "image_ref": old.image_ref, "version": old.version,
            "sequence": old.sequence, "displaced_at": at, "backup_dir": old.backup_dir,
            "restart_policy": old.restart_policy, "bundle": item.get("bundle") or old.bundle,
            "health": item["health"] if "health" in item else old.health,
        })
        item.setdefault("installed_at", None)
        self.data["items"][str(old.generation)] = item

    def record_current(self, name: str, new: IncomingContainer, at: str, health: dict | None = None) -> None:
        item = self.item(new.generation) or {}
        item.update({
            "generation": new.generation, "container_id": new.id, "parked_name": parked_name(name, new.generation),
            "image_id": new.image_id, "image_ref": new.image_ref, "version": new.version,
            "sequence": new.sequence, "installed_at": at, "displaced_at": None, "backup_dir": None,
            "bundle": new.bundle or item.get("bundle"), "health": health,
        })
        self.data["items"][str(new.generation)] = item
        self.data["current"] = new.generation
        self.data["next"] = max(self.data["next"], new.generation + 1)
