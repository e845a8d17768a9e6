"""The trust gate: every check between a file on a USB stick and the Docker engine, in order.

The rules, in the order they run; the first failure stops everything and is raised as its own
`Refused` type (exit 3, one line naming the check). Nothing here touches Docker; reading the
file is bundlecore.format's job, and payload bytes go only to the sink the caller gives.

1. Caps before work: the head frame, manifest.json, SHA256SUMS and SHA256SUMS.asc each have a
   size cap; zstd runs with a bounded window; the payload may not decompress past the sizes the
   manifest declares (plus tar overhead); skippable frames and trailing bytes are refused.
2. Strict tar: only regular files with the exact names the format allows and the manifest lists,
   in the manifest's order; no links, devices, directories, absolute or '..' paths, duplicates.
3. Signatures over the raw bytes of SHA256SUMS, each block judged on its own, under the trust
   store's policy (importer.trust).
4. manifest.json's sha256 equals its SHA256SUMS line; only then is it parsed (duplicate keys
   refused) and validated against schemas/manifest.schema.json, and cross-checked: the payload
   list equals SHA256SUMS, each image ID is the digest of its config, each diff ID the digest of
   its layer.
5. Fit and freshness: the bundle's platform is the engine's; `expires` is in the future and
   `created` not (beyond a small skew); `sequence` is above the highest ever installed for that
   name (equal is a replay) unless a downgrade is explicitly allowed.
6. Payload: every member hashed while it streams, against SHA256SUMS and its declared size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Protocol

from bundlecore import format as fmt
from bundlecore.errors import Refused
from bundlecore.schema import first_error
from bundlecore.timeutil import parse_ts, utc_now
from importer.trust import Signer, TrustStore

MAX_CLOCK_SKEW = timedelta(minutes=5)


class MalformedBundle(Refused):
    """Steps 1-2: the bytes break the format (caps, zstd framing, tar rules, trailing data)."""

    def __init__(self, err: fmt.FormatError):
        super().__init__(str(err))
        self.check = {"cap": "size cap", "zstd": "zstd", "truncated": "truncated",
                      "trailing": "trailing data"}.get(err.check, "tar members")


class ManifestRefused(Refused):
    """Step 4: manifest.json is not the one signed, or not a valid manifest."""

    check = "manifest"


class PlatformMismatch(Refused):
    check = "platform"


class BundleExpired(Refused):
    check = "expiry"


class BundleFromTheFuture(Refused):
    check = "created"


class RollbackRefused(Refused):
    """Step 5: a replay (same sequence) or a downgrade (older sequence)."""

    check = "sequence"


class PayloadMismatch(Refused):
    check = "payload"


class PayloadSink(Protocol):
    """Where payload goes while it is verified: `open(path, size)` returns a writable file."""

    def open(self, path: str, size: int): ...


@dataclass
class VerifiedHead:
    """What steps 1-5 established; the payload is not checked yet."""

    manifest: dict
    sums: dict[str, str]
    signers: list[Signer]
    head: fmt.Head
    notes: list[str] = field(default_factory=list)

    @property
    def payload(self) -> list[tuple[str, int]]:
        return [(p["path"], p["size"]) for p in self.manifest["payload"]]

    @property
    def payload_bytes(self) -> int:
        return sum(p["size"] for p in self.manifest["payload"])


def same_platform(a: str, b: str) -> bool:
    """linux/arm64 matches linux/arm64/v8: the variant counts only when both name one."""
    pa, pb = a.split("/"), b.split("/")
    return pa[:2] == pb[:2] and (len(pa) < 3 or len(pb) < 3 or pa[2] == pb[2])


class TrustGate:
    """Runs rules 1-6 for one bundle file. `check_head` before anything else; then `check_payload`."""

    def __init__(self, store: TrustStore, *, engine_platform: str | None,
                 installed_sequence: Callable[[str], int | None],
                 allow_downgrade: bool = False, now: datetime | None = None):
        self.store = store
        self.engine_platform = engine_platform
        self.installed_sequence = installed_sequence
        self.allow_downgrade = allow_downgrade
        self.now = now or utc_now()

    def check_head(self, path: Path) -> VerifiedHead:
        head = self._read_head(path)                   # 1, 2
        signers = self._check_signatures(head)         # 3
        manifest, sums = self._check_manifest(head)    # 4
        notes = self._check_fit(manifest)              # 5
        return VerifiedHead(manifest, sums, signers, head, notes)

    # 1, 2 ------------------------------------------------------------------------------------
    @staticmethod
    def _read_head(path: Path) -> fmt.Head:
        try:
            return fmt.read_head(path)
        except fmt.FormatError as e:
            raise MalformedBundle(e) from None

    # 3 ---------------------------------------------------------------------------------------
    def _check_signatures(self, head: fmt.Head) -> list[Signer]:
        return self.store.verify(head.sums, head.signatures)

    # 4 ---------------------------------------------------------------------------------------
    @staticmethod
    def _check_manifest(head: fmt.Head) -> tuple[dict, dict[str, str]]:
        try:
            sums = fmt.parse_sha256sums(head.sums)
        except fmt.FormatError as e:
            raise ManifestRefused(str(e)) from None
        if sums.get(fmt.MANIFEST) != hashlib.sha256(head.manifest).hexdigest():
            raise ManifestRefused("manifest.json does not match its line in the signed SHA256SUMS")
        try:
            manifest = fmt.loads_strict_json(head.manifest, "manifest.json")
        except fmt.FormatError as e:
            raise ManifestRefused(str(e)) from None
        problem = first_error("manifest.schema.json", manifest)
        if problem:
            raise ManifestRefused(f"manifest.json fails its schema {problem}")
        for key in ("created", "expires"):
            try:
                parse_ts(manifest[key])
            except ValueError:
                raise ManifestRefused(f"manifest.json {key} {manifest[key]!r} is not a real UTC time") from None
        TrustGate._cross_check(manifest, sums)
        return manifest, sums

    @staticmethod
    def _cross_check(manifest: dict, sums: dict[str, str]) -> None:
        payload = {p["path"]: p for p in manifest["payload"]}
        if len(payload) != len(manifest["payload"]):
            raise ManifestRefused("manifest.json lists a payload file twice")
        if set(sums) != set(payload) | {fmt.MANIFEST}:
            extra = sorted(set(sums) ^ (set(payload) | {fmt.MANIFEST}))
            raise ManifestRefused(f"SHA256SUMS and manifest.json list different files (e.g. {extra[0]})")
        for path, p in payload.items():
            if sums[path] != p["sha256"]:
                raise ManifestRefused(f"manifest.json and SHA256SUMS disagree on {path}")
        if fmt.DOCKER_ARCHIVE_MANIFEST not in payload:
            raise ManifestRefused(f"the payload has no {fmt.DOCKER_ARCHIVE_MANIFEST}")
        refs = [i["ref"] for i in manifest["images"]]
        if len(set(refs)) != len(refs):
            raise ManifestRefused("manifest.json lists an image ref twice")
        for img in manifest["images"]:
            if img["config"] not in payload or "sha256:" + sums[img["config"]] != img["id"]:
                raise ManifestRefused(f"image {img['ref']}: its config is not in the payload with digest {img['id']}")
            if len(img["layers"]) != len(img["diff_ids"]) or any(
                    layer not in payload or "sha256:" + sums[layer] != diff
                    for layer, diff in zip(img["layers"], img["diff_ids"])):
                raise ManifestRefused(f"image {img['ref']}: its layers do not match its diff IDs")
        if manifest["target"]["image"] not in refs:
            raise ManifestRefused(f"target image {manifest['target']['image']} is not one of the bundle's images")

    # 5 ---------------------------------------------------------------------------------------
    def _check_fit(self, manifest: dict) -> list[str]:
        notes = []
        if self.engine_platform is None:
            notes.append(f"platform {manifest['platform']} not compared: no Docker engine here")
        elif not same_platform(manifest["platform"], self.engine_platform):
            raise PlatformMismatch(f"bundle is for {manifest['platform']}, this engine is {self.engine_platform}")
        for img in manifest["images"]:
            if not same_platform(img["platform"], manifest["platform"]):
                raise PlatformMismatch(f"image {img['ref']} is {img['platform']}, the bundle says {manifest['platform']}")
        if parse_ts(manifest["expires"]) <= self.now:
            raise BundleExpired(f"bundle expired at {manifest['expires']}")
        if parse_ts(manifest["created"]) > self.now + MAX_CLOCK_SKEW:
            raise BundleFromTheFuture(f"bundle claims to be created at {manifest['created']}, in the future")
        seq, last = manifest["sequence"], self.installed_sequence(manifest["name"])
        if last is not None and seq <= last:
            kind = "replay" if seq == last else "downgrade"
            if not self.allow_downgrade:
                raise RollbackRefused(
                    f"{kind}: {manifest['name']} sequence {seq} is not above {last}, the highest installed "
                    f"(--allow-downgrade overrides)")
            notes.append(f"{kind} allowed by --allow-downgrade: sequence {seq}, highest installed {last}")
        return notes

    # 6 ---------------------------------------------------------------------------------------
    def check_payload(self, path: Path, verified: VerifiedHead, sink: PayloadSink | None = None,
                      on_bytes: Callable[[int], None] | None = None,
                      on_verified: Callable[[str], None] | None = None) -> str:
        """Stream every payload member through sha256 into `sink` (or nowhere), refusing on the
        first mismatch; `on_verified(path)` is called once a member has matched. Returns the
        sha256 of the whole bundle file, hashed on the way."""
        reader = fmt.PayloadReader(path, verified.head, verified.payload)
        try:
            for member, size, chunks in reader.members():
                h = hashlib.sha256()
                out = sink.open(member, size) if sink else None
                try:
                    for chunk in chunks:
                        h.update(chunk)
                        if out:
                            out.write(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
                finally:
                    if out:
                        out.close()
                if h.hexdigest() != verified.sums[member]:
                    raise PayloadMismatch(f"{member} does not match its line in the signed SHA256SUMS")
                if on_verified:
                    on_verified(member)
        except fmt.FormatError as e:
            raise MalformedBundle(e) from None
        return reader.file_sha256
