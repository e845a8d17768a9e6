"""What a swap will do, read from the engine without changing anything, and the checks made
just before it runs (preflight).

A plan shows warnings to the operator; what may stop a swap is a separate, typed list of
`Blocker`s, so rewording a warning can never turn a safety check off.

The host is checked for what the container to create needs (`check_host`): a first install
before its images are loaded (plan_swap), every swap again before anything is stopped. A host
port must be free or published by the container being replaced (the engine's view of published
ports, then a bind on this host when the engine is local); a bind-mount source must exist (the
engine would silently create an empty directory); a network must exist. Any failure is exit 1
(environment), with nothing loaded, created or stopped.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from bundlecore.engine import container_name
from bundlecore.errors import EnvironmentProblem, UsageProblem
from bundlecore.progress import human
from bundlecore.refusals import EngineRefused, SettingsConflict
from bundlecore.runspec import VolumeKind, parse_port, parse_volume
from bundlecore.release import ContainerTarget, InstalledRecord, RunSettings
from importer import ownership, units
from importer.site import HEALTH_KEYS
from importer.state import StateDir
from importer.backup import data
from importer.kinds.container.config import describe_mount, run_config
from importer.kinds.container.generations import Generations
from importer.versiontext import version_change
from importer.health import ANY_ADDRESS, Followed, HealthGate, follow_published
from importer.kinds.container.journal import SwapJournal
from importer.merge import (Key, Kind, MergeResult, Origin, Side, Source, keys_from_json, merge,
                                            settings_of_container, settings_of_run, site_keys)

BACKUP_MARGIN = 1.1
BACKUP_MIN_FREE = 64 << 20


class PlanKind(StrEnum):
    INSTALL = "install"
    UPGRADE = "upgrade"
    UNCHANGED = "unchanged"
    ROLLBACK = "rollback"
    CURRENT = "current"  # the installed release again, its container as recorded and healthy: nothing to do
    REPAIR = "repair"    # the installed release again, its container missing or not as recorded: recreate it


class Blocker(StrEnum):
    """A reason preflight refuses the swap (shown as a warning in the plan before that)."""

    AUTO_REMOVE = "auto_remove"
    SWARM_TASK = "swarm_task"

    @property
    def warning(self) -> str:
        return {
            Blocker.AUTO_REMOVE: "the container was started with --rm: stopping it would delete it; refusing to swap",
            Blocker.SWARM_TASK: "the container is a Swarm task: update the service instead",
        }[self]

    def refusal(self, name: str) -> str:
        return {
            Blocker.AUTO_REMOVE: f"container {name} was started with --rm: stopping it would delete it",
            Blocker.SWARM_TASK: f"container {name} is a Swarm task: update its service instead",
        }[self]


COMPOSE_WARNING = ("the container belongs to a Compose project: `docker compose up` may recreate it "
                   "from the compose file's image later")


@dataclass
class CurrentContainer:
    """The container a swap replaces, as the plan found it."""

    id: str
    image_id: str
    image_ref: str | None
    version: str | None
    sequence: int | None
    generation: int | None
    running: bool


@dataclass(frozen=True)
class Repair:
    """Why the installed release's container is recreated, and from which generation's record."""

    why: str
    generation: int | None
    bundle: dict  # the generation's recorded bundle (its run settings, its loaded images)


@dataclass
class SwapPlan:
    """What a swap will do; `lines()` is what the operator confirms. Reading it changed nothing."""

    kind: PlanKind
    name: str
    target: ContainerTarget
    new_image_id: str
    new_image_ref: str
    new_version: str | None = None
    old: CurrentContainer | None = None
    mounts: list[dict] = field(default_factory=list)   # backed-up mounts: {"mount": inspect mount, "size"}
    backup_estimate: int = 0
    unknown_sizes: int = 0
    health: str = ""
    warnings: list[str] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)
    rollback_to: dict | None = None  # for kind ROLLBACK: the generation item put back
    settings: MergeResult | None = None  # for kind UPGRADE: the three-way merge of the run settings
    binds: list[tuple[str, str]] = field(default_factory=list)  # for kind UPGRADE: the new container's volumes
    setting_changes: dict = field(default_factory=dict)  # what the new container gets differently
    prefer: Side | None = None
    masked: frozenset[str] = frozenset()  # the site file's env keys: secrets (importer.masking), recorded
    was_masked: frozenset[str] = frozenset()  # the env keys secret when the running version was installed
    app: str | None = None  # the app (state key); `name` is its target container. None: the same name
    gate: dict | None = None  # the health settings the swap's gate applies: the target's, or for a
                              # rollback the generation's own (as its record keeps them)
    repair: Repair | None = None  # for kind REPAIR: why, and the generation recreated
    site_keys: frozenset[Key] = frozenset()  # the settings the site file decides (recorded)
    was_site_keys: frozenset[Key] = frozenset()  # those it decided when the running version was installed
    followed: tuple[Followed, Source] | None = None  # the signed probe moved to where its port is published
    health_by_site: bool = False  # the site file set the probe, its timeout or attempts (importer.site)
    unit: str | None = None  # the systemd unit the swap writes or updates (importer.units; Podman)
    unit_recorded: bool = False  # the record of the release imported again names `unit` (else: a crash left it)

    @property
    def key(self) -> str:
        return self.app or self.name

    @property
    def by_site(self) -> frozenset[Key]:
        """The settings the site file decides, or decided for the running version (so changes by it)."""
        return self.site_keys | self.was_site_keys

    @property
    def nothing_to_do(self) -> bool:
        """The installed release is imported again and runs as recorded: the import ends here, exit 0."""
        return self.kind == PlanKind.CURRENT and not self.unit_only

    @property
    def unit_only(self) -> bool:
        """The installed release runs as recorded, but --systemd-unit asks for a unit it does not have,
        or that its record does not name (written by an import killed before it recorded it, so that
        uninstall would leave it): the import writes only that unit and records it (no swap)."""
        return self.kind == PlanKind.CURRENT and self.unit is not None \
            and not (units.ours(self.name) and self.unit_recorded)

    @property
    def marked(self) -> frozenset[str]:
        """The env keys whose values are never shown (the site's, the bundle's `secret_env`): a secret
        changed or removed is still one."""
        return self.masked | self.was_masked | frozenset(self.target.run.secret_env or ())

    def _source(self, key: Key) -> Source:
        """A new container's setting: the site file's or the bundle's (a repair's: as recorded at install)."""
        return Source.SITE if key in self.by_site else Source.BUNDLE

    def lines(self) -> list[str]:
        out = []
        if self.repair:
            out.append(f"repair {self.name}: {self.new_version or self.new_image_ref} is installed (generation "
                       f"{self.repair.generation}) but {self.repair.why}")
        if self.kind == PlanKind.CURRENT:
            out.append(f"{self.name} {self.new_version or ''} is already installed and healthy (container "
                       f"{self.old.id[:12]}, image {self.new_image_id[:19]})"
                       + ("" if self.unit_only else ": nothing to do"))
        elif self.old is None:  # a first install, or the repair of a container that is missing
            what = f"  recreate {self.name} with the settings recorded at install:" if self.repair else \
                f"install {self.name}:"
            out.append(f"{what} new container from {self.new_image_ref} ({self.new_image_id[:19]})")
            run = self.target.run
            for p in run.ports or ():
                out.append(f"  publish port {p} ({self._source(Key(Kind.PORT, parse_port(p).key))})")
            for v in run.volumes or ():
                out.append(f"  mount {v} ({self._source(Key(Kind.VOLUME, parse_volume(v).target))})")
            if install_touches_existing_data(self.target):
                out.append("  data already in those volumes/directories is backed up before the first start")
        elif self.kind == PlanKind.UNCHANGED:
            out.append(f"{self.name} already runs {self.new_image_ref} ({self.new_image_id[:19]}): nothing to swap")
        else:
            old = self.old
            verb = {PlanKind.ROLLBACK: "roll back", PlanKind.REPAIR: "replace"}.get(self.kind, "update")
            out.append(f"{verb} {self.name}: "
                       + version_change(old.version, old.image_ref, self.new_version, self.new_image_ref))
            out.append(f"  container {self.name} ({old.id[:12]}): image {old.image_ref} "
                       f"({(old.image_id or '')[:19]}) -> {self.new_image_ref} ({self.new_image_id[:19]})")
            out.append(f"  stop it{' (it is not running)' if not old.running else ''}, keep it (stopped) as "
                       f"{self.name}.previous-<generation>, back up its writable mounts:")
            for m in self.mounts:
                size = "size unknown" if m.get("size") is None else human_or_unknown(m["size"])
                out.append(f"    {describe_mount(m['mount'])} [{size}]")
            if not self.mounts:
                out.append("    (no writable mounts)")
            out.append(f"  backup needs about {human_or_unknown(self.backup_estimate)} in the state dir"
                       + (f" (+{self.unknown_sizes} mount(s) of unknown size)" if self.unknown_sizes else ""))
            if self.kind == PlanKind.ROLLBACK:
                out.append(f"  then put generation {self.rollback_to['generation']} back with the data it had "
                           f"when it was replaced ({self.rollback_to.get('displaced_at')})")
            elif not (self.settings and self.settings.decisions):
                out.append("  then create the new container with the same settings, networks and mounts")
            else:
                out.append("  then create the new container with the same settings, networks and mounts, except:")
                out += [f"    {d.line(self.marked, self.prefer, self.by_site)}" for d in self.settings.decisions]
        if self.unit_only:
            out.append(f"  only its systemd unit {self.unit} is written (starts {self.name} at boot: the engine has "
                       f"no daemon to); the container is left as it runs")
        if self.unit and self.kind not in (PlanKind.UNCHANGED, PlanKind.CURRENT):
            out.append(f"  systemd unit {self.unit}: {'update' if Path(self.unit).exists() else 'write'} "
                       f"(starts {self.name} at boot: the engine has no daemon to)")
        if self.kind not in (PlanKind.UNCHANGED, PlanKind.CURRENT):
            out.append(f"  health check{f' ({Source.SITE})' if self.health_by_site else ''}: {self.health}")
            if self.followed:
                f, source = self.followed
                out.append(f"  the health check follows container port {f.port_key}: the bundle probes {f.was}, "
                           f"published here as {f.now} ({source})")
            if self.old and self.kind in (PlanKind.UPGRADE, PlanKind.REPAIR):
                out.append("  if it fails: remove the new container, restore the data exactly, restart the old one")
            elif self.kind == PlanKind.ROLLBACK:
                out.append("  if it fails: park it again, restore the current data exactly, restart the current one")
        for w in self.warnings:
            out.append(f"  warning: {w}")
        return out


def human_or_unknown(n: int | None) -> str:
    return "?" if n is None else human(n)


def install_touches_existing_data(target: ContainerTarget) -> bool:
    """A first install mounts named volumes or host paths, which may hold data from before."""
    return any(parse_volume(v).kind is not VolumeKind.ANONYMOUS for v in target.run.volumes or ())


def image_ref_for(client, target_ref: str, image_id: str) -> str:
    """The tag when it names exactly this image (nicer in `docker ps`), else the ID."""
    img = client.image(target_ref) if target_ref else None
    return target_ref if img and img["Id"] == image_id else image_id


def _current(state: StateDir, info: dict, gens: Generations) -> CurrentContainer:
    cur = gens.current
    app = state.app_of_container(container_name(info))
    rec = (state.installed(app) if app else None) or {}
    mine = cur if cur and cur.get("container_id") == info["Id"] else {}
    return CurrentContainer(
        id=info["Id"], image_id=info["Image"], image_ref=info["Config"].get("Image"),
        version=mine.get("version") or (rec.get("version") if rec.get("container_id") == info["Id"] else None),
        sequence=mine.get("sequence"), generation=mine.get("generation"), running=bool(info["State"].get("Running")),
    )


def plan_swap(client, state: StateDir, target: ContainerTarget, new_image_id: str, *, new_version: str | None = None,
              prefer: Side | None = None, masked: frozenset[str] = frozenset(), app: str | None = None,
              sequence: int | None = None, signed: ContainerTarget | None = None,
              systemd_unit: bool = False) -> SwapPlan:
    """Read the current container (if any) and describe the swap; changes nothing. An upgrade
    whose run settings conflict (importer.merge) is refused here, before anything is loaded.
    The installed release imported again (`sequence`) is nothing to do when its container runs as
    recorded, else a repair: the container recreated (from the recorded settings when it is missing).
    `signed`: the release's own target, before the site file (what each setting's source is, and the
    ports its health check means). `systemd_unit`: write a unit that starts it at boot (importer.units)."""
    name = target.name
    app = app or name
    client.ping()
    unit = _unit(client, name, systemd_unit)
    # The plan is shown (and confirmed) before the bundle's images are loaded: the new image may
    # not be in the engine yet; run_swap resolves it again.
    new_img = client.image(new_image_id) or {"Id": new_image_id, "Config": {}}
    loaded = "RepoTags" in new_img
    ref = image_ref_for(client, target.image, new_img["Id"]) if loaded else (target.image or new_image_id)
    old = client.container_named(name)
    installed = _installed_release(state, app, sequence, new_version, new_image_id)
    by_site = site_keys(signed.run.as_mapping(), target.run.as_mapping()) if signed else frozenset()
    health_by_site = signed is not None and _site_health(target.health_json()) != _site_health(signed.health_json())
    if not old:
        kind, repair = PlanKind.INSTALL, None
        if installed is not None:
            kind, repair = PlanKind.REPAIR, _repair(state, app, installed, "its container is missing")
            target = replace(target, run=RunSettings.from_json(repair.bundle.get("run", target.run.as_mapping())))
        check_host(client, run_config(target.run.as_mapping(), ref), replaced=None)  # before anything is loaded
        refuse_nested_binds(client, name, [(f"target.run.volumes.{i}", v) for i, v in enumerate(target.run.volumes or ())])
        hc = (new_img.get("Config") or {}).get("Healthcheck")
        plan = SwapPlan(kind, name, target, new_img["Id"], ref, new_version, masked=masked, app=app,
                        gate=target.health_json(), repair=repair, site_keys=by_site, health_by_site=health_by_site,
                        unit=unit)
        _follow_ports(plan, signed, target.run.ports or ())
        plan.health = _describe_health(plan.gate, hc, loaded)
        return plan
    current = _current(state, old, Generations(state.app_dir(app)))
    unchanged = old["Image"] == new_img["Id"] and old["State"].get("Running")
    kind, repair = PlanKind.UNCHANGED if unchanged else PlanKind.UPGRADE, None
    if installed is not None:
        why = _not_as_recorded(old, installed)
        kind, repair = (PlanKind.REPAIR, _repair(state, app, installed, why)) if why else (PlanKind.CURRENT, None)
    plan = SwapPlan(kind, name, target, new_img["Id"], ref,
                    new_version, old=current, prefer=Side(prefer) if prefer else None, masked=masked, app=app,
                    gate=target.health_json(), repair=repair, site_keys=by_site, health_by_site=health_by_site,
                    unit=unit, unit_recorded=unit is not None and (installed or {}).get("systemd_unit") == unit)
    if kind == PlanKind.CURRENT:
        return plan
    _fill_mounts(client, state, plan, old)
    hc = (new_img.get("Config") or {}).get("Healthcheck")
    old_img = client.image(old["Image"]) or {}
    if plan.kind in (PlanKind.UPGRADE, PlanKind.REPAIR):
        _merge_settings(plan, state, old, old_img)
        refuse_nested_binds(client, name, plan.binds)
        merged = plan.settings.merged if plan.settings else {}
        ports = [p for k, texts in merged.items() if k.kind is Kind.PORT for p in texts]  # type: ignore[attr-defined]
        _follow_ports(plan, signed, ports)
    if (old.get("Config") or {}).get("Healthcheck") != (old_img.get("Config") or {}).get("Healthcheck"):
        hc = old["Config"].get("Healthcheck")  # the user's override is carried over
    plan.health = _describe_health(plan.gate, hc, loaded or bool(hc))
    note_risks(plan, old)
    return plan


def _installed_release(state: StateDir, app: str, sequence: int | None, version: str | None,
                       image_id: str) -> dict | None:
    """The installed record when the release being imported is the installed one, else None."""
    rec = state.installed(app)
    if rec is None or sequence is None or not InstalledRecord.from_json(rec).is_release(sequence, version, image_id):
        return None
    return rec


def _not_as_recorded(info: dict, record: dict) -> str | None:
    """Why the container is not the installed release as recorded and healthy (None when it is)."""
    st = info["State"]
    if info["Id"] != record.get("container_id"):
        return f"container {info['Id'][:12]} is not the recorded {str(record.get('container_id'))[:12]}"
    if info["Image"] != record.get("image_id"):
        return f"it runs image {info['Image'][:19]}, not the recorded {str(record.get('image_id'))[:19]}"
    if not st.get("Running") or st.get("Restarting"):
        return f"it is {st.get('Status') or 'not running'}"
    if (st.get("Health") or {}).get("Status") == "unhealthy":
        return "its HEALTHCHECK reports unhealthy"
    return None


def _repair(state: StateDir, app: str, record: dict, why: str) -> Repair:
    cur = Generations(state.app_dir(app)).current or {}
    return Repair(why, cur.get("generation", record.get("generation")), dict(cur.get("bundle") or {}))


def _merge_settings(plan: SwapPlan, state: StateDir, old: dict, old_img: dict) -> None:
    """base: the run settings recorded when the current generation was installed (None for a
    container bundle never installed); theirs: the new target's; ours: the running container."""
    recorded = (Generations(state.app_dir(plan.key)).current or {}).get("bundle") or {}
    base = None
    if "run" in recorded:
        base = settings_of_run(recorded["run"])
        # the site's env keys as recorded; a record from before they were: every env key it set, on doubt
        plan.was_masked = frozenset(recorded.get("site_env", recorded["run"].get("env") or ())) | frozenset(
            recorded["run"].get("secret_env") or ())
        # what the site file decided for the running version: a setting it no longer sets changes by it
        plan.was_site_keys = keys_from_json(recorded.get("site_keys")) | {
            Key(Kind.ENV, k) for k in recorded.get("site_env") or ()}
    theirs = settings_of_run(plan.target.run.as_mapping())
    ours = settings_of_container(old, old_img, named=set(theirs if base is None else base))
    plan.settings = merge(base, theirs, ours, plan.prefer)
    conflicts = plan.settings.conflicts
    if conflicts and plan.prefer is None:
        raise SettingsConflict("; ".join(d.conflict(plan.marked) for d in conflicts)
                               + ": choose with --prefer bundle or --prefer local")
    plan.binds = [(f"the {'bundle' if plan.settings.merged[k] == theirs.get(k) else 'kept'} mount at {k.name}",
                   str(v)) for k, v in plan.settings.merged.items() if k.kind is Kind.VOLUME and str(v).startswith("/")]
    plan.setting_changes = plan.settings.changes(ours)


def refuse_nested_binds(client, name: str, binds: list[tuple[str, str]]) -> None:
    """The nested-bind rule against every other container on this engine; the app's own (the running
    container, its kept generations) are not others."""
    ownership.refuse_nested_binds(client, binds, lambda cname, labels: cname == name
                                  or cname.startswith(f"{name}.previous-"))


def plan_rollback(client, state: StateDir, app: str, to: int | None = None) -> SwapPlan:
    """Describe putting a kept generation of app `app` back (its container and its data): generation
    `to`, or the most recently displaced one."""
    client.ping()
    app_dir = state.app_dir(app)
    name = state.container_of(app)
    gens = Generations(app_dir)
    prev = gens.previous()
    if not prev:
        raise UsageProblem(f"no previous generation of {app} is kept: nothing to roll back to")
    target_item = prev[0] if to is None else next((i for i in prev if i["generation"] == to), None)
    if target_item is None:
        cur = (gens.current or {}).get("generation")
        why = "it is the installed one" if to == cur else "it is not kept"
        raise UsageProblem(f"cannot roll {app} back to generation {to}: {why} "
                           f"(kept: {', '.join(str(i['generation']) for i in prev)})")
    if not client.container(target_item["container_id"]):
        raise EnvironmentProblem(f"the previous container of {name} ({target_item['parked_name']}) is gone")
    manifest = data.load_backup(app_dir / target_item["backup_dir"]) if target_item.get("backup_dir") else None
    if manifest is None:
        raise EnvironmentProblem(f"the data backup of generation {target_item['generation']} of {name} is missing")
    cur = client.container_named(name)
    if not cur:
        raise EnvironmentProblem(f"no container named {name} is installed")
    health = target_item.get("health")  # its own (None: from before generations kept theirs, or adopted)
    ref = target_item.get("image_ref") or target_item["image_id"]
    plan = SwapPlan(PlanKind.ROLLBACK, name, ContainerTarget(name, ref, RunSettings()), target_item["image_id"],
                    ref, target_item.get("version"), old=_current(state, cur, gens), rollback_to=target_item,
                    app=app, gate=health, unit=_unit(client, name, False))
    _fill_mounts(client, state, plan, cur)
    info = client.container(target_item["container_id"])
    plan.health = HealthGate(health, info["Config"].get("Healthcheck")).describe()
    note_risks(plan, cur)
    return plan


def _unit(client, name: str, asked: bool) -> str | None:
    """The systemd unit the swap writes (asked) or keeps current (one bundle wrote before), on an engine
    with no daemon that restarts containers after a reboot; asked on one that has: refused."""
    if client.restarts_after_reboot:
        if asked:
            raise EngineRefused(f"systemd unit for {name}: {client.describe()} restarts containers itself after "
                                f"a reboot (their restart policy); --systemd-unit is for Podman hosts")
        return None
    if not (asked or units.ours(name)):
        return None
    path = units.unit_path(name)
    where = next(p for p in (path.parent, *path.parents) if p.exists())
    if not os.access(where, os.W_OK):
        raise EnvironmentProblem(f"systemd unit {path}: {where} is not writable by this user "
                                 f"(run as root, or set BUNDLE_SYSTEMD_DIR)")
    return str(path)


def _follow_ports(plan: SwapPlan, signed: ContainerTarget | None, ports) -> None:
    """The signed http/tcp probe follows its container port to where the new container publishes it
    (importer.health.follow_published; a port no longer published is refused here,
    before anything is loaded or stopped), with where that port's host side comes from."""
    if plan.health_by_site:
        return  # the site file's probe says where this host reaches the app
    followed = follow_published(plan.gate, signed.run.ports or () if signed else (), ports)
    if followed is None:
        return
    key = Key(Kind.PORT, followed.port_key)
    decision = next((d for d in (plan.settings.decisions if plan.settings else ()) if d.key == key), None)
    if decision is not None and decision.origin is not Origin.BUNDLE and decision.result == decision.ours:
        source = Source.HOST
    elif key in plan.by_site:
        source = Source.SITE
    else:
        source = Source.HOST if plan.old else Source.BUNDLE
    plan.gate, plan.followed = followed.health, (followed, source)


def _site_health(health: dict | None) -> dict:
    """The part of the health settings a site file may set (importer.site HEALTH_KEYS)."""
    return {k: v for k, v in (health or {}).items() if k in HEALTH_KEYS}


def _describe_health(health: dict | None, image_hc: dict | None, image_known: bool) -> str:
    gate = HealthGate(health, image_hc)
    if not image_known and not gate.probe_kind:
        return "the image's HEALTHCHECK if it has one, else still running after 10 s"
    return gate.describe()


def _fill_mounts(client, state: StateDir, plan: SwapPlan, old: dict) -> None:
    """The mounts the swap backs up (not another app's volumes, importer.ownership), with their sizes."""
    mounts = ownership.without_foreign(client, state, plan.key, data.backed_up_mounts(old))
    sizes = data.estimate_sizes(client, mounts)
    by_dest = {m["Destination"]: m for m in old.get("Mounts") or []}
    plan.mounts = [{"mount": by_dest[m["destination"]], "size": s} for m, s in zip(mounts, sizes, strict=True)]
    plan.backup_estimate = sum(s for s in sizes if s is not None)
    plan.unknown_sizes = sum(1 for s in sizes if s is None)


def note_risks(plan: SwapPlan, old: dict) -> None:
    """Warnings for the operator, and the typed blockers preflight refuses on."""
    labels = old["Config"].get("Labels") or {}
    if old["HostConfig"].get("AutoRemove"):
        plan.blockers.append(Blocker.AUTO_REMOVE)
        plan.warnings.append(Blocker.AUTO_REMOVE.warning)
    if "com.docker.compose.project" in labels:
        plan.warnings.append(COMPOSE_WARNING)
    if "com.docker.swarm.service.id" in labels:
        plan.blockers.append(Blocker.SWARM_TASK)
        plan.warnings.append(Blocker.SWARM_TASK.warning)


def preflight(client, state: StateDir, plan: SwapPlan, helper_candidates: list[str]) -> str | None:
    """Checks made before anything is stopped; returns the image used to restore data (None when
    no data can need restoring)."""
    client.ping()
    if SwapJournal.load(state.app_dir(plan.key)):
        raise EnvironmentProblem(f"an interrupted swap of {plan.name} is pending: run `bundle recover` first")
    for blocker in plan.blockers:
        raise EnvironmentProblem(blocker.refusal(plan.name))
    if not client.image(plan.new_image_id):
        raise EnvironmentProblem(f"image {plan.new_image_id} is not in the engine")
    current = client.container(plan.name)
    if plan.old is None:  # a first install, or the repair of a missing container
        if current:
            raise EnvironmentProblem(f"a container named {plan.name} appeared since the plan was made; plan again")
        if not install_touches_existing_data(plan.target):
            return None  # nothing that existed before can be touched
        return data.find_helper_image(client, helper_candidates)
    if not current or current["Id"] != plan.old.id:
        raise EnvironmentProblem(f"container {plan.name} changed since the plan was made; plan again")
    need = int(plan.backup_estimate * BACKUP_MARGIN) + BACKUP_MIN_FREE
    free = shutil.disk_usage(state.root).free
    if free < need:
        raise EnvironmentProblem(f"not enough space in {state.root} for the data backup: "
                                 f"{human_or_unknown(free)} free, about {human_or_unknown(need)} needed")
    if not plan.mounts:
        return None
    return data.find_helper_image(client, helper_candidates)


# -- the host: ports, bind sources, networks -------------------------------------------------

BUILTIN_NETWORKS = ("", "default", "bridge", "host", "none")


@dataclass(frozen=True)
class HostPort:
    ip: str  # "" (or 0.0.0.0, ::): every address
    port: int
    proto: str

    def overlaps(self, other: "HostPort") -> bool:
        return (self.port, self.proto) == (other.port, other.proto) and (
            self.ip in ANY_ADDRESS or other.ip in ANY_ADDRESS or self.ip == other.ip)

    def __str__(self) -> str:
        return f"{self.ip or '*'}:{self.port}/{self.proto}"


def wanted_ports(hostconfig: dict) -> list[HostPort]:
    """The fixed host ports a create body publishes (a random or ranged host port is the engine's)."""
    out = []
    for key, binds in (hostconfig.get("PortBindings") or {}).items():
        proto = key.partition("/")[2] or "tcp"
        for b in binds or []:
            port = str((b or {}).get("HostPort") or "")
            if port.isdigit() and int(port) > 0:
                out.append(HostPort((b or {}).get("HostIp") or "", int(port), proto))
    return out


def port_holder(want: HostPort, published: dict[HostPort, str]) -> str | None:
    """The container (name) publishing a port that overlaps `want`, if any."""
    return next((who for p, who in published.items() if p.overlaps(want)), None)


def bind_sources(hostconfig: dict) -> list[str]:
    """Host paths a create body bind-mounts (Binds and Mounts of type bind)."""
    out = [spec.source for spec in map(parse_volume, hostconfig.get("Binds") or []) if spec.kind is VolumeKind.BIND]
    out += [m["Source"] for m in hostconfig.get("Mounts") or [] if m.get("Type") == "bind" and m.get("Source")]
    return out


def networks_needed(body: dict) -> list[str]:
    """User-defined networks a create body joins (the built-in ones always exist)."""
    mode = body["config"].get("HostConfig", {}).get("NetworkMode") or ""
    nets = [] if mode in BUILTIN_NETWORKS or mode.startswith("container:") else [mode]
    return nets + [n for n in body.get("extra_networks") or {} if n not in nets and n not in BUILTIN_NETWORKS]


def _published(client, skip_id: str | None) -> dict[HostPort, str]:
    out = {}
    for c in client.containers():
        if c["Id"] == skip_id:
            continue
        for p in c.get("Ports") or []:
            if p.get("PublicPort"):
                out[HostPort(p.get("IP") or "", int(p["PublicPort"]), p.get("Type") or "tcp")] = \
                    (c.get("Names") or ["?"])[0].lstrip("/")
    return out


def _in_use_here(p: HostPort) -> bool:
    """Whether binding the port on this host fails because something holds it."""
    family = socket.AF_INET6 if ":" in p.ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if p.proto == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((p.ip if p.ip not in ANY_ADDRESS else ("::" if family == socket.AF_INET6 else "0.0.0.0"), p.port))
    except OSError as e:
        return e.errno == errno.EADDRINUSE  # not ours to judge otherwise (privileged port, foreign address)
    return False


def host_problems(client, body: dict, replaced: str | None) -> list[str]:
    """One line per thing the host lacks for creating this container (see the module docstring)."""
    hc = body["config"].get("HostConfig") or {}
    local = client.is_local
    problems = []
    kept = []
    if replaced:
        kept = wanted_ports((client.container(replaced) or {}).get("HostConfig") or {})
    published = _published(client, replaced)
    for p in wanted_ports(hc):
        holder = port_holder(p, published)
        if holder:
            problems.append(f"host port {p} is already published by container {holder}")
        elif local and not any(k.overlaps(p) for k in kept) and _in_use_here(p):
            problems.append(f"host port {p} is in use by another program on this host")
    if local:
        for src in bind_sources(hc):
            if not os.path.exists(src):
                problems.append(f"bind-mount source {src} does not exist (the engine would create an empty "
                                f"directory there); create it or fix the setting")
    for net in networks_needed(body):
        if not client.network_exists(net):
            problems.append(f"network {net} does not exist; create it first (`docker network create {net}`)")
    return problems


def check_host(client, body: dict, replaced: str | None) -> None:
    """Refuse (exit 1, nothing changed) a container this host cannot run as asked."""
    problems = host_problems(client, body, replaced)
    if problems:
        raise EnvironmentProblem("this host is not ready: " + "; ".join(problems) + "; nothing was changed")
