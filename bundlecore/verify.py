"""The bundle verifier: every check that does not depend on the machine doing it, in order.

Both sides run it: `bundle approve` before it adds a signature, the importer's gate (which adds
this host's platform and install history at the two hook points) before anything reaches Docker.
The rules, in the order they run; the first failure stops everything and is raised as its own
`Refused` type from bundlecore.refusals (exit 3, one line naming the check). Reading the file is
bundlecore.format's job; nothing here touches Docker, and payload bytes go only to the sink the
caller gives.

1. Caps before work: the head frame, manifest.json, SHA256SUMS and SHA256SUMS.asc each have a
   size cap; zstd runs with a bounded window; the payload may not decompress past the sizes the
   manifest declares (plus tar overhead); skippable frames and trailing bytes are refused.
2. Strict tar: only regular files with the exact names the format allows and the manifest lists,
   in the manifest's order; no links, devices, directories, absolute or '..' paths, duplicates.
3. Signatures over the raw bytes of SHA256SUMS, each block judged on its own, under the trust
   store's policy (bundlecore.trust).
4. manifest.json's sha256 equals its SHA256SUMS line; only then is it parsed (duplicate keys
   refused); no key or string in it may hold a control or non-printing character (a signed carriage
   return or bidi override could make the plan lie); then it is validated against
   schemas/manifest.schema.json and cross-checked: the payload list equals SHA256SUMS, each image
   ID is the digest of its config, each diff ID the digest of its layer (a delta's left-out
   layers instead carry their diff ID in `delta.omitted`, its patched layers in `delta.patched`
   with their patch member's digest; the importer's gate checks that its engine has the left-out
   and base layers, and the importer a rebuilt layer's digest before loading). Last, the policy's
   scoped roles, which need the bundle's name and images (bundlecore.trust).
5. Platform: (hook: the host's own platform, importer.gate) then every image is of the bundle's
   platform (bundlecore.platforms).
6. Freshness: `expires` is in the future and `created` not (beyond a small skew).
7. (hook: the host's install history -- anti-rollback, importer.gate.)
8. Payload: every member hashed while it streams, against SHA256SUMS and its declared size.
9. Docker archive: images/manifest.json (capped), once its hash matched, may reference only the
   signed configs, layers and tags -- `docker load` applies whatever tags it names.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

from bundlecore import format as fmt
from bundlecore.platforms import platforms_match
from bundlecore.refusals import (ArchiveRefused, BundleExpired, BundleFromTheFuture, MalformedBundle,
                                 ManifestRefused, PayloadMismatch, PlatformMismatch)
from bundlecore.schema import first_error
from bundlecore.text import first_unprintable
from bundlecore.timeutil import parse_ts, utc_now
from bundlecore.trust import MAX_CLOCK_SKEW, Signer, TrustStore

MAX_ARCHIVE_MANIFEST = 4 << 20


class PayloadSink(Protocol):
    """Where payload goes while it is verified: `open(path, size)` returns a writable file or None."""

    def open(self, path: str, size: int) -> BinaryIO | None: ...


@dataclass
class VerifiedHead:
    """What rules 1-7 established; the payload is not checked yet."""

    manifest: dict[str, Any]
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


class BundleVerifier:
    """Runs the rules for one bundle file: `check_head` before anything else, then `check_payload`.

    Subclasses add what their host knows by overriding the hooks `_check_host_platform` (rule 5)
    and `_check_history` (rule 7); each returns notes for the report or raises a refusal."""

    def __init__(self, store: TrustStore, *, now: datetime | None = None):
        self.store = store
        self.now = now or utc_now()

    def check_head(self, path: Path) -> VerifiedHead:
        head = self._read_head(path)                   # 1, 2
        signers = self._check_signatures(head)         # 3
        manifest, sums = self._check_manifest(head)    # 4
        self._check_scope(signers, manifest)           # 4b
        notes = self._check_platform(manifest)         # 5
        self._check_freshness(manifest)                # 6
        notes += self._check_history(manifest)         # 7
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
    @classmethod
    def _check_manifest(cls, head: fmt.Head) -> tuple[dict[str, Any], dict[str, str]]:
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
        where = first_unprintable(manifest)
        if where:
            raise ManifestRefused(f"control or non-printing character at {where}")
        problem = first_error("manifest.schema.json", manifest)
        if problem:
            raise ManifestRefused(f"manifest.json fails its schema {problem}")
        for key in ("created", "expires"):
            try:
                parse_ts(manifest[key])
            except ValueError:
                raise ManifestRefused(f"manifest.json {key} {manifest[key]!r} is not a real UTC time") from None
        cls.cross_check(manifest, sums)
        return manifest, sums

    def _check_scope(self, signers: list[Signer], manifest: dict[str, Any]) -> None:
        self.store.check_scope(signers, manifest["name"], [img["ref"] for img in manifest["images"]])

    @staticmethod
    def cross_check(manifest: dict[str, Any], sums: dict[str, str]) -> None:
        """A schema-valid manifest against the signed SHA256SUMS: same files, same digests, and
        image IDs and diff IDs that are the digests of the configs and layers they name."""
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
        omitted = {o["path"]: o["diff_id"] for o in (manifest.get("delta") or {}).get("omitted", [])}
        if set(omitted) & set(payload):
            raise ManifestRefused(f"{sorted(set(omitted) & set(payload))[0]} is both carried and left out")
        patched = _patched_layers(manifest, payload, omitted)
        layer_digest = {p: "sha256:" + sums[p] for p in payload} | omitted | patched
        for img in manifest["images"]:
            if img["config"] not in payload or "sha256:" + sums[img["config"]] != img["id"]:
                raise ManifestRefused(f"image {img['ref']}: its config is not in the payload with digest {img['id']}")
            if len(img["layers"]) != len(img["diff_ids"]) or any(
                    layer_digest.get(layer) != diff for layer, diff in zip(img["layers"], img["diff_ids"], strict=True)):
                raise ManifestRefused(f"image {img['ref']}: its layers do not match its diff IDs")
        unused = (set(omitted) | set(patched)) - {layer for img in manifest["images"] for layer in img["layers"]}
        if unused:
            raise ManifestRefused(f"delta names the layer {sorted(unused)[0]}, which no image uses")
        if manifest["target"]["image"] not in refs:
            raise ManifestRefused(f"target image {manifest['target']['image']} is not one of the bundle's images")

    # 5 ---------------------------------------------------------------------------------------
    def _check_platform(self, manifest: dict[str, Any]) -> list[str]:
        notes = self._check_host_platform(manifest)
        for img in manifest["images"]:
            if not platforms_match(img["platform"], manifest["platform"]):
                raise PlatformMismatch(f"image {img['ref']} is {img['platform']}, the bundle says {manifest['platform']}")
        return notes

    def _check_host_platform(self, manifest: dict[str, Any]) -> list[str]:
        """Hook: does the bundle's platform fit the host that will run it? Not known here."""
        return []

    # 6 ---------------------------------------------------------------------------------------
    def _check_freshness(self, manifest: dict[str, Any]) -> None:
        if parse_ts(manifest["expires"]) <= self.now:
            raise BundleExpired(f"bundle expired at {manifest['expires']}")
        if parse_ts(manifest["created"]) > self.now + MAX_CLOCK_SKEW:
            raise BundleFromTheFuture(f"bundle claims to be created at {manifest['created']}, in the future")

    # 7 ---------------------------------------------------------------------------------------
    def _check_history(self, manifest: dict[str, Any]) -> list[str]:
        """Hook: is the bundle newer than what the host installed? No history here."""
        return []

    # 8, 9 ------------------------------------------------------------------------------------
    def check_payload(self, path: Path, verified: VerifiedHead, sink: PayloadSink | None = None,
                      on_bytes: Callable[[int], None] | None = None,
                      on_verified: Callable[[str], None] | None = None) -> str:
        """Stream every payload member through sha256 into `sink` (or nowhere), refusing on the
        first mismatch; `on_verified(path)` is called once a member has matched (and, for the
        docker archive manifest, passed rule 9). Returns the sha256 of the whole bundle file,
        hashed on the way."""
        reader = fmt.PayloadReader(path, verified.head, verified.payload)
        try:
            for member, size, chunks in reader.members():
                h = hashlib.sha256()
                archive = _archive_manifest_buffer(member, size)
                out = sink.open(member, size) if sink else None
                try:
                    for chunk in chunks:
                        h.update(chunk)
                        if archive:
                            archive.write(chunk)
                        if out:
                            out.write(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
                finally:
                    if out:
                        out.close()
                if h.hexdigest() != verified.sums[member]:
                    raise reader.blame() or PayloadMismatch(f"{member} does not match its line in the signed SHA256SUMS")
                if archive:
                    check_docker_archive(archive.getvalue(), verified)
                if on_verified:
                    on_verified(member)
        except fmt.FormatError as e:
            raise MalformedBundle(e) from None
        assert reader.file_sha256 is not None  # set once members() is exhausted
        return reader.file_sha256


def _patched_layers(manifest: dict[str, Any], payload: dict[str, Any], omitted: dict[str, Any]) -> dict[str, str]:
    """{layer path: diff ID} of the layers a delta carries as patches, each patch a payload
    member with the signed digest, the layer itself neither carried nor left out."""
    patched = {}
    for p in (manifest.get("delta") or {}).get("patched", []):
        if p["path"] in payload or p["path"] in omitted or p["path"] in patched:
            raise ManifestRefused(f"{p['path']} is patched and also carried, left out or patched twice")
        if p["patch"] not in payload or payload[p["patch"]]["sha256"] != p["patch_sha256"]:
            raise ManifestRefused(f"the patch of {p['path']} is not in the payload with digest {p['patch_sha256']}")
        patched[p["path"]] = p["diff_id"]
    return patched


def _archive_manifest_buffer(member: str, size: int) -> io.BytesIO | None:
    """Rule 9 needs the archive manifest's bytes: kept in memory, so capped before reading."""
    if member != fmt.DOCKER_ARCHIVE_MANIFEST:
        return None
    if size > MAX_ARCHIVE_MANIFEST:
        raise ArchiveRefused(f"{member} is {size} bytes, over its cap of {MAX_ARCHIVE_MANIFEST}")
    return io.BytesIO()


def check_docker_archive(raw: bytes, verified: VerifiedHead) -> list[dict[str, Any]]:
    """Rule 9: the archive's manifest.json (verified bytes) may reference only signed configs,
    layers and tags, and must load every signed image."""
    try:
        entries = fmt.loads_strict_json(raw, "the docker archive manifest.json")
    except fmt.FormatError as e:
        raise ArchiveRefused(str(e)) from None
    if not isinstance(entries, list) or not entries:
        raise ArchiveRefused("the docker archive manifest.json is not a list of images")
    signed: dict[str, list[dict[str, Any]]] = {}   # config -> its signed images (several refs of one image share it)
    for img in verified.manifest["images"]:
        signed.setdefault(img["config"][len(fmt.PAYLOAD_PREFIX):], []).append(img)
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - {"Config", "RepoTags", "Layers"}:
            raise ArchiveRefused("the docker archive manifest.json has an entry with unexpected fields")
        config = entry.get("Config")
        imgs = signed.get(config) if isinstance(config, str) else None
        if imgs is None:
            raise ArchiveRefused(f"the docker archive loads config {config!r}, whose digest is no signed image ID")
        refs = [img["ref"] for img in imgs]
        tags = entry.get("RepoTags") or []
        bad = next((tag for tag in tags if tag not in refs), None)
        if bad is not None:
            raise ArchiveRefused(f"the docker archive tags {bad}, which is not a signed ref of image {imgs[0]['id']}")
        if entry.get("Layers") != [p[len(fmt.PAYLOAD_PREFIX):] for p in imgs[0]["layers"]]:
            raise ArchiveRefused(f"the docker archive gives image {refs[0]} other layers than signed")
        seen.update(tags or refs)
    missing = [img["ref"] for img in verified.manifest["images"] if img["ref"] not in seen]
    if missing:
        raise ArchiveRefused(f"the docker archive does not load {missing[0]}")
    return entries
