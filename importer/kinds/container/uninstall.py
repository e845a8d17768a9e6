"""`bundle uninstall`: an application's container (and the generations kept parked) removed, its
named volumes kept or removed after a final backup, its state moved aside -- journaled like a swap.

Steps (importer.kinds.container.journal.UNINSTALL_STEPS): BEGIN, STOP_OLD, BACKUP, REMOVE_OLD,
REMOVE_VOLUMES, CLEAR_STATE. The complete final backup is the point of no return: a crash or an
error before it is undone (the container gets its restart policy back and runs again if it ran;
nothing else was touched); after it, `bundle recover` finishes what the operator confirmed, since
the data is safe in the backup.

Rules: only the container the installed record names, with the ID it records, is removed (one
replaced by hand is refused: check `ownership`); a parked generation only if it still has its
parked name; host directories (bind mounts) are backed up but never removed; a named volume that
another container also uses is kept; a volume another app owns (importer.ownership: shared with
this app by the host policy) is neither backed up nor removed; only a volume bundle created for this
app (its label) is removed, any other (adopted, or from before volumes were labelled) is kept.
Nothing is deleted from the state dir: apps/<app>/ (with the final backup and the saved logs) is
renamed to removed/<app>-<time>/. The anti-rollback mark
(sequences/<app>.json) stays, so uninstalling does not make an old bundle installable again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bundlecore.engine import container_name
from bundlecore.errors import EnvironmentProblem, OperatorNeeded, UsageProblem, reason
from bundlecore.progress import human
from bundlecore.refusals import OwnershipRefused
from bundlecore.release import Result, signers_of
from importer import ownership, units
from importer.audit import AuditEvent, BundleRef, EventKind, PhaseTimer
from importer.state import StateDir, container_of
from importer.steps import Resume, Rule, StepRunner
from importer.uninstalling import UninstallRun
from importer.backup import data
from importer.kinds.container.generations import Generations
from importer.kinds.container.machine import stop_saying
from importer.kinds.container.status import SETTLE_SECONDS, unsettled
from importer.kinds.container.journal import (UNINSTALL_STEPS, DisplacedContainer, Direction, JournalRecord, Step, SwapJournal,
                                   SwapKind)

FINAL_BACKUP = "final-backup"


@dataclass
class UninstallPlan:
    """What `bundle uninstall` will do; `lines()` is what the operator confirms."""

    app: str
    container: str
    record: dict
    info: dict | None                     # the live container (None: already gone)
    keep_data: bool
    volumes: list[str] = field(default_factory=list)       # named volumes removed (unless keep_data)
    shared: list[str] = field(default_factory=list)        # named volumes other containers use: kept
    foreign: dict[str, str] = field(default_factory=dict)  # volume -> the other app that owns it: untouched
    not_created: list[str] = field(default_factory=list)   # volumes bundle did not create for the app: kept
    binds: list[str] = field(default_factory=list)         # host directories: backed up, never removed
    parked: list[dict] = field(default_factory=list)       # {"id", "name"} of kept generations
    backup_estimate: int = 0

    def lines(self) -> list[str]:
        out = [f"uninstall {self.app} {self.record.get('version')} (generation {self.record.get('generation')})"]
        if self.info is None:
            out.append(f"  container {self.container}: already gone; only the state is cleared")
        else:
            out.append(f"  stop and remove container {self.container} ({self.info['Id'][:12]})")
            out.append(f"  final backup of its data first (about {human(self.backup_estimate)}), kept in the state dir")
        for p in self.parked:
            out.append(f"  remove kept generation {p['name']} ({p['id'][:12]})")
        for v in self.volumes:
            out.append(f"  {'keep' if self.keep_data else 'remove'} volume {v}")
        for v in self.shared:
            out.append(f"  keep volume {v} (other containers use it)")
        for v, owner in self.foreign.items():
            out.append(f"  keep volume {v} (it belongs to app {owner}: neither backed up nor removed)")
        for v in self.not_created:
            out.append(f"  keep volume {v} (bundle did not create it for {self.app}; backed up, not removed)")
        for b in self.binds:
            out.append(f"  keep host directory {b} (never removed)")
        if self.record.get("systemd_unit"):
            out.append(f"  rename systemd unit {self.record['systemd_unit']} to ...{units.REMOVED} "
                       f"(disabled first where systemd runs)")
        out.append("  move the state of the app to removed/ (the anti-rollback mark stays)")
        return out


def plan_uninstall(client, state: StateDir, app: str, *, keep_data: bool = False) -> UninstallPlan:
    """Describe the uninstall of `app`; changes nothing."""
    client.ping()
    rec = state.installed(app)
    if not rec:
        raise UsageProblem(f"{app} is not installed (see `bundle list`)")
    container = container_of(app, rec)
    info = client.container_named(container)
    if info is not None and info["Id"] != rec.get("container_id"):
        raise OwnershipRefused(f"container {container} ({info['Id'][:12]}) is not the one bundle installed for "
                               f"{app} ({str(rec.get('container_id'))[:12]}); it is not removed")
    plan = UninstallPlan(app, container, rec, info, keep_data)
    for item in Generations(state.app_dir(app)).previous():
        parked = client.container(item["container_id"])
        if parked and container_name(parked) == item["parked_name"]:
            plan.parked.append({"id": parked["Id"], "name": item["parked_name"]})
    if info is None:
        return plan
    mounts = ownership.uninstall_mounts(client, state, app, data.backed_up_mounts(info),
                                        {info["Id"]} | {p["id"] for p in plan.parked})
    plan.foreign, plan.binds, plan.shared = mounts.foreign, mounts.binds, mounts.shared
    plan.not_created, plan.volumes = mounts.not_created, mounts.volumes
    plan.backup_estimate = sum(s or 0 for s in data.estimate_sizes(client, mounts.backed_up))
    return plan


def uninstall(client, state: StateDir, plan: UninstallPlan, *, out=print) -> str:
    """Run the plan; returns where the app's state (with the final backup) was moved."""
    if SwapJournal.load(state.app_dir(plan.app)):
        raise EnvironmentProblem(f"an interrupted swap of {plan.app} is pending: run `bundle recover` first")
    info = plan.info
    if info is not None and (client.container(info["Id"]) or {}).get("Id") != info["Id"]:
        raise EnvironmentProblem(f"container {plan.container} changed since the plan was made; plan again")
    old = None
    if info is not None:
        rp = info["HostConfig"].get("RestartPolicy") or {"Name": "no"}
        old = DisplacedContainer(
            id=info["Id"], generation=plan.record.get("generation") or 0, parked_name=plan.container,
            image_id=info["Image"], image_ref=info["Config"].get("Image"), version=plan.record.get("version"),
            sequence=plan.record.get("sequence"), was_running=bool(info["State"].get("Running")),
            restart_policy=rp, mounts=[m for m in data.backed_up_mounts(info) if m.get("name") not in plan.foreign],
            backup_dir=FINAL_BACKUP)
    swap_id = uuid.uuid4().hex
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + swap_id[:8]  # unique even within a second
    record = JournalRecord(
        kind=SwapKind.UNINSTALL, name=plan.container, app=plan.app, steps=UNINSTALL_STEPS, keep=0, health=None,
        bundle={"sha256": plan.record.get("bundle_sha256"), "signers": plan.record.get("signers")},
        helper_image=None, t0=time.time(), installed_before=plan.record, generations_before={}, old=old,
        swap_id=swap_id,
        uninstall={"keep_data": plan.keep_data, "volumes": plan.volumes, "parked": plan.parked,
                   "removed_to": f"removed/{plan.app}-{stamp}"})
    m = Uninstall(client, state, SwapJournal.start(state.ensure_app_dir(plan.app), record), out)
    m.step(Step.BEGIN)
    return m.run_forward()


class Uninstall(UninstallRun):
    """Runs (or, after a crash, finishes or undoes) one journaled uninstall of a container."""

    def __init__(self, client, state: StateDir, journal: SwapJournal, out=print):
        self.client, self.state, self.j, self.r, self.out = client, state, journal, journal.record, out
        self.timer, self.recovering = PhaseTimer(), False
        self.runner = StepRunner(state, journal, _RULES, self, timer=self.timer, out=out)

    @property
    def app(self) -> str:
        return self.r.key

    @property
    def what(self) -> str:
        return self.r.name

    def step(self, step: Step) -> None:
        self.runner.step(step)

    def forward_steps(self):
        return self.r.steps

    def _event(self, result: Result, message: str) -> AuditEvent:
        r, b = self.r, self.r.bundle or {}
        return AuditEvent(
            EventKind.RECOVER if self.recovering else EventKind.UNINSTALL, result, result.exit_code,
            app=r.key, message=message, started=r.started_at, phases=self.timer.seconds,
            bundle=BundleRef(b.get("sha256"), b.get("name"), (r.installed_before or {}).get("version"),
                             (r.installed_before or {}).get("sequence")),
            signers=signers_of(b.get("signers")),
            version_from=(r.installed_before or {}).get("version"),
            details={"swap": "uninstall", "container": r.name, "keep_data": r.uninstall["keep_data"],
                     "steps": [h["step"] + ":" + h["phase"] for h in r.history]})

    # -- forward steps -------------------------------------------------------------------------
    def stop_old(self):
        if self.r.old and self.client.container(self.r.old.id):
            stop_saying(self.client, self.r.old.id, self.r.name, self.out)
            self.client.set_restart_policy(self.r.old.id, {"Name": "no"})

    def backup(self):
        old = self.r.old
        if old is None:
            return
        bdir = self.j.app_dir / old.backup_dir
        manifest = data.backup_mounts(self.client, old.id, old.mounts, bdir)
        self.out(f"  final backup: {len(manifest['mounts'])} mount(s) of {self.r.key} in {bdir}")

    def remove_old(self):
        keep = self.r.uninstall["keep_data"]
        for p in self.r.uninstall["parked"]:
            info = self.client.container(p["id"])
            if info and info["Id"] == p["id"] and container_name(info) == p["name"]:
                self.client.remove_container(p["id"], volumes=not keep)
        if self.r.old and self.client.container(self.r.old.id):
            self.client.remove_container(self.r.old.id, volumes=not keep)  # v: anonymous volumes only
        unit = (self.r.installed_before or {}).get("systemd_unit")
        if unit and (to := units.retire(Path(unit))):
            self.out(f"  systemd unit {unit} renamed {to.name}")

    def remove_volumes(self):
        if self.r.uninstall["keep_data"]:
            return
        for vol in self.r.uninstall["volumes"]:
            data.remove_unless_refused(self.client.remove_volume, vol, "volume", self.out)

    # -- undo (before the final backup was complete) -------------------------------------------
    def undo(self, why: str):
        """Put the container back as it was (restart policy, running); raise EnvironmentProblem
        (nothing changed) or OperatorNeeded."""
        self.r.direction = Direction.UNDO
        self.r.failure = why
        self.j.save()
        try:
            self.runner.undo([Step.START_OLD])
        except Exception as e:
            detail = reason(e)
            raise OperatorNeeded(f"{why}; putting {self.r.name} back failed: {detail}; nothing was deleted, "
                                 f"see {self.j.app_dir / SwapJournal.FILE}") from e
        old = self.r.old
        problem = unsettled(self.client, old.id, self.r.name, self.out) if old and old.was_running else None
        if problem:  # "as it was" must stay true: it was running
            msg = (f"{why}; nothing was removed, but {self.r.name} was started again and {SETTLE_SECONDS:g} s later "
                   f"{problem}; see `docker logs {self.r.name}`")
            self._finish(Result.OPERATOR_NEEDED, msg)
            raise OperatorNeeded(msg)
        self._finish(Result.NOT_DONE, f"{why}; nothing was removed")
        raise EnvironmentProblem(f"{why}; nothing was removed, {self.r.name} is as it was")

    def start_old(self):
        old = self.r.old
        if old is None:
            return
        if not self.client.container(old.id):
            raise OperatorNeeded(f"the container {old.id[:12]} of {self.r.key} is gone")
        self.client.set_restart_policy(old.id, old.restart_policy or {"Name": "no"})
        if old.was_running:
            self.client.start(old.id)


# The one table of the uninstall's steps. A complete final BACKUP is the point of no return:
# a crash before it is undone (START_OLD puts the stopped container back), after it finished.
_RULES = {
    Step.BEGIN: Rule(lambda m: None),
    Step.STOP_OLD: Rule(Uninstall.stop_old, undo=Step.START_OLD),
    Step.BACKUP: Rule(Uninstall.backup, done=Resume.REPLAY),
    Step.REMOVE_OLD: Rule(Uninstall.remove_old, started=Resume.REPLAY),
    Step.REMOVE_VOLUMES: Rule(Uninstall.remove_volumes, started=Resume.REPLAY),
    Step.CLEAR_STATE: Rule(Uninstall.clear_state, started=Resume.REPLAY),
    Step.START_OLD: Rule(Uninstall.start_old),
}


def recover(client, state: StateDir, app: str, j: SwapJournal, out=print) -> list[str]:
    """Finish (final backup complete) or undo an interrupted uninstall, once the engine matches the journal."""
    r = j.record
    if r.key != app:
        raise OperatorNeeded(f"the uninstall journal of {app} is the journal of {r.key!r}; nothing was changed")
    if r.old is not None:
        info = client.container(r.old.id)
        if info is None and not j.reached(Step.REMOVE_OLD):
            raise OperatorNeeded(f"the container {r.old.id[:12]} of {app} disappeared before the uninstall removed "
                                 f"it; nothing was changed")
        if info is not None and (info["Id"] != r.old.id or container_name(info) != r.name):
            raise OperatorNeeded(f"the uninstall journal of {app} does not match the engine: container "
                                 f"{r.old.id[:12]} is not {r.name}; nothing was changed")
        foreign = set(r.uninstall["volumes"]) - {m.get("name") for m in (data.backed_up_mounts(info) if info else [])}
        if info is not None and foreign:
            raise OperatorNeeded(f"the uninstall journal of {app} does not match the engine: volume(s) "
                                 f"{', '.join(sorted(foreign))} are not mounted by {r.name}; nothing was changed")
    return Uninstall(client, state, j, out).recover()
