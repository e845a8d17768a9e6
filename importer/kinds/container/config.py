"""Container settings for the swap: a faithful copy of a running container for a new image, and
the settings of a first install from the manifest's `run` object.

The copy keeps everything the user set and drops what came from the OLD image's defaults, so
the NEW image's defaults apply (Watchtower freezes old defaults into the new container, and
replaces anonymous volumes by empty ones: both are what this module exists to avoid). All
dicts are the Engine API's raw JSON (API 1.41), posted with `create_container_from_config`.
"""

from __future__ import annotations

import copy
from typing import Any

from bundlecore.runspec import VolumeKind, parse_port, parse_volume
from importer.merge import Key, Kind
from importer.runconfig import run_config  # noqa: F401  (a first install's body: shared with the compose kind)

# Config keys posted as they are (when the user set them they are theirs; engine defaults
# posted back are the same defaults).
_CONFIG_VERBATIM = ("Domainname", "AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin",
                    "StdinOnce", "NetworkDisabled", "MacAddress", "StopTimeout")


def _image_config(image_inspect: dict) -> dict:
    return image_inspect.get("Config") or {}


def _short_id(container_id: str) -> str:
    return container_id[:12]


def _anonymous_volume_names(old: dict) -> dict[str, dict]:
    """Destination -> mount for volumes the user did not name (anonymous or from the image's VOLUME)."""
    named_in_binds = {v.source for v in map(parse_volume, old["HostConfig"].get("Binds") or [])
                      if v.kind is VolumeKind.NAMED}
    for m in (old["HostConfig"].get("Mounts") or []):
        if m.get("Type", "volume") == "volume" and m.get("Source"):
            named_in_binds.add(m["Source"])
    out = {}
    for m in old.get("Mounts") or []:
        if m.get("Type") == "volume" and m.get("Name") and m["Name"] not in named_in_binds:
            out[m["Destination"]] = m
    return out


def recreate_config(old: dict, old_image: dict, new_image: dict, new_image_ref: str,
                    joined_names: dict[str, str] | None = None, changes: dict[Key, object] | None = None) -> dict:
    """The create body (Config + HostConfig + NetworkingConfig) for the new container.

    Returns {"config": <POST /containers/create body>, "extra_networks": {net: EndpointConfig}}:
    the engine accepts one network at create time, the others are connected before start.
    `joined_names` maps container IDs to names, to rewrite a `container:<id>` network mode to the
    name (so it still means the same container if that one is recreated too). `changes` are the
    run settings the three-way merge (importer.merge) changes: they override their parts of
    the copy, everything else stays as the old container had it.
    """
    body = _copy_config(old, old_image, new_image_ref, joined_names)
    for key, value in (changes or {}).items():
        _APPLY[key.kind](body, key.name, value)
    return body


def _copy_config(old: dict, old_image: dict, new_image_ref: str, joined_names: dict[str, str] | None) -> dict:
    joined_names = joined_names or {}
    oc = old["Config"]
    ic = _image_config(old_image)
    cfg: dict = {"Image": new_image_ref}

    for key in _CONFIG_VERBATIM:
        v = oc.get(key)
        if v is not None and v is not False and v != "" and v != [] and v != {}:  # StopTimeout 0 is kept
            cfg[key] = v

    # Hostname: the engine sets the short ID when the user gave none; a joined namespace has none.
    host_cfg_old = old["HostConfig"]
    net_mode = host_cfg_old.get("NetworkMode") or "default"
    if (oc.get("Hostname") and oc["Hostname"] != _short_id(old["Id"])
            and not net_mode.startswith("container:") and net_mode != "host"):
        cfg["Hostname"] = oc["Hostname"]

    # What equals the old image's default was not set by the user: let the new image's apply.
    image_env = set(ic.get("Env") or [])
    env = [e for e in (oc.get("Env") or []) if e not in image_env]
    if env:
        cfg["Env"] = env
    image_labels = ic.get("Labels") or {}
    labels = {k: v for k, v in (oc.get("Labels") or {}).items() if image_labels.get(k) != v or k not in image_labels}
    if labels:
        cfg["Labels"] = labels
    for key in ("User", "WorkingDir", "StopSignal"):
        if oc.get(key) and oc.get(key) != ic.get(key):
            cfg[key] = oc[key]
    if oc.get("Shell") and oc.get("Shell") != ic.get("Shell"):
        cfg["Shell"] = oc["Shell"]
    # Entrypoint set by the user resets the image's Cmd in the engine, so then Cmd is theirs too.
    if oc.get("Entrypoint") != ic.get("Entrypoint"):
        cfg["Entrypoint"] = oc.get("Entrypoint") or [""]
        if oc.get("Cmd"):
            cfg["Cmd"] = oc["Cmd"]
    elif oc.get("Cmd") != ic.get("Cmd"):
        cfg["Cmd"] = oc.get("Cmd")
    hc = oc.get("Healthcheck")
    if hc:
        ihc = ic.get("Healthcheck") or {}
        user_hc = {k: v for k, v in hc.items() if ihc.get(k) != v}
        if user_hc:
            cfg["Healthcheck"] = user_hc

    image_ports = set((ic.get("ExposedPorts") or {}).keys())
    exposed: dict[str, dict[str, Any]] = {p: {} for p in (oc.get("ExposedPorts") or {}) if p not in image_ports}
    for p in (host_cfg_old.get("PortBindings") or {}):
        exposed[p] = {}  # every published port must be exposed, whatever the new image declares
    if exposed:
        cfg["ExposedPorts"] = exposed
    image_vols = set((ic.get("Volumes") or {}).keys())
    vols: dict[str, dict[str, Any]] = {v: {} for v in (oc.get("Volumes") or {}) if v not in image_vols}
    if vols:
        cfg["Volumes"] = vols

    # HostConfig: the user's, whole (ports, mounts, restart, resources, caps, devices, logs, DNS...)
    hc_new = copy.deepcopy(host_cfg_old)
    anon = _anonymous_volume_names(old)
    # An anonymous volume spec ("/path") is replaced by its named volume below.
    binds = [b for b in hc_new.get("Binds") or [] if parse_volume(b).kind is not VolumeKind.ANONYMOUS]
    mounts = []
    for m in hc_new.get("Mounts") or []:
        if m.get("Type", "volume") == "volume" and not m.get("Source"):
            real = anon.pop(m["Target"], None)
            if real:
                m = dict(m, Source=real["Name"])
        mounts.append(m)
    if mounts:
        hc_new["Mounts"] = mounts
    bound_dests = {parse_volume(b).target for b in binds}
    bound_dests |= {m["Target"] for m in mounts}
    for dest, m in sorted(anon.items()):
        if dest in bound_dests:
            continue
        binds.append(f"{m['Name']}:{dest}" + ("" if m.get("RW", True) else ":ro"))  # the SAME volume
    hc_new["Binds"] = binds or None
    if net_mode.startswith("container:") and joined_names.get(net_mode[len("container:"):]):
        hc_new["NetworkMode"] = "container:" + joined_names[net_mode[len("container:"):]]
    links = []
    for link in hc_new.get("Links") or []:  # inspect says "/db:/app/alias"; create wants "db:alias"
        src, _, dst = link.partition(":")
        links.append(f"{src.lstrip('/')}:{dst.rsplit('/', 1)[-1]}" if dst else src.lstrip("/"))
    hc_new["Links"] = links or None
    cfg["HostConfig"] = hc_new

    # Networks: the first at create, the others connected afterwards (dropping the short-ID alias).
    extra = {}
    networks = (old.get("NetworkSettings") or {}).get("Networks") or {}
    if not (net_mode in ("host", "none") or net_mode.startswith("container:")):
        primary = "bridge" if net_mode == "default" else net_mode
        endpoints = {}
        for net, ep in networks.items():
            endpoints[net] = _endpoint_config(ep, old["Id"])
        first = primary if primary in endpoints else (next(iter(endpoints)) if endpoints else None)
        if first:
            cfg["NetworkingConfig"] = {"EndpointsConfig": {first: endpoints.pop(first)}}
        extra = endpoints
    return {"config": cfg, "extra_networks": extra}


# -- merged run settings over the copy (value None: the setting is removed) ---------------------

def _set_env(body: dict, name: str, value) -> None:
    cfg = body["config"]
    env = [e for e in cfg.get("Env") or [] if e.partition("=")[0] != name]
    cfg["Env"] = env + ([f"{name}={value}"] if value is not None else [])


def _set_label(body: dict, name: str, value) -> None:
    labels = body["config"].setdefault("Labels", {})
    if value is None:
        labels.pop(name, None)
    else:
        labels[name] = value


def _set_port(body: dict, key: str, value) -> None:
    bindings = body["config"]["HostConfig"].setdefault("PortBindings", {}) or {}
    body["config"]["HostConfig"]["PortBindings"] = bindings
    bindings.pop(key, None)
    if value is not None:
        ports = [parse_port(p) for p in value]
        bindings[key] = [{"HostIp": p.host_ip, "HostPort": p.host_port} for p in ports]
        body["config"].setdefault("ExposedPorts", {})[key] = {}


def _set_volume(body: dict, target: str, value) -> None:
    cfg, hc = body["config"], body["config"]["HostConfig"]
    hc["Binds"] = [b for b in hc.get("Binds") or [] if parse_volume(b).target != target] or None
    hc["Mounts"] = [m for m in hc.get("Mounts") or [] if m.get("Target") != target] or None
    (hc.get("Tmpfs") or {}).pop(target, None)
    (cfg.get("Volumes") or {}).pop(target, None)
    if value is None:
        return
    spec = parse_volume(value)
    if spec.kind is VolumeKind.ANONYMOUS and not spec.mode:
        cfg.setdefault("Volumes", {})[target] = {}
    else:
        hc["Binds"] = (hc["Binds"] or []) + [value]


def _set_cap(body: dict, name: str, value) -> None:
    hc = body["config"]["HostConfig"]
    caps = [c for c in hc.get("CapAdd") or [] if c.upper().removeprefix("CAP_") != name]
    hc["CapAdd"] = (caps + ([name] if value is not None else [])) or None


def _set_restart(body: dict, _: str, value) -> None:
    name, _sep, count = str(value or "no").partition(":")
    body["config"]["HostConfig"]["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(count or 0)}


def _set_command(body: dict, _: str, value) -> None:
    if value is None:
        body["config"].pop("Cmd", None)
    else:
        body["config"]["Cmd"] = list(value)


def _set_network(body: dict, _: str, value) -> None:
    net = value or "bridge"
    body["config"]["HostConfig"]["NetworkMode"] = net
    body["config"]["NetworkingConfig"] = {"EndpointsConfig": {net: {}}}
    body["extra_networks"].pop(net, None)


_APPLY = {Kind.ENV: _set_env, Kind.LABEL: _set_label, Kind.PORT: _set_port, Kind.VOLUME: _set_volume,
          Kind.CAP_ADD: _set_cap, Kind.RESTART: _set_restart, Kind.COMMAND: _set_command,
          Kind.NETWORK: _set_network}


def _endpoint_config(ep: dict, old_id: str) -> dict:
    """What the user set on one network endpoint: static IPs, aliases, links, driver options."""
    out = {}
    ipam = ep.get("IPAMConfig")
    if ipam and any(ipam.values()):
        out["IPAMConfig"] = ipam
    aliases = [a for a in (ep.get("Aliases") or []) if a != _short_id(old_id) and a != old_id]
    if aliases:
        out["Aliases"] = aliases
    if ep.get("Links"):
        out["Links"] = ep["Links"]
    if ep.get("DriverOpts"):
        out["DriverOpts"] = ep["DriverOpts"]
    return out


def describe_mount(m: dict) -> str:
    kind = m.get("Type")
    if kind == "volume":
        src = m.get("Name", "")
        src = f"volume {src[:12]}… (anonymous)" if len(src) == 64 else f"volume {src}"
    else:
        src = f"{kind} {m.get('Source')}"
    return f"{src} -> {m.get('Destination')}" + ("" if m.get("RW", True) else " (read-only)")
