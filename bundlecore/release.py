"""The verified release, typed: what everything after the trust gate acts on.

The gate (importer.gate) verifies the head; `release_of(head)` then parses the manifest ONCE into
these frozen records, and nothing downstream (pipeline, plan, target kinds, status, audit) reads
the manifest dict again. The JSON Schemas (schemas/manifest.schema.json, run.schema.json) stay
what validates the signed bytes; tests/unit/test_release_model.py walks them and these
dataclasses field by field, so the two cannot drift apart (a field's JSON name is its own, or
`json=` in its metadata; `json=None` marks a field that does not come from the manifest).

Also here, because it is part of the same contract: the one `Signer` shape (bundlecore.jsondoc
`signer`), the installed record's explicit `kind`, and the one `Result` enum a swap, an uninstall
or a rollout ends in and the audit log records.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, TypeVar

from bundlecore import jsondoc
from bundlecore.errors import BundleError, ExitCode, InstallUndone, OperatorNeeded, Refused, UpdateFailed

if TYPE_CHECKING:
    from bundlecore.verify import VerifiedHead

JSON = Mapping[str, Any]  # a JSON object as read (the manifest and its parts)
R = TypeVar("R")


def json_name(f: Field[Any]) -> str | None:
    """The JSON key of a dataclass field: its name, or `json` in its metadata (None: not read from
    the manifest). The schema agreement test reads it too."""
    name: str | None = f.metadata.get("json", f.name)
    return name


def _freeze(v: Any) -> Any:
    """Signed JSON as immutable values: lists become tuples, objects read-only mappings."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return MappingProxyType({k: _freeze(x) for k, x in v.items()})
    return v


def _thaw(v: Any) -> Any:
    """The plain JSON of a frozen value (for the merge tables and what is written back)."""
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    return v


def _from_json(cls: type[R], d: JSON) -> R:
    """A record of plain fields from its JSON object. A key it has no field for is an error, never
    dropped: the schema refuses it first, and a signed setting must not vanish silently."""
    known = {json_name(f): f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ManifestError(f"{cls.__name__} has no field for {', '.join(unknown)}")
    return cls(**{known[k]: _freeze(v) for k, v in d.items()})


def _to_json(rec: Any) -> dict[str, Any]:
    """The JSON object of a record of plain optional fields: the fields that are set."""
    return {json_name(f) or f.name: _thaw(getattr(rec, f.name)) for f in fields(rec)
            if getattr(rec, f.name) is not None}


# -- who signed ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Signer:
    """A key that signed, as every event and document shows it (bundlecore.jsondoc.signer)."""

    fingerprint: str
    uid: str | None = None
    roles: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return jsondoc.signer(self.fingerprint, self.roles, self.uid)

    @classmethod
    def of(cls, s: Any) -> "Signer":
        """From the verifier's signer (fingerprint, roles, uid if known), a JSON object of this
        shape, or a bare fingerprint (what installed records and older journals keep)."""
        if isinstance(s, Signer):
            return s
        if isinstance(s, str):
            return cls(s)
        if isinstance(s, Mapping):
            return cls(str(s.get("fingerprint")), s.get("uid"), tuple(s.get("roles") or ()))
        return cls(s.fingerprint, getattr(s, "uid", None), tuple(getattr(s, "roles", None) or ()))


def signers_of(signers: Iterable[Any] | None) -> tuple[Signer, ...]:
    """THE signer shape, from any list of signers (see Signer.of)."""
    return tuple(Signer.of(s) for s in signers or ())


# -- the manifest's parts --------------------------------------------------------------------------

@dataclass(frozen=True)
class Builder:
    tool: str
    host: str
    engine: str


@dataclass(frozen=True)
class Image:
    ref: str
    platform: str
    repo_digest: str | None
    id: str
    diff_ids: tuple[str, ...]
    config: str
    layers: tuple[str, ...]


@dataclass(frozen=True)
class PayloadFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DeltaBase:
    """The release (or inventory) a delta bundle was made against."""

    kind: str                   # "bundle" | "inventory"
    sha256: str
    name: str
    version: str | None = None
    sequence: int | None = None

    def came_in(self) -> str:
        """How a refusal names it."""
        if self.kind == "bundle":
            return f"{self.name} {self.version} (sequence {self.sequence}, sha256 {self.sha256[:12]})"
        return f"the inventory of {self.name} (sha256 {self.sha256[:12]})"


@dataclass(frozen=True)
class OmittedLayer:
    path: str
    diff_id: str


@dataclass(frozen=True)
class PatchedLayer:
    path: str
    diff_id: str
    size: int
    base_diff_id: str
    patch: str
    patch_sha256: str


@dataclass(frozen=True)
class Delta:
    base: DeltaBase
    omitted: tuple[OmittedLayer, ...]
    patched: tuple[PatchedLayer, ...] = ()

    @classmethod
    def from_json(cls, d: JSON) -> "Delta":
        return cls(DeltaBase(**d["base"]), tuple(OmittedLayer(**o) for o in d["omitted"]),
                   tuple(PatchedLayer(**p) for p in d.get("patched") or ()))


# -- run and health settings -----------------------------------------------------------------------

@dataclass(frozen=True)
class RunSettings:
    """`[target.run]`: a container's (run.schema.json `run`) or a service's (`service_run`) keys;
    unset keys are None. The merge tables and the create body read `as_mapping()`."""

    ports: tuple[str, ...] | None = None
    volumes: tuple[str, ...] | None = None
    env: Mapping[str, str] | None = None
    secret_env: tuple[str, ...] | None = None     # env keys never printed (importer.masking)
    labels: Mapping[str, str] | None = None
    restart: str | None = None
    cap_add: tuple[str, ...] | None = None
    cap_drop: tuple[str, ...] | None = None
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    network: str | None = None
    user: str | None = None
    workdir: str | None = None
    hostname: str | None = None
    stop_signal: str | None = None
    stop_timeout: int | None = None
    extra_hosts: tuple[str, ...] | None = None
    dns: tuple[str, ...] | None = None
    replicas: int | None = None                   # service only, from here on
    endpoint_mode: str | None = None
    networks: tuple[str, ...] | None = None
    constraints: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, d: JSON | None) -> "RunSettings":
        return _from_json(cls, d or {})

    def as_mapping(self) -> dict[str, Any]:
        """The settings as docker-run-style JSON (a fresh dict: the merge tables may change it)."""
        return _to_json(self)


@dataclass(frozen=True)
class PrometheusGate:
    """A signed Prometheus query kept at or below `max` during probation (importer.analysis);
    `url` may come from the site settings instead."""

    query: str
    max: float
    window: int
    url: str | None = None
    failure_limit: int | None = None


@dataclass(frozen=True)
class HealthSettings:
    """`[target.health]`: one probe, its bounds, and (containers) probation and the metrics gate."""

    timeout: int
    attempts: int
    http: str | None = None
    tcp: str | None = None
    cmd: Any = None                               # a string (shell) or a list (exec): as signed
    probation: int | None = None
    max_restarts: int | None = None
    prometheus: PrometheusGate | None = None

    @classmethod
    def from_json(cls, d: JSON | None) -> "HealthSettings | None":
        if not d:
            return None
        prom = d.get("prometheus")
        return replace(_from_json(cls, {k: v for k, v in d.items() if k != "prometheus"}),
                       prometheus=PrometheusGate(**prom) if prom else None)

    def to_json(self) -> dict[str, Any]:
        """What the health gate (importer.health) and the journal read."""
        out = _to_json(replace(self, prometheus=None))
        if self.prometheus:
            out["prometheus"] = _to_json(self.prometheus)
        return out


# -- targets ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """What a release replaces on this host; one subclass per kind (`KIND`, the manifest's
    `target.kind`). A new kind is a subclass here, a schema branch and a module in importer/."""

    KIND: ClassVar[str]
    name: str
    image: str
    run: RunSettings
    health: HealthSettings | None = None
    registry: str | None = None

    @property
    def kind(self) -> str:
        return self.KIND

    @classmethod
    def _parts(cls, d: JSON) -> dict[str, Any]:
        return {"name": d["name"], "image": d["image"], "run": RunSettings.from_json(d.get("run")),
                "health": HealthSettings.from_json(d.get("health")), "registry": d.get("registry")}

    @classmethod
    def from_json(cls, d: JSON) -> "Target":
        return cls(**cls._parts(d))

    def to_json(self) -> dict[str, Any]:
        """The target as the manifest spells it (written back into journals)."""
        out = {"kind": self.KIND, "name": self.name, "image": self.image, "run": self.run.as_mapping()}
        if self.health:
            out["health"] = self.health.to_json()
        if self.registry:
            out["registry"] = self.registry
        return out

    def health_json(self) -> dict[str, Any] | None:
        return self.health.to_json() if self.health else None

    def host_requests(self) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
        """What the host policy judges (importer.hostpolicy `check_target`): (where, run settings,
        health) per container this target runs; one for a container or a service."""
        return [("target.run", self.run.as_mapping(), self.health_json())]

    def with_probation(self, seconds: int | None) -> "Target":
        """This import's `--probation` window over the signed one (max_restarts, if any, kept)."""
        if seconds is None:
            return self
        base = self.health or HealthSettings(timeout=None, attempts=None)  # type: ignore[arg-type]
        return replace(self, health=replace(base, probation=seconds))


@dataclass(frozen=True)
class ContainerTarget(Target):
    """One Docker container replaced in place (importer.kinds.container)."""

    KIND: ClassVar[str] = "container"


PROMOTE = "promote"  # a stage's `pause` until a person runs `bundle promote APP`
CANARY_SUFFIX = "-canary"


@dataclass(frozen=True)
class Stage:
    """One step of a service release. `replicas` (a count, or "N%" of the service's replicas): a
    canary step, that many tasks of the new version beside each stable service (a service
    `<name>-canary` sharing its network alias), the stable one untouched; a later stage naming the
    service rolls the rest. `parallel`: the stage's services roll concurrently. `pause`: after the
    stage, seconds or PROMOTE (importer.kinds.service.release)."""

    services: tuple[str, ...]
    soak: int
    pause: int | str | None = None
    replicas: int | str | None = None
    parallel: bool | None = None

    @classmethod
    def from_json(cls, d: JSON) -> "Stage":
        return _from_json(cls, d)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @property
    def canary(self) -> bool:
        return self.replicas is not None


def canary_name(service: str) -> str:
    """THE name of the canary service of `service` (importer.kinds.service.canary; ownership claims it)."""
    return service + CANARY_SUFFIX


@dataclass(frozen=True)
class RolloutSettings:
    """`[target.rollout]`: Swarm's update (and rollback) config; unset keys take the defaults."""

    parallelism: int | None = None
    delay: Any = None
    order: str | None = None
    monitor: Any = None
    max_failure_ratio: float | None = None
    failure_action: str | None = None

    def as_mapping(self) -> dict[str, Any]:
        return _to_json(self)


@dataclass(frozen=True)
class ServiceTarget(Target):
    """Swarm services updated by digest, stage by stage (importer.kinds.service)."""

    KIND: ClassVar[str] = "service"
    rollout: RolloutSettings | None = None
    stages: tuple[Stage, ...] = ()

    @classmethod
    def from_json(cls, d: JSON) -> "ServiceTarget":
        return cls(**cls._parts(d), rollout=_from_json(RolloutSettings, d["rollout"]) if d.get("rollout") else None,
                   stages=tuple(Stage.from_json(s) for s in d.get("stages") or ()))

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.rollout:
            out["rollout"] = self.rollout.as_mapping()
        if self.stages:
            out["stages"] = [s.to_json() for s in self.stages]
        return out

    def services(self) -> list[list[str]]:
        """The services each stage updates, in order; without stages one stage: the target itself."""
        return [list(s.services) for s in self.stages] if self.stages else [[self.name]]

    def stage(self, index: int) -> Stage:
        """Stage `index` (without stages: the target itself, one whole step)."""
        return self.stages[index] if self.stages else Stage((self.name,), 0)

    def canaries(self) -> list[str]:
        """The canary services any stage of the release may create."""
        return list(dict.fromkeys(canary_name(s) for st in self.stages if st.canary for s in st.services))

    def soak(self, index: int) -> int:
        """Seconds to watch after stage `index` (0 without stages)."""
        return self.stages[index].soak if index < len(self.stages) else 0

    def pause(self, index: int) -> int | str | None:
        """What the release waits for after stage `index`: seconds, PROMOTE, or None (no pause)."""
        return self.stages[index].pause if index < len(self.stages) else None


def dependency_order(depends: Mapping[str, Iterable[str]]) -> list[str]:
    """Names in dependency order: each after those it depends on, ties by name (the order a
    Compose project is created in; its reverse is the order it is stopped in). ValueError: a cycle."""
    done: list[str] = []
    left = {n: set(d) for n, d in depends.items()}
    while left:
        ready = sorted(n for n, d in left.items() if d <= set(done))
        if not ready:
            raise ValueError(f"services depend on each other in a cycle: {', '.join(sorted(left))}")
        done += ready
        for n in ready:
            del left[n]
    return done


@dataclass(frozen=True)
class ComposeService:
    """One service of a Compose project (manifest `target.compose.services.NAME`): its image, its
    run settings in the container target's vocabulary, and what only Compose has."""

    name: str = field(metadata={"json": None})
    image: str
    run: RunSettings
    depends_on: Mapping[str, str]               # service -> condition
    networks: Mapping[str, Mapping[str, Any]]   # network -> {aliases}
    healthcheck: Mapping[str, Any] | None = None  # test, interval, timeout, start_period (s), retries
    tmpfs: tuple[str, ...] | None = None
    ulimits: Mapping[str, Mapping[str, int]] | None = None
    health: HealthSettings | None = None         # `[target.health.NAME]`: the bundle's own probe

    @classmethod
    def from_json(cls, name: str, d: JSON) -> "ComposeService":
        unknown = sorted(set(d) - {json_name(f) for f in fields(cls)})
        if unknown:
            raise ManifestError(f"{cls.__name__} has no field for {', '.join(unknown)}")
        return cls(name=name, image=d["image"], run=RunSettings.from_json(d.get("run")),
                   depends_on=_freeze(dict(d.get("depends_on") or {})), networks=_freeze(dict(d.get("networks") or {})),
                   healthcheck=_freeze(d.get("healthcheck")), tmpfs=_freeze(d.get("tmpfs")),
                   ulimits=_freeze(d.get("ulimits")), health=HealthSettings.from_json(d.get("health")))

    def to_json(self) -> dict[str, Any]:
        out = _to_json(replace(self, run=None, health=None))  # type: ignore[arg-type]
        out.pop("name", None)
        out["run"] = self.run.as_mapping()
        if self.health:
            out["health"] = self.health.to_json()
        return out


@dataclass(frozen=True)
class ComposeProject:
    """`target.compose`: the normalized project the build read from the compose file (bundler.compose)."""

    project: str
    services: Mapping[str, ComposeService]
    volumes: Mapping[str, Any]
    networks: Mapping[str, Any]

    @classmethod
    def from_json(cls, d: JSON) -> "ComposeProject":
        return cls(d["project"], MappingProxyType({n: ComposeService.from_json(n, s) for n, s in d["services"].items()}),
                   _freeze(dict(d.get("volumes") or {})), _freeze(dict(d.get("networks") or {})))

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "services": {n: s.to_json() for n, s in self.services.items()},
                "volumes": _thaw(self.volumes), "networks": _thaw(self.networks)}

    def order(self) -> list[str]:
        """The services in dependency order (creation); reversed, the order they stop in."""
        return dependency_order({n: s.depends_on for n, s in self.services.items()})


@dataclass(frozen=True)
class ComposeTarget(Target):
    """A Compose project swapped, gated and rolled back as one unit (importer.kinds.compose).
    `name` is the project; `image` the first service's (what the gate's one-image rules read)."""

    KIND: ClassVar[str] = "compose"
    compose: ComposeProject | None = None

    @classmethod
    def from_json(cls, d: JSON) -> "ComposeTarget":
        return cls(**cls._parts(d), compose=ComposeProject.from_json(d["compose"]))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "compose": self.project.to_json()}

    @property
    def project(self) -> ComposeProject:
        assert self.compose is not None  # the schema requires it
        return self.compose

    def host_requests(self) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
        return [(f"services.{n}", s.run.as_mapping(), s.health.to_json() if s.health else None)
                for n, s in self.project.services.items()]


TARGET_KINDS: dict[str, type[Target]] = {ContainerTarget.KIND: ContainerTarget, ServiceTarget.KIND: ServiceTarget,
                                      ComposeTarget.KIND: ComposeTarget}


class UnknownTargetKind(ValueError):
    """A target kind this version does not handle (the schema lists the known ones)."""


def target_from_json(d: JSON) -> Target:
    """The typed target of a `target` object (kind absent: a container, as before kinds existed)."""
    kind = d.get("kind", ContainerTarget.KIND)
    if kind not in TARGET_KINDS:
        raise UnknownTargetKind(f"target kind {kind!r} is not handled (known: {', '.join(sorted(TARGET_KINDS))})")
    return TARGET_KINDS[kind].from_json(d)


# -- the release ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Release:
    """One verified release: the manifest, parsed once, and the keys whose signatures counted."""

    format_version: int
    app: str = field(metadata={"json": "name"})
    version: str
    sequence: int
    created: str
    expires: str
    builder: Builder
    platform: str
    allow_latest: bool
    images: tuple[Image, ...]
    payload: tuple[PayloadFile, ...]
    target: Target
    delta: Delta | None = None
    signers: tuple[Signer, ...] = field(default=(), metadata={"json": None})

    @property
    def target_image_id(self) -> str:
        """The image ID of the target's image (the cross-check made sure there is one)."""
        return next(i.id for i in self.images if i.ref == self.target.image)

    @property
    def fingerprints(self) -> list[str]:
        return [s.fingerprint for s in self.signers]

    def payload_sizes(self) -> dict[str, int]:
        return {p.path: p.size for p in self.payload}


class ManifestError(ValueError):
    """A manifest that does not have the shape these types need (the schema refuses it first)."""


def from_manifest(m: JSON, signers: Iterable[Any] = ()) -> Release:
    """The typed release of a manifest that has passed the schema (and its signers)."""
    try:
        return Release(
            format_version=m["format_version"], app=m["name"], version=m["version"], sequence=m["sequence"],
            created=m["created"], expires=m["expires"], builder=Builder(**m["builder"]), platform=m["platform"],
            allow_latest=m["allow_latest"],
            images=tuple(Image(**{**i, "diff_ids": tuple(i["diff_ids"]), "layers": tuple(i["layers"])})
                         for i in m["images"]),
            payload=tuple(PayloadFile(**p) for p in m["payload"]), target=target_from_json(m["target"]),
            delta=Delta.from_json(m["delta"]) if "delta" in m else None, signers=signers_of(signers))
    except (KeyError, TypeError) as e:
        raise ManifestError(f"manifest lacks or mistypes {e}") from None


def release_of(head: VerifiedHead) -> Release:
    """The release a verified head (bundlecore.verify.VerifiedHead) carries."""
    return from_manifest(head.manifest, head.signers)


# -- what is installed ------------------------------------------------------------------------------

@dataclass(frozen=True)
class InstalledRecord:
    """The parts of an installed record (state dir `installed/<app>.json`) every kind writes.
    `kind` is explicit: a record without one was written by a container swap before kinds were
    named, and is read as a container record here, in this one place."""

    kind: str
    app: str | None
    version: str | None
    sequence: int | None
    highest_sequence: int | None
    image_id: str | None
    signers: tuple[str, ...]  # fingerprints, as records on disk keep them

    @classmethod
    def from_json(cls, d: JSON) -> "InstalledRecord":
        return cls(kind=d.get("kind") or ContainerTarget.KIND, app=d.get("app"), version=d.get("version"),
                   sequence=d.get("sequence"), highest_sequence=d.get("highest_sequence"),
                   image_id=d.get("image_id"),
                   signers=tuple(Signer.of(s).fingerprint for s in d.get("signers") or ()))

    def is_release(self, sequence: int, version: str | None, image_id: str) -> bool:
        """Whether this record is of that release (importing it again is "already installed" or a repair)."""
        return (self.sequence, self.version, self.image_id) == (sequence, version, image_id)


def installed_kind(record: JSON | None) -> str | None:
    """The kind of an installed record (None: nothing installed)."""
    return None if record is None else InstalledRecord.from_json(record).kind


# -- how it ended -----------------------------------------------------------------------------------

class Result(StrEnum):
    """How a swap, an uninstall, a rollout or a whole command ended; each has its exit code
    (bundlecore.errors) but FAILED (1 or 2)."""

    DONE = "done"
    PARTIAL = "partial"                  # a staged release stopped after a stage (a long soak): --resume continues
    PAUSED = "paused"                    # a staged release paused after a stage: `bundle promote` continues it
    ABORTED = "aborted"                  # `bundle abort`: every service of the release is back on its version before
    UNCHANGED = "unchanged"              # the same image was already running: records updated only
    DRY_RUN = "dry-run"
    REFUSED = "refused"                  # the bundle failed a check: nothing changed
    ROLLED_BACK = "rolled-back"          # the new version failed; the previous one is back
    INSTALL_UNDONE = "install-undone"    # a first install failed and was undone
    OPERATOR_NEEDED = "operator-needed"  # putting the previous version back failed
    NOT_DONE = "not-done"                # an uninstall stopped before its final backup: nothing removed
    FAILED = "failed"                    # environment or usage error: nothing changed
    INTERRUPTED = "interrupted"          # SIGINT/SIGTERM before anything changed

    @property
    def exit_code(self) -> ExitCode:
        return _EXIT_CODES.get(self, ExitCode.ENVIRONMENT)

    @classmethod
    def of_error(cls, e: BundleError) -> "Result":
        for kind, result in ((Refused, cls.REFUSED), (UpdateFailed, cls.ROLLED_BACK),
                             (InstallUndone, cls.INSTALL_UNDONE), (OperatorNeeded, cls.OPERATOR_NEEDED)):
            if isinstance(e, kind):
                return result
        return cls.FAILED


_EXIT_CODES = {Result.DONE: ExitCode.DONE, Result.PARTIAL: ExitCode.DONE, Result.PAUSED: ExitCode.PAUSED,
               Result.ABORTED: ExitCode.DONE,
               Result.UNCHANGED: ExitCode.DONE, Result.DRY_RUN: ExitCode.DONE,
               Result.REFUSED: ExitCode.REFUSED, Result.ROLLED_BACK: ExitCode.UPDATE_FAILED,
               Result.INSTALL_UNDONE: ExitCode.INSTALL_UNDONE, Result.OPERATOR_NEEDED: ExitCode.OPERATOR_NEEDED,
               Result.NOT_DONE: ExitCode.ENVIRONMENT, Result.INTERRUPTED: ExitCode.INTERRUPTED}
