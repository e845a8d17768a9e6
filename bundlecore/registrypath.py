"""Where a signed image goes in the intranet registry: the one normalisation of a push.

A signed ref is pushed under its repository path with any registry host stripped
(`registry.example:5000/acme/web:2.0.0` and `acme/web:2.0.0` both go to `HOST:PORT/acme/web`,
tag `2.0.0`): the first component is a host when it holds a `.` or a `:` or is `localhost`, as
Docker reads it. The push (importer.registry), a role's repository scope (bundlecore.trust:
checked on this destination, not only on the ref as written), the host policy's registry grant and
the record of which app pushed a tag (importer.pushes) all read the destination from
`push_destination`, so what is checked is what is pushed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bundlecore.errors import UsageProblem

_REGISTRY = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9a-fA-F:]+\]):[0-9]{1,5}$")


def registry_address(registry: str) -> str | None:
    """HOST:PORT in the one form it is compared in (host in lower case), or None when `registry`
    is not HOST:PORT (no scheme, no path, a port from 1 to 65535)."""
    if not isinstance(registry, str) or not _REGISTRY.match(registry) \
            or not 0 < int(registry.rsplit(":", 1)[1]) < 65536:
        return None
    return registry.lower()


def repository_path(ref: str) -> tuple[str, str]:
    """(repository path without any registry host, tag) of a signed tagged reference."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag or "@" in ref:
        raise UsageProblem(f"image {ref} has no tag to push under")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name, tag


@dataclass(frozen=True)
class PushDestination:
    """One signed image as it is pushed: `source` goes to `repository`:`tag` (= `ref`)."""

    source: str       # the signed reference
    registry: str     # HOST:PORT
    path: str         # the repository path in the registry, no host
    tag: str

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}"

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def key(self) -> str:
        """The tag as records compare it: the registry's host in lower case (`R:1/a:1` = `r:1/a:1`)."""
        return f"{self.registry.lower()}/{self.path}:{self.tag}"


def push_destination(registry: str, ref: str) -> PushDestination:
    """Where the signed `ref` is pushed in `registry` (HOST:PORT)."""
    path, tag = repository_path(ref)
    return PushDestination(ref, registry, path, tag)
