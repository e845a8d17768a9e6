"""One Swarm service moved to a new image (or created), journaled, waited on until Swarm is done.

Swarm does the rolling itself (parallelism, order, monitor, automatic rollback); what this adds
is a durable record of the rollout in the state dir and the waiting, so a killed importer is
followed by a `bundle recover` that leaves the service on exactly one version, healthy:

  journal step BEGIN   -> nothing asked of Swarm yet: recover drops the journal
  journal step UPDATE  -> (started: asked, maybe not accepted; done: Swarm is rolling on its own)
                          Swarm may be rolling: recover waits for Swarm's verdict; `completed`
                          with every task on the new image is committed, `paused` (or a service
                          that is half on each) is rolled back by Swarm, a first install that is
                          not healthy is removed
  journal step COMMIT  -> the installed record is written; recover writes it again

The journal is `apps/<service>/journal.json` (the same file name the container swap uses, so
`bundle status` and `bundle recover` see it) with `"target_kind": "service"`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import docker
import requests

from bundlecore.errors import EnvironmentProblem, OperatorNeeded, UpdateFailed
from bundlecore.fsutil import atomic_write_json
from importer.audit import AuditEvent, EventKind, Result, now, write_event
from importer.service.settings import Outcome, outcome, service_spec, with_image
from importer.service.settings import rollout as rollout_settings
from importer.state import StateDir

JOURNAL = "journal.json"
LAST = "last-rollout.json"
KIND = "service"
POLL = 0.5


class RolloutStep(StrEnum):
    BEGIN = "begin"
    UPDATE = "update"
    COMMIT = "commit"


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

    @staticmethod
    def path(state: StateDir, service: str) -> Path:
        return state.app_dir(service) / JOURNAL

    @classmethod
    def load(cls, state: StateDir, service: str) -> "RolloutJournal | None":
        try:
            data = json.loads(cls.path(state, service).read_text())
        except FileNotFoundError:
            return None
        return cls(**data) if data.get("target_kind") == KIND else None

    def mark(self, state: StateDir, step: RolloutStep, phase: str) -> None:
        hook = f"service_{step}" + ("" if phase == "done" else f"_{phase}")
        _crash_hook(hook, "before")
        self.step, self.phase = step, phase
        state.ensure_app_dir(self.service)
        atomic_write_json(self.path(state, self.service), asdict(self))
        _crash_hook(hook, "after")

    def finish(self, state: StateDir, result: str, message: str) -> None:
        atomic_write_json(state.app_dir(self.service) / LAST,
                          {"kind": "install" if self.old_image is None else "update", "result": result,
                           "message": message, "image": self.new_image, "finished_at": now()})
        try:
            os.unlink(self.path(state, self.service))
        except FileNotFoundError:
            pass


def _crash_hook(step: str, when: str) -> None:
    """BUNDLE_CRASH_AT=service_<step>[_started] (BUNDLE_CRASH_WHEN=before|after): SIGKILL (crash tests only)."""
    if os.environ.get("BUNDLE_CRASH_AT") == step and os.environ.get("BUNDLE_CRASH_WHEN", "after") == when:
        os.kill(os.getpid(), signal.SIGKILL)


# -- Swarm over the Docker SDK ----------------------------------------------------------------
def inspect(client, name: str) -> dict | None:
    try:
        return client.api.inspect_service(name)
    except docker.errors.NotFound:
        return None
    except (docker.errors.APIError, requests.RequestException) as e:
        raise EnvironmentProblem(f"cannot inspect service {name}: {_why(e)}") from None


def _why(e: Exception) -> str:
    return getattr(e, "explanation", None) or str(e)


def require_swarm(client) -> None:
    state = (client.info().get("Swarm") or {})
    if state.get("LocalNodeState") != "active" or not state.get("ControlAvailable"):
        raise EnvironmentProblem("this engine is not a Swarm manager (run `docker swarm init` or import on a manager)")


def _post(client, path: str, spec: dict, params: dict | None = None) -> None:
    try:
        client.api._raise_for_status(client.api._post_json(client.api._url(path), data=spec, params=params or {}))
    except (docker.errors.APIError, requests.RequestException) as e:
        raise EnvironmentProblem(f"Swarm refused {path.split('/')[-1]}: {_why(e)}") from None


def image_of(info: dict) -> str:
    return info["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def tasks(client, name: str) -> list[dict]:
    return client.api.tasks(filters={"service": name})


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
    errs = []
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
    """Wait until Swarm says our update completed, rolled back or paused."""
    end = time.monotonic() + deadline
    while True:
        info = inspect(client, name)
        if info is None:
            raise OperatorNeeded(f"service {name} disappeared during its rollout")
        status = info.get("UpdateStatus") or {}
        state = outcome(status) if status.get("StartedAt") != since else None
        if state and state != Outcome.RUNNING:
            return state
        if time.monotonic() > end:
            raise OperatorNeeded(f"service {name}: the rollout is still {status.get('State') or 'starting'} after "
                                 f"{int(deadline)}s; see `docker service ps {name}`")
        time.sleep(POLL)


def failed_tasks(client, name: str) -> int:
    return sum(1 for t in tasks(client, name) if (t.get("Status") or {}).get("State") in ("failed", "rejected"))


def wait_created(client, name: str, image: str, deadline: float, replicas: int) -> bool:
    """Every replica healthy: True; False at the deadline, or as soon as more tasks failed than
    there are replicas (each failed and a restart failed again: no point in waiting)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if settled_on(client, name, image):
            return True
        if failed_tasks(client, name) > replicas:
            return False
        time.sleep(POLL)
    return False


def swarm_rollback(client, name: str) -> None:
    info = inspect(client, name)
    _post(client, f"/services/{info['ID']}/update", info["Spec"],
          {"version": info["Version"]["Index"], "rollback": "previous"})


# -- one service ------------------------------------------------------------------------------
def roll_out(client, state: StateDir, service: str, target: dict, image: str, record: dict, out=print) -> dict:
    """Create `service` or update its image, journaled; the installed record once Swarm is done.
    UpdateFailed when Swarm rolled back (or a first install never got healthy: removed again),
    OperatorNeeded when Swarm left it paused."""
    info = inspect(client, service)
    if info is not None and image_of(info) == image and settled_on(client, service, image):
        out(f"service {service} already runs {image}")
        return _commit(state, service, record, image)
    j = RolloutJournal(service=service, new_image=image, old_image=image_of(info) if info else None,
                       record=record, target=target,
                       since=((info or {}).get("UpdateStatus") or {}).get("StartedAt"))
    j.mark(state, RolloutStep.BEGIN, "done")
    j.mark(state, RolloutStep.UPDATE, "started")
    deadline = deadline_for(target, replicas_of(info) if info else int((target.get("run") or {}).get("replicas", 1)))
    if info is None:
        out(f"creating service {service} from {image}")
        _post(client, "/services/create", service_spec(service, target, image))
    else:
        out(f"updating service {service}: {j.old_image} -> {image}")
        _post(client, f"/services/{info['ID']}/update", with_image(info["Spec"], image, target),
              {"version": info["Version"]["Index"]})
    j.mark(state, RolloutStep.UPDATE, "done")  # Swarm accepted it and is rolling on its own
    return _settle(client, state, j, deadline, out)


def _settle(client, state: StateDir, j: RolloutJournal, deadline: float, out) -> dict:
    """Wait for Swarm's verdict on the journaled rollout and act on it (also used by recover)."""
    name, image = j.service, j.new_image
    if j.old_image is None:
        if wait_created(client, name, image, deadline, replicas_of(inspect(client, name) or {"Spec": {}})):
            return _commit_journal(state, j, f"created with {running_images(client, name).get(image)} replica(s)")
        errors = task_errors(client, name, image)
        _remove(client, name)
        j.finish(state, "failed", "first install not healthy; service removed")
        raise UpdateFailed(f"service {name} did not get healthy and was removed"
                           + (": " + "; ".join(errors) if errors else ""))
    result = wait_update(client, name, j.since, deadline)
    if result == Outcome.COMPLETED and settled_on(client, name, image):
        return _commit_journal(state, j, "update completed")
    if result == Outcome.ROLLED_BACK:
        errors = task_errors(client, name, image)
        j.finish(state, "rolled back", "; ".join(errors))
        write_event(state, AuditEvent(EventKind.SERVICE_UPDATE, Result.ROLLED_BACK, 4, app=name,
                                      message="; ".join(errors), details={"image": image}))
        raise UpdateFailed(f"service {name}: Swarm rolled the update back to {j.old_image}"
                           + (": " + "; ".join(errors) if errors else ""))
    j.finish(state, "paused", f"Swarm left the update {result}")
    message = ((inspect(client, name) or {}).get("UpdateStatus") or {}).get("Message")
    raise OperatorNeeded(f"service {name}: Swarm left the update {result} ({message}); "
                         f"`bundle rollback {name}` or `docker service update --rollback {name}`")


def _remove(client, name: str) -> None:
    try:
        client.api.remove_service(name)
    except docker.errors.NotFound:
        pass


def _commit_journal(state: StateDir, j: RolloutJournal, message: str) -> dict:
    j.mark(state, RolloutStep.COMMIT, "started")
    rec = _commit(state, j.service, j.record, j.new_image)
    j.finish(state, "completed", message)
    write_event(state, AuditEvent(EventKind.SERVICE_UPDATE, Result.DONE, 0, app=j.service, message=message,
                                  phases={"rollout": time.time() - j.t0}, details={"image": j.new_image}))
    return rec


def _commit(state: StateDir, service: str, record: dict, image: str) -> dict:
    before = state.installed(service) or {}
    rec = {**record, "kind": KIND, "name": service, "image": image, "installed_at": now(),
           "previous_image": before.get("image") if before.get("image") != image else before.get("previous_image"),
           "highest_sequence": before.get("highest_sequence")}
    state.record_installed(service, rec)
    return rec


def recover(client, state: StateDir, name: str, out=print) -> list[str]:
    """Bring an interrupted rollout of `name` to exactly one healthy version."""
    j = RolloutJournal.load(state, name)
    if j is None:
        return []
    out(f"recovering the interrupted rollout of service {name} (stopped at {j.step}:{j.phase})")
    if j.step == RolloutStep.BEGIN:
        j.finish(state, "undone", "interrupted before Swarm was asked anything")
        return [f"{name}: nothing had changed; journal dropped"]
    deadline = deadline_for(j.target, replicas_of(inspect(client, name) or {"Spec": {}}))
    info = inspect(client, name)
    if j.step == RolloutStep.UPDATE and j.old_image is not None and info is not None:
        state_now = outcome(info.get("UpdateStatus")) if (info.get("UpdateStatus") or {}).get("StartedAt") != j.since else None
        if state_now is None and image_of(info) != j.new_image:
            j.finish(state, "undone", "Swarm never got the update")
            return [f"{name}: the update never reached Swarm; {j.old_image} is running"]
        if state_now == Outcome.PAUSED:
            since = (info.get("UpdateStatus") or {}).get("StartedAt")
            swarm_rollback(client, name)
            result = wait_update(client, name, since, deadline)
            if result == Outcome.ROLLED_BACK and settled_on(client, name, j.old_image):
                j.finish(state, "rolled back", "the paused update was rolled back by recover")
                return [f"{name}: rolled the paused update back; {j.old_image} runs on every replica"]
            raise OperatorNeeded(f"service {name}: the rollback of the paused update ended {result}")
    try:
        _settle(client, state, j, deadline, out)
    except UpdateFailed as e:
        return [f"{name}: {e}"]
    return [f"{name}: finished the interrupted rollout; {j.new_image} runs on every replica"]
