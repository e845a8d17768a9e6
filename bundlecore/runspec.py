"""`docker run`'s -v and -p syntax, parsed in one place (the manifest's `run` object and the
engine's HostConfig.Binds use it).

Volumes, as the engine reads them: `/path` and `/path:ro|rw` are anonymous volumes;
`name:/path[:mode]` a named volume; `/host:/path[:mode]` a bind mount. More than three
colon-separated parts is not a volume spec. Ports: `[ip:][hostport:]containerport[/proto]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bundlecore.errors import UsageProblem

VOLUME_SYNTAX = "name:/path[:ro], /host:/path or /path"
PORT_SYNTAX = "[ip:]hostport:containerport[/proto]"


class VolumeKind(StrEnum):
    NAMED = "named"
    BIND = "bind"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class VolumeSpec:
    kind: VolumeKind
    source: str | None  # volume name or host path; None for an anonymous volume
    target: str
    mode: str = ""


def parse_volume(spec: str) -> VolumeSpec:
    parts = str(spec).split(":")
    if len(parts) == 1:
        return VolumeSpec(VolumeKind.ANONYMOUS, None, parts[0])
    if len(parts) == 2 and parts[0].startswith("/") and parts[1] in ("ro", "rw"):
        return VolumeSpec(VolumeKind.ANONYMOUS, None, parts[0], parts[1])
    if len(parts) in (2, 3):
        source, target = parts[0], parts[1]
        kind = VolumeKind.BIND if source.startswith("/") else VolumeKind.NAMED
        return VolumeSpec(kind, source, target, parts[2] if len(parts) == 3 else "")
    raise UsageProblem(f"cannot parse volume {spec!r} ({VOLUME_SYNTAX})")


def named_volumes(specs: list[str]) -> list[str]:
    """The volume names among `specs`, in order."""
    return [v.source for v in map(parse_volume, specs) if v.kind is VolumeKind.NAMED and v.source is not None]


@dataclass(frozen=True)
class PortSpec:
    key: str        # the engine's container port key, "8080/tcp"
    host_ip: str    # "" for every interface
    host_port: str  # "" for a port the engine picks


def parse_port(spec: str) -> PortSpec:
    proto = "tcp"
    s = str(spec)
    if "/" in s:
        s, proto = s.rsplit("/", 1)
    if s.count(":") > 2:
        raise UsageProblem(f"cannot parse port {spec!r} ({PORT_SYNTAX})")
    parts = s.rsplit(":", 2)
    if len(parts) == 1:
        ip, host, cport = "", "", parts[0]
    elif len(parts) == 2:
        ip, (host, cport) = "", parts
    else:
        ip, host, cport = parts
    if not cport.isdigit() or (host and not host.isdigit()):
        raise UsageProblem(f"cannot parse port {spec!r} ({PORT_SYNTAX})")
    return PortSpec(f"{cport}/{proto}", ip, host)
