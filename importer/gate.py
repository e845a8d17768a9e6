"""The trust gate: the shared bundle verifier plus what only this intranet host can judge.

bundlecore.verify runs every rule that holds anywhere (caps, tar, signatures, manifest, image
platforms, freshness, payload, docker archive) in order. The gate fills in its two hooks with
this host's business, and adds one rule after the head:

- rule 5, platform: the bundle's platform is this engine's (not compared, with a note, when no
  engine answers, as for `bundle verify` on a machine without Docker);
- rule 7, history: `sequence` is above the highest ever installed for that app name AND the
  highest ever installed in the target container (equal is a replay), unless a downgrade is
  explicitly allowed -- a bundle renamed `seq-canary` cannot take container `seqc` back to an
  old release `seq` replaced. The release this host runs now (`is_installed`: same app, target
  container, sequence, version and image as the installed record) is no replay: importing it
  again is "already installed" or a repair, as the kind's plan finds the engine;
- host policy (after rule 7, before any payload byte): the signed run settings ask of the host
  only what this host's policy grants the app (importer.hostpolicy); `host_access` holds the
  granted accesses for the plan;
- delta base (after the host policy, before any payload byte): a delta bundle's base must be a
  release of the same app, and every layer it left out must be in this engine as part of a chain
  `docker load` skips (`engine_layers`, importer.load.layers_in_engine); a refusal names the
  missing diff IDs and the base they came in; and every base layer a patched layer is rebuilt
  from (`delta.patched`, `engine_diff_ids`) is in this engine. Not checked, with a note, when no
  engine answers.

Once the head is verified the gate parses the manifest once into the typed release
(bundlecore.release, `self.release`); its own rules after that, and everything downstream, read that.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

from bundlecore.platforms import platforms_match
from bundlecore.refusals import DeltaBaseRefused, PlatformMismatch, RollbackRefused
from bundlecore.release import Delta, Release, release_of
from bundlecore.trust import TrustStore
from bundlecore.verify import BundleVerifier, VerifiedHead
from importer.hostpolicy import HostAccess, HostPolicy

Mark = Callable[[str], int | None]
# Whether a manifest is the release installed on this host now (importer.pipeline._is_installed)
Installed = Callable[[dict], bool]


class TrustGate(BundleVerifier):
    """The verifier for a bundle about to be installed on this host."""

    def __init__(self, store: TrustStore, *, engine_platform: str | None, installed_sequence: Mark,
                 container_sequence: Mark = lambda name: None, host_policy: HostPolicy | None = None,
                 allow_downgrade: bool = False, now: datetime | None = None,
                 engine_layers: Callable[[Release], set[str]] | None = None,
                 engine_diff_ids: Callable[[], set[str]] | None = None,
                 is_installed: Installed = lambda manifest: False):
        super().__init__(store, now=now)
        self.engine_platform = engine_platform
        self.installed_sequence = installed_sequence
        self.container_sequence = container_sequence
        self.host_policy = host_policy or HostPolicy(None)
        self.allow_downgrade = allow_downgrade
        self.host_access: list[HostAccess] = []
        self.release: Release | None = None  # the verified head's, once check_head passed
        self.engine_layers = engine_layers
        self.engine_diff_ids = engine_diff_ids
        self.is_installed = is_installed

    def check_head(self, path: Path) -> VerifiedHead:
        head = super().check_head(path)
        self.release = r = release_of(head)
        self.host_access = self.host_policy.check_target(r.app, r.target)
        if r.delta is not None:
            head.notes += self._check_delta_base(r, r.delta)
        return head

    def _check_delta_base(self, r: Release, delta: Delta) -> list[str]:
        came_in = delta.base.came_in()
        if delta.base.kind == "bundle" and delta.base.name != r.app:
            raise DeltaBaseRefused(f"{r.app} is a delta of {came_in}, a different app")
        if self.engine_layers is None:
            return [f"delta of {came_in}: its left-out layers not looked for, no Docker engine here"]
        present = self.engine_layers(r)
        missing = [o.diff_id for o in delta.omitted if o.path not in present]
        if missing:
            raise DeltaBaseRefused(f"this engine lacks {len(missing)} layer(s) the delta left out: "
                                   f"{', '.join(missing)}; they came in {came_in}")
        patched = delta.patched
        if patched and self.engine_diff_ids is not None:
            held = self.engine_diff_ids()
            missing = sorted({p.base_diff_id for p in patched if p.base_diff_id not in held})
            if missing:
                raise DeltaBaseRefused(f"this engine lacks {len(missing)} base layer(s) the delta's patches are made "
                                       f"against: {', '.join(missing)}; they came in {came_in}")
        return [f"delta of {came_in}: its {len(delta.omitted)} left-out layer(s)"
                + (f" and the base layers of its {len(patched)} patched layer(s)" if patched else "") + " are in this engine"]

    def _check_host_platform(self, manifest: dict) -> list[str]:
        if self.engine_platform is None:
            return [f"platform {manifest['platform']} not compared: no Docker engine here"]
        if not platforms_match(manifest["platform"], self.engine_platform):
            raise PlatformMismatch(f"bundle is for {manifest['platform']}, this engine is {self.engine_platform}")
        return []

    def _check_history(self, manifest: dict) -> list[str]:
        seq, container = manifest["sequence"], manifest["target"]["name"]
        if self.is_installed(manifest):
            return [f"{manifest['name']} sequence {seq} is the installed release: imported again, it is checked "
                    f"and repaired if its container is missing or differs"]
        notes = []
        for last, whose in ((self.installed_sequence(manifest["name"]), "highest installed"),
                            (self.container_sequence(container),
                             f"highest installed in container {container}")):
            if last is None or seq > last:
                continue
            kind = "replay" if seq == last else "downgrade"
            if not self.allow_downgrade:
                raise RollbackRefused(f"{kind}: {manifest['name']} sequence {seq} is not above {last}, the {whose} "
                                      f"(--allow-downgrade overrides)")
            accepted = f"sequence {seq} again ({last} is the {whose})" if seq == last else \
                f"sequence {seq} below {last}, the {whose}"
            notes.append(f"{kind} allowed by --allow-downgrade: accepting {accepted}")
        return notes
