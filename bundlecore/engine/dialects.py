"""What differs between the engines that serve the Docker API (Docker, Podman), as pure rules.

Which engine answers (from its /version), how it names an image loaded without a registry, which
of its errors mean "not found" or "conflict", the line said when it is away. The engine classes
(bundlecore.engine.sdk `Engine`, bundlecore.engine.podman `PodmanEngine`) apply them, so nothing
above the engine layer knows which engine it talks to; these rules are table-tested without one.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Iterable, Mapping

from bundlecore.engine.errors import EngineConflict, EngineError, EngineNotFound


class EngineKind(StrEnum):
    """The engine behind the socket (its value is how plans and `doctor` name it)."""

    DOCKER = "Docker"
    PODMAN = "Podman"


def engine_kind(version: Mapping[str, Any]) -> EngineKind:
    """Podman's /version lists a "Podman Engine" component; Docker's an "Engine" one (or none)."""
    names = [str(c.get("Name", "")) for c in version.get("Components") or [] if isinstance(c, Mapping)]
    return EngineKind.PODMAN if any(n.startswith("Podman") for n in names) else EngineKind.DOCKER


def describe(kind: EngineKind, version: Mapping[str, Any], rootless: bool = False) -> str:
    """'Podman 4.3.1, API 1.41' ('..., rootless'): the engine as plans and `doctor` name it."""
    return f"{kind.value} {version.get('Version', '?')}, API {version.get('ApiVersion', '?')}" + \
        (", rootless" if rootless else "")


def podman_rootless(libpod_info: Mapping[str, Any]) -> bool:
    """A rootless Podman says so in its own /libpod/info (host.security.rootless); its Docker-compatible
    /info does not (no `name=rootless` security option, unlike a rootless Docker)."""
    security = (libpod_info.get("host") or {}).get("security") or {}
    return security.get("rootless") is True


_ROOTLESS_SOCKET = re.compile(r"unix://(/var)?/run/user/\d+/podman/podman\.sock")


def rootless_socket(address: str) -> bool:
    """The address is where a rootless Podman listens: `$XDG_RUNTIME_DIR/podman/podman.sock`
    (/run/user/UID/...), as `systemctl --user enable podman.socket` makes it."""
    return _ROOTLESS_SOCKET.fullmatch(address) is not None


# The registries Podman puts in front of a name that has none: `podman load` of `demo/app:1.0.0`
# tags `localhost/demo/app:1.0.0`; a name pulled or written as Docker Hub's is `docker.io/...`
# (`docker.io/library/...` for a one-part name). Docker never shows these prefixes.
PODMAN_IMPLICIT_REGISTRIES = ("localhost/", "docker.io/library/", "docker.io/")


def has_registry(ref: str) -> bool:
    """The ref's first component names a registry (a dot, a port or `localhost`), as Docker reads it."""
    first, slash, _ = ref.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def signed_ref_of(name: str, signed: Iterable[str], implicit_registries: tuple[str, ...]) -> str | None:
    """The signed ref an engine's name for a loaded image stands for: the name itself, or the name
    without a registry this engine puts in front of a registry-less signed ref; None: not signed.
    A name only: the caller still checks that the image it names has the signed ID."""
    refs = set(signed)
    if name in refs:
        return name
    for prefix in implicit_registries:
        rest = name[len(prefix):]
        if name.startswith(prefix) and rest in refs and not has_registry(rest):
            return rest
    return None


# Podman answers 500 where Docker answers 404 or 409: (text in its message, the error it means)
PODMAN_ERRORS: tuple[tuple[str, type[EngineError]], ...] = (
    ("already in use", EngineConflict),
    ("no such container", EngineNotFound),
    ("no such image", EngineNotFound),
    ("no such volume", EngineNotFound),
    ("no such network", EngineNotFound),
)


def podman_error(e: EngineError) -> EngineError:
    """Podman's error as the engine layer's own: a 500 whose message says what Docker's status would."""
    if type(e) is EngineError and e.status == 500:
        text = e.message.lower()
        for needle, cls in PODMAN_ERRORS:
            if needle in text:
                return cls(e.status, e.message)
    return e


def podman_start_outran(e: EngineError) -> bool:
    """Podman's start answered an error only because the container's process had already exited when
    Podman went to read its cgroup (`read /proc/PID/cgroup: no such process`): the process ran. Not a
    transient error, as a second start would run the app (and its migration) again."""
    return e.status == 500 and "/cgroup: no such process" in e.message.lower()


def podman_container(info: dict[str, Any]) -> dict[str, Any]:
    """Podman's container inspect record in Docker's words: HostConfig.Ulimits named `RLIMIT_NOFILE`
    become `nofile` (what its own create wants back, as Docker names them); State.Health with an
    empty status (no health check declared) goes, as Docker has none then."""
    state = info.get("State") or {}
    if "Health" in state and not (state["Health"] or {}).get("Status"):
        del state["Health"]
    host = info.get("HostConfig") or {}
    limits = host.get("Ulimits")
    if limits:
        host["Ulimits"] = [{**u, "Name": str(u.get("Name", "")).lower().removeprefix("rlimit_")} for u in limits]
    return info


def archive_member_name(name: str, top: str) -> str:
    """A member of Podman's archive of a path, named as Docker names it: under the path's base name
    `top`. Of a stopped container's mount Podman 4.3 names the root "" and the rest "/file"; of a
    running one it names them as Docker does (those names are kept)."""
    if name in ("", ".", "/", "./"):
        return top
    if name.startswith("/"):
        return top + name
    return name


def unreachable_line(address: str) -> str:
    """The one engine-down line: it names the engine the address is for, and how to start it."""
    if rootless_socket(address):
        return (f"Podman engine unreachable at {address}; is the rootless `podman system service` of that user "
                f"running (`systemctl --user enable --now podman.socket` as that user)?")
    if "podman" in address:
        return f"Podman engine unreachable at {address}; is `podman system service` (podman.socket) running?"
    return f"Docker engine unreachable at {address}; is dockerd running?"
