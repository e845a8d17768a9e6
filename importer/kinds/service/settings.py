"""What a signed `service` target asks Swarm for: pure functions, no engine (table-tested).

- `[target.run]` is used only to CREATE a service (replicas, ports, networks, endpoint mode,
  mounts, env, labels, placement constraints, command); an update changes only the image, so an
  admin's later `docker service update --replicas 5` is never undone by an import.
- `[target.rollout]` becomes the update AND rollback config of every update.
- Task health: the image's HEALTHCHECK, or `[target.health]` as a Swarm healthcheck (a task
  counts as running only once healthy, which is what the update monitor watches).
- The rollout's outcome is read from Swarm's UpdateStatus.State only (`Outcome`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from bundlecore.errors import UsageProblem
from bundlecore.timeutil import parse_duration
from importer.ownership import APP_LABEL

NS = 1_000_000_000
DEFAULT_ROLLOUT: dict[str, Any] = {"parallelism": 1, "delay": "0s", "order": "start-first", "monitor": "10s",
                   "max_failure_ratio": 0, "failure_action": "rollback"}
# the [target.run] keys a service uses; the container-only ones are refused rather than ignored
SERVICE_RUN_KEYS = {"replicas", "ports", "networks", "endpoint_mode", "volumes", "env", "labels", "constraints",
                    "command", "entrypoint", "user", "workdir", "hostname", "stop_signal", "stop_timeout"}


class Outcome(StrEnum):
    """How a rollout ended, from Swarm's UpdateStatus.State."""

    RUNNING = "running"          # updating / rollback_started: keep waiting
    COMPLETED = "completed"      # the new image runs everywhere
    ROLLED_BACK = "rolled back"  # Swarm put the previous spec back
    PAUSED = "paused"            # Swarm stopped midway: an operator decides


_STATES = {"updating": Outcome.RUNNING, "rollback_started": Outcome.RUNNING, "completed": Outcome.COMPLETED,
           "rollback_completed": Outcome.ROLLED_BACK, "paused": Outcome.PAUSED, "rollback_paused": Outcome.PAUSED}


def outcome(update_status: dict | None) -> Outcome | None:
    """None when the service has never been updated (a fresh service)."""
    if not update_status or not update_status.get("State"):
        return None
    return _STATES.get(update_status["State"], Outcome.RUNNING)


def rollout(target: dict) -> dict:
    """[target.rollout] with defaults, durations in seconds."""
    r = DEFAULT_ROLLOUT | dict(target.get("rollout") or {})
    r["delay"], r["monitor"] = parse_duration(r["delay"]), parse_duration(r["monitor"])
    return r


def update_config(target: dict) -> dict:
    """Swarm's UpdateConfig (and RollbackConfig) body for the rollout settings."""
    r = rollout(target)
    return {"Parallelism": r["parallelism"], "Delay": r["delay"] * NS, "Order": r["order"],
            "Monitor": r["monitor"] * NS, "MaxFailureRatio": float(r["max_failure_ratio"]),
            "FailureAction": r["failure_action"]}


def rollback_config(target: dict) -> dict:
    cfg = update_config(target)
    cfg["FailureAction"] = "pause"  # a failing rollback stops: exit 5, nothing more is torn down
    return cfg


def healthcheck(health: dict | None) -> dict | None:
    """[target.health] as a Swarm HealthConfig (None: the image's own HEALTHCHECK applies)."""
    if not health or not {"cmd", "tcp", "http"} & set(health):  # e.g. only --probation: no probe
        return None
    timeout = int(health["timeout"])
    if "cmd" in health:
        cmd = health["cmd"]
        test = ["CMD", *cmd] if isinstance(cmd, list) else ["CMD-SHELL", cmd]
    elif "tcp" in health:
        host, port = health["tcp"].rsplit(":", 1)
        test = ["CMD-SHELL", f"nc -w 2 {host} {port} </dev/null"]
    else:
        url = health["http"]
        test = ["CMD-SHELL", f"wget -q -O /dev/null '{url}' || curl -fsS -o /dev/null '{url}'"]
    return {"Test": test, "Interval": 1 * NS, "Timeout": min(timeout, 10) * NS,
            "Retries": int(health.get("attempts", 3)), "StartPeriod": timeout * NS}


def _port(spec: str) -> dict:
    proto = "tcp"
    if "/" in spec:
        spec, proto = spec.split("/", 1)
    parts = spec.split(":")
    if len(parts) == 3:
        raise UsageProblem(f"service port {spec}: a Swarm port has no host address (use PUBLISHED:TARGET)")
    published, target = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    p = {"Protocol": proto, "TargetPort": int(target), "PublishMode": "ingress"}
    if published:
        p["PublishedPort"] = int(published)
    return p


def _mount(spec: str, labels: dict[str, str]) -> dict:
    parts = spec.split(":")
    if len(parts) == 1:
        return {"Type": "volume", "Target": parts[0]}
    source, target = parts[0], parts[1]
    read_only = len(parts) == 3 and parts[2] == "ro"
    if source.startswith("/"):
        return {"Type": "bind", "Source": source, "Target": target, "ReadOnly": read_only}
    # a named volume a task's node creates carries the app (importer.ownership)
    return {"Type": "volume", "Source": source, "Target": target, "ReadOnly": read_only,
            **({"VolumeOptions": {"Labels": labels}} if labels else {})}


def service_spec(name: str, target: dict, image: str, app: str | None = None) -> dict:
    """The ServiceSpec that creates `name` running `image` (first install), labelled with `app`,
    the app that owns it from now on (importer.ownership)."""
    owner = {APP_LABEL: app} if app else {}
    run = dict(target.get("run") or {})
    unknown = sorted(set(run) - SERVICE_RUN_KEYS)
    if unknown:
        raise UsageProblem(f"service {name}: [target.run] {', '.join(unknown)} do not apply to a Swarm service")
    mode = run.get("endpoint_mode", "vip")
    ports = [_port(p) for p in run.get("ports") or []]
    if mode == "dnsrr" and ports:
        raise UsageProblem(f"service {name}: endpoint_mode dnsrr cannot publish ports through the routing mesh")
    container: dict[str, Any] = {"Image": image, "Env": [f"{k}={v}" for k, v in (run.get("env") or {}).items()],
                 "Labels": dict(run.get("labels") or {}), "Mounts": [_mount(v, owner) for v in run.get("volumes") or []]}
    for key, field in (("command", "Args"), ("entrypoint", "Command"), ("user", "User"), ("workdir", "Dir"),
                       ("hostname", "Hostname"), ("stop_signal", "StopSignal")):
        if run.get(key):
            container[field] = run[key]
    if run.get("stop_timeout") is not None:
        container["StopGracePeriod"] = int(run["stop_timeout"]) * NS
    hc = healthcheck(target.get("health"))
    if hc:
        container["Healthcheck"] = hc
    return {
        "Name": name,
        "Labels": {"io.bundle.service": name, **owner},
        "TaskTemplate": {"ContainerSpec": container,
                         "Placement": {"Constraints": list(run.get("constraints") or [])},
                         "Networks": [{"Target": n} for n in run.get("networks") or []],
                         "RestartPolicy": {"Condition": "any", "Delay": 1 * NS}},
        "Mode": {"Replicated": {"Replicas": int(run.get("replicas", 1))}},
        "UpdateConfig": update_config(target),
        "RollbackConfig": rollback_config(target),
        "EndpointSpec": {"Mode": mode, "Ports": ports},
    }


def with_image(spec: dict, image: str, target: dict) -> dict:
    """The current spec with only the image (and the rollout settings) changed: an update."""
    new = {**spec, "TaskTemplate": {**spec["TaskTemplate"]}, "UpdateConfig": update_config(target),
           "RollbackConfig": rollback_config(target)}
    new["TaskTemplate"]["ContainerSpec"] = {**spec["TaskTemplate"]["ContainerSpec"], "Image": image}
    hc = healthcheck(target.get("health"))
    if hc:
        new["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = hc
    return new
