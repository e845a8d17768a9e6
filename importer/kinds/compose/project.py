"""A Compose project on this engine, as Compose itself names and labels it, and the plan of its swap.

Names: container `PROJECT-SERVICE-1`, network `PROJECT_NET`, volume `PROJECT_VOL` (Compose's
own), each carrying Compose's labels (`com.docker.compose.project`, `.service`,
`.container-number`, `.oneoff`, `.config-hash`; `.network`, `.volume`) so that `docker compose -p
PROJECT ps/logs` sees the project, and this tool's `io.bundle.app` (importer.ownership).

The config hash is sha256 over the service's signed settings and the image ID it runs: a service
whose hash is the running container's is not recreated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from bundlecore.refusals import HostPolicyRefused, SettingsConflict
from bundlecore.release import ComposeService, ComposeTarget, RunSettings
from importer import ownership
from importer.hostpolicy import nested_binds
from importer.masking import shown_env
from importer.merge import (Decision, Key, Kind, MergeResult, Settings, Side, merge, run_with, settings_of_container,
                            settings_of_run)
from importer.runconfig import run_config
from importer.versiontext import shown_version

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
HASH_LABEL = "com.docker.compose.config-hash"
NETWORK_LABEL = "com.docker.compose.network"
VOLUME_LABEL = "com.docker.compose.volume"
GENERATION_LABEL = "io.bundle.compose.generation"  # which generation of the project a container belongs to


class Action(StrEnum):
    """What the swap does to one service."""

    CREATE = "create"        # new in this release (or first install)
    RECREATE = "recreate"    # its image or settings changed: the old container is parked, a new one made
    KEEP = "keep"            # unchanged: left running as it is
    RETIRE = "retire"        # no longer in the project: parked (kept, like every displaced container)


def container_name(project: str, service: str) -> str:
    return f"{project}-{service}-1"


def network_name(project: str, net: str) -> str:
    return f"{project}_{net}"


def config_hash(project: str, svc: ComposeService, image_id: str) -> str:
    doc = {"project": project, "service": svc.to_json(), "image_id": image_id}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def service_labels(project: str, service: str, digest: str, app: str, generation: int) -> dict[str, str]:
    return {PROJECT_LABEL: project, SERVICE_LABEL: service, NUMBER_LABEL: "1", ONEOFF_LABEL: "False",
            HASH_LABEL: digest, ownership.APP_LABEL: app, GENERATION_LABEL: str(generation)}


def _ns(seconds: Any) -> int:
    return int(float(seconds) * 1e9)


def create_body(project: str, svc: ComposeService, image_id: str, labels: dict[str, str]) -> dict:
    """The create body of one service (importer.runconfig for the run settings, then what only
    Compose has): {"config": POST /containers/create body, "extra_networks": {net: endpoint}}."""
    body = run_config(svc.run.as_mapping(), image_id)
    cfg, hc = body["config"], body["config"]["HostConfig"]
    cfg["Labels"] = {**cfg.get("Labels", {}), **labels}
    if svc.healthcheck:
        h = svc.healthcheck
        cfg["Healthcheck"] = {"Test": list(h["test"]), **{api: _ns(h[k]) for k, api in (
            ("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")) if k in h},
            **({"Retries": h["retries"]} if "retries" in h else {})}
    if svc.tmpfs:
        hc["Tmpfs"] = {t.partition(":")[0]: t.partition(":")[2] for t in svc.tmpfs}
    if svc.ulimits:
        hc["Ulimits"] = [{"Name": n, "Soft": u["soft"], "Hard": u["hard"]} for n, u in sorted(svc.ulimits.items())]
    endpoints = {network_name(project, n): {"Aliases": [svc.name, *(ep.get("aliases") or ())]}
                 for n, ep in svc.networks.items()}
    first = sorted(endpoints)[0]
    hc["NetworkMode"] = first
    cfg["NetworkingConfig"] = {"EndpointsConfig": {first: endpoints.pop(first)}}
    body["extra_networks"] = endpoints
    return body


def compared_settings(settings: Settings, svc: ComposeService) -> Settings:
    """The settings the merge compares for a service: its network is the project's and its tmpfs
    mounts Compose's own `tmpfs`, neither a run setting this host changes."""
    tmpfs = {t.partition(":")[0] for t in svc.tmpfs or ()}
    return {k: v for k, v in settings.items()
            if k.kind is not Kind.NETWORK and not (k.kind is Kind.VOLUME and k.name in tmpfs)}


def merged_service(svc: ComposeService, recorded: dict | None, live: dict, live_image: dict,
                   prefer: Side | None = None, masked: frozenset[str] = frozenset()) -> tuple[ComposeService, MergeResult]:
    """The service as the swap makes it: the release's settings (the site file's over them) merged
    three-way (importer.merge) with those it was installed with (`recorded`; None for a service
    --adopt takes over, whose own settings are then this host's) and its running container's. A
    conflict is refused (exit 3) unless `prefer` decides it, as is a bind kept from the running
    container that nests with another (the host policy's nested-bind rule)."""
    theirs = compared_settings(settings_of_run(svc.run.as_mapping()), svc)
    base = None if recorded is None else compared_settings(settings_of_run((recorded.get("settings") or {}).get("run")), svc)
    ours = compared_settings(settings_of_container(live, live_image, named=set(theirs if base is None else base)), svc)
    result = merge(base, theirs, ours, prefer)
    if result.conflicts and prefer is None:
        raise SettingsConflict(f"services.{svc.name}: " + "; ".join(d.conflict(masked) for d in result.conflicts)
                               + ": choose with --prefer bundle or --prefer local")
    kept = [(f"services.{svc.name}: the kept mount at {k.name}", str(v)) for k, v in result.merged.items()
            if k.kind is Kind.VOLUME and v != theirs.get(k)]
    if kept:  # the host policy's nested-bind rule over the binds kept from the running container too
        nested = nested_binds([(f"services.{svc.name}.volumes.{i}", v) for i, v in enumerate(svc.run.volumes or ())]
                              + kept)
        if nested:
            raise HostPolicyRefused(nested)
    signed = svc.run.as_mapping()
    run = run_with(signed, theirs, result.merged)
    return (svc if run is signed else replace(svc, run=RunSettings.from_json(run))), result


def shown_record(record: dict | None) -> dict | None:
    """An installed record as outputs show it (`--json`, the audit log): every env value of the
    target and of each service's settings masked as importer.masking says (the site file's keys
    recorded with it, the signed `secret_env`). The record on disk keeps the values: the next
    upgrade's three-way merge compares them."""
    if not record:
        return record
    marked = frozenset(record.get("site_env") or ())

    def run_shown(run: dict) -> dict:
        keys = marked | frozenset(run.get("secret_env") or ())
        env = run.get("env")
        return {**run, "env": {k: shown_env(k, v, keys) for k, v in env.items()}} if env else run

    out = dict(record)
    target = out.get("target") or {}
    if "compose" in target:
        services = {n: {**s, "run": run_shown(s.get("run") or {})} for n, s in target["compose"]["services"].items()}
        out["target"] = {**target, "compose": {**target["compose"], "services": services}}
    out["services"] = {n: {**s, "settings": {**s["settings"], "run": run_shown(s["settings"].get("run") or {})}}
                       if s.get("settings") else s for n, s in (out.get("services") or {}).items()}
    if out.get("previous"):  # a kept generation's own record (the one `bundle rollback` puts back)
        out["previous"] = [{**p, "record": shown_record(p["record"])} if p.get("record") else p for p in out["previous"]]
    return out


@dataclass
class ServicePlan:
    """One service in the plan: what happens to it, and the containers involved."""

    name: str
    action: Action
    container: str
    image_ref: str | None = None
    image_id: str | None = None
    config_hash: str | None = None
    old_id: str | None = None
    old_image_id: str | None = None
    changes: list[str] = field(default_factory=list)  # why it is recreated
    service: ComposeService | None = None  # as the swap creates it (the three-way merge's result)
    decisions: list[Decision] = field(default_factory=list)  # the settings the merge decided
    target_parked: str | None = None  # rollback: where the container put back is parked
    target_backup: str | None = None  # rollback: the data it had when it was replaced

    def line(self) -> str:
        what = {Action.CREATE: f"create {self.container} from {self.image_ref}",
                Action.RECREATE: f"recreate {self.container} ({'; '.join(self.changes)})",
                Action.KEEP: f"keep {self.container} running (image and settings unchanged)",
                Action.RETIRE: f"retire {self.container} (no longer in the project: stopped and kept parked)"}
        return f"  service {self.name}: {what[self.action]}"

    def rollback_line(self, current_gen: int | None) -> str:
        park = f"park {self.container} as {self.container}.previous-{current_gen} (its writable mounts backed up)"
        back = (f"put {self.target_parked} back as {self.container}"
                + (" with the data it had when it was replaced" if self.target_backup else " (no writable mounts)"))
        what = {Action.RECREATE: f"{park}, then {back}", Action.CREATE: back, Action.RETIRE: park,
                Action.KEEP: f"keep {self.container} running (the same container in both generations)"}
        return f"  service {self.name}: {what[self.action]}"


@dataclass
class ProjectPlan:
    """What the swap of a Compose project will do; making it changed nothing."""

    app: str
    target: ComposeTarget
    kind: str                       # install | upgrade
    services: list[ServicePlan]
    new_version: str | None = None
    current: str | None = None      # the version installed now
    generation: int = 1
    warnings: list[str] = field(default_factory=list)
    masked: frozenset[str] = frozenset()    # env keys never shown (importer.masking)
    prefer: Side | None = None
    site_keys: dict[str, frozenset[Key]] = field(default_factory=dict)  # per service: what the site file decides
    probation: float = 0.0                  # s: the project's window once every service passed its gate
    rollback_to: dict | None = None  # a rollback: the kept generation put back (installed record's `previous` item)
    current_generation: int | None = None

    @property
    def key(self) -> str:
        return self.app

    @property
    def project(self) -> str:
        return self.target.project.project

    def by_name(self) -> dict[str, ServicePlan]:
        return {s.name: s for s in self.services}

    def changed(self) -> list[ServicePlan]:
        return [s for s in self.services if s.action is not Action.KEEP]

    def lines(self) -> list[str]:
        if self.kind == "rollback":
            return self._rollback_lines()
        head = (f"{self.kind} compose project {self.project} (app {self.app}) "
                + (f"{self.current} -> " if self.current else "") + f"{self.new_version} (generation {self.generation})")
        out = [head]
        for s in self.services:
            out.append(s.line())
            out += [f"    {d.line(self.masked, self.prefer, self.site_keys.get(s.name, frozenset()))}"
                    for d in s.decisions]
        out += self._probation_lines()
        if self.kind == "upgrade" and self.changed():
            out.append("  the writable mounts of every service recreated or retired are backed up first; if any "
                       "service fails its gate, the whole project goes back with that data restored")
        return out + [f"  warning: {w}" for w in self.warnings]

    def _rollback_lines(self) -> list[str]:
        back = self.rollback_to or {}
        out = [f"roll back compose project {self.project} (app {self.app}): {shown_version(self.current)} -> "
               f"{shown_version(self.new_version)} (generation {self.generation}, replaced {back.get('displaced_at')})"]
        out += [s.rollback_line(self.current_generation) for s in self.services]
        out.append(f"  the current generation {self.current_generation} is kept (parked, its data backed up): "
                   f"`bundle rollback {self.app} --to {self.current_generation}` returns to it")
        out.append("  each service put back passes its own gate, in dependency order; if any fails: those put back "
                   "are parked again, the current data restored exactly, the current services restarted")
        return out + self._probation_lines() + [f"  warning: {w}" for w in self.warnings]

    def _probation_lines(self) -> list[str]:
        if not (self.probation and self.changed()):
            return []
        return [f"  probation: every service watched {self.probation:g} s once all passed their gates (a restart or "
                f"failing health check puts the whole project back); the previous version stays parked"]


def differences(old: dict | None, new: dict) -> list[str]:
    """Why a service is recreated, from its recorded settings (the installed record) and the new ones."""
    if old is None:
        return ["taken over: made by Compose, not by this tool (--adopt)"]
    out = []
    if old.get("image_id") != new.get("image_id"):
        out.append(f"image {old.get('image_ref')} -> {new.get('image_ref')}")
    if old.get("settings") != new.get("settings"):
        keys = sorted(set(old.get("settings") or {}) | set(new.get("settings") or {}))
        out.append("settings changed: " + ", ".join(k for k in keys
                                                       if (old.get("settings") or {}).get(k) != new["settings"].get(k)))
    return out or ["its container does not carry the expected config hash"]
