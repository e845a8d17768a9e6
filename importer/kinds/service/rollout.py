"""One Swarm service moved to a new image (or created), journaled, waited on until Swarm is done.

Swarm does the rolling itself (parallelism, order, monitor, automatic rollback); what this adds
is a durable record of the rollout in the state dir and the waiting, so a killed importer is
followed by a `bundle recover` that leaves the service on exactly one version, healthy. The
steps run on the one journaled step runner (importer.steps); `_RULES` is their table:

  BEGIN, BACKUP  -> nothing asked of Swarm yet (BACKUP: the service's local volumes, see
                    importer.kinds.service.volumes, being backed up): recover drops the journal
  UPDATE         -> (started: asked, maybe not accepted; done: Swarm is rolling on its own)
                    Swarm may be rolling: recover waits for Swarm's verdict; `completed`
                    with every task on the new image is committed, `paused` (or a service
                    that is half on each) is rolled back by Swarm, a first install that is
                    not healthy is removed
  COMMIT         -> the installed record is written; recover writes it again

Swarm undoes an update itself; when it rolled one back (or `bundle rollback` puts the previous
version back), the volumes get their backup again, forward only, each step replayed by recover
until it is through:

  STOP     -> the service scaled to 0 through its spec (the replica count journaled)
  RESTORE  -> importer.backup.data.restore_mounts of the backup (redoing it is exact)
  START    -> the spec back on the version to land on, with the journaled replicas
A restore that cannot be done cleanly leaves the service at 0 replicas: exit 5 with the backup's place.

The journal is the one journal file of every kind (importer.state.JOURNAL, so `bundle status` and
`bundle recover` see it) with `"target_kind": "service"`; its crash points are `service_<step>`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from bundlecore.engine import EngineError, EngineNotFound
from bundlecore.errors import EnvironmentProblem, OperatorNeeded, UpdateFailed
from bundlecore.progress import Countdown
from importer import ownership
from importer.audit import AuditEvent, EventKind, Result, now
from importer.kinds.service import volumes as vols
from importer.kinds.service.settings import Outcome, outcome, service_spec, with_image
from importer.kinds.service.settings import rollout as rollout_settings
from importer.logtail import save_tail
from importer.state import JOURNAL, StateDir
from importer.steps import Resume, Rule, StepJournal, StepRunner
from importer.backup import data

LAST = "last-rollout.json"
KIND = "service"
POLL = 0.5

# the label Swarm puts on each task container: the service it runs for
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


class RolloutStep(StrEnum):
    BEGIN = "begin"
    BACKUP = "backup"
    UPDATE = "update"
    STOP = "stop"
    RESTORE = "restore"
    START = "start"
    COMMIT = "commit"


class Action(StrEnum):
    ROLLOUT = "rollout"    # new_image replaces old_image (Swarm rolls it)
    ROLLBACK = "rollback"  # `bundle rollback` of a service with volumes: back to new_image, data restored


@dataclass
class RolloutJournal:
    """The durable record of one service's rollout (what recover needs)."""

    service: str
    new_image: str
    old_image: str | None            # None: a first install (the service did not exist)
    record: dict                     # the installed record to write at COMMIT
    target: dict
    step: str = RolloutStep.BEGIN
    phase: str = "started"
    t0: float = field(default_factory=time.time)
    since: str | None = None         # UpdateStatus.StartedAt before our update (to see ours begin)
    target_kind: str = KIND
    action: str = Action.ROLLOUT
    volumes: list = field(default_factory=list)  # importer.backup.data mount records backed up here
    backup: str | None = None        # backup dir (relative to the app dir) to restore if it fails
    safety: str | None = None        # a rollback's backup of the data it replaces
    replicas: int | None = None      # journaled before STOP: what START brings back
    history: list = field(default_factory=list)  # every step "started"/"done" (importer.steps)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def path(state: StateDir, service: str) -> Path:
        return state.app_dir(service) / JOURNAL

    @classmethod
    def load(cls, state: StateDir, service: str) -> "RolloutJournal | None":
        data = StepJournal.read(state.app_dir(service))
        return cls(**data) if data is not None and data.get("target_kind") == KIND else None


class _RolloutFile(StepJournal):
    LAST = LAST
    POINT_PREFIX = "service_"
    record: RolloutJournal

    def last_record(self, result: str, message: str) -> dict:
        r = self.record
        return {"kind": "install" if r.old_image is None else "update", "result": result, "message": message,
                "image": r.new_image, "finished_at": now()}


# -- Swarm through the engine layer----------------------------------------------------------------
def inspect(client, name: str) -> dict | None:
    try:
        return client.inspect_service(name)
    except EngineNotFound:
        return None
    except EngineError as e:
        raise EnvironmentProblem(f"cannot inspect service {name}: {_why(e)}") from None


def _why(e: Exception) -> str:
    return getattr(e, "explanation", None) or str(e)


def require_swarm(client) -> None:
    state = (client.info().get("Swarm") or {})
    if state.get("LocalNodeState") != "active" or not state.get("ControlAvailable"):
        raise EnvironmentProblem("this engine is not a Swarm manager (run `docker swarm init` or import on a manager)")


def post(client, path: str, spec: dict, params: dict | None = None, auth: dict | None = None) -> None:
    """`auth`: the registry credentials Swarm hands to every node that pulls the image."""
    try:
        client.post_service(path, spec, params, auth)
    except EngineError as e:
        raise EnvironmentProblem(f"Swarm refused {path.split('/')[-1]}: {_why(e)}") from None


def image_of(info: dict) -> str:
    return info["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def tasks(client, name: str) -> list[dict]:
    return client.tasks(name)


def tasks_alive(client, name: str) -> bool:
    """Whether a container of service `name`'s tasks is still there (a removed service's tasks stop after it)."""
    return bool(client.containers(all=True, filters={"label": f"{SERVICE_NAME_LABEL}={name}"}))


def running_images(client, name: str) -> dict[str, int]:
    """image -> number of tasks running it now (desired running and running)."""
    counts: dict[str, int] = {}
    for t in tasks(client, name):
        if t.get("DesiredState") == "running" and t["Status"].get("State") == "running":
            img = t["Spec"]["ContainerSpec"]["Image"]
            counts[img] = counts.get(img, 0) + 1
    return counts


def replicas_of(info: dict) -> int:
    return int(((info["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1))


def settled_on(client, name: str, image: str) -> bool:
    """Every wanted replica runs `image` (healthy: Swarm counts a task running only once healthy)."""
    info = inspect(client, name)
    return bool(info) and running_images(client, name) == {image: replicas_of(info)}


def task_errors(client, name: str, image: str) -> list[str]:
    """The distinct errors of the tasks of `image` that failed (what the operator needs to read)."""
    errs: list[str] = []
    for t in sorted(tasks(client, name), key=lambda t: t.get("CreatedAt", "")):
        st = t.get("Status") or {}
        if t["Spec"]["ContainerSpec"]["Image"] == image and st.get("State") in ("failed", "rejected", "shutdown") \
                and st.get("Err"):
            line = f"task {t['ID'][:12]}: {st['Err']}"
            if st["Err"] not in " ".join(errs):
                errs.append(line)
    return errs[:5]


def deadline_for(target: dict, replicas: int) -> float:
    """How long Swarm may take: each replica may spend its health start period and the monitor."""
    r = rollout_settings(target)
    health = target.get("health") or {}
    health = int(health.get("timeout", 30)) * int(health.get("attempts", 1))
    return 60 + max(replicas, 1) * (r["delay"] + r["monitor"] + health + 10) * 2


def wait_update(client, name: str, since: str | None, deadline: float) -> Outcome:
    """Wait until Swarm says our update completed, rolled back or paused (progress: the tasks on the
    spec's image out of the replicas, bundlecore.progress)."""
    end = time.monotonic() + deadline
    countdown = Countdown(f"rolling service {name}", deadline)
    while True:
        info = inspect(client, name)
        if info is None:
            countdown.close()
            raise OperatorNeeded(f"service {name} disappeared during its rollout")
        status = info.get("UpdateStatus") or {}
        state = outcome(status) if status.get("StartedAt") != since else None
        if state and state != Outcome.RUNNING:
            countdown.close()
            return state
        countdown.tick(functools.partial(_tasks_updated, client, name, info))
        if time.monotonic() > end:
            raise OperatorNeeded(f"service {name}: the rollout is still {status.get('State') or 'starting'} after "
                                 f"{int(deadline)}s; see `docker service ps {name}`")
        time.sleep(POLL)


def _tasks_updated(client, name: str, info: dict) -> str:
    return f"{running_images(client, name).get(image_of(info), 0)}/{replicas_of(info)} tasks updated"


def failed_tasks(client, name: str, image: str) -> int:
    return sum(1 for t in tasks(client, name) if (t.get("Status") or {}).get("State") in ("failed", "rejected")
               and t["Spec"]["ContainerSpec"]["Image"] == image)


def wait_created(client, name: str, image: str, deadline: float, replicas: int) -> bool:
    """Every replica healthy: True; False at the deadline, or as soon as more tasks failed than
    there are replicas (each failed and a restart failed again: no point in waiting)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if settled_on(client, name, image):
            return True
        if failed_tasks(client, name, image) > replicas:
            return False
        time.sleep(POLL)
    return False


def swarm_rollback(client, name: str) -> None:
    info = inspect(client, name)
    post(client, f"/services/{info['ID']}/update", info["Spec"],
          {"version": info["Version"]["Index"], "rollback": "previous"})


# -- one service ------------------------------------------------------------------------------
class Rollout:
    """One journaled rollout of a service (or `bundle rollback` with its data), run or recovered."""

    def __init__(self, client, state: StateDir, j: RolloutJournal, out=print, *, deadline: float = 0.0,
                 info: dict | None = None, auth: dict | None = None):
        self.client, self.state, self.j, self.out = client, state, j, out
        self.deadline, self.info, self.auth = deadline, info, auth
        self.landing: str | None = None   # the image STOP/RESTORE/START land on
        self.committed: dict | None = None
        self.file = _RolloutFile(state.ensure_app_dir(j.service), j)
        self.runner = StepRunner(state, self.file, _RULES, self, out=out)

    def step(self, step: RolloutStep) -> None:
        self.runner.step(step)

    def finish(self, result: str, message: str, event=None) -> None:
        self.runner.finish(result, message, event)

    # -- steps -------------------------------------------------------------------------------
    def back_up(self) -> None:
        j = self.j
        bdir = vols.backup_path(self.state, j.service, j.safety or j.backup)
        try:  # a helper records the allocation of sparse files (importer.backup.data); without one, none
            helper = data.find_helper_image(self.client, [image_of(self.info), j.new_image])
        except EnvironmentProblem:
            helper = None
        manifest = data.backup_volumes(self.client, j.volumes, bdir, image_of(self.info), helper)
        self.out(f"  backed up {len(j.volumes)} volume(s) of service {j.service} into {bdir} "
                 f"({sum(m['size'] for m in manifest['mounts'])} bytes compressed)")

    def update(self) -> None:
        client, j, info = self.client, self.j, self.info
        if info is None:
            self.out(f"creating service {j.service} from {j.new_image}")
            post(client, "/services/create", service_spec(j.service, j.target, j.new_image, j.record.get("app")), auth=self.auth)
        else:
            self.out(f"updating service {j.service}: {j.old_image} -> {j.new_image}")
            post(client, f"/services/{info['ID']}/update", with_image(info["Spec"], j.new_image, j.target),
                  {"version": info["Version"]["Index"]}, auth=self.auth)

    def stop(self) -> None:
        name = self.j.service
        self.out(f"  stopping the tasks of service {name} to restore its volumes")
        _set_spec(self.client, name, image_of(inspect(self.client, name)), 0)
        _wait_stopped(self.client, name, self.deadline)

    def restore(self) -> None:
        name, bdir = self.j.service, self._bdir()
        manifest = data.load_backup(bdir)
        if manifest is None:
            self.finish("operator needed", f"no complete backup in {bdir}")
            raise OperatorNeeded(f"service {name}: the backup in {bdir} is incomplete; the service is left at 0 "
                                 f"replicas with its volumes as they are")
        try:
            data.restore_mounts(self.client, bdir, manifest,
                                data.find_helper_image(self.client, [self.landing, self.j.new_image]))
        except (data.RestoreError, EnvironmentProblem) as e:
            self.finish("operator needed", str(e))
            raise OperatorNeeded(f"service {name}: its volumes could not be restored cleanly ({e}); the service "
                                 f"is left at 0 replicas; the backup is in {bdir}") from None
        self.out(f"  restored {len(manifest['mounts'])} volume(s) of service {name} from {bdir}")

    def start(self) -> None:
        name, image = self.j.service, self.landing
        _set_spec(self.client, name, image, self.j.replicas)
        if not wait_created(self.client, name, image, self.deadline, self.j.replicas):
            self.finish("operator needed", f"{image} did not come back healthy after the restore")
            raise OperatorNeeded(f"service {name}: {image} did not come back healthy on the restored volumes; "
                                 f"see `docker service ps {name}`; the backup is in {self._bdir()}")

    def commit(self) -> None:
        j = self.j
        if j.action == Action.ROLLBACK:
            rec = self.state.installed(j.service) or {}
            rec.update(rolled_back(rec, j.new_image), data_backup=j.safety)
            self.state.record_installed(j.service, rec)
            self.committed = rec
        else:
            self.committed = _commit(self.state, j.service,
                                     j.record | ({"data_backup": j.backup} if j.backup else {}), j.new_image)

    # -- driving -----------------------------------------------------------------------------
    def back_up_volumes(self, what: str) -> None:
        """Journal, then back up every local volume of the service that is on this node."""
        j = self.j
        mounts = _on_this_node(self.client, self.state, j, self.info, self.out)
        if not mounts:
            return
        j.volumes = mounts
        if j.action == Action.ROLLBACK:  # keep what it holds now; put back what it held before the update
            j.safety, j.backup = vols.new_backup_dir(what), j.record.get("data_backup")
        else:
            j.backup = vols.new_backup_dir(what)
        self.step(RolloutStep.BACKUP)

    def settle(self) -> dict:
        """Wait for Swarm's verdict on the journaled rollout and act on it (also used by recover)."""
        client, j = self.client, self.j
        name, image = j.service, j.new_image
        if j.old_image is None:
            if wait_created(client, name, image, self.deadline, replicas_of(inspect(client, name) or {"Spec": {}})):
                return self.commit_and_finish(f"created with {running_images(client, name).get(image)} replica(s)")
            errors = task_errors(client, name, image)
            _remove(client, name)
            self.finish("failed", "first install not healthy; service removed")
            raise UpdateFailed(f"service {name} did not get healthy and was removed"
                               + (": " + "; ".join(errors) if errors else ""))
        result = wait_update(client, name, j.since, self.deadline)
        if result == Outcome.COMPLETED and settled_on(client, name, image):
            return self.commit_and_finish("update completed")
        if result == Outcome.ROLLED_BACK:
            errors = task_errors(client, name, image)
            logs = self.save_failed_logs(image)
            restored = self.restore_data(j.old_image) if j.volumes else ""
            self.finish("rolled back", "; ".join(errors),
                        lambda: AuditEvent(EventKind.SERVICE_UPDATE, Result.ROLLED_BACK, 4, app=name,
                                           message="; ".join(errors),
                                           details={"image": image, **({"logs": logs} if logs else {})}))
            raise UpdateFailed(f"service {name}: Swarm rolled the update back to {j.old_image}{restored}"
                               + (": " + "; ".join(errors) if errors else ""))
        self.finish("paused", f"Swarm left the update {result}")
        message = ((inspect(client, name) or {}).get("UpdateStatus") or {}).get("Message")
        raise OperatorNeeded(f"service {name}: Swarm left the update {result} ({message}); "
                             f"`bundle rollback {name}` or `docker service update --rollback {name}`")

    def save_failed_logs(self, image: str) -> str | None:
        """The last log lines of a failed task of `image` whose container is on this node (Swarm keeps
        it while the task is in its history), kept as for the container kind: the newest task that
        failed and printed something, before one Swarm shut down (which may have had no time to)."""
        failed = [t for t in tasks(self.client, self.j.service)
                  if t["Spec"]["ContainerSpec"]["Image"] == image
                  and (t.get("Status") or {}).get("State") in ("failed", "rejected", "shutdown")
                  and ((t["Status"].get("ContainerStatus") or {}).get("ContainerID"))]
        failed.sort(key=lambda t: t.get("CreatedAt", ""), reverse=True)
        failed.sort(key=lambda t: t["Status"]["State"] == "shutdown")  # stable: newest first within each
        for t in failed:
            cid = t["Status"]["ContainerStatus"]["ContainerID"]
            if self.client.container(cid):
                saved = save_tail(self.client, self.state.app_dir(self.j.service), cid, f"task-{t['ID'][:12]}",
                                  self.out, skip_empty=True)
                if saved:
                    return saved
        return None

    def commit_and_finish(self, message: str) -> dict:
        j = self.j
        self.step(RolloutStep.COMMIT)
        self.finish("completed", message,
                    lambda: AuditEvent(EventKind.SERVICE_UPDATE, Result.DONE, 0, app=j.service, message=message,
                                       phases={"rollout": time.time() - j.t0}, details={"image": j.new_image}))
        return self.committed

    def restore_data(self, image: str) -> str:
        """STOP, RESTORE, START (each journaled first; recover replays the step it stopped in):
        the volumes hold exactly their backup and `image` runs on the journaled replicas again."""
        self.landing = image
        if self.j.replicas is None:
            self.j.replicas = replicas_of(inspect(self.client, self.j.service))
        self.runner.forward(_RESTORE_STEPS)
        return self.restored()

    def restored(self) -> str:
        return f"; its volumes were restored from {self._bdir()}"

    def _bdir(self) -> Path:
        return vols.backup_path(self.state, self.j.service, self.j.backup)

    def finish_rollback(self) -> dict:
        """`bundle rollback` with data, from its backup on (at COMMIT the data is back and may have
        been written to since: the steps already done are not run again)."""
        j = self.j
        restored = self.restore_data(j.new_image)
        self.step(RolloutStep.COMMIT)
        self.finish("rolled back", f"bundle rollback{restored}")
        self.out(f"service {j.service} runs {j.new_image} again{restored}")
        return self.committed


# The one table of a rollout's steps (importer.steps). Swarm undoes an update by itself, so no step
# names an undo step; the data's way back is STOP, RESTORE, START, replayed until through.
_RULES = {
    RolloutStep.BEGIN: Rule(lambda m: None, started=Resume.NONE),
    RolloutStep.BACKUP: Rule(Rollout.back_up, started=Resume.NONE),
    RolloutStep.UPDATE: Rule(Rollout.update, started=Resume.REPLAY),
    RolloutStep.STOP: Rule(Rollout.stop, started=Resume.REPLAY),
    RolloutStep.RESTORE: Rule(Rollout.restore, started=Resume.REPLAY),
    RolloutStep.START: Rule(Rollout.start, started=Resume.REPLAY),
    RolloutStep.COMMIT: Rule(Rollout.commit, started=Resume.REPLAY),
}
_RESTORE_STEPS = (RolloutStep.STOP, RolloutStep.RESTORE, RolloutStep.START)


def roll_out(client, state: StateDir, service: str, target: dict, image: str, record: dict, out=print,
             auth: dict | None = None) -> dict:
    """Create `service` or update its image, journaled; the installed record once Swarm is done.
    UpdateFailed when Swarm rolled back (or a first install never got healthy: removed again),
    OperatorNeeded when Swarm left it paused."""
    run = begin(client, state, service, target, image, record, out=out, auth=auth)
    return run.settle() if run else state.installed(service) or {}


def begin(client, state: StateDir, service: str, target: dict, image: str, record: dict, out=print,
          auth: dict | None = None) -> "Rollout | None":
    """Journal, back up, and ask Swarm (the UPDATE step done: Swarm rolls on its own); the
    Rollout whose `settle()` waits for Swarm's verdict, or None when `service` already runs
    `image` (recorded). A parallel stage begins each of its services, then settles them."""
    info = inspect(client, service)
    if info is not None and image_of(info) == image and settled_on(client, service, image):
        out(f"service {service} already runs {image}")
        _commit(state, service, record, image)
        return None
    j = RolloutJournal(service=service, new_image=image, old_image=image_of(info) if info else None,
                       record=record, target=target,
                       since=((info or {}).get("UpdateStatus") or {}).get("StartedAt"))
    replicas = replicas_of(info) if info else int((target.get("run") or {}).get("replicas", 1))
    run = Rollout(client, state, j, out, deadline=deadline_for(target, replicas), info=info, auth=auth)
    run.step(RolloutStep.BEGIN)
    if info is not None:
        run.back_up_volumes("before-update")
    run.step(RolloutStep.UPDATE)  # done: Swarm accepted it and is rolling on its own
    return run


def _remove(client, name: str) -> None:
    try:
        client.remove_service(name)
    except EngineNotFound:
        pass


def _commit(state: StateDir, service: str, record: dict, image: str) -> dict:
    before = state.installed(service) or {}
    rec = {**record, "kind": KIND, "name": service, "image": image, "installed_at": now(),
           "previous_image": before.get("image") if before.get("image") != image else before.get("previous_image"),
           "previous_version": before.get("version") if before.get("image") != image else before.get("previous_version"),
           "highest_sequence": before.get("highest_sequence")}
    state.record_installed(service, rec)
    return rec


# -- the data of the service's local volumes --------------------------------------------------
def _on_this_node(client, state: StateDir, j: RolloutJournal, info: dict, out) -> list[dict]:
    """The service's local volumes that exist on this node and no other app owns (the others are
    said, not backed up)."""
    mounts = []
    for m in ownership.without_foreign(client, state, j.record.get("app") or j.service, vols.local_volumes(info["Spec"]),
                                       out):
        try:
            client.inspect_volume(m["name"])
            mounts.append(m)
        except EngineNotFound:
            out(f"  volume {m['name']} of service {j.service} is not on this node: not backed up here")
    return mounts


def _set_spec(client, name: str, image: str, replicas: int) -> None:
    info = inspect(client, name)
    spec = {**info["Spec"], "Mode": {"Replicated": {"Replicas": replicas}}}
    spec["TaskTemplate"] = {**spec["TaskTemplate"],
                            "ContainerSpec": {**spec["TaskTemplate"]["ContainerSpec"], "Image": image}}
    post(client, f"/services/{info['ID']}/update", spec, {"version": info["Version"]["Index"]})


def _wait_stopped(client, name: str, deadline: float) -> None:
    end = time.monotonic() + deadline
    while any((t.get("Status") or {}).get("State") in _ALIVE for t in tasks(client, name)):
        if time.monotonic() > end:
            raise OperatorNeeded(f"service {name}: its tasks did not stop within {int(deadline)}s; "
                                 f"see `docker service ps {name}`")
        time.sleep(POLL)


_ALIVE = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}


def roll_back_with_data(client, state: StateDir, name: str, info: dict, out=print) -> dict | None:
    """`bundle rollback` of a service with local volumes and a backup from before its last update:
    back up the data it holds now, then put back the previous version and the data of before the
    update (None when there is nothing of the kind to restore: Swarm's own rollback does it)."""
    rec = state.installed(name) or {}
    if not rec.get("data_backup") or not vols.local_volumes(info["Spec"]):
        return None
    previous = image_of({"Spec": info["PreviousSpec"]})
    j = RolloutJournal(service=name, new_image=previous, old_image=image_of(info), record=rec, target={},
                       action=Action.ROLLBACK, replicas=replicas_of(info))
    run = Rollout(client, state, j, out, deadline=deadline_for({}, j.replicas or 1), info=info)
    run.step(RolloutStep.BEGIN)
    run.back_up_volumes("before-rollback")
    if not j.volumes:
        run.finish("undone", "no volume of the service is on this node")
        return None
    return run.finish_rollback()


def rolled_back(rec: dict, previous_image: str) -> dict:
    """The installed record's fields after a rollback: the previous version is the installed one again."""
    return {"image": previous_image, "previous_image": rec.get("image"), "version": rec.get("previous_version"),
            "previous_version": rec.get("version"), "rolled_back_at": now()}


def recover(client, state: StateDir, name: str, out=print) -> list[str]:
    """Bring an interrupted rollout of `name` to exactly one healthy version."""
    j = RolloutJournal.load(state, name)
    if j is None:
        return []
    out(f"recovering the interrupted rollout of service {name} (stopped at {j.step}:{j.phase})")
    run = Rollout(client, state, j, out)
    if run.runner.resume() == Resume.NONE:
        run.finish("undone", "interrupted before Swarm was asked anything")
        return [f"{name}: nothing had changed; journal dropped"]
    if j.action == Action.ROLLBACK:
        run.deadline = deadline_for({}, j.replicas or 1)
        run.finish_rollback()
        return [f"{name}: finished the interrupted rollback; {j.new_image} runs with the data of before the update"]
    run.deadline = deadline_for(j.target, replicas_of(inspect(client, name) or {"Spec": {}}))
    if j.step in _RESTORE_STEPS:
        restored = run.restore_data(j.old_image)
        run.finish("rolled back", "Swarm rolled the update back; recover restored the data")
        return [f"{name}: Swarm had rolled the update back; {j.old_image} runs again{restored}"]
    info = inspect(client, name)
    if j.step == RolloutStep.UPDATE and j.old_image is not None and info is not None:
        state_now = outcome(info.get("UpdateStatus")) if (info.get("UpdateStatus") or {}).get("StartedAt") != j.since else None
        if state_now is None and image_of(info) != j.new_image:
            run.finish("undone", "Swarm never got the update")
            return [f"{name}: the update never reached Swarm; {j.old_image} is running"]
        if state_now == Outcome.PAUSED:
            since = (info.get("UpdateStatus") or {}).get("StartedAt")
            swarm_rollback(client, name)
            result = wait_update(client, name, since, run.deadline)
            if result == Outcome.ROLLED_BACK and settled_on(client, name, j.old_image):
                restored = run.restore_data(j.old_image) if j.volumes else ""
                run.finish("rolled back", "the paused update was rolled back by recover")
                return [f"{name}: rolled the paused update back; {j.old_image} runs on every replica{restored}"]
            raise OperatorNeeded(f"service {name}: the rollback of the paused update ended {result}")
    try:
        run.settle()
    except UpdateFailed as e:
        return [f"{name}: {e}"]
    return [f"{name}: finished the interrupted rollout; {j.new_image} runs on every replica"]
