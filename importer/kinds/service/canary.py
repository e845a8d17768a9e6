"""Canary steps of a service release: part of a service on the new version, the stable service untouched.

A stage with `replicas` (bundlecore.release.Stage: a count, or "N%" of the service's replicas,
rounded up, at least 1) runs, for each of its services S, a service `S-canary`
(bundlecore.release.canary_name) made from S's current spec: the new image, that many replicas,
S's networks with S's name as a network alias (clients that resolve S reach the canary's tasks
too, in the share of its tasks), no published ports (the routing mesh's ports stay S's),
labelled with the app (importer.ownership) and `io.bundle.canary-of: S`. S itself is not
touched: its spec, its version index and its tasks stay as they were. So during the step's
analysis the new version runs on exactly the canary's replicas, beside S's.

A later stage rolls S whole (Swarm's rolling update); once that stage passed its watch, the
canary is removed. Rolling a canary step back is removing the canary: nothing else changes.
A service with local volumes has no canary step (two versions on one volume cannot be undone
apart): the plan refuses it.
"""

from __future__ import annotations

import math
import time

from bundlecore.engine import EngineError, EngineNotFound
from bundlecore.errors import EnvironmentProblem, OperatorNeeded, UpdateFailed
from bundlecore.release import canary_name
from importer.kinds.service import rollout
from importer.kinds.service.settings import with_image
from importer.ownership import APP_LABEL

CANARY_OF = "io.bundle.canary-of"


def count(replicas: int | str, stable: int) -> int:
    """The canary's task count: `replicas` as signed, or "N%" of the stable service's replicas
    (rounded up, at least 1)."""
    if isinstance(replicas, str):
        return max(1, math.ceil(stable * int(replicas.rstrip("%")) / 100))
    return int(replicas)


def spec_of(stable: dict, service: str, image: str, replicas: int, target: dict, app: str | None) -> dict:
    """The ServiceSpec of `service`'s canary, from the stable service's spec (pure)."""
    spec = with_image(stable, image, target)
    task = spec["TaskTemplate"]
    nets = [{**n, "Aliases": list(dict.fromkeys([*(n.get("Aliases") or []), service]))}
            for n in task.get("Networks") or spec.get("Networks") or []]
    labels = {**(spec.get("Labels") or {}), "io.bundle.service": canary_name(service), CANARY_OF: service,
              **({APP_LABEL: app} if app else {})}
    endpoint = {k: v for k, v in (spec.get("EndpointSpec") or {}).items() if k != "Ports"}
    return {**{k: v for k, v in spec.items() if k != "Networks"}, "Name": canary_name(service), "Labels": labels,
            "TaskTemplate": {**task, "Networks": nets}, "Mode": {"Replicated": {"Replicas": replicas}},
            "EndpointSpec": endpoint}


def run(client, service: str, image: str, replicas: int | str, target: dict, app: str | None, *,
        auth: dict | None = None, out=print) -> int:
    """Create (or scale, on a later canary step) the canary of `service`; its task count. Swarm is
    asked only: `wait` then waits for it to be healthy."""
    stable = rollout.inspect(client, service)
    if stable is None:
        raise UpdateFailed(f"service {service} does not exist: a canary step needs the stable service")
    n = count(replicas, rollout.replicas_of(stable))
    name = canary_name(service)
    spec = spec_of(stable["Spec"], service, image, n, target, app)
    info = rollout.inspect(client, name)
    if info is None:
        out(f"creating canary {name}: {n} task(s) of {image} beside {service}'s {rollout.replicas_of(stable)}")
        rollout.post(client, "/services/create", spec, auth=auth)
    else:
        out(f"canary {name}: {n} task(s) of {image}")
        rollout.post(client, f"/services/{info['ID']}/update", spec, {"version": info["Version"]["Index"]}, auth=auth)
    return n


def wait(client, service: str, image: str, replicas: int, target: dict) -> None:
    """Every task of the canary healthy on `image`; else UpdateFailed (exit 4: the caller removes it)."""
    name = canary_name(service)
    if rollout.wait_created(client, name, image, rollout.deadline_for(target, replicas), replicas):
        return
    errors = rollout.task_errors(client, name, image)
    raise UpdateFailed(f"canary {name} did not get healthy and is removed; {service} untouched"
                       + (": " + "; ".join(errors) if errors else ""))


def remove(client, service: str, out=print) -> bool:
    """Remove the canary of `service` (if there is one: a crash may have left it or not) and wait
    until its tasks are gone; whether there was one."""
    name = canary_name(service)
    info = rollout.inspect(client, name)
    if info is None:
        return False
    if (info["Spec"].get("Labels") or {}).get(CANARY_OF) != service:
        raise OperatorNeeded(f"service {name} is not the canary of {service} (no {CANARY_OF} label): left alone")
    out(f"removing canary {name}")
    try:
        client.remove_service(name)
    except EngineNotFound:
        return True
    except EngineError as e:
        raise EnvironmentProblem(f"cannot remove canary {name}: {getattr(e, 'explanation', None) or e}") from None
    end = time.monotonic() + 120
    while rollout.tasks_alive(client, name):
        if time.monotonic() > end:
            raise OperatorNeeded(f"the tasks of canary {name} did not stop within 120s; see `docker ps`")
        time.sleep(rollout.POLL)
    return True


def running(client, service: str) -> dict[str, int]:
    """image -> tasks of the canary of `service` running it ({} without a canary)."""
    name = canary_name(service)
    return rollout.running_images(client, name) if rollout.inspect(client, name) else {}
