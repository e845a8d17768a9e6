"""Scope of a signature on this host: which container a bundle may take over, which tags it may move,
which volumes, networks and services it may use.

A key trusted to sign app `evil` is not trusted to replace container `victimdb` or retag
`victim/db:15`. Before anything is loaded, for the signed manifest:

- the target container must not exist yet, or be the one this tool installed for this same app:
  container X is owned by app A iff A's installed record names X as its `container` and X's live
  ID as its `container_id` (the record is written at the swap's commit, so a swap finished by
  `bundle recover` is owned too); anything else is refused (check `ownership`) unless the
  operator passes --adopt, and the plan says what is adopted;
- `docker load` silently moves an existing tag: every signed ref already in the engine on another
  image is a tag move; it is refused (check `tags`) unless this app loaded that ref before (its
  installed record lists it) or the operator passes --adopt; every move is in the plan.

- every named volume, network (other than the engine's defaults) and Swarm service the target
  names (`review_resources`) belongs to an app: its `io.bundle.app` label (set on what the import
  creates), else the installed app whose live container (or service) uses it. Another app's is
  refused unless the host policy shares it (`shared_volumes`, `shared_networks`; a service is
  never shared), no app's unless --adopt; the plan says what is adopted or shared.
- the data steps of an app (backup, restore, uninstall, a service's volume backup) leave out the
  volumes of another app (`without_foreign`), shared or not.

Only the installed records (importer.state) and the engine's inspect calls are read, not the
swap's internals. The tags a push to the registry writes are judged by importer.pushes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable

from bundlecore.engine import EngineError, EngineNotFound
from bundlecore.refusals import HostPolicyRefused, OwnershipRefused, TagMoveRefused
from bundlecore.release import Release, ServiceTarget, Target, installed_kind
from bundlecore.runspec import VolumeKind, named_volumes, parse_volume
from importer.backup.data import HELPER_LABEL
from importer.hostpolicy import HostPolicy, Setting, nested_binds
from importer.state import StateDir


@dataclass(frozen=True)
class TagMove:
    ref: str
    old_id: str
    new_id: str
    owned: bool          # this app loaded the ref before

    def line(self) -> str:
        return f"move tag {self.ref} from {self.old_id[:19]}… to {self.new_id[:19]}…"


@dataclass
class OwnershipReview:
    """What the bundle takes over on this engine; `plan_lines()` is shown before confirmation."""

    app: str
    container: str
    adopt: str | None = None                            # why the target container is adopted, if it is
    tag_moves: list[TagMove] = field(default_factory=list)

    def plan_lines(self) -> list[str]:
        lines = [f"adopt container {self.container}, {self.adopt}"] if self.adopt else []
        return lines + [m.line() + ("" if m.owned else " (adopted)") for m in self.tag_moves]


def review(client, state: StateDir, release: Release, *, adopt: bool = False) -> OwnershipReview:
    """Refuse (exit 3) what the bundle would take over without owning it, unless `adopt`."""
    app, container = release.app, release.target.name
    result = OwnershipReview(app, container)
    owner = state.app_of_container(container)
    live = client.container(container)
    if live is not None and live["Name"].lstrip("/") == container:
        result.adopt = _not_owned(app, owner, state.installed(owner) if owner else None, live["Id"])
        if result.adopt and not adopt:
            raise OwnershipRefused(f"container {container} exists and is {result.adopt}: a bundle of app {app} "
                                   f"may not take it over (--adopt overrides)")
    owned_refs = set((state.installed(app) or {}).get("images") or {})
    for img in release.images:
        current = client.image(img.ref)
        if current is None or current["Id"] == img.id:
            continue
        move = TagMove(img.ref, current["Id"], img.id, img.ref in owned_refs)
        if not move.owned and not adopt:
            raise TagMoveRefused(f"{move.ref} already names {move.old_id[:19]}…, which app {app} did not load; "
                                 f"loading would move it to {move.new_id[:19]}… (--adopt overrides)")
        result.tag_moves.append(move)
    return result


def _not_owned(app: str, owner: str | None, record: dict | None, live_id: str) -> str | None:
    """Why the live container is not this app's to replace, or None when it is."""
    if not record or record.get("container_id") != live_id:
        return "not installed by bundle"
    if owner != app:
        return f"installed by bundle for app {owner}"
    return None



# -- volumes, networks and services the bundle names --------------------------------------------

APP_LABEL = "io.bundle.app"  # on every volume and service this tool creates: the app that owns it
DEFAULT_NETWORKS = frozenset({"", "default", "bridge", "host", "none"})


class Resource(StrEnum):
    VOLUME = "volume"
    NETWORK = "network"
    SERVICE = "service"


class Use(StrEnum):
    """How the app will hold a resource its bundle names."""

    OWN = "own"        # it is this app's already
    CREATE = "create"  # it does not exist: the import creates it, labelled with the app
    SHARED = "shared"  # another app's (or no app's), used by a grant of the host policy
    ADOPT = "adopt"    # no app's, taken over with --adopt: this app's from now on


_SHARE_KEY = {Resource.VOLUME: Setting.SHARED_VOLUMES, Resource.NETWORK: Setting.SHARED_NETWORKS}


@dataclass(frozen=True)
class Claim:
    resource: Resource
    name: str
    use: Use
    owner: str | None = None       # the app that owns it (SHARED)
    granted_by: str | None = None  # the policy key (SHARED)

    def line(self) -> str | None:
        if self.use is Use.ADOPT:
            return f"adopt {self.resource} {self.name} (no app owns it; this app's from now on)"
        if self.use is Use.SHARED and self.owner is None:
            return f"use {self.resource} {self.name}, which no app owns (granted by {self.granted_by})"
        if self.use is Use.SHARED:
            return (f"use {self.resource} {self.name} of app {self.owner} (granted by {self.granted_by}; "
                    f"never backed up, restored or removed by this app)")
        return None


@dataclass
class Holders:
    """Which installed app's live container mounts each volume and joins each network (read once)."""

    volumes: dict[str, set[str]] = field(default_factory=dict)
    networks: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, client, state: StateDir) -> "Holders":
        """Networks are keyed by name and by ID (a service spec names them by ID)."""
        out = cls()
        for key in state.installed_apps():
            rec = state.installed(key) or {}
            if installed_kind(rec) == ServiceTarget.KIND:  # keyed by service name; `app` is the app
                try:
                    spec = client.inspect_service(key)["Spec"]
                except EngineError:  # gone, or this engine is no Swarm manager (any more)
                    continue
                for net in (spec.get("TaskTemplate") or {}).get("Networks") or []:
                    out.networks.setdefault(str(net.get("Target")), set()).add(rec.get("app") or key)
                continue
            cid = rec.get("container_id")
            info = client.container(cid) if cid else None
            if not info or info["Id"] != cid:
                continue
            for m in info.get("Mounts") or []:
                if m.get("Type") == "volume" and m.get("Name"):
                    out.volumes.setdefault(m["Name"], set()).add(key)
            for net, ep in ((info.get("NetworkSettings") or {}).get("Networks") or {}).items():
                for k in (net, (ep or {}).get("NetworkID") or net):
                    out.networks.setdefault(k, set()).add(key)
        return out

    def of(self, resource: "Resource", name: str, ident: str | None) -> set[str]:
        if resource is Resource.VOLUME:
            return self.volumes.get(name, set())
        return self.networks.get(name, set()) | self.networks.get(ident or name, set())


def owner_of(app: str, labels: dict | None, holders: set[str]) -> str | None:
    """The app a resource belongs to: its APP_LABEL, else an installed app whose container uses it
    (this app first: what its own container uses is its own), else None: no app's."""
    labelled = (labels or {}).get(APP_LABEL)
    if labelled:
        return str(labelled)
    if app in holders:
        return app
    return min(holders) if holders else None


def decide(app: str, resource: Resource, name: str, owner: str | None, *, exists: bool, granted_by: str | None,
           adopt: bool, policy_path: object) -> Claim:
    """The one rule for a resource the bundle names (pure; OwnershipRefused when not allowed)."""
    if not exists:
        return Claim(resource, name, Use.CREATE)
    if owner == app:
        return Claim(resource, name, Use.OWN)
    share = _SHARE_KEY.get(resource)
    hint = f'[apps.{app}] {share.value} = ["{name}"] in {policy_path}' if share else None
    if granted_by:
        return Claim(resource, name, Use.SHARED, owner, granted_by)
    if owner is not None:
        raise OwnershipRefused(f"{resource} {name} belongs to app {owner}: a bundle of app {app} may not use it"
                               + (f" (to share it: {hint})" if hint else ""))
    if adopt:
        return Claim(resource, name, Use.ADOPT)
    raise OwnershipRefused(f"{resource} {name} exists and no app owns it: a bundle of app {app} may take it "
                           f"only with --adopt")


def named_resources(target: Target) -> list[tuple[Resource, str]]:
    """The volumes, networks and services a target names (the defaults and joined namespaces aside)."""
    run = target.run
    out = [(Resource.VOLUME, n) for n in named_volumes(list(run.volumes or ()))]
    nets = ([run.network] if run.network else []) + list(run.networks or ())
    out += [(Resource.NETWORK, n) for n in nets if n not in DEFAULT_NETWORKS and not n.startswith("container:")]
    if isinstance(target, ServiceTarget):
        out += [(Resource.SERVICE, s) for stage in target.services() for s in stage]
        out += [(Resource.SERVICE, c) for c in target.canaries()]  # a canary step's services
    return list(dict.fromkeys(out))


def review_resources(client, state: StateDir, policy: HostPolicy, app: str, target: Target, *,
                     adopt: bool = False) -> list[Claim]:
    """Refuse (exit 3) a volume, network or service the target names that another app owns (unless
    the host policy shares it) or that no app owns (unless `adopt`); the claims otherwise."""
    holders = Holders.read(client, state)
    claims = []
    for resource, name in named_resources(target):
        labels, exists, ident = _inspect(client, resource, name)
        users = holders.of(resource, name, ident)
        if resource is Resource.SERVICE:
            rec = state.installed(name) or {}
            users = {rec["app"]} if installed_kind(rec) == ServiceTarget.KIND and rec.get("app") else set()
        owner = owner_of(app, labels, users)
        share = _SHARE_KEY.get(resource)
        claims.append(decide(app, resource, name, owner, exists=exists, adopt=adopt, policy_path=policy.path or "",
                             granted_by=policy.shares(app, share, name) if share else None))
    return claims


def _inspect(client, resource: Resource, name: str) -> tuple[dict, bool, str | None]:
    """The resource's labels, whether it exists, and its ID."""
    try:
        if resource is Resource.VOLUME:
            return client.inspect_volume(name).get("Labels") or {}, True, name
        if resource is Resource.NETWORK:
            info = client.inspect_network(name)
            return info.get("Labels") or {}, True, info.get("Id")
        info = client.inspect_service(name)
        return (info.get("Spec") or {}).get("Labels") or {}, True, info.get("ID")
    except EngineNotFound:
        return {}, False, None


def _labels(client, resource: Resource, name: str) -> dict:
    return _inspect(client, resource, name)[0]


def created_for(client, volume: str) -> str | None:
    """The app bundle created `volume` for (its label), if any: the only volume an uninstall removes."""
    return _labels(client, Resource.VOLUME, volume).get(APP_LABEL)


def foreign_volumes(client, state: StateDir, app: str, names) -> dict[str, str]:
    """name -> owner, for the volumes among `names` that belong to another app: the data steps of
    `app` (backup, restore, uninstall) leave them alone. A volume that an installed container of
    another app also mounts counts as that app's too."""
    holders = Holders.read(client, state)
    out = {}
    for name in dict.fromkeys(names):
        labels = _labels(client, Resource.VOLUME, name)
        owner = labels.get(APP_LABEL) or min(holders.volumes.get(name, set()) - {app}, default=None)
        if owner and owner != app:
            out[name] = owner
    return out


@dataclass
class UninstallMounts:
    """What an uninstall of `app` does with the mounts of its containers, whatever its kind: another
    app's volumes are neither backed up nor removed (`foreign`); host directories are backed up,
    never removed; a volume another container uses (`shared`) or bundle did not create for the app
    (`not_created`) is backed up and kept; the other `volumes` are removed unless --keep-data."""

    backed_up: list[dict] = field(default_factory=list)   # importer.backup.data mount records
    foreign: dict[str, str] = field(default_factory=dict)  # volume -> the app that owns it
    binds: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    not_created: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)


def uninstall_mounts(client, state: StateDir, app: str, mounts: list[dict], ours: set[str]) -> UninstallMounts:
    """Sort `mounts` for an uninstall of `app` whose containers (kept generations included) are `ours`."""
    foreign = foreign_volumes(client, state, app, [m["name"] for m in mounts if m.get("name")])
    out = UninstallMounts([m for m in mounts if m.get("name") not in foreign], foreign)
    for m in out.backed_up:
        if m["type"] == "bind":
            out.binds.append(m["source"])
        elif m.get("name"):
            users = {c["Id"] for c in client.containers(all=True, filters={"volume": m["name"]})}
            if users - ours:
                out.shared.append(m["name"])
            elif created_for(client, m["name"]) != app:
                out.not_created.append(m["name"])
            else:
                out.volumes.append(m["name"])
    return out


def without_foreign(client, state: StateDir, app: str, mounts: list[dict], out=None) -> list[dict]:
    """`mounts` (importer.backup.data mount records) less the volumes of other apps, each said once."""
    foreign = foreign_volumes(client, state, app, [m["name"] for m in mounts if m.get("type") == "volume"
                                                   and m.get("name")])
    for name, owner in foreign.items():
        if out:
            out(f"  volume {name} belongs to app {owner}: not backed up or restored by {app}")
    return [m for m in mounts if m.get("name") not in foreign]


def refuse_nested_binds(client, binds: list[tuple[str, str]], own: Callable[[str, dict], bool]) -> None:
    """The host policy's nested-bind rule (importer.hostpolicy `nested_binds`) over the binds a release
    asks for (`binds`: where asked, the volume spec) and against the bind mounts of every other
    container on this engine, whatever made it: a bind inside another container's writable bind, or
    a writable one around another's, is refused (HostPolicyRefused, exit 3). `own(name, labels)`
    says which containers are the app's own (the kind knows: its container and kept generations, a
    project's, a service's tasks); this tool's restore helpers are never others."""
    if not any(parse_volume(spec).kind is VolumeKind.BIND for _, spec in binds):
        return
    others = []
    for c in client.containers(all=True):
        cname, labels = (c.get("Names") or ["/"])[0].lstrip("/"), c.get("Labels") or {}
        if own(cname, labels) or HELPER_LABEL in labels:
            continue
        others += [(f"container {cname}'s mount at {m['Destination']}",
                    f"{m['Source']}:{m['Destination']}" + ("" if m.get("RW", True) else ":ro"))
                   for m in c.get("Mounts") or [] if m.get("Type") == "bind" and m.get("Source")]
    nested = nested_binds(binds, others)
    if nested:
        raise HostPolicyRefused(nested)
