"""What a bundle may ask of this host: decided by the intranet, never by the builder.

A valid signature proves who built a bundle, not that its run settings are safe here: one
builder key that may bind-mount `/` or join the host's network is root on every intranet host.
So the importer holds its own deny-by-default policy (`host-policy.toml`, beside the keys in the
trust store) and refuses, before anything is loaded, every setting it does not grant:

- host bind mounts: only below a granted path prefix (`bind_prefixes`), compared on whole path
  components, for the path as written AND as the host resolves it (a symlink under a granted
  prefix cannot lead elsewhere);
- nested binds: never two bind sources of one container where one lies inside the other and
  either is writable (as written or resolved). The realpath is checked here once, but the engine
  resolves a bind source again at every (re)start: a container that can write to `G/app` can put
  a symlink where `G/app/sub` was, and its next restart mounts whatever that points to. No grant
  allows it: bind the outer directory once and use the subdirectory inside the container. The
  container kind's plan applies the same rule to the binds the new container keeps from the
  running one; and every kind's plan (a container, a project, a Swarm service) applies it between
  the binds it asks for and those of every other container on the engine (importer.ownership
  `refuse_nested_binds`: the app's own containers, tasks and kept generations are not others); a
  project's plan takes the binds of all its services together, so one service's writable bind
  around another's is refused as two containers' are;
- the engine's socket (`/var/run/docker.sock`, `/run/docker.sock`, a unix DOCKER_HOST), or any
  directory holding it: never, unless `engine_socket = true` — a prefix grant is not enough;
- added capabilities: Docker's default set adds nothing and is always fine; any other
  (`SYS_ADMIN`, `NET_ADMIN`, `ALL`...) only when granted in `cap_add`;
- network modes `host` and `container:NAME`: only when granted in `network_modes`;
- labels under a reserved prefix (`io.bundle.`, which marks this tool's own helpers, and
  `com.docker.`, plus any the policy adds): never;
- the metrics gate's Prometheus (`[target.health] prometheus.url`, importer.analysis): the
  importer sends queries there, so only to a base URL granted in `prometheus_urls` (compared
  whole: scheme, host, port and path, after normalizing case, default port and trailing slash).
  The site file may set or override the URL; the merged settings are checked again, and a metrics
  gate left with no URL is refused;
- the registry an import pushes its images to (`[target] registry` or `--registry`): only one
  granted in `registries` (HOST:PORT, the host compared in lower case; `check_registry`), whoever
  named it: the host, not the bundle, chooses where verified images are published;
- a named volume or a network another app owns (importer.ownership), or that no app owns: only
  when granted by name in `shared_volumes` / `shared_networks` (the app uses it without owning it:
  its backups, restores and uninstall never touch another app's volume), or, for one no app owns,
  with --adopt; else refused (check `ownership`).
Privileged mode, devices, pid/ipc/uts namespaces and security options cannot be asked for at
all: the manifest schema has no field for them.

Grants are per app: `[host]` applies to every app, `[apps.NAME]` adds to it for app NAME only
(AnythingLLM needs `cap_add = ["SYS_ADMIN"]`). A refusal names the setting and the exact policy
key that would allow it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

from bundlecore.errors import EnvironmentProblem
from bundlecore.fsutil import read_toml
from bundlecore.runspec import VolumeKind, VolumeSpec, parse_volume
from bundlecore.refusals import HostPolicyRefused
from bundlecore.registrypath import registry_address
from bundlecore.release import Target

POLICY_FILE = "host-policy.toml"

# Docker's default capability set: adding one of these grants nothing the container lacks.
DOCKER_DEFAULT_CAPS = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
RESERVED_LABEL_PREFIXES = ("io.bundle.", "com.docker.")
NETWORK_MODES = ("host", "container")


class Setting(str, Enum):
    """The policy key that governs each kind of host access (also what a refusal tells to set)."""

    BIND_MOUNT = "bind_prefixes"
    ENGINE_SOCKET = "engine_socket"
    CAP_ADD = "cap_add"
    NETWORK_MODE = "network_modes"
    LABEL = "reserved_label_prefixes"
    PROMETHEUS = "prometheus_urls"
    REGISTRY = "registries"
    SHARED_VOLUMES = "shared_volumes"
    SHARED_NETWORKS = "shared_networks"


@dataclass(frozen=True)
class Grants:
    bind_prefixes: tuple[str, ...] = ()
    cap_add: frozenset[str] = frozenset()
    network_modes: frozenset[str] = frozenset()
    engine_socket: bool = False
    prometheus_urls: frozenset[str] = frozenset()  # normalized (base_url)
    registries: frozenset[str] = frozenset()       # normalized (registry_address)
    shared_volumes: frozenset[str] = frozenset()   # another app's (or no app's) volumes this one may use
    shared_networks: frozenset[str] = frozenset()

    def __or__(self, other: "Grants") -> "Grants":
        return Grants(self.bind_prefixes + other.bind_prefixes, self.cap_add | other.cap_add,
                      self.network_modes | other.network_modes, self.engine_socket or other.engine_socket,
                      self.prometheus_urls | other.prometheus_urls, self.registries | other.registries,
                      self.shared_volumes | other.shared_volumes, self.shared_networks | other.shared_networks)


@dataclass(frozen=True)
class HostAccess:
    """One thing the run settings ask of the host, and whether (and by which key) it is granted."""

    setting: Setting
    value: str
    where: str                  # e.g. target.run.volumes.0
    granted_by: str | None      # "[apps.demo] bind_prefixes", "Docker's default capabilities", or None

    def line(self) -> str:
        what = {Setting.BIND_MOUNT: "bind mount of host path", Setting.ENGINE_SOCKET: "the Docker engine socket via",
                Setting.CAP_ADD: "added capability", Setting.NETWORK_MODE: "network mode",
                Setting.LABEL: "reserved label", Setting.PROMETHEUS: "metrics queries to Prometheus at",
                Setting.REGISTRY: "pushes to registry"}[self.setting]
        return f"{what} {self.value}"


@dataclass
class HostPolicy:
    path: Path | None
    host: Grants = field(default_factory=Grants)
    apps: dict[str, Grants] = field(default_factory=dict)
    reserved_label_prefixes: tuple[str, ...] = RESERVED_LABEL_PREFIXES

    @classmethod
    def load(cls, store_dir: Path | str) -> "HostPolicy":
        """The policy beside the trust store's keys; no file means nothing is granted."""
        path = Path(store_dir) / POLICY_FILE
        try:
            raw = read_toml(path)
        except FileNotFoundError:
            return cls(path)
        except ValueError as e:
            raise EnvironmentProblem(f"host policy {path} is {e}") from None
        if set(raw) - {"host", "apps"}:
            raise EnvironmentProblem(f"host policy {path}: only [host] and [apps.NAME] tables are allowed, "
                                     f"not {sorted(set(raw) - {'host', 'apps'})[0]}")
        host_raw = dict(raw.get("host") or {})
        extra_labels = host_raw.pop(Setting.LABEL.value, [])
        if not isinstance(extra_labels, list) or not all(isinstance(p, str) and p for p in extra_labels):
            raise EnvironmentProblem(f"host policy {path}: [host] {Setting.LABEL.value} must be a list of prefixes")
        apps_raw = raw.get("apps") or {}
        if not isinstance(apps_raw, dict):
            raise EnvironmentProblem(f"host policy {path}: apps must be [apps.NAME] tables")
        return cls(path, _grants(path, "host", host_raw),
                   {name: _grants(path, f"apps.{name}", g) for name, g in apps_raw.items()},
                   RESERVED_LABEL_PREFIXES + tuple(extra_labels))

    # -- the decision -----------------------------------------------------------------------
    def review(self, app: str, run: dict, health: dict | None = None, *, url_required: bool = False,
               at: str = "target.run") -> list[HostAccess]:
        """Everything in `run` (a manifest's target.run) and `health` (its metrics gate) that reaches
        beyond the container, each with the grant that allows it or None; what the plan shows and
        `check` enforces. `url_required`: the site settings are applied, a metrics gate needs its URL."""
        app_grants = self.apps.get(app, Grants())
        found: list[HostAccess] = []
        for i, spec in enumerate(run.get("volumes") or []):
            source = spec.split(":", 1)[0] if ":" in spec else ""
            if not source.startswith("/"):
                continue  # a named or anonymous volume lives in the engine's own area
            where = f"{at}.volumes.{i}"
            resolved = os.path.realpath(source)
            sockets = _engine_sockets()
            if any(_is_within(sock, p) for sock in sockets for p in {source, resolved}):
                found.append(HostAccess(Setting.ENGINE_SOCKET, source, where,
                                        self._which(app, app_grants.engine_socket, self.host.engine_socket,
                                                    Setting.ENGINE_SOCKET)))
                if source in sockets:
                    continue  # the socket itself: engine_socket is the grant that matters
            found.append(HostAccess(Setting.BIND_MOUNT, source, where, self._which(
                app, _under_any(app_grants.bind_prefixes, source, resolved),
                _under_any(self.host.bind_prefixes, source, resolved), Setting.BIND_MOUNT)))
        for i, cap in enumerate(run.get("cap_add") or []):
            name = cap.upper().removeprefix("CAP_")
            where = f"{at}.cap_add.{i}"
            if name in DOCKER_DEFAULT_CAPS:
                continue
            found.append(HostAccess(Setting.CAP_ADD, name, where, self._which(
                app, name in app_grants.cap_add, name in self.host.cap_add, Setting.CAP_ADD)))
        network = run.get("network") or ""
        mode = "container" if network.startswith("container:") else network
        if mode in NETWORK_MODES:
            found.append(HostAccess(Setting.NETWORK_MODE, network, f"{at}.network", self._which(
                app, mode in app_grants.network_modes, mode in self.host.network_modes, Setting.NETWORK_MODE)))
        for key in sorted(run.get("labels") or {}):
            if key.startswith(self.reserved_label_prefixes):
                found.append(HostAccess(Setting.LABEL, key, f"{at}.labels.{key}", None))
        prom = (health or {}).get("prometheus")
        if prom and (prom.get("url") or url_required):
            url = base_url(prom.get("url") or "")
            found.append(HostAccess(Setting.PROMETHEUS, prom.get("url") or "(no url set)",
                                    f"{at.removesuffix('.run')}.health.prometheus.url",
                                    self._which(app, url in app_grants.prometheus_urls,
                                                url in self.host.prometheus_urls, Setting.PROMETHEUS) if url else None))
        return found

    def check(self, app: str, run: dict, health: dict | None = None, *, url_required: bool = False,
              at: str = "target.run") -> list[HostAccess]:
        """`review`, refusing (exit 3) at the first access nothing grants; returns the granted ones."""
        found = self.review(app, run, health, url_required=url_required, at=at)
        nested = nested_binds([(f"{at}.volumes.{i}", v) for i, v in enumerate(run.get("volumes") or [])])
        if nested:
            raise HostPolicyRefused(nested)
        for access in found:
            self._require(app, access)
        return found

    def check_target(self, app: str, target: Target, *, url_required: bool = False) -> list[HostAccess]:
        """`check` on every container the target runs (one, or each service of a compose project,
        named in a refusal by where it is: `target.run...`, `services.NAME...`)."""
        return [a for at, run, health in target.host_requests()
                for a in self.check(app, run, health, url_required=url_required, at=at)]

    def check_registry(self, app: str, registry: str, where: str) -> HostAccess:
        """The push of this import's images to `registry` (HOST:PORT, named at `where`: the
        target's `registry` or `--registry`), granted or refused (exit 3) before anything is loaded."""
        name = registry_address(registry)
        return self._require(app, HostAccess(Setting.REGISTRY, registry, where, self._which(
            app, name in self.apps.get(app, Grants()).registries, name in self.host.registries, Setting.REGISTRY)))

    def _require(self, app: str, access: HostAccess) -> HostAccess:
        if access.granted_by is None:
            raise HostPolicyRefused(f"{access.where} asks for {access.line()}, which {self._hint(app, access)}")
        return access

    def shares(self, app: str, setting: Setting, name: str) -> str | None:
        """The key that lets app `app` use volume or network `name` it does not own
        (importer.ownership), or None."""
        def granted(g: Grants) -> bool:
            return name in (g.shared_volumes if setting is Setting.SHARED_VOLUMES else g.shared_networks)
        return self._which(app, granted(self.apps.get(app, Grants())), granted(self.host), setting)

    def _which(self, app: str, by_app: bool, by_host: bool, setting: Setting) -> str | None:
        if by_app:
            return f"[apps.{app}] {setting.value}"
        if by_host:
            return f"[host] {setting.value}"
        return None

    def _hint(self, app: str, access: HostAccess) -> str:
        where = self.path or POLICY_FILE
        if access.setting is Setting.LABEL:
            return f"is reserved on this host ({where})"
        if access.setting is Setting.PROMETHEUS and not base_url(access.value):
            return (f"this host cannot serve: set [health.prometheus] url in the site settings of {app} "
                    f"to a URL [apps.{app}] {access.setting.value} allows in {where}")
        value = {Setting.BIND_MOUNT: f'["{access.value}"]', Setting.ENGINE_SOCKET: "true",
                 Setting.CAP_ADD: f'["{access.value}"]',
                 Setting.NETWORK_MODE: f'["{access.value.split(":", 1)[0]}"]',
                 Setting.PROMETHEUS: f'["{base_url(access.value)}"]',
                 Setting.REGISTRY: f'["{registry_address(access.value)}"]'}[access.setting]
        return f"this host does not allow (to grant it: [apps.{app}] {access.setting.value} = {value} in {where})"


def _grants(path: Path, table: str, raw) -> Grants:
    if not isinstance(raw, dict):
        raise EnvironmentProblem(f"host policy {path}: [{table}] must be a table")
    unknown = set(raw) - {s.value for s in Setting if s is not Setting.LABEL}
    if unknown:
        raise EnvironmentProblem(f"host policy {path}: [{table}] has unknown key {sorted(unknown)[0]}")

    def strings(key: str) -> list[str]:
        v = raw.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise EnvironmentProblem(f"host policy {path}: [{table}] {key} must be a list of strings")
        return v

    prefixes = strings(Setting.BIND_MOUNT.value)
    for p in prefixes:
        if not p.startswith("/") or ".." in p.split("/"):
            raise EnvironmentProblem(f"host policy {path}: [{table}] bind_prefixes: {p} is not a clean absolute path")
    modes = strings(Setting.NETWORK_MODE.value)
    if set(modes) - set(NETWORK_MODES):
        raise EnvironmentProblem(f"host policy {path}: [{table}] network_modes may hold only {list(NETWORK_MODES)}")
    socket = raw.get(Setting.ENGINE_SOCKET.value, False)
    if not isinstance(socket, bool):
        raise EnvironmentProblem(f"host policy {path}: [{table}] engine_socket must be true or false")
    urls: set[str] = set()
    for u in strings(Setting.PROMETHEUS.value):
        url = base_url(u)
        if not url:
            raise EnvironmentProblem(f"host policy {path}: [{table}] prometheus_urls: {u} is not an http(s) base URL "
                                     f"without credentials, query or fragment")
        urls.add(url)
    registries = {registry_address(r) for r in strings(Setting.REGISTRY.value)}
    if None in registries:
        raise EnvironmentProblem(f"host policy {path}: [{table}] registries must be HOST:PORT addresses")
    return Grants(tuple(os.path.normpath(p) for p in prefixes),
                  frozenset(c.upper().removeprefix("CAP_") for c in strings(Setting.CAP_ADD.value)),
                  frozenset(modes), socket, frozenset(urls), frozenset(r for r in registries if r),
                  frozenset(strings(Setting.SHARED_VOLUMES.value)), frozenset(strings(Setting.SHARED_NETWORKS.value)))


def base_url(url: str) -> str | None:
    """A Prometheus base URL in the one form grants are compared in (scheme and host lower case,
    the port explicit, no trailing slash), or None when it is not a plain http(s) base URL."""
    try:
        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or "@" in u.netloc or u.query or u.fragment \
            or "?" in url or "#" in url or ".." in u.path.split("/"):
        return None
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{u.scheme}://{host.lower()}:{port}{u.path.rstrip('/')}"


def _engine_sockets() -> set[str]:
    socks = set(ENGINE_SOCKETS) | {os.path.realpath(s) for s in ENGINE_SOCKETS}
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        socks |= {host[len("unix://"):], os.path.realpath(host[len("unix://"):])}
    return socks


def _is_within(path: str, ancestor: str) -> bool:
    """Whether `path` is `ancestor` or below it, on whole components."""
    path, ancestor = os.path.normpath(path), os.path.normpath(ancestor)
    return ancestor == "/" or path == ancestor or path.startswith(ancestor + "/")


def _under_any(prefixes: tuple[str, ...], *paths: str) -> bool:
    """Every one of `paths` (as written, as resolved) lies below one of `prefixes`."""
    return bool(prefixes) and all(any(_is_within(p, prefix) for prefix in prefixes) for p in paths)


def nested_binds(volumes: list[tuple[str, str]], others: list[tuple[str, str]] | None = None) -> str | None:
    """Why two bind mounts are refused together (see the module docstring: one lies inside the
    other, as written or resolved, and either is writable), or None. `volumes`: the container's,
    as (where it is asked, e.g. `target.run.volumes.0`; the volume spec); `others`: the binds of
    other containers on this engine, checked against the container's (not among themselves)."""
    binds = []
    for ours, specs in ((True, volumes), (False, others or [])):
        for where, spec in specs:
            v = parse_volume(spec)
            if v.kind is VolumeKind.BIND and v.source:
                binds.append((ours, where, v, {os.path.normpath(v.source), os.path.realpath(v.source)}))
    for a_ours, a_where, a, a_paths in binds:
        for b_ours, b_where, b, b_paths in binds:
            if a is b or not (a_ours or b_ours) or "rw" not in (_mode(a), _mode(b)):
                continue
            if any(p != q and _is_within(p, q) for p in a_paths for q in b_paths):
                writable = b_where if _mode(b) == "rw" else a_where
                return (f"{a_where} binds host path {a.source} inside {b.source} ({b_where}), and {writable} is "
                        f"writable: a container could put a symlink in its place that a restart would mount; "
                        f"nested binds are never allowed (bind {b.source} once and use the subdirectory inside "
                        f"the container)")
    return None


def _mode(v: VolumeSpec) -> str:
    return "ro" if "ro" in v.mode.split(",") else "rw"  # an engine's Binds may say `ro,Z`


def plan_lines(granted: list[HostAccess]) -> list[str]:
    """What the operator confirms: every host access the bundle gets, and the key that granted it."""
    return [f"host access: {a.line()} (granted by {a.granted_by})" for a in granted]
