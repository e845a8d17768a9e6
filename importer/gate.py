"""The trust gate: the shared bundle verifier plus what only this intranet host can judge.

bundlecore.verify runs every rule that holds anywhere (caps, tar, signatures, manifest, image
platforms, freshness, payload, docker archive) in order. The gate fills in its two hooks with
this host's business:

- rule 5, platform: the bundle's platform is this engine's (not compared, with a note, when no
  engine answers, as for `bundle verify` on a machine without Docker);
- rule 7, history: `sequence` is above the highest ever installed for that name (equal is a
  replay) unless a downgrade is explicitly allowed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from bundlecore.platforms import platforms_match
from bundlecore.refusals import PlatformMismatch, RollbackRefused
from bundlecore.trust import TrustStore
from bundlecore.verify import BundleVerifier


class TrustGate(BundleVerifier):
    """The verifier for a bundle about to be installed on this host."""

    def __init__(self, store: TrustStore, *, engine_platform: str | None,
                 installed_sequence: Callable[[str], int | None],
                 allow_downgrade: bool = False, now: datetime | None = None):
        super().__init__(store, now=now)
        self.engine_platform = engine_platform
        self.installed_sequence = installed_sequence
        self.allow_downgrade = allow_downgrade

    def _check_host_platform(self, manifest: dict) -> list[str]:
        if self.engine_platform is None:
            return [f"platform {manifest['platform']} not compared: no Docker engine here"]
        if not platforms_match(manifest["platform"], self.engine_platform):
            raise PlatformMismatch(f"bundle is for {manifest['platform']}, this engine is {self.engine_platform}")
        return []

    def _check_history(self, manifest: dict) -> list[str]:
        seq, last = manifest["sequence"], self.installed_sequence(manifest["name"])
        if last is None or seq > last:
            return []
        kind = "replay" if seq == last else "downgrade"
        if not self.allow_downgrade:
            raise RollbackRefused(
                f"{kind}: {manifest['name']} sequence {seq} is not above {last}, the highest installed "
                f"(--allow-downgrade overrides)")
        return [f"{kind} allowed by --allow-downgrade: sequence {seq}, highest installed {last}"]
