"""Connecting to the Docker engine, with failures as one-line environment errors."""

from __future__ import annotations

import os
from typing import Any

import docker
import requests

from bundlecore.errors import EnvironmentProblem


def connect(timeout: int = 600) -> docker.DockerClient:
    """The project's one way to reach the engine; EnvironmentProblem (one line) when it is away."""
    try:
        client = docker.from_env(timeout=timeout)
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise _unreachable(e) from None
    ping(client)
    return client


def connect_or_none(timeout: int = 600) -> docker.DockerClient | None:
    """For read-only reports that still have something to say without the engine."""
    try:
        return connect(timeout)
    except EnvironmentProblem:
        return None


def ping(client: docker.DockerClient) -> None:
    """Check that the engine of an existing client still answers (same message as connect)."""
    try:
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise _unreachable(e) from None


def engine_address() -> str:
    """Where the Docker SDK looks for the engine (as `docker` does: $DOCKER_HOST or the socket)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _unreachable(e: Exception) -> EnvironmentProblem:
    """The one engine-down line of every command: the same words whatever the SDK raised
    (the exception's own text varies by transport and says nothing an admin can act on)."""
    return EnvironmentProblem(f"Docker engine unreachable at {engine_address()}; is dockerd running?")


def engine_platform(client: docker.DockerClient) -> str:
    v = client.version()
    return f"{v.get('Os', 'linux')}/{v.get('Arch', 'amd64')}"


def image_platform(attrs: dict[str, Any]) -> str:
    plat = f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', 'amd64')}"
    return plat + (f"/{attrs['Variant']}" if attrs.get("Variant") else "")
