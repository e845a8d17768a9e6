"""The swap of a Compose project as one unit, on the shared step runner (importer.steps).

Steps are per service (`stop_old:db`, `create_new:web`...): the runner journals each one, so a
kill -9 anywhere leaves a journal that says which service is where. An upgrade stops the
services it recreates or retires in reverse dependency order, parks them (renamed, never removed),
backs up every writable mount of each (importer.backup), then creates and gates the new services
in dependency order. Services whose config hash did not change keep running untouched.

Any failure before COMMIT undoes the whole project: every new container removed, every backed-up
mount restored exactly, every parked container renamed back and started in dependency order,
gated again. From COMMIT on, recovery finishes the swap.

A rollback (`bundle rollback`) is the same machine: the services that differ from the kept
generation are stopped, parked and backed up as in an upgrade (the current generation is then
kept, rollable forward); that generation's parked containers get the data they had when they were
replaced (RESTORE_TARGET, every one before any starts), take their names back (RENAME_TARGET) and
are gated in dependency order. Its undo parks them again and restores the current data.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from bundlecore import interrupts, placeholders
from bundlecore.engine import EngineError
from bundlecore.errors import ExitCode, InstallUndone, OperatorNeeded, UpdateFailed, reason
from bundlecore.release import ComposeService, ComposeTarget, Result, signers_of, target_from_json
from importer import ownership
from importer.audit import AuditEvent, BundleRef, EventKind, PhaseTimer, now
from importer.backup import data
from importer.health import HealthGate, Watched, watch_probation_of
from importer.logtail import save_tail
from importer.kinds.compose.project import (NETWORK_LABEL, PROJECT_LABEL, SERVICE_LABEL, VOLUME_LABEL, Action,
                                            network_name)
from importer.state import StateDir, highest_sequence_after
from importer.steps import COMMIT_RUNS_ON, Direction, Resume, Rule, StepJournal, StepRunner

KIND = "compose"
COMPLETION_TIMEOUT = 600  # s: how long a service others wait on to complete may run (no [target.health.NAME])


class Step(StrEnum):
    """The kinds of step; a per-service step is `ServiceStep` (`<step>:<service>`)."""

    BEGIN = "begin"
    NETWORKS = "networks"
    STOP_OLD = "stop_old"
    RENAME_OLD = "rename_old"
    BACKUP = "backup"
    CREATE_NEW = "create_new"
    RESTORE_TARGET = "restore_target"
    RENAME_TARGET = "rename_target"
    START_NEW = "start_new"
    PROBATION = "probation"
    COMMIT = "commit"
    PRUNE = "prune"
    REMOVE_NEW = "remove_new"
    RESTORE_DATA = "restore_data"
    RENAME_BACK = "rename_back"
    START_OLD = "start_old"
    REMOVE_NETWORKS = "remove_networks"
    REMOVE_OLD = "remove_old"          # `bundle uninstall` (importer.kinds.compose.uninstall)
    REMOVE_VOLUMES = "remove_volumes"
    CLEAR_STATE = "clear_state"


class ServiceStep(str):
    """One step of one service, as the journal spells it: `<step>:<service>`."""

    @classmethod
    def of(cls, step: Step, service: str) -> "ServiceStep":
        return cls(f"{step.value}:{service}")

    @property
    def value(self) -> str:
        return str(self)


def step_of(text: str) -> Step | ServiceStep:
    """A step as the journal spells it, typed."""
    kind, _, service = text.partition(":")
    return ServiceStep.of(Step(kind), service) if service else Step(kind)


@dataclass
class ServiceSwap:
    """One service's part of the swap (the journal's `services.NAME`)."""

    name: str
    action: str                       # project.Action
    container: str
    image_ref: str | None = None
    image_id: str | None = None
    config_hash: str | None = None
    create: dict | None = None        # the create body (project.create_body)
    health: dict | None = None        # [target.health.NAME]
    gate_exit: bool = False           # a dependent waits for it to complete successfully
    new_id: str | None = None
    old_id: str | None = None
    old_image_id: str | None = None
    parked_name: str | None = None
    was_running: bool = False
    restart_policy: dict | None = None
    mounts: list[dict] = field(default_factory=list)
    backup_dir: str | None = None
    old_health: dict | None = None
    target_parked: str | None = None   # rollback: where the generation put back is parked
    target_backup: str | None = None   # rollback: the data it had when it was replaced
    target_policy: dict | None = None  # rollback: its restart policy as its generation created it


@dataclass
class ProjectRecord:
    """Everything in the project's journal (and, once finished, in last-swap.json)."""

    kind: str                         # install | upgrade | rollback
    app: str
    project: str
    target: dict                      # the target as signed (with the site's settings over it)
    order: list[str]                  # the new services in dependency order
    services: dict[str, ServiceSwap]
    steps: list[str]
    generation: int
    keep: int
    bundle: dict
    version: str | None
    sequence: int | None
    installed_before: dict | None
    swap_id: str
    target_kind: str = KIND
    version_before: str | None = None
    site_env: list[str] = field(default_factory=list)  # env keys never shown (importer.masking), recorded
    probation: dict = field(default_factory=dict)  # the project's own ([target.health] of --probation)
    probation_until: float | None = None
    probation_base_restarts: dict[str, int] = field(default_factory=dict)
    created_networks: list[str] = field(default_factory=list)
    created_volumes: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    direction: Direction = Direction.FORWARD
    step: Any = None
    phase: str | None = None
    started_at: str | None = None
    pid: int | None = None
    failure: str | None = None
    result: str | None = None
    message: str | None = None
    finished_at: str | None = None
    uninstall: dict | None = None     # `bundle uninstall` (importer.kinds.compose.uninstall): what it removes
    failed_logs: str | None = None    # the last log lines of the service that failed its gate (importer.logtail)

    def to_json(self) -> dict:
        out = asdict(self)
        out["services"] = {n: asdict(s) for n, s in self.services.items()}
        return out

    @classmethod
    def from_json(cls, d: dict) -> "ProjectRecord":
        known = {f.name for f in fields(cls)}
        r = cls(**{k: v for k, v in d.items() if k in known})
        r.services = {n: ServiceSwap(**s) for n, s in d["services"].items()}
        r.direction = Direction(r.direction)
        r.step = step_of(r.step) if r.step else None
        r.history = [{**h, "step": step_of(h["step"])} for h in r.history]
        return r


class ProjectJournal(StepJournal):
    LAST = "last-swap.json"
    POINT_PREFIX = "compose:"

    def __init__(self, app_dir: Path, record: ProjectRecord):
        super().__init__(app_dir, record)
        self.record: ProjectRecord = record

    @classmethod
    def load(cls, app_dir: Path) -> "ProjectJournal | None":
        doc = cls.read(app_dir)
        return None if doc is None else cls(app_dir, ProjectRecord.from_json(doc))


@dataclass(frozen=True)
class StepRule:
    """A kind of step: its action (with the service, for a per-service step), its undo, its resume rule."""

    action: Callable[..., None]
    undo: Step | None = None
    started: Resume = Resume.UNDO
    done: Resume | None = None


class Rules(Mapping):
    """The rule of every step, per service: a table of `StepRule`s (the swap's `_BASE` unless given)
    applied to the service the step names."""

    def __init__(self, base: "Mapping[Step, StepRule] | None" = None):
        self.base = _BASE if base is None else base

    def __getitem__(self, key: Any) -> Rule:
        try:
            step = step_of(str(key))
            kind, _, service = str(step).partition(":")
            k = self.base[Step(kind)]
        except ValueError:
            raise KeyError(key) from None
        if isinstance(step, Step):
            return Rule(k.action, k.undo, k.started, k.done)
        return Rule(lambda m: k.action(m, service), ServiceStep.of(k.undo, service) if k.undo else None,
                    k.started, k.done)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


class AttemptFailed(Exception):
    """A service did not pass its gate (the one-line reason)."""


class ProjectSwap:
    """Runs one project swap through its steps, forward or undo."""

    def __init__(self, client, state: StateDir, journal: ProjectJournal, out=print):
        self.client, self.state, self.j, self.r, self.out = client, state, journal, journal.record, out
        self.app_dir = journal.app_dir
        self.timer = PhaseTimer()
        self.recovering = False
        self.runner = StepRunner(state, journal, Rules(), self, label=self.r.project, timer=self.timer, out=out)
        self.owner = data.HelperOwner(state.identity, self.r.swap_id)

    @property
    def target(self) -> ComposeTarget:
        t = target_from_json(self.r.target)
        assert isinstance(t, ComposeTarget)
        return t

    def svc(self, name: str) -> ServiceSwap:
        return self.r.services[name]

    # -- driving -------------------------------------------------------------------------
    def run_forward(self) -> dict:
        with data.helpers_owned_by(self.owner):
            try:
                interrupts.check()
                self.runner.forward(step_of(s) for s in self.r.steps
                                    if step_of(s) not in (Step.BEGIN, Step.COMMIT, Step.PRUNE))
            except AttemptFailed as e:
                self.undo(str(e))
            except interrupts.Interrupted as e:  # as the container kind: nothing changed yet is exit 130
                if not self._changed():
                    self.finish(Result.INTERRUPTED, f"{e} before {self.r.project} was changed")
                    e.unfinished = None
                    raise
                self.undo(f"{e} during step {self.r.step}")
            except (Exception, KeyboardInterrupt) as e:
                self.undo(f"the swap of {self.r.project} stopped at step {self.r.step}: {reason(e)}")
            return self.commit_and_finish()

    def _changed(self) -> bool:
        """Whether any step changed the engine yet (the networks step only when it created one)."""
        needed = self.runner.undo_steps(undo_order(self.r))
        return any(s != Step.REMOVE_NETWORKS for s in needed) or bool(self.r.created_networks or self.r.created_volumes)

    def commit_and_finish(self) -> dict:
        with interrupts.shielded(COMMIT_RUNS_ON):
            self.runner.forward([Step.COMMIT, Step.PRUNE])
            record = self.state.installed(self.r.app)
            self.finish(Result.DONE, f"{self.r.project} {self.r.version} is running")
            return record or {}

    def finish(self, result: Result, message: str) -> None:
        self.runner.finish(result, message, lambda: self._event(result, message))

    def _event(self, result: Result, message: str) -> AuditEvent:
        r, b = self.r, self.r.bundle or {}
        undone = self.recovering and result in (Result.ROLLED_BACK, Result.INSTALL_UNDONE)
        return AuditEvent(
            event=EventKind.RECOVER if self.recovering else EventKind(r.kind), result=result,
            exit_code=ExitCode.DONE if undone else result.exit_code, app=r.app, message=message,
            bundle=BundleRef(b.get("sha256"), b.get("name"), r.version, r.sequence), signers=signers_of(b.get("signers")),
            version_from=r.version_before, version_to=r.version, phases=self.timer.seconds, started=r.started_at,
            details={"swap": r.kind, "project": r.project, "logs": r.failed_logs,
                     "services": {n: s.action for n, s in r.services.items()},
                     "steps": [str(h["step"]) + ":" + h["phase"] for h in r.history][-60:]})

    def undo(self, why: str) -> None:
        """The whole project back as it was; raises UpdateFailed (InstallUndone for a first
        install), or OperatorNeeded when that fails too."""
        self.r.failure = self.r.failure or why
        self.r.direction = Direction.UNDO
        self.j.save()
        self.out(f"  {why}")
        self.out(f"  putting {self.r.project} back as it was")
        try:
            self.runner.undo(undo_order(self.r))
        except OperatorNeeded as e:
            self.finish(Result.OPERATOR_NEEDED, f"{why}; then: {e}")
            raise
        except Exception as e:  # any failure of the undo is the operator's now
            message = f"{why}; putting the previous version back failed: {reason(e)}"
            self.finish(Result.OPERATOR_NEEDED, message)
            raise OperatorNeeded(message) from e
        if self.r.kind == "install":
            self.finish(Result.INSTALL_UNDONE, f"{why}; the install was undone")
            raise InstallUndone(f"{why}; the install of {self.r.project} was undone, nothing of it is left running")
        self.finish(Result.ROLLED_BACK, f"{why}; {self.r.project} {self.r.version_before or ''} is back with its data")
        raise UpdateFailed(f"{why}; the whole project {self.r.project} is back on {self.r.version_before} "
                           f"with every volume restored")

    # -- forward steps ---------------------------------------------------------------------
    def networks(self) -> None:
        """The project's networks and volumes, created (with Compose's labels) where missing."""
        project, app = self.r.project, self.r.app
        for net in self.target.project.networks:
            name = network_name(project, net)
            if not self.client.network_exists(name):
                self.client.create_network(name, {PROJECT_LABEL: project, NETWORK_LABEL: net, ownership.APP_LABEL: app})
                self.r.created_networks.append(name)
                self.j.save()
        for vol in self.target.project.volumes:
            name = network_name(project, vol)
            if not self.client.volume_exists(name):
                self.client.create_volume(name, {PROJECT_LABEL: project, VOLUME_LABEL: vol, ownership.APP_LABEL: app})
                self.r.created_volumes.append(name)
                self.j.save()

    def stop_old(self, name: str) -> None:
        s = self.svc(name)
        self.client.stop(s.old_id)
        self.client.set_restart_policy(s.old_id, {"Name": "no"})

    def rename_old(self, name: str) -> None:
        s = self.svc(name)
        self.client.rename(s.old_id, s.parked_name)

    def backup(self, name: str) -> None:
        s = self.svc(name)
        if not s.mounts or not s.old_id or not s.backup_dir:
            return
        bdir = self.app_dir / s.backup_dir
        helper = self._helper()
        manifest = data.backup_mounts(self.client, s.old_id, s.mounts, bdir, helper)
        self.out(f"  backed up {len(manifest['mounts'])} mount(s) of {s.container}")
        data.check_restore_space(self.client, bdir, manifest, helper)

    def create_new(self, name: str) -> None:
        s = self.svc(name)
        for stale in self._made_by_this_swap(name):  # created before a crash, its id not yet journaled
            if stale["Id"] != s.new_id:
                self.client.remove_container(stale["Id"])
        if s.new_id and self.client.container(s.new_id):
            return
        assert s.create is not None  # a service created or recreated has its body
        s.new_id = self.client.create_container(s.create["config"], name=s.container)
        self.j.save()
        for net, ep in (s.create.get("extra_networks") or {}).items():
            self.client.connect_network(s.new_id, net, ep)

    def restore_target(self, name: str) -> None:
        """Rollback: the parked container put back gets the data it had when it was replaced."""
        s = self.svc(name)
        if not s.target_backup:
            return
        bdir = self.app_dir / s.target_backup
        manifest = data.load_backup(bdir)
        if manifest is None:
            return  # it had no writable mount
        owned = {**manifest, "mounts": ownership.without_foreign(self.client, self.state, self.r.app,
                                                                 manifest["mounts"], self.out)}
        data.restore_mounts(self.client, bdir, owned, self._helper())
        self.out(f"  restored {len(owned['mounts'])} mount(s) of {s.container} from the backup taken "
                 f"{manifest['taken_at']}")

    def rename_target(self, name: str) -> None:
        s = self.svc(name)
        info = self.client.container(s.new_id)
        if info is None:
            raise OperatorNeeded(f"the parked container {s.target_parked} of service {name} is gone")
        if info["Name"].lstrip("/") != s.container:
            self.client.rename(s.new_id, s.container)

    def start_new(self, name: str) -> None:
        s = self.svc(name)
        ok, why = self._gate(s, s.new_id, s.health)
        if not ok:
            self._save_logs(s)
            raise AttemptFailed(f"service {name} of {self.r.project} {self.r.version or ''} failed its gate: {why}")
        policy = ((s.create or {}).get("config", {}).get("HostConfig") or {}).get("RestartPolicy") or s.target_policy
        if policy:
            self.client.set_restart_policy(s.new_id, policy)

    def probation(self) -> None:
        """Every service of the project watched over one window once all passed their gates, the
        displaced ones still parked (importer.health `watch_probation_of`, each by its own gate;
        the window is the longest a service's or the project's settings ask). Its end and each
        RestartCount it counts from are journaled before watching. A failure undoes the project."""
        healths = probation_healths({n: self.svc(n).health for n in self.r.order}, self.r.probation)
        window = probation_window(healths)
        ids = {n: self._running_id(n) for n in healths}
        infos = {n: self.client.container(cid) for n, cid in ids.items() if cid}
        if not window or not infos:
            return
        if self.r.probation_until is None:
            self.r.probation_until = time.time() + window
            self.r.probation_base_restarts = {n: int(i.get("RestartCount", 0)) for n, i in infos.items() if i}
            self.j.save()
        watched = []
        for n, info in infos.items():
            gate = HealthGate(healths[n], ((info or {}).get("Config") or {}).get("Healthcheck"))
            if gate.metrics:  # the query's placeholders name this release
                gate.metrics = gate.metrics.bound(placeholders.values_of(self.r.app, self.r.version))
            watched.append(Watched(gate, ids[n] or "", self.r.probation_base_restarts.get(n, 0), name=n))
        left = max(0.0, self.r.probation_until - time.time())
        self.out(f"  probation: watching {', '.join(infos)} of {self.r.project} {self.r.version or ''} for "
                 f"{left:.0f} s; the previous version stays parked")
        ok, why = watch_probation_of(self.client, watched, self.r.probation_until)
        if not ok:
            raise AttemptFailed(f"{self.r.project} {self.r.version or ''} failed its probation: {why}")

    def _running_id(self, name: str) -> str | None:
        """The container a service runs on now (its new one, or the one kept); None for a service
        others waited on to complete (it ran once)."""
        s = self.svc(name)
        if s.gate_exit:
            return None
        if s.action in (Action.CREATE, Action.RECREATE):
            return s.new_id
        info = self.client.container_named(s.container)
        return info["Id"] if info else None

    def commit(self) -> None:
        """Point of no return: every service passed its gate; the project is recorded as installed."""
        r, t = self.r, now()
        before = r.installed_before or {}
        previous = [p for p in before.get("previous") or [] if p.get("generation") != r.generation]
        displaced = {n: s for n, s in r.services.items() if s.action in (Action.RECREATE, Action.RETIRE)}
        if before or displaced:  # displaced without a record: the Compose project --adopt took over (generation 0)
            previous.insert(0, {"generation": before.get("generation") or 0, "version": before.get("version"),
                                "displaced_at": t, "parked": {n: s.parked_name for n, s in displaced.items()},
                                "backup_dir": f"generations/{before.get('generation') or 0}",
                                "parked_name": ", ".join(s.parked_name or "" for s in displaced.values()),
                                "restart_policies": {n: s.restart_policy for n, s in displaced.items()},
                                "record": {k: v for k, v in before.items() if k != "previous"} or None})
        if r.kind == "rollback":  # the kept generation's own record, now installed again
            self._record_rollback(previous, t)
            return
        services = dict((before.get("services") or {}))
        for n, s in r.services.items():
            if s.action == Action.RETIRE:
                services.pop(n, None)
            elif s.action != Action.KEEP:
                services[n] = {"container": s.container, "container_id": s.new_id, "image_ref": s.image_ref,
                               "image_id": s.image_id, "config_hash": s.config_hash,
                               "settings": self.target.project.services[n].to_json()}
        b = r.bundle
        record = {"kind": KIND, "app": r.app, "name": r.project, "project": r.project, "version": r.version,
                  "sequence": r.sequence, "highest_sequence": highest_sequence_after(r.installed_before, r.sequence),
                  "image": self.r.target.get("image"), "image_id": services[r.order[0]]["image_id"],
                  "images": b.get("images") or {}, "bundle_sha256": b.get("sha256"),
                  "signers": [s.fingerprint for s in signers_of(b.get("signers"))],
                  "generation": r.generation, "installed_at": t, "order": r.order, "services": services,
                  "previous": previous, "target": r.target, "site_env": r.site_env,
                  "highest_generation": max(r.generation, int(before.get("highest_generation") or 0))}
        self.state.record_installed(r.app, record)
        if isinstance(r.sequence, int):
            self.state.raise_sequence(b.get("name") or r.app, r.sequence)

    def _record_rollback(self, previous: list[dict], t: str) -> None:
        r, before = self.r, self.r.installed_before or {}
        back = next(p for p in before.get("previous") or [] if p.get("generation") == r.generation)
        record = {**(back.get("record") or adopted_record(before, back, r)), "generation": r.generation,
                  "installed_at": t, "previous": previous,
                  "highest_sequence": highest_sequence_after(before, (back.get("record") or {}).get("sequence")),
                  "highest_generation": max(int(before.get("generation") or 0),
                                            int(before.get("highest_generation") or 0))}
        self.state.record_installed(r.app, record)

    def prune(self) -> None:
        """Parked containers and backups of generations beyond `keep` are removed."""
        rec = self.state.installed(self.r.app) or {}
        keep = max(1, int(self.r.keep or 2))
        kept, dropped = rec.get("previous", [])[:keep - 1], rec.get("previous", [])[keep - 1:]
        for gen in dropped:
            for parked in (gen.get("parked") or {}).values():
                info = self.client.container(parked) if parked else None
                if info and (info["Config"].get("Labels") or {}).get(ownership.APP_LABEL) == self.r.app:
                    try:
                        self.client.remove_container(info["Id"])
                    except EngineError as e:
                        self.out(f"  could not remove {parked}: {e.explanation or e}")
            shutil.rmtree(self.app_dir / str(gen.get("backup_dir")), ignore_errors=True)
        if dropped:
            rec["previous"] = kept
            self.state.record_installed(self.r.app, rec)

    # -- undo steps --------------------------------------------------------------------------
    def remove_new(self, name: str) -> None:
        s = self.svc(name)
        if self.r.kind == "rollback":  # the generation put back returns to its parking place, untouched otherwise
            info = self.client.container(s.new_id) if s.new_id else None
            if info:
                self.client.stop(s.new_id)
                self.client.set_restart_policy(s.new_id, {"Name": "no"})
                if info["Name"].lstrip("/") != s.target_parked:
                    self.client.rename(s.new_id, s.target_parked)
            return
        ids = {c["Id"] for c in self._made_by_this_swap(name)} | ({s.new_id} if s.new_id else set())
        for cid in ids:
            info = self.client.container(cid)
            if info and (info["Config"].get("Labels") or {}).get(data.SWAP_LABEL) == self.r.swap_id:
                self.client.remove_container(cid)

    def restore_data(self, name: str) -> None:
        s = self.svc(name)
        if not s.backup_dir:
            return
        bdir = self.app_dir / s.backup_dir
        manifest = data.load_backup(bdir)
        if manifest is None:
            return  # the backup never completed: the old container was stopped before anything changed its data
        data.restore_mounts(self.client, bdir, manifest, self._helper())

    def rename_back(self, name: str) -> None:
        s = self.svc(name)
        info = self.client.container(s.old_id)
        if info and info["Name"].lstrip("/") != s.container:
            self.client.rename(s.old_id, s.container)

    def start_old(self, name: str) -> None:
        s = self.svc(name)
        self.client.set_restart_policy(s.old_id, s.restart_policy or {"Name": "no"})
        if not s.was_running:
            return
        ok, why = self._gate(s, s.old_id, s.old_health)
        if not ok:
            raise OperatorNeeded(f"the previous version of service {name} of {self.r.project} does not come up "
                                 f"healthy either: {why}")

    def remove_networks(self) -> None:
        """A first install undone: the networks and volumes it created go (they hold nothing from before)."""
        for name in self.r.created_networks:
            try:
                self.client.remove_network(name)
            except EngineError as e:
                self.out(f"  could not remove network {name}: {e.explanation or e}")
        for name in self.r.created_volumes:
            try:
                self.client.remove_volume(name)
            except EngineError as e:
                self.out(f"  could not remove volume {name}: {e.explanation or e}")

    # -- helpers ---------------------------------------------------------------------------
    def _gate(self, s: ServiceSwap, cid: str | None, health: dict | None) -> tuple[bool, str]:
        """A service's gate: [target.health.NAME], else its healthcheck, else (a dependent waits
        for it to complete) its exit code 0, else still running. Compose starts a service once:
        one attempt unless [target.health.NAME] says otherwise."""
        assert cid is not None
        info = self.client.container(cid)
        if info is None:
            return False, "its container is gone"
        if s.gate_exit and not health:
            self.client.start(cid)
            code = self.client.wait(cid, timeout=COMPLETION_TIMEOUT)
            return (code == 0, f"exited with code {code}")
        gate = HealthGate(health or {"attempts": 1}, info["Config"].get("Healthcheck"))
        self.out(f"  starting {s.container}; gate: {gate.describe()}")
        return gate.wait_healthy(self.client, cid, out=self.out)

    def _save_logs(self, s: ServiceSwap) -> None:
        """Keep the failed service's last log lines (`bundle history` shows them); never blocks the undo."""
        rel = save_tail(self.client, self.app_dir, s.new_id or "", f"generation-{self.r.generation}-{self.r.swap_id}-{s.name}",
                        self.out)
        if rel:
            self.r.failed_logs = rel
            self.j.save()
            self.out(f"  the last log lines of {s.container} are kept in {self.app_dir / rel}")

    def _made_by_this_swap(self, name: str) -> list[dict]:
        return self.client.containers(all=True, filters={"label": [f"{data.SWAP_LABEL}={self.r.swap_id}",
                                                                   f"{SERVICE_LABEL}={name}"]})

    def _helper(self) -> str:
        ids = [x for s in self.r.services.values() for x in (s.old_image_id, s.image_id) if x]
        return data.find_helper_image(self.client, ids)


_BASE: dict[Step, StepRule] = {
    Step.BEGIN: StepRule(lambda m: None),
    Step.NETWORKS: StepRule(ProjectSwap.networks, undo=Step.REMOVE_NETWORKS),
    Step.STOP_OLD: StepRule(ProjectSwap.stop_old, undo=Step.START_OLD),
    Step.RENAME_OLD: StepRule(ProjectSwap.rename_old, undo=Step.RENAME_BACK),
    Step.BACKUP: StepRule(ProjectSwap.backup, undo=Step.RESTORE_DATA),
    Step.CREATE_NEW: StepRule(ProjectSwap.create_new, undo=Step.REMOVE_NEW),
    Step.RESTORE_TARGET: StepRule(ProjectSwap.restore_target, undo=Step.RESTORE_DATA),
    Step.RENAME_TARGET: StepRule(ProjectSwap.rename_target, undo=Step.REMOVE_NEW),
    Step.START_NEW: StepRule(ProjectSwap.start_new, undo=Step.REMOVE_NEW),
    Step.PROBATION: StepRule(ProjectSwap.probation),  # a crash in it: the project goes back (undo)
    Step.COMMIT: StepRule(ProjectSwap.commit, started=Resume.REPLAY),
    Step.PRUNE: StepRule(ProjectSwap.prune, started=Resume.REPLAY),
    Step.REMOVE_NEW: StepRule(ProjectSwap.remove_new),
    Step.RESTORE_DATA: StepRule(ProjectSwap.restore_data),
    Step.RENAME_BACK: StepRule(ProjectSwap.rename_back),
    Step.START_OLD: StepRule(ProjectSwap.start_old),
    Step.REMOVE_NETWORKS: StepRule(ProjectSwap.remove_networks),
}


def probation_healths(healths: Mapping[str, dict | None], project: dict | None) -> dict[str, dict]:
    """Each service's settings for the probation window (`healths`: its `[target.health.NAME]`):
    the project's window (`--probation`) over the service's when longer, and the project's
    max_restarts (else none allowed) where the service sets none (pure)."""
    out = {}
    window = (project or {}).get("probation")
    for name, own in healths.items():
        health = dict(own or {})
        if window:
            health["probation"] = max(float(health.get("probation") or 0), float(window))
            health.setdefault("max_restarts", (project or {}).get("max_restarts") or 0)
        out[name] = health
    return out


def probation_window(healths: dict[str, dict]) -> float:
    """The project's one window: the longest any service's settings ask (its metrics window too)."""
    return max((HealthGate(h).probation for h in healths.values()), default=0.0)


def adopted_record(installed: dict, back: dict, r: ProjectRecord) -> dict:
    """The installed record of generation 0, the Compose project --adopt took over (it has none of
    its own): its parked containers as they run again, no version, the project's target."""
    services = {n: {"container": s.container, "container_id": s.new_id, "image_ref": s.image_ref, "image_id": s.image_id,
                    "config_hash": s.config_hash} for n, s in r.services.items() if n in (back.get("parked") or {})}
    return {"kind": KIND, "app": r.app, "name": r.project, "project": r.project, "version": None, "sequence": None,
            "image": installed.get("image"), "image_id": services[r.order[0]]["image_id"] if r.order else None,
            "images": {}, "bundle_sha256": None, "signers": [], "order": r.order, "services": services,
            "target": installed.get("target")}


def forward_steps(order: list[str], services: dict[str, ServiceSwap], probation: bool = False, *,
                  rollback: bool = False) -> list[str]:
    """The forward steps of a project swap: the displaced services stopped (reverse dependency
    order), parked and backed up, then each new one created and gated in dependency order (a
    rollback: each kept one's data restored, then each renamed back and gated in dependency order),
    then (when a window is set) the whole project's probation."""
    displaced = [n for n in reversed(order) if services.get(n) and services[n].action == Action.RECREATE]
    displaced = [n for n, s in services.items() if s.action == Action.RETIRE] + displaced
    incoming = [n for n in order if services[n].action in (Action.CREATE, Action.RECREATE)]
    steps: list[str] = [Step.BEGIN, Step.NETWORKS]
    steps += [ServiceStep.of(Step.STOP_OLD, n) for n in displaced]
    steps += [ServiceStep.of(Step.RENAME_OLD, n) for n in displaced]
    steps += [ServiceStep.of(Step.BACKUP, n) for n in displaced]
    if rollback:  # every kept container gets its data back before any of them starts
        steps += [ServiceStep.of(Step.RESTORE_TARGET, n) for n in incoming]
        steps += [ServiceStep.of(s, n) for n in incoming for s in (Step.RENAME_TARGET, Step.START_NEW)]
    else:
        for n in incoming:
            steps += [ServiceStep.of(Step.CREATE_NEW, n), ServiceStep.of(Step.START_NEW, n)]
    if probation:
        steps.append(Step.PROBATION)
    return [str(s) for s in [*steps, Step.COMMIT, Step.PRUNE]]


def undo_order(r: ProjectRecord) -> list:
    """Every undo step in the order an undo runs them: the new containers removed (reverse
    dependency order), the data restored, the parked ones renamed back and started (dependency
    order), then what a first install created."""
    names = [n for n in r.services if n not in r.order] + list(r.order)
    return ([ServiceStep.of(Step.REMOVE_NEW, n) for n in reversed(names)]
            + [ServiceStep.of(Step.RESTORE_DATA, n) for n in names]
            + [ServiceStep.of(Step.RENAME_BACK, n) for n in names]
            + [ServiceStep.of(Step.START_OLD, n) for n in names] + [Step.REMOVE_NETWORKS])


def begin(state: StateDir, journal: ProjectJournal) -> None:
    journal.record.started_at = now()
    journal.record.pid = os.getpid()
    StepRunner(state, journal, Rules(), None).step(Step.BEGIN)


def service_swap(name: str, action: Action, container: str, svc: ComposeService | None, **kw: Any) -> ServiceSwap:
    """A service's journal entry (its [target.health.NAME] from the signed service)."""
    health = svc.health.to_json() if svc is not None and svc.health else None
    return ServiceSwap(name=name, action=str(action), container=container, health=health, **kw)


__all__ = ["Rules", "StepRule", "step_of", "ProjectSwap", "ProjectJournal", "ProjectRecord", "ServiceSwap", "Step",
           "ServiceStep", "forward_steps", "undo_order", "begin", "service_swap", "probation_healths", "probation_window"]
