"""The create body of a container from run settings (`RunSettings.as_mapping()`, docker run's
-p/-v/-e vocabulary): a container target's first install (importer.kinds.container.config) and
every service of a compose project (importer.kinds.compose) are made by this one function."""

from __future__ import annotations

import shlex
from typing import Any, Mapping

from bundlecore.runspec import VolumeKind, parse_port, parse_volume


def run_config(run: Mapping, image_ref: str) -> dict:
    """The create body for a first install, from the run settings (`RunSettings.as_mapping()`,
    docker run's -p/-v/-e syntax)."""
    cfg: dict = {"Image": image_ref}
    hc: dict = {}
    if run.get("env"):
        cfg["Env"] = [f"{k}={v}" for k, v in run["env"].items()]
    if run.get("labels"):
        cfg["Labels"] = dict(run["labels"])
    cmd = run.get("command")
    if cmd:
        cfg["Cmd"] = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    for key, api_key in (("user", "User"), ("workdir", "WorkingDir"), ("hostname", "Hostname"),
                         ("stop_signal", "StopSignal"), ("stop_timeout", "StopTimeout")):
        if run.get(key) is not None:
            cfg[api_key] = run[key]
    if run.get("entrypoint") is not None:
        ep = run["entrypoint"]
        cfg["Entrypoint"] = shlex.split(ep) if isinstance(ep, str) else list(ep)
    bindings: dict = {}
    exposed: dict = {}
    for p in map(parse_port, run.get("ports") or []):
        exposed[p.key] = {}
        bindings.setdefault(p.key, []).append({"HostIp": p.host_ip, "HostPort": p.host_port})
    if exposed:
        cfg["ExposedPorts"] = exposed
        hc["PortBindings"] = bindings
    binds: list[str] = []
    anon: dict[str, dict[str, Any]] = {}
    for v in run.get("volumes") or []:
        spec = parse_volume(v)
        if spec.kind is VolumeKind.ANONYMOUS and not spec.mode:
            anon[spec.target] = {}
        else:  # as written (the engine reads "/path:ro" as an anonymous read-only volume itself)
            binds.append(v)
    if binds:
        hc["Binds"] = binds
    if anon:
        cfg["Volumes"] = anon
    restart = run.get("restart")
    if restart:
        name, _, count = str(restart).partition(":")
        hc["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(count or 0)}
    for key, api_key in (("cap_add", "CapAdd"), ("cap_drop", "CapDrop"), ("extra_hosts", "ExtraHosts"),
                         ("dns", "Dns")):
        if run.get(key):
            hc[api_key] = list(run[key])
    network = run.get("network")
    if network:
        hc["NetworkMode"] = network
    cfg["HostConfig"] = hc
    return {"config": cfg, "extra_networks": {}}
