"""Pushing verified images to the intranet's own registry, and checking what it stored.

Rules (in the order they run, after the trust gate and the load):
- an image goes under its signed repository path and tag (`acme/web:2.0.0` signed as
  `registry.example:5000/acme/web:2.0.0` or `acme/web:2.0.0` goes to `HOST:PORT/acme/web:2.0.0`);
  nothing else is ever tagged or pushed;
- the engine pushes (credentials from the usual Docker config, as `docker push` would);
- the manifest digest the registry then reports for that tag (HEAD /v2/<name>/manifests/<tag>)
  must equal the digest the push reported: a registry (or a proxy in front of it) that stores or
  serves something else is refused with the image named (`refused: registry digest: ...`);
- plain HTTP only to a loopback registry (which the engine treats as insecure by itself); any
  other host is spoken to over HTTPS.
Every node of a fleet then pulls `HOST:PORT/repo@sha256:...`: the same bytes everywhere.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass

import docker
import requests

from bundlecore.errors import EnvironmentProblem, UsageProblem
from bundlecore.refusals import RegistryDigestMismatch

MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
_REGISTRY = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9a-fA-F:]+\]):[0-9]{1,5}$")


@dataclass(frozen=True)
class PushedImage:
    """One signed image as the registry now holds it."""

    ref: str          # the signed reference
    pushed: str       # HOST:PORT/repo:tag
    digest: str       # sha256:... reported by the push and confirmed by the registry

    @property
    def by_digest(self) -> str:
        """What nodes pull: the tag for people, the digest for the bytes."""
        return f"{self.pushed}@{self.digest}"

    def report(self) -> dict:
        return asdict(self) | {"by_digest": self.by_digest}


def check_registry_address(registry: str) -> str:
    """HOST:PORT (a usage error otherwise: no scheme, no path)."""
    if not _REGISTRY.match(registry or "") or not 0 < int(registry.rsplit(":", 1)[1]) < 65536:
        raise UsageProblem(f"registry {registry!r} is not HOST:PORT")
    return registry


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def repository_path(ref: str) -> tuple[str, str]:
    """(repository path without any registry host, tag) of a signed tagged reference."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag or "@" in ref:
        raise UsageProblem(f"image {ref} has no tag to push under")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name, tag


def push_target(registry: str, ref: str) -> tuple[str, str]:
    """(repository in the registry, tag) for the signed `ref`."""
    path, tag = repository_path(ref)
    return f"{registry}/{path}", tag


def _push(client, repository: str, tag: str) -> str:
    """docker push; the digest the engine reports for the manifest it uploaded."""
    digest = None
    try:
        for event in client.images.push(repository, tag=tag, stream=True, decode=True):
            if event.get("error"):
                raise EnvironmentProblem(f"push of {repository}:{tag} failed: {event['error']}")
            digest = (event.get("aux") or {}).get("Digest") or digest
    except (docker.errors.APIError, requests.RequestException) as e:
        raise EnvironmentProblem(f"push of {repository}:{tag} failed: {e}") from None
    if not digest:
        raise EnvironmentProblem(f"push of {repository}:{tag} reported no digest")
    return digest


def registry_digest(registry: str, path: str, tag: str) -> str | None:
    """The manifest digest the registry serves for path:tag (None when it says none)."""
    scheme = "http" if is_loopback(registry) else "https"
    try:
        r = requests.head(f"{scheme}://{registry}/v2/{path}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES},
                          timeout=30, allow_redirects=False)
    except requests.RequestException as e:
        raise EnvironmentProblem(f"registry {registry} does not answer ({e.__class__.__name__})") from None
    if r.status_code != 200:
        return None
    return r.headers.get("Docker-Content-Digest")


def push_verified(client, registry: str, refs: list[str], out=print) -> list[PushedImage]:
    """Tag and push each verified image, then confirm the registry's digest of each."""
    check_registry_address(registry)
    pushed = []
    for ref in refs:
        repository, tag = push_target(registry, ref)
        try:
            client.api.tag(ref, repository, tag)
        except docker.errors.APIError as e:
            raise EnvironmentProblem(f"cannot tag {ref} as {repository}:{tag}: {e.explanation or e}") from None
        digest = _push(client, repository, tag)
        served = registry_digest(registry, repository.split("/", 1)[1], tag)
        if served != digest:
            raise RegistryDigestMismatch(f"image {ref}: registry {registry} serves {served or 'nothing'} for "
                                         f"{repository}:{tag}, the push reported {digest}")
        out(f"pushed {ref} to {repository}:{tag} ({digest}, confirmed by the registry)")
        pushed.append(PushedImage(ref, f"{repository}:{tag}", digest))
    return pushed
