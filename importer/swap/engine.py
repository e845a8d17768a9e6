"""Container operations of the swap over the Docker SDK, each safe to repeat (the journal may
replay a step after a crash). Connecting to the engine is bundlecore.docker_engine's job."""

from __future__ import annotations

import docker

DEFAULT_STOP_TIMEOUT = 10  # the engine's own default


def inspect(client, ref: str) -> dict | None:
    try:
        return client.api.inspect_container(ref)
    except docker.errors.NotFound:
        return None


def inspect_named(client, name: str) -> dict | None:
    """The container called exactly `name` (not one whose ID merely starts with it)."""
    info = inspect(client, name)
    return info if info and container_name(info) == name else None


def container_name(info: dict) -> str:
    return info["Name"].lstrip("/")


def image_or_none(client, ref: str) -> dict | None:
    try:
        return client.api.inspect_image(ref)
    except docker.errors.NotFound:  # ImageNotFound is a NotFound
        return None


def stop_timeout(info: dict) -> int:
    """The container's own StopTimeout (0 is a valid value), else the engine's default."""
    t = info["Config"].get("StopTimeout")
    return DEFAULT_STOP_TIMEOUT if t is None else int(t)


def stop(client, cid: str) -> None:
    info = inspect(client, cid)
    if info and (info["State"].get("Running") or info["State"].get("Restarting")):
        client.api.stop(cid, timeout=stop_timeout(info))


def restart(client, cid: str) -> None:
    client.api.restart(cid, timeout=stop_timeout(client.api.inspect_container(cid)))


def set_restart_policy(client, cid: str, policy: dict) -> None:
    """Parked containers get policy "no", so an engine restart cannot start them next to the new one."""
    client.api.update_container(cid, restart_policy={"Name": policy.get("Name") or "no",
                                                     "MaximumRetryCount": policy.get("MaximumRetryCount", 0)})


def rename(client, cid: str, name: str) -> None:
    info = inspect(client, cid)
    if info and container_name(info) != name:
        client.api.rename(cid, name)


def connect_network(client, cid: str, network: str, endpoint: dict) -> None:
    """Attach with the full EndpointConfig (the SDK's connect_container_to_network drops some fields)."""
    url = client.api._url("/networks/{0}/connect", network)
    res = client.api._post_json(url, data={"Container": cid, "EndpointConfig": endpoint})
    client.api._raise_for_status(res)


def _exists(inspect, name: str) -> bool:
    try:
        inspect(name)
        return True
    except docker.errors.NotFound:
        return False


def volume_exists(client, name: str) -> bool:
    return _exists(client.api.inspect_volume, name)


def network_exists(client, name: str) -> bool:
    return _exists(client.api.inspect_network, name)
