"""Connecting to the Docker engine, with failures as one-line environment errors."""

from __future__ import annotations

import docker
import requests

from bundlecore.errors import EnvironmentProblem


def connect(timeout: int = 600) -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise EnvironmentProblem(f"Docker engine unreachable ({e.__class__.__name__}); is dockerd running?") from None


def engine_platform(client) -> str:
    v = client.version()
    return f"{v.get('Os', 'linux')}/{v.get('Arch', 'amd64')}"


def image_platform(attrs: dict) -> str:
    plat = f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', 'amd64')}"
    return plat + (f"/{attrs['Variant']}" if attrs.get("Variant") else "")
