"""The health gate: is the container that was just started actually serving, and does it stay up?

Probe, in order of preference: the manifest's `health` (an http URL, a tcp host:port, or a
command run in the container), else the image's own Docker HEALTHCHECK (waiting for
Health.Status "healthy", which for AnythingLLM takes a minute or more: start period 1 min,
interval 1 min), else "still running, not restarted, after 10 s".

What each probe kind proves:

- `tcp = "HOST:PORT"`: a process INSIDE the container accepted a connection on the container
  port. When HOST:PORT is a port this container publishes on this host, the probe connects to
  the container's own address on its network and the container port behind the published one
  (`container_address`): Docker's port proxy (docker-proxy) on the host accepts every
  connection whether or not anything listens inside, so connecting to the published port proves
  nothing. When the container has no address this host reaches (network none, a network of
  another host), the probe goes through the published port and counts only if the connection is
  still open after HOLD seconds (the proxy closes it at once when nothing listens inside); the
  gate says so. Any other HOST:PORT is probed as written.
- `http = "URL"`: a process inside the container answered the request with 2xx/3xx. A URL at a
  port the container publishes on this host is sent to the container's address and port, with
  the URL's Host header kept; the fallback (no reachable address, or https, whose certificate
  names the published host) goes to the URL as written and is said. The status line and headers
  must arrive within PROBE_TIMEOUT in all (bundlecore.remote.fetch: an app dripping them cannot hold
  the gate), and never through a proxy from the environment.
- `cmd = "..."`: the command exits 0 inside the container (it proves what the command checks).
- the image's HEALTHCHECK: Docker's own probe reports "healthy".
- none: the container ran RUNNING_GRACE seconds without exiting or restarting.

An attempt passes only after STABLE_PROBES consecutive passing probes at least PROBE_SPACING
seconds apart, with the container running, not restarting and not restarted since the attempt
began (same RestartCount and StartedAt) when the gate passes: a release that answers once and
then crashes is not kept. An attempt fails when the container exits or restarts, reports
"unhealthy", or the probe does not pass within `timeout` seconds. Failed attempts are retried
(a fresh start) up to `attempts`.

Probation (`probation` seconds, `max_restarts`; off unless set): after the gate passed, the
container is watched for the window (`watch_probation`). It fails when the container restarted
more than `max_restarts` times since the gate passed, when it exited and is not being
restarted (restart policy "no", or on-failure gave up), or when its probe kept failing for
`timeout` seconds; the swap then rolls back exactly as after a failed gate. A compose project's
services are watched over one window (`watch_probation_of`), each by its own gate: the first that
fails, named, fails the project's.

Metrics gate (`prometheus = {url, query, max, window}`, importer.analysis): probation lasts
at least `window`, and the query is evaluated on every look and once at the window's end; a value
above `max`, a query that cannot be evaluated, or no data by the end fails probation the same way.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit


from bundlecore import interrupts
from bundlecore.engine import EngineError
from bundlecore.progress import Countdown
from bundlecore.refusals import HealthTargetGone
from bundlecore.remote import UNREACHABLE_ERRNOS, Failure, RemoteProblem, fetch
from bundlecore.runspec import parse_port
from importer.analysis import Analysis, MetricsGate

POLL = 0.1  # between failing probes: the first pass is seen soon after the app is up
RUNNING_GRACE = 10.0
DEFAULT_TIMEOUT = 60
DEFAULT_ATTEMPTS = 3
# The gate passes after this many consecutive passing probes, each PROBE_SPACING s after the last.
STABLE_PROBES = 2
PROBE_SPACING = 1.0
# One http or tcp probe: connected and (http) status line and headers read within this.
PROBE_TIMEOUT = 2.0
# Fallback through a published port: a real listener keeps the connection open this long.
HOLD = 0.5
# How often probation looks at the container and probes it.
PROBATION_EVERY = 1.0
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""})
ANY_ADDRESS = ("", "0.0.0.0", "::")


def _ns(v) -> float:
    return (v or 0) / 1e9


def container_address(info: dict, host: str, port: int, host_is_local: bool) -> tuple[str, int] | None:
    """The container's own (address, port) behind HOST:PORT when HOST:PORT is a port this container
    publishes on this host (per NetworkSettings.Ports); None when it is not one of its published
    ports or the container has no address on a network."""
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    for key, bindings in sorted(ports.items()):
        cport, _, proto = key.partition("/")
        if proto not in ("", "tcp"):
            continue
        for b in bindings or []:
            bound = (b.get("HostIp") or "").strip("[]")
            if str(b.get("HostPort")) != str(port):
                continue
            if host == bound or (host_is_local and (bound in LOCAL_HOSTS or _loopback(bound))):
                ip = container_ip(info)
                return (ip, int(cport)) if ip else None
    return None


def container_ip(info: dict) -> str | None:
    """The container's address on its first network that gave it one (sorted by name)."""
    ns = info.get("NetworkSettings") or {}
    for _, net in sorted((ns.get("Networks") or {}).items()):
        for key in ("IPAddress", "GlobalIPv6Address"):
            if (net or {}).get(key):
                return net[key]
    return ns.get("IPAddress") or None


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _is_local(host: str) -> bool:
    """Whether HOST names this machine (a name or address a socket here can bind)."""
    if host in LOCAL_HOSTS or _loopback(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((sockaddr[0], 0))
                return True
        except OSError:
            continue
    return False


def split_host_port(text: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def probe_target(health: dict) -> tuple[str, str, int] | None:
    """(kind, host, port) of an http or tcp probe; None for a command, the image's check or none."""
    if health.get("tcp"):
        return ("tcp", *split_host_port(health["tcp"]))
    if health.get("http"):
        u = urlsplit(health["http"])
        return "http", u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    return None


@dataclass(frozen=True)
class Followed:
    """The signed probe moved to where this host publishes the same container port."""

    health: dict     # the health settings with the probe's host and port as published here
    port_key: str    # the container port, e.g. "8080/tcp"
    was: str         # the signed HOST:PORT
    now: str         # as published here


def follow_published(health: dict | None, signed_ports: Iterable[str], ports: Iterable[str]) -> Followed | None:
    """Where the signed http/tcp probe goes on this host. A probe at a host port the bundle publishes
    (`signed_ports`) means the container port behind it; when the container's ports as it will run
    (`ports`: the bundle's with the site's and this host's changes) publish that container port
    elsewhere, the probe follows it (a fixed host address replaces the probe's host). None: the probe
    stays as signed (it is published as signed, or is not at a port the bundle publishes). Raises
    HealthTargetGone when that container port is no longer published at a fixed host port."""
    health = dict(health or {})
    target = probe_target(health)
    if target is None:
        return None
    kind, host, port = target
    signed = [p for p in map(parse_port, signed_ports) if p.host_port == str(port) and p.key.endswith("/tcp")]
    if not signed:
        return None
    key = signed[0].key
    published = [p for p in map(parse_port, ports) if p.key == key and p.host_port]
    if any(p.host_port == str(port) and p.host_ip in (signed[0].host_ip, *ANY_ADDRESS) for p in published):
        return None
    was = f"{host}:{port}"
    if not published:
        raise HealthTargetGone(f"the health check probes {was}, where the bundle publishes container port {key}, "
                               f"which this container would no longer publish at a fixed host port; nothing was changed")
    p = published[0]
    new_host = host if p.host_ip in ANY_ADDRESS else p.host_ip
    shown = f"[{new_host}]" if ":" in new_host else new_host
    if kind == "tcp":
        moved = {**health, "tcp": f"{shown}:{p.host_port}"}
    else:
        u = urlsplit(health["http"])
        userinfo = u.netloc.rpartition("@")[0]
        moved = {**health, "http": urlunsplit(u._replace(netloc=(userinfo + "@" if userinfo else "")
                                                         + f"{shown}:{p.host_port}"))}
    return Followed(moved, key, was, f"{new_host}:{p.host_port}")


@dataclass
class ProbeRoute:
    """Where one attempt's probes go: the container's own address, or (fallback) as written."""

    address: tuple[str, int] | None  # the container's (ip, port); None: as written
    why_fallback: str = ""


class HealthGate:
    """Decides whether one container is healthy, with retries; `describe()` for the plan."""

    def __init__(self, health: dict | None, image_healthcheck: dict | None = None):
        self.health = dict(health or {})
        self.attempts = int(self.health.get("attempts") or DEFAULT_ATTEMPTS)
        self.probation = float(self.health.get("probation") or 0)
        self.max_restarts = int(self.health.get("max_restarts") or 0)
        self.metrics = MetricsGate.from_health(self.health)
        if self.metrics:  # the window is part of probation: at least that long
            self.probation = max(self.probation, self.metrics.window)
        hc = image_healthcheck or {}
        test = hc.get("Test") or []
        self.docker_hc = hc if (test and test[0] != "NONE") else None
        if "timeout" in self.health:
            self.timeout = float(self.health["timeout"])
        elif self.docker_hc and not self.probe_kind:
            # Wait long enough for the start period and two intervals of the image's HEALTHCHECK.
            self.timeout = min(900.0, max(DEFAULT_TIMEOUT, _ns(hc.get("StartPeriod"))
                                          + 2 * (_ns(hc.get("Interval")) or 30) + (_ns(hc.get("Timeout")) or 30)))
        else:
            self.timeout = float(DEFAULT_TIMEOUT)

    @property
    def probe_kind(self) -> str | None:
        """The manifest's probe ("http", "tcp" or "cmd"), or None when the image's HEALTHCHECK (if
        any) or "still running" decides."""
        for k in ("http", "tcp", "cmd"):
            if self.health.get(k):
                return k
        return None

    def describe(self) -> str:
        kind = self.probe_kind
        inside = " (at the container's own address when published here)"
        if kind == "http":
            what = f"GET {self.health['http']} answers 2xx/3xx{inside}"
        elif kind == "tcp":
            what = f"tcp connect to {self.health['tcp']}{inside}"
        elif kind == "cmd":
            what = f"command in the container succeeds: {self.health['cmd']}"
        elif self.docker_hc:
            what = "the image's HEALTHCHECK reports healthy"
        else:
            what = f"still running after {RUNNING_GRACE:g} s"
        if kind or self.docker_hc:
            what += f", {STABLE_PROBES} passes in a row {PROBE_SPACING:g} s apart"
        text = f"{what} (timeout {self.timeout:g} s, {self.attempts} attempts)"
        if self.probation:
            text += (f"; probation {self.probation:g} s, at most {self.max_restarts} restart(s), "
                     "previous version kept parked until it ends")
        if self.metrics:
            text += f"; metrics gate: {self.metrics.describe()}"
        return text

    # -- the gate ------------------------------------------------------------------------
    def wait_healthy(self, client, container_id: str, out=print) -> tuple[bool, str]:
        """Start (if needed) and probe; returns (healthy, why not). Restarts between attempts."""
        why = "not started"
        for attempt in range(1, self.attempts + 1):
            try:
                state = client.inspect_container(container_id)["State"]
                if attempt > 1 or not state.get("Running"):
                    if state.get("Running") or state.get("Restarting"):
                        client.restart(container_id)
                    else:
                        client.start(container_id)
            except EngineError as e:
                why = f"cannot start: {e.explanation or e}"
                out(f"  attempt {attempt}/{self.attempts}: {why}")
                continue
            ok, why = self._one_attempt(client, container_id, out)
            if ok:
                return True, ""
            out(f"  attempt {attempt}/{self.attempts} failed: {why}")
        return False, why

    def _one_attempt(self, client, cid: str, out) -> tuple[bool, str]:
        countdown = Countdown("waiting for the health gate", self.timeout)
        try:
            return self._watch(client, cid, out, countdown)
        finally:
            countdown.close()

    def _watch(self, client, cid: str, out, countdown: Countdown) -> tuple[bool, str]:
        first = client.inspect_container(cid)
        started_at, restarts = first["State"].get("StartedAt"), first.get("RestartCount", 0)
        deadline = time.monotonic() + self.timeout
        t0 = time.monotonic()
        route = self.route(first)
        if route.why_fallback:
            out(f"  {route.why_fallback}")
        last, passes = "no answer", 0
        while True:
            info = client.inspect_container(cid)
            st = info["State"]
            if not st.get("Running") or st.get("Restarting") or info.get("RestartCount", 0) != restarts \
                    or st.get("StartedAt") != started_at:
                if st.get("Running") or st.get("Restarting"):  # its restart policy brought it back
                    return False, "the container exited and was restarted by its restart policy"
                return False, f"the container exited (code {st.get('ExitCode')})"
            if passes >= STABLE_PROBES:  # the state was just seen running, after the last pass
                return True, ""
            if not self.probe_kind and not self.docker_hc:
                if time.monotonic() - t0 >= min(RUNNING_GRACE, self.timeout):
                    return True, ""
                ok = None
            else:
                said = route.why_fallback
                try:
                    ok, last = self.probe(client, cid, info, route)
                except Unhealthy as e:
                    return False, str(e)
                if route.why_fallback != said:
                    out(f"  {route.why_fallback}")
            passes = passes + 1 if ok else 0
            if passes < STABLE_PROBES and time.monotonic() >= deadline:
                seen = last or f"passed, but not {STABLE_PROBES} times in a row"
                return False, f"not healthy within {self.timeout:g} s ({seen})"
            countdown.tick(last)
            # an interrupt ends the wait here (not during an undo, which runs to its end)
            interrupts.sleep(PROBE_SPACING if ok and passes < STABLE_PROBES else (0 if ok else POLL))

    # -- probes --------------------------------------------------------------------------
    def route(self, info: dict) -> ProbeRoute:
        """Where this attempt's probe goes (see the module docstring), decided once the container runs."""
        kind = self.probe_kind
        if kind not in ("tcp", "http"):
            return ProbeRoute(None)
        _, host, port = probe_target(self.health)  # type: ignore[misc]
        local = _is_local(host)
        published = any(str(b.get("HostPort")) == str(port)
                        for bs in ((info.get("NetworkSettings") or {}).get("Ports") or {}).values() for b in bs or [])
        addr = container_address(info, host, port, local)
        if addr and kind == "http" and urlsplit(self.health["http"]).scheme == "https":
            return ProbeRoute(None, f"probing {self.health['http']} as written (https names the published host)")
        if addr is None and local and published:
            return ProbeRoute(None, f"the container has no address this host reaches: probing "
                                    f"{host}:{port} through the published port" + self._hold_note(kind))
        return ProbeRoute(addr)

    @staticmethod
    def _hold_note(kind: str) -> str:
        return f" (the connection must stay open {HOLD:g} s)" if kind == "tcp" else ""

    def probe(self, client, cid: str, info: dict, route: ProbeRoute) -> tuple[bool | None, str]:
        """One probe of the running container: (passed, what was seen). The route may switch to the
        fallback when the container's address turns out to be unreachable from here."""
        kind = self.probe_kind
        if kind is None:
            status = (info["State"].get("Health") or {}).get("Status")
            if status == "unhealthy":
                log = ((info["State"].get("Health") or {}).get("Log") or [{}])[-1]
                raise Unhealthy(f"HEALTHCHECK reports unhealthy: {str(log.get('Output', '')).strip()[:200]}")
            return status == "healthy", f"health status {status}"
        if kind == "cmd":
            return self._probe_cmd(client, cid)
        try:
            return (self._probe_http(route) if kind == "http" else self._probe_tcp(route))
        except _Unreachable as e:
            route.address = None
            route.why_fallback = (f"container address {e} is not reachable from this host: probing as written"
                                  + self._hold_note(kind))
            return False, "container address not reachable"

    def _probe_tcp(self, route: ProbeRoute) -> tuple[bool, str]:
        addr = route.address or split_host_port(self.health["tcp"])
        try:
            with socket.create_connection(addr, timeout=PROBE_TIMEOUT) as s:
                if route.address or not route.why_fallback:
                    return True, ""
                return _held(s)
        except OSError as e:
            if route.address and (isinstance(e, socket.timeout) or e.errno in UNREACHABLE_ERRNOS):
                raise _Unreachable(f"{addr[0]}:{addr[1]}") from None
            return False, e.strerror or type(e).__name__

    def _probe_http(self, route: ProbeRoute) -> tuple[bool, str]:
        url, headers = self.health["http"], {}
        if route.address:
            u = urlsplit(url)
            ip, port = route.address
            host = f"[{ip}]" if ":" in ip else ip
            url, headers = urlunsplit(u._replace(netloc=f"{host}:{port}")), {"Host": u.netloc.rpartition("@")[2]}
        try:
            # the status is the answer: the body is never read, and the status line and headers must
            # arrive within PROBE_TIMEOUT (an app dripping either cannot hold the gate); straight to
            # the address, never through a proxy the environment names
            reply = fetch("GET", url, timeout=PROBE_TIMEOUT, max_bytes=0, read_body=False, allow_redirects=False,
                          headers=headers, direct=True)
        except RemoteProblem as e:
            if route.address and e.host_unreachable:
                raise _Unreachable(url) from None
            return False, (f"no answer within {PROBE_TIMEOUT:g} s" if e.failure is Failure.TIMEOUT else e.cause)
        return (200 <= reply.status_code < 400), f"HTTP {reply.status_code}"

    def _probe_cmd(self, client, cid: str) -> tuple[bool, str]:
        cmd = self.health["cmd"]
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        try:
            code, output = client.exec(cid, argv)
        except EngineError as e:
            return False, str(e.explanation or e)[:200]
        return code == 0, f"exit {code}: {output.decode(errors='replace').strip()[:200]}"

    # -- probation -----------------------------------------------------------------------
    def watch_probation(self, client, cid: str, until: float, base_restarts: int, out=print) -> tuple[bool, str]:
        """Watch the container until the wall-clock time `until`; (kept, why not). `base_restarts` is its
        RestartCount when the gate passed (a recovery resumes the same window with the same base)."""
        return watch_probation_of(client, [Watched(self, cid, base_restarts)], until)


@dataclass
class Watched:
    """One container in a probation window: its gate (probe, max_restarts, metrics), the
    RestartCount it counts from, and (in a project) the name a failure is told by."""

    gate: HealthGate
    cid: str
    base_restarts: int
    name: str = ""
    grown: int = 0
    failing_since: float | None = None
    route: ProbeRoute | None = None
    started_at: str | None = None
    analysis: Analysis | None = None

    def check(self, client, ended: bool) -> str | None:
        """One look at the container (and its metrics gate); why it failed, or None."""
        gate = self.gate
        if gate.metrics and self.analysis is None:
            self.analysis = Analysis(gate.metrics)
        info = client.container(self.cid)
        if info is None:
            return "the container is gone"
        st = info["State"]
        self.grown = info.get("RestartCount", 0) - self.base_restarts
        if self.grown > gate.max_restarts:
            return f"it restarted {self.grown} times in its probation (at most {gate.max_restarts} allowed)"
        if not st.get("Running") and not st.get("Restarting"):
            return f"it exited (code {st.get('ExitCode')}) in its probation and is not being restarted"
        if self.analysis:
            why = self.analysis.step(final=ended)
            if why:
                return why
        if ended:
            return None if st.get("Running") and not st.get("Restarting") else "it was restarting when its probation ended"
        if st.get("Running") and not st.get("Restarting") and (gate.probe_kind or gate.docker_hc):
            if self.route is None or st.get("StartedAt") != self.started_at:  # a restart may change its address
                self.route, self.started_at = gate.route(info), st.get("StartedAt")
            try:
                ok, last = gate.probe(client, self.cid, info, self.route)
            except Unhealthy as e:
                ok, last = False, str(e)
            self.failing_since = None if ok else (self.failing_since or time.monotonic())
            if self.failing_since and time.monotonic() - self.failing_since >= gate.timeout:
                return f"its health check failed for {gate.timeout:g} s in its probation ({last})"
        return None


def watch_probation_of(client, watched: list[Watched], until: float) -> tuple[bool, str]:
    """Watch every container until the wall-clock time `until` (one window: a container target's
    one, or every service of a compose project); (kept, why not, naming the failed one in a project).
    Each is looked at every PROBATION_EVERY seconds by its own gate's rules (HealthGate)."""
    countdown = Countdown("probation", max(0.0, until - time.time()))
    try:
        while True:
            ended = time.time() >= until
            for w in watched:
                why = w.check(client, ended)
                if why:
                    return False, (f"service {w.name}: {why}" if w.name else why)
            if ended:
                return True, ""
            countdown.tick(f"{sum(max(0, w.grown) for w in watched)} restart(s)")
            interrupts.sleep(min(PROBATION_EVERY, max(0.0, until - time.time())))
    finally:
        countdown.close()


class Unhealthy(Exception):
    """The image's own HEALTHCHECK says "unhealthy": the attempt fails at once."""


class _Unreachable(Exception):
    """The container's own address does not answer from this host (not "nothing listens")."""


def _held(s: socket.socket) -> tuple[bool, str]:
    """Through a port proxy: a listener inside keeps the connection open (or speaks first); the proxy
    closes it at once when nothing listens inside."""
    s.settimeout(HOLD)
    try:
        data = s.recv(1)
    except socket.timeout:
        return True, ""
    except OSError as e:
        return False, f"connection reset ({e.strerror or type(e).__name__})"
    return (True, "") if data else (False, "the port proxy closed the connection (nothing listens inside)")
