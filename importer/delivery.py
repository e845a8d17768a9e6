"""What an import hands a target kind's `apply`: the verified release and what the import made of it.

One typed record instead of a dict of whichever keys the pipeline had at hand: the release (its
signers in the one `Signer` shape), the bundle file's sha256, the images as `docker load` loaded
them, and where they were pushed (service targets). `journal_bundle()` is the one JSON form a kind
writes into its journal and generations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from bundlecore.release import Release
from importer.registry import PushedImage


@dataclass(frozen=True)
class Delivery:
    release: Release
    sha256: str
    images: Mapping[str, str]              # ref -> image ID, as loaded (and checked)
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
                "images": dict(self.images)}
