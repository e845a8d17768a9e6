"""Every way a bundle can be refused, in one place: one exception type per failed check.

Each class carries its `Check`, the name printed in `refused: <check>: ...` (exit 3). The enum
lists the checks in the order they run (bundlecore.verify, then the importer's gate and loader),
so the list shown to users is derived from it, never kept by hand beside it.
"""

from __future__ import annotations

from enum import StrEnum

from bundlecore.errors import Refused
from bundlecore.format import FormatError


class Check(StrEnum):
    """The checks a bundle passes, in the order they run; the values are the names users see."""

    PARTS = "parts"              # a split bundle's parts: all there, in order, intact
    SIZE_CAP = "size cap"
    ZSTD = "zstd"
    TRUNCATED = "truncated"
    TRAILING_DATA = "trailing data"
    TAR_MEMBERS = "tar members"
    SIGNATURE = "signature"
    MANIFEST = "manifest"
    PLATFORM = "platform"
    EXPIRY = "expiry"
    CREATED = "created"
    SEQUENCE = "sequence"
    HOST_POLICY = "host policy"
    DELTA_BASE = "delta base"    # a delta's left-out layers are in this engine
    ENGINE = "engine"            # import only: this engine can run the target (Podman: no Swarm services)
    OWNERSHIP = "ownership"      # import only: the engine's containers
    TAGS = "tags"                # import only: the engine's tags
    SETTINGS = "settings"        # import only: the running container's settings vs the release's
    PAYLOAD = "payload"
    DOCKER_ARCHIVE = "docker archive"
    LOADED_IMAGES = "loaded images"
    REGISTRY_DIGEST = "registry digest"  # import --registry only: what the registry stored


class MalformedBundle(Refused):
    """The bytes break the format (caps, zstd framing, tar rules, trailing data)."""

    check = Check.TAR_MEMBERS
    # bundlecore.format's error kinds; every other kind (tar, head, members) is a tar member rule
    CHECK_OF_KIND = {"parts": Check.PARTS, "cap": Check.SIZE_CAP, "zstd": Check.ZSTD, "truncated": Check.TRUNCATED,
                    "trailing": Check.TRAILING_DATA}

    def __init__(self, err: FormatError):
        super().__init__(str(err))
        self.check = self.CHECK_OF_KIND.get(err.check, Check.TAR_MEMBERS)


class SignatureRefused(Refused):
    """The signatures do not satisfy the trust store's policy."""

    check = Check.SIGNATURE


class ManifestRefused(Refused):
    """manifest.json is not the one signed, or not a valid manifest."""

    check = Check.MANIFEST


class PlatformMismatch(Refused):
    check = Check.PLATFORM


class BundleExpired(Refused):
    check = Check.EXPIRY


class BundleFromTheFuture(Refused):
    check = Check.CREATED


class RollbackRefused(Refused):
    """A replay (same sequence) or a downgrade (older sequence) of what this host installed."""

    check = Check.SEQUENCE


class HostPolicyRefused(Refused):
    """The signed run settings ask for host access this host's policy does not grant."""

    check = Check.HOST_POLICY


class DeltaBaseRefused(Refused):
    """A delta bundle whose base is another app, or whose left-out layers this engine lacks."""

    check = Check.DELTA_BASE


class EngineRefused(Refused):
    """The target needs what this engine cannot do (a Swarm service on Podman); refused at the plan."""

    check = Check.ENGINE


class OwnershipRefused(Refused):
    """The target names a container this tool did not install for this app (--adopt overrides)."""

    check = Check.OWNERSHIP


class TagMoveRefused(Refused):
    """Loading would move a tag this app never loaded to another image (--adopt overrides)."""

    check = Check.TAGS


class PayloadMismatch(Refused):
    check = Check.PAYLOAD


class PatchedLayerMismatch(PayloadMismatch):
    """A layer rebuilt from its signed patch and this engine's base layer is not its signed diff ID."""


class ArchiveRefused(Refused):
    """The docker archive inside the (signed) payload does not match the signed manifest."""

    check = Check.DOCKER_ARCHIVE


class LoadedImageMismatch(Refused):
    """After loading, an image ID or tag is not what was signed."""

    check = Check.LOADED_IMAGES


class RegistryDigestMismatch(Refused):
    """The registry serves another manifest than the one pushed from the verified image."""

    check = Check.REGISTRY_DIGEST


class SettingsConflict(Refused):
    """A run setting was changed both on this host and by the release, differently (--prefer decides)."""

    check = Check.SETTINGS


class HealthTargetGone(Refused):
    """The signed health check probes a port of the bundle's that the container would not publish on
    this host any more (a site file or a change on this host removed it): refused before anything
    stops, never found out by a failed gate and a rollback."""

    check = Check.SETTINGS
