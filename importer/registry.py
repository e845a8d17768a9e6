"""Pushing verified images to the intranet's own registry, and checking what it stored.

Rules (in the order they run, after the trust gate and the load):
- an image goes under its signed repository path and tag (`acme/web:2.0.0` signed as
  `registry.example:5000/acme/web:2.0.0` or `acme/web:2.0.0` goes to `HOST:PORT/acme/web:2.0.0`,
  bundlecore.registrypath); nothing else is ever tagged or pushed. Whether this import may push
  there at all (the host policy's `registries`, the signers' repository scope, whose tag it
  overwrites) is decided before the load, in importer.pushes;
- credentials come from the usual Docker config (`$DOCKER_CONFIG/config.json`, else
  `~/.docker/config.json`), looked up as Docker does: a `credHelpers` entry for the registry, else
  the `credsStore`, else the `auths` entry's base64 `user:password` (`RegistryLogin.of`); a helper
  is the program `docker-credential-<name>` run with `get` (refused with one line when absent);
- access is checked (GET /v2/) BEFORE the images are loaded, so missing or wrong credentials
  stop the import with one line naming the registry, nothing loaded, tagged or pushed;
- the engine pushes with those credentials; our own requests answer a 401 challenge with Basic,
  or with a token from the Bearer realm it names (`parse_challenges`); the password is never
  printed, logged or put in a message;
- the manifest digest the registry then reports for that tag (HEAD /v2/<name>/manifests/<tag>)
  must equal the digest the push reported: a registry (or a proxy in front of it) that stores or
  serves something else is refused with the image named (`refused: registry digest: ...`);
- plain HTTP only to a loopback registry (which the engine treats as insecure by itself); any
  other host is spoken to over HTTPS.
Every node of a fleet then pulls `HOST:PORT/repo@sha256:...`: the same bytes everywhere.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bundlecore.engine import EngineError
from bundlecore.errors import EnvironmentProblem, UsageProblem
from bundlecore.refusals import RegistryDigestMismatch
from bundlecore.registrypath import PushDestination, registry_address
from bundlecore.remote import RemoteProblem, Reply, fetch

# Each of our own requests to a registry (GET /v2/, a token, a manifest's digest): its whole answer
# within this many seconds and under this size, or it is one line (bundlecore.remote).
REQUEST_TIMEOUT = 30.0
MAX_ANSWER = 4 << 20  # the distribution spec's limit for a manifest
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


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
    if registry_address(registry) is None:
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


# -- credentials (the usual Docker config) ------------------------------------------------------
def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _server_key(key: str) -> str:
    """A config key as HOST:PORT: `https://127.0.0.1:5000/v2/` and `127.0.0.1:5000` are one registry."""
    return re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]


@dataclass(frozen=True)
class RegistryLogin:
    """The credentials for one registry, and where they came from (said in messages, never the secret)."""

    registry: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    source: str = "no credentials"

    @classmethod
    def of(cls, registry: str) -> "RegistryLogin":
        path = docker_config_path()
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(registry, source=f"no credentials ({path} does not exist)")
        except (OSError, ValueError) as e:
            raise EnvironmentProblem(f"registry {registry}: cannot read the Docker config {path}: "
                                     f"{getattr(e, 'strerror', None) or e.__class__.__name__}") from None
        if not isinstance(config, dict):
            raise EnvironmentProblem(f"registry {registry}: the Docker config {path} is not a JSON object")
        helpers = {_server_key(k): v for k, v in (config.get("credHelpers") or {}).items()}
        helper = helpers.get(registry) or config.get("credsStore")
        if helper:
            return cls._from_helper(registry, str(helper))
        for key, entry in (config.get("auths") or {}).items():
            if _server_key(key) == registry and isinstance(entry, dict) and entry.get("auth"):
                try:
                    user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    sep = ""
                if not sep:
                    raise EnvironmentProblem(f"registry {registry}: the auths entry in {path} is not base64 user:password")
                return cls(registry, user, password, f"the auths entry in {path}")
        return cls(registry, source=f"no credentials for it in {path}")

    @classmethod
    def _from_helper(cls, registry: str, name: str) -> "RegistryLogin":
        """Run `docker-credential-<name> get` as Docker does (server address on stdin, JSON out)."""
        program = f"docker-credential-{name}"
        exe = shutil.which(program) if re.fullmatch(r"[A-Za-z0-9_.-]+", name) else None
        if not exe:
            raise EnvironmentProblem(f"registry {registry}: the Docker config names the credential helper "
                                     f"{program}, which is not installed")
        try:
            r = subprocess.run([exe, "get"], input=registry.encode(), capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EnvironmentProblem(f"registry {registry}: credential helper {program} failed "
                                     f"({e.__class__.__name__})") from None
        if r.returncode != 0:
            if b"credentials not found" in r.stdout + r.stderr:
                return cls(registry, source=f"no credentials for it in {program}")
            raise EnvironmentProblem(f"registry {registry}: credential helper {program} failed (exit {r.returncode})")
        try:
            answer = json.loads(r.stdout)
            return cls(registry, str(answer["Username"]), str(answer["Secret"]), program)
        except (ValueError, KeyError, TypeError):
            raise EnvironmentProblem(f"registry {registry}: credential helper {program} answered something "
                                     f"other than its JSON") from None

    @property
    def auth_config(self) -> dict | None:
        """For the engine's push (None: push without credentials)."""
        return {"username": self.username, "password": self.password} if self.username is not None else None


# -- speaking to the registry (401 -> Basic or Bearer) ---------------------------------------
_SCHEME = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?=\s|,|$)")
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*,?')


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """A WWW-Authenticate header (RFC 7235) as [(scheme in lower case, {param: value})], e.g.
    `Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull,push"`. A quoted
    value may hold commas and escaped quotes; what cannot be parsed ends the list."""
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(header.rstrip()):
        m = _PARAM.match(header, pos) if out else None
        if m:
            quoted = m.group(2)
            out[-1][1][m.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else m.group(3)
        else:
            m = _SCHEME.match(header, pos)
            if not m:
                break
            out.append((m.group(1).lower(), {}))
        pos = m.end()
    return out


def token_request(challenge: dict[str, str]) -> tuple[str, dict[str, str]] | None:
    """(URL, query) to ask the Bearer realm for a token (None when the challenge has no usable realm)."""
    realm = challenge.get("realm") or ""
    if not re.match(r"^https?://[^\s]+$", realm):
        return None
    return realm, {k: challenge[k] for k in ("service", "scope") if challenge.get(k)}


def _scheme(registry: str) -> str:
    return "http" if is_loopback(registry) else "https"


def _send(method: str, url: str, registry: str, **kw) -> Reply:
    """One request whose whole answer comes within REQUEST_TIMEOUT and under MAX_ANSWER (bundlecore.remote)."""
    try:
        return fetch(method, url, timeout=REQUEST_TIMEOUT, max_bytes=MAX_ANSWER, allow_redirects=False, **kw)
    except RemoteProblem as e:
        raise EnvironmentProblem(f"registry {registry} does not answer usably ({e})") from None


def _authorized(method: str, path: str, login: RegistryLogin, headers: dict | None = None) -> Reply:
    """`method` on the registry's `path`, answering a 401 challenge with the login's credentials."""
    registry, headers = login.registry, dict(headers or {})
    url = f"{_scheme(registry)}://{registry}{path}"
    r = _send(method, url, registry, headers=headers)
    if r.status_code != 401:
        return r
    if login.username is None:
        raise EnvironmentProblem(f"registry {registry} needs credentials: {login.source}")
    challenges = dict(parse_challenges(r.headers.get("WWW-Authenticate", "")))
    basic = (login.username, login.password or "")
    if "bearer" in challenges:
        asked = token_request(challenges["bearer"])
        if asked is None:
            raise EnvironmentProblem(f"registry {registry} asks for a Bearer token without a usable realm")
        t = _send("GET", asked[0], registry, params=asked[1], auth=basic)
        try:
            body = t.json("the token answer") if t.status_code == 200 else {}
        except RemoteProblem:
            body = {}
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not token:
            raise EnvironmentProblem(f"registry {registry} refused the credentials from {login.source} "
                                     f"(token service answered {t.status_code})")
        r = _send(method, url, registry, headers={**headers, "Authorization": f"Bearer {token}"})
    elif "basic" in challenges:
        r = _send(method, url, registry, headers=headers, auth=basic)
    else:
        raise EnvironmentProblem(f"registry {registry} asks for an authentication scheme this importer does not "
                                 f"speak ({', '.join(challenges) or 'none named'})")
    if r.status_code in (401, 403):
        raise EnvironmentProblem(f"registry {registry} refused the credentials from {login.source}")
    return r


def check_access(registry: str) -> RegistryLogin:
    """The login for `registry`, proven by GET /v2/ (one line naming the registry otherwise)."""
    login = RegistryLogin.of(check_registry_address(registry))
    r = _authorized("GET", "/v2/", login)
    if r.status_code != 200:
        raise EnvironmentProblem(f"registry {registry} does not speak the registry API (GET /v2/ answered "
                                 f"{r.status_code})")
    return login


def _push(client, repository: str, tag: str, login: RegistryLogin) -> str:
    """docker push; the digest the engine reports for the manifest it uploaded."""
    digest = None
    try:
        for event in client.push(repository, tag, login.auth_config):
            if event.get("error"):
                raise EnvironmentProblem(f"push of {repository}:{tag} failed: {event['error']}")
            digest = (event.get("aux") or {}).get("Digest") or digest
    except EngineError as e:
        raise EnvironmentProblem(f"push of {repository}:{tag} failed: {e}") from None
    if not digest:
        raise EnvironmentProblem(f"push of {repository}:{tag} reported no digest")
    return digest


def registry_digest(login: RegistryLogin, path: str, tag: str) -> str | None:
    """The manifest digest the registry serves for path:tag (None when it says none)."""
    r = _authorized("HEAD", f"/v2/{path}/manifests/{tag}", login, {"Accept": MANIFEST_TYPES})
    if r.status_code != 200:
        return None
    return r.headers.get("Docker-Content-Digest")


def registry_manifest(login: RegistryLogin, path: str, tag: str) -> tuple[str, str | None] | None:
    """(manifest digest, image config digest) the registry serves for path:tag, None when it has no
    such tag; the config digest is None for a manifest list or an index (no one image)."""
    r = _authorized("GET", f"/v2/{path}/manifests/{tag}", login, {"Accept": MANIFEST_TYPES})
    if r.status_code == 404:
        return None
    digest = r.headers.get("Docker-Content-Digest")
    if r.status_code != 200 or not digest:
        raise EnvironmentProblem(f"registry {login.registry} answered {r.status_code} for the manifest of "
                                 f"{path}:{tag}")
    try:
        config = r.json("the manifest", dict).get("config")
    except RemoteProblem:
        config = None
    image = config.get("digest") if isinstance(config, dict) else None
    return digest, image if isinstance(image, str) else None


def push_verified(client, destinations: list[PushDestination], out=print,
                  login: RegistryLogin | None = None) -> list[PushedImage]:
    """Tag and push each verified image to its destination (as planned and checked:
    importer.pushes), then confirm the registry's digest of each."""
    pushed = []
    for dest in destinations:
        registry, ref, repository, tag = dest.registry, dest.source, dest.repository, dest.tag
        login = login or check_access(registry)
        try:
            client.tag(ref, repository, tag)
        except EngineError as e:
            raise EnvironmentProblem(f"cannot tag {ref} as {repository}:{tag}: {e.explanation or e}") from None
        digest = _push(client, repository, tag, login)
        served = registry_digest(login, dest.path, tag)
        if served != digest:
            raise RegistryDigestMismatch(f"image {ref}: registry {registry} serves {served or 'nothing'} for "
                                         f"{repository}:{tag}, the push reported {digest}")
        out(f"pushed {ref} to {repository}:{tag} ({digest}, confirmed by the registry)")
        pushed.append(PushedImage(ref, f"{repository}:{tag}", digest))
    return pushed
