"""What an import hands a target kind's `apply`: the verified release and what the import made of it.

One typed record instead of a dict of whichever keys the pipeline had at hand: the release (its
signers in the one `Signer` shape), the bundle file's sha256, the images as `docker load` loaded
them, what this load created in the engine (`loaded`: the only images a kind may later remove),
and where they were pushed (service targets). `journal_bundle()` is the one JSON form a kind
writes into its journal and generations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from bundlecore.release import Release
from importer.registry import PushedImage


@dataclass(frozen=True)
class LoadedImages:
    """What one `docker load` created in the engine: the tags it set (absent, or naming another image,
    before) and the image IDs the engine did not have. The tool removes only these later
    (importer.kinds.container.machine `prune`): an image or a tag that was there before is the admin's."""

    tags: Mapping[str, str]     # ref -> image ID
    image_ids: frozenset[str]

    @classmethod
    def nothing(cls) -> "LoadedImages":
        return cls({}, frozenset())

    def to_json(self) -> dict:
        return {"loaded_tags": dict(self.tags), "loaded_image_ids": sorted(self.image_ids)}

    @classmethod
    def from_json(cls, d: Mapping | None) -> "LoadedImages":
        """From a journal's or generation's bundle (one from before they were recorded: nothing, on doubt)."""
        d = d or {}
        return cls(dict(d.get("loaded_tags") or {}), frozenset(d.get("loaded_image_ids") or ()))

    @classmethod
    def before(cls, client, release: Release) -> "LoadedImages":
        """The signed images as the engine has them before the load (what is there is not ours)."""
        tags = {i.ref: (client.image(i.ref) or {}).get("Id") for i in release.images}
        return cls({r: t for r, t in tags.items() if t}, frozenset(i.id for i in release.images if client.image(i.id)))

    def merged(self, other: "LoadedImages") -> "LoadedImages":
        """Both records (a repair keeps what the generation's first load created)."""
        return LoadedImages({**self.tags, **other.tags}, self.image_ids | other.image_ids)

    def made_since(self, images: Mapping[str, str]) -> "LoadedImages":
        """What the load of `images` (ref -> ID) added over this view from before it."""
        return LoadedImages({r: i for r, i in images.items() if self.tags.get(r) != i},
                            frozenset(images.values()) - self.image_ids)


@dataclass(frozen=True)
class Delivery:
    release: Release
    sha256: str
    images: Mapping[str, str]              # ref -> image ID, as loaded (and checked)
    loaded: LoadedImages = field(default_factory=LoadedImages.nothing)  # what the load created
    pushed: tuple[PushedImage, ...] = ()   # empty when nothing was pushed
    registry_auth: dict | None = None      # in memory only: Swarm gives it to the nodes

    def by_digest(self, ref: str) -> str:
        """What nodes pull for the signed ref `ref` (it was pushed)."""
        return next(p.by_digest for p in self.pushed if p.ref == ref)

    def pushed_report(self) -> list[dict]:
        return [p.report() for p in self.pushed]

    def journal_bundle(self) -> dict:
        """The bundle as journals and generations keep it (read back by the audit of a swap or rollback)."""
        r = self.release
        return {"sha256": self.sha256, "name": r.app, "signers": [s.to_json() for s in r.signers],
                "images": dict(self.images), **self.loaded.to_json()}
