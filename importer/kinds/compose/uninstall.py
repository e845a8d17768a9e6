"""`bundle uninstall` of a Compose project, journaled on the shared step runner with the container
kind's rules (importer.kinds.container.uninstall), per service:

Steps: BEGIN, STOP_OLD:<service> (reverse dependency order), BACKUP:<service> (the final backup
of its writable mounts, `final-backup/<service>/`), REMOVE_OLD:<service> (its container and the
containers of kept generations parked for it), REMOVE_VOLUMES (the project's volumes bundle created
for the app, unless --keep-data, and its networks), CLEAR_STATE. A complete final backup is the
point of no return: a crash or an error before one is undone (every service gets its restart
policy back and runs again if it ran, in dependency order, each gated again; nothing else was
touched); after it,
`bundle recover` finishes what the operator confirmed (the remaining backups are taken before
anything is removed).

Only the containers the installed record names, with the IDs it records, are removed (one replaced
by hand is refused); a kept generation's only while it has its parked name and the app's label;
host directories are backed up, never removed; a volume another container uses, another app owns
or bundle did not create for the app is kept. Nothing is deleted from the state dir: apps/<app>/
is renamed to removed/<app>-<time>/, and the anti-rollback mark stays.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field

from bundlecore.errors import EnvironmentProblem, OperatorNeeded, UsageProblem, reason
from bundlecore.progress import human
from bundlecore.refusals import OwnershipRefused
from bundlecore.release import ComposeTarget, Result, signers_of, target_from_json
from importer import ownership
from importer.audit import AuditEvent, BundleRef, EventKind, PhaseTimer, now
from importer.backup import data
from importer.health import HealthGate
from importer.kinds.compose.machine import (ProjectJournal, ProjectRecord, Rules, ServiceStep, ServiceSwap, Step,
                                            StepRule, step_of)
from importer.kinds.compose.project import network_name
from importer.state import StateDir
from importer.steps import Direction, Resume, StepRunner
from importer.uninstalling import UninstallRun

FINAL_BACKUP = "final-backup"
KIND = "uninstall"


@dataclass
class UninstallPlan:
    """What `bundle uninstall` of a project will do; `lines()` is what the operator confirms."""

    app: str
    project: str
    record: dict
    keep_data: bool
    containers: dict[str, dict | None]                      # service -> its live container (None: gone)
    parked: list[dict] = field(default_factory=list)        # {"service", "id", "name"} of kept generations
    volumes: list[str] = field(default_factory=list)        # removed unless keep_data
    shared: list[str] = field(default_factory=list)         # other containers use them: kept
    foreign: dict[str, str] = field(default_factory=dict)   # volume -> the app that owns it: untouched
    not_created: list[str] = field(default_factory=list)    # not created by bundle for the app: kept
    binds: list[str] = field(default_factory=list)          # host directories: backed up, never removed
    networks: list[str] = field(default_factory=list)       # the project's networks bundle created: removed
    backup_estimate: int = 0

    def lines(self) -> list[str]:
        rec = self.record
        out = [f"uninstall compose project {self.project} (app {self.app}) {rec.get('version')} "
               f"(generation {rec.get('generation')})"]
        for svc, info in self.containers.items():
            name = rec["services"][svc]["container"]
            out.append(f"  service {svc}: " + (f"stop and remove container {name} ({info['Id'][:12]})" if info
                                                else f"container {name}: already gone"))
        if any(self.containers.values()):
            out.append(f"  final backup of their data first (about {human(self.backup_estimate)}), kept in the state dir")
        out += [f"  remove kept generation {p['name']} ({p['id'][:12]})" for p in self.parked]
        out += [f"  {'keep' if self.keep_data else 'remove'} volume {v}" for v in self.volumes]
        out += [f"  keep volume {v} (other containers use it)" for v in self.shared]
        out += [f"  keep volume {v} (it belongs to app {o}: neither backed up nor removed)" for v, o in self.foreign.items()]
        out += [f"  keep volume {v} (bundle did not create it for {self.app}; backed up, not removed)"
                for v in self.not_created]
        out += [f"  keep host directory {b} (never removed)" for b in self.binds]
        out += [f"  remove network {n}" for n in self.networks]
        out.append("  move the state of the app to removed/ (the anti-rollback mark stays)")
        return out


def plan_uninstall(client, state: StateDir, app: str, *, keep_data: bool = False) -> UninstallPlan:
    """Describe the uninstall of project `app`; changes nothing."""
    client.ping()
    rec = state.installed(app)
    if not rec:
        raise UsageProblem(f"{app} is not installed (see `bundle list`)")
    containers: dict[str, dict | None] = {}
    for svc in [*rec.get("order", []), *sorted(set(rec["services"]) - set(rec.get("order", [])))]:
        s = rec["services"][svc]
        info = client.container_named(s["container"])
        if info is not None and info["Id"] != s.get("container_id"):
            raise OwnershipRefused(f"container {s['container']} ({info['Id'][:12]}) is not the one bundle installed "
                                   f"for {app} ({str(s.get('container_id'))[:12]}); it is not removed")
        containers[svc] = info
    plan = UninstallPlan(app, rec["project"], rec, keep_data, containers)
    for gen in rec.get("previous") or []:
        for svc, name in (gen.get("parked") or {}).items():
            info = client.container(name) if name else None
            if info and info["Name"].lstrip("/") == name and \
                    (info["Config"].get("Labels") or {}).get(ownership.APP_LABEL) == app:
                plan.parked.append({"service": svc, "id": info["Id"], "name": name})
    target = target_from_json(rec["target"])
    assert isinstance(target, ComposeTarget)
    for net in target.project.networks:
        name = network_name(plan.project, net)
        if client.network_exists(name) and \
                (client.inspect_network(name).get("Labels") or {}).get(ownership.APP_LABEL) == app:
            plan.networks.append(name)
    live = [i for i in containers.values() if i]
    unique = {(m["type"], m.get("name"), m.get("source")): m for i in live for m in data.backed_up_mounts(i)}
    mounts = ownership.uninstall_mounts(client, state, app, list(unique.values()),
                                        {i["Id"] for i in live} | {p["id"] for p in plan.parked})
    plan.foreign, plan.binds, plan.shared = mounts.foreign, mounts.binds, mounts.shared
    plan.not_created, plan.volumes = mounts.not_created, mounts.volumes
    plan.backup_estimate = sum(s or 0 for s in data.estimate_sizes(client, mounts.backed_up))
    return plan


def uninstall(client, state: StateDir, plan: UninstallPlan, *, out=print) -> str:
    """Run the plan; returns where the app's state (with the final backups) was moved."""
    if ProjectJournal.load(state.app_dir(plan.app)):
        raise EnvironmentProblem(f"an interrupted swap of {plan.app} is pending: run `bundle recover` first")
    rec, services = plan.record, {}
    for svc, info in plan.containers.items():
        name = rec["services"][svc]["container"]
        if info is not None and (client.container(info["Id"]) or {}).get("Id") != info["Id"]:
            raise EnvironmentProblem(f"container {name} changed since the plan was made; plan again")
        s = ServiceSwap(svc, "retire", name)
        if info is not None:
            s.old_id, s.old_image_id, s.was_running = info["Id"], info["Image"], bool(info["State"].get("Running"))
            s.restart_policy = info["HostConfig"].get("RestartPolicy") or {"Name": "no"}
            s.mounts = [m for m in data.backed_up_mounts(info) if m.get("name") not in plan.foreign]
            s.backup_dir = f"{FINAL_BACKUP}/{svc}"
            s.old_health = (rec["services"][svc].get("settings") or {}).get("health")
        services[svc] = s
    order = list(plan.containers)
    swap_id = uuid.uuid4().hex[:12]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + swap_id[:8]  # unique even within a second
    steps = ([Step.BEGIN] + [ServiceStep.of(Step.STOP_OLD, n) for n in reversed(order)]
             + [ServiceStep.of(k, n) for k in (Step.BACKUP, Step.REMOVE_OLD) for n in order]
             + [Step.REMOVE_VOLUMES, Step.CLEAR_STATE])
    record = ProjectRecord(
        kind=KIND, app=plan.app, project=plan.project, target=rec["target"], order=order, services=services,
        steps=[str(s) for s in steps], generation=int(rec.get("generation") or 0), keep=0,
        bundle={"sha256": rec.get("bundle_sha256"), "name": plan.app, "signers": rec.get("signers") or []},
        version=rec.get("version"), sequence=rec.get("sequence"), installed_before=rec, swap_id=swap_id,
        version_before=rec.get("version"), started_at=now(), pid=os.getpid(),
        uninstall={"keep_data": plan.keep_data, "volumes": plan.volumes, "networks": plan.networks,
                   "parked": plan.parked, "removed_to": f"removed/{plan.app}-{stamp}"})
    state.app_dir(plan.app).mkdir(parents=True, exist_ok=True)
    m = ProjectUninstall(client, state, ProjectJournal(state.app_dir(plan.app), record), out)
    m.runner.step(Step.BEGIN)
    return m.run_forward()


class ProjectUninstall(UninstallRun):
    """Runs (or, after a crash, finishes or undoes) one journaled uninstall of a project."""

    def __init__(self, client, state: StateDir, journal: ProjectJournal, out=print):
        self.client, self.state, self.j, self.r, self.out = client, state, journal, journal.record, out
        self.timer, self.recovering = PhaseTimer(), False
        self.runner = StepRunner(state, journal, Rules(_RULES), self, label=self.r.project, timer=self.timer, out=out)

    @property
    def app(self) -> str:
        return self.r.app

    @property
    def what(self) -> str:
        return self.r.project

    @property
    def plan(self) -> dict:
        assert self.r.uninstall is not None
        return self.r.uninstall

    def forward_steps(self):
        return (step_of(s) for s in self.r.steps)

    def _event(self, result: Result, message: str) -> AuditEvent:
        r, b = self.r, self.r.bundle or {}
        return AuditEvent(
            EventKind.RECOVER if self.recovering else EventKind.UNINSTALL, result, result.exit_code,
            app=r.app, message=message, started=r.started_at, phases=self.timer.seconds,
            bundle=BundleRef(b.get("sha256"), b.get("name"), r.version, r.sequence), signers=signers_of(b.get("signers")),
            version_from=r.version,
            details={"swap": KIND, "project": r.project, "keep_data": self.plan["keep_data"],
                     "steps": [str(h["step"]) + ":" + h["phase"] for h in r.history][-60:]})

    # -- forward steps -------------------------------------------------------------------------
    def stop_old(self, name: str) -> None:
        s = self.r.services[name]
        if s.old_id and self.client.container(s.old_id):
            self.client.stop(s.old_id)
            self.client.set_restart_policy(s.old_id, {"Name": "no"})

    def backup(self, name: str) -> None:
        s = self.r.services[name]
        if not s.old_id or not s.backup_dir:
            return
        bdir = self.j.app_dir / s.backup_dir
        manifest = data.backup_mounts(self.client, s.old_id, s.mounts, bdir)
        self.out(f"  final backup: {len(manifest['mounts'])} mount(s) of {s.container} in {bdir}")

    def remove_old(self, name: str) -> None:
        s, keep = self.r.services[name], self.plan["keep_data"]
        for p in self.plan["parked"]:
            info = self.client.container(p["id"]) if p["service"] == name else None
            if info and info["Id"] == p["id"] and info["Name"].lstrip("/") == p["name"]:
                self.client.remove_container(p["id"], volumes=not keep)
        if s.old_id and self.client.container(s.old_id):
            self.client.remove_container(s.old_id, volumes=not keep)  # v: anonymous volumes only

    def remove_volumes(self, _: str | None = None) -> None:
        """The app's volumes (unless --keep-data), then the project's networks (they hold no data)."""
        for vol in [] if self.plan["keep_data"] else self.plan["volumes"]:
            data.remove_unless_refused(self.client.remove_volume, vol, "volume", self.out)
        for net in self.plan["networks"]:
            data.remove_unless_refused(self.client.remove_network, net, "network", self.out)

    # -- undo (before a final backup was complete) ---------------------------------------------
    def undo(self, why: str) -> None:
        """Every service back as it was (restart policy, running, in dependency order); raises
        EnvironmentProblem (nothing removed) or OperatorNeeded."""
        self.r.direction = Direction.UNDO
        self.r.failure = why
        self.j.save()
        try:
            self.runner.undo([ServiceStep.of(Step.START_OLD, n) for n in self.r.order])
        except Exception as e:
            raise OperatorNeeded(f"{why}; putting {self.r.project} back failed: {reason(e)}; nothing was deleted, "
                                 f"see {self.j.app_dir / ProjectJournal.FILE}") from e
        self._finish(Result.NOT_DONE, f"{why}; nothing was removed")
        raise EnvironmentProblem(f"{why}; nothing was removed, {self.r.project} is as it was")

    def start_old(self, name: str) -> None:
        s = self.r.services[name]
        if not s.old_id:
            return
        if not self.client.container(s.old_id):
            raise OperatorNeeded(f"the container {s.container} of {self.r.app} is gone")
        self.client.set_restart_policy(s.old_id, s.restart_policy or {"Name": "no"})
        if not s.was_running:
            return
        info = self.client.container(s.old_id) or {}
        gate = HealthGate(s.old_health or {"attempts": 1}, info.get("Config", {}).get("Healthcheck"))
        ok, why = gate.wait_healthy(self.client, s.old_id, out=self.out)  # "as it was" is checked, not assumed
        if not ok:
            raise OperatorNeeded(f"service {name} of {self.r.project} does not come up healthy again: {why}")


# The one table of a project uninstall's steps. A complete final BACKUP is the point of no return.
_RULES: dict[Step, StepRule] = {
    Step.BEGIN: StepRule(lambda m: None),
    Step.STOP_OLD: StepRule(ProjectUninstall.stop_old, undo=Step.START_OLD),
    Step.BACKUP: StepRule(ProjectUninstall.backup, done=Resume.REPLAY),
    Step.REMOVE_OLD: StepRule(ProjectUninstall.remove_old, started=Resume.REPLAY),
    Step.REMOVE_VOLUMES: StepRule(ProjectUninstall.remove_volumes, started=Resume.REPLAY),
    Step.CLEAR_STATE: StepRule(ProjectUninstall.clear_state, started=Resume.REPLAY),
    Step.START_OLD: StepRule(ProjectUninstall.start_old),
}


def recover(client, state: StateDir, app: str, j: ProjectJournal, out=print) -> list[str]:
    """Finish (a final backup is complete) or undo an interrupted uninstall, once the engine matches the journal."""
    r = j.record
    if r.app != app:
        raise OperatorNeeded(f"the uninstall journal of {app} is the journal of {r.app!r}; nothing was changed")
    for s in r.services.values():
        info = client.container(s.old_id) if s.old_id else None
        if s.old_id and info is None and not j.reached(ServiceStep.of(Step.REMOVE_OLD, s.name)):
            raise OperatorNeeded(f"the container {s.container} of {app} disappeared before the uninstall removed it; "
                                 f"nothing was changed")
        if info is not None and (info["Id"] != s.old_id or info["Name"].lstrip("/") != s.container):
            raise OperatorNeeded(f"the uninstall journal of {app} does not match the engine: container "
                                 f"{str(s.old_id)[:12]} is not {s.container}; nothing was changed")
    return ProjectUninstall(client, state, j, out).recover()
