"""The health gate: is the container that was just started actually serving?

Probe, in order of preference: the manifest's `health` (an http URL or tcp host:port probed from
this host, or a command run in the container), else the image's own Docker HEALTHCHECK (waiting
for Health.Status "healthy", which for AnythingLLM takes a minute or more: start period 1 min,
interval 1 min), else "still running, not restarted, after 10 s".

An attempt fails when the container exits or restarts, reports "unhealthy", or the probe does
not pass within `timeout` seconds. Failed attempts are retried (a fresh start) up to `attempts`.
"""

from __future__ import annotations

import socket
import time

import docker
import requests

from bundlecore.progress import Countdown
from importer.swap import engine

POLL = 0.3
RUNNING_GRACE = 10.0
DEFAULT_TIMEOUT = 60
DEFAULT_ATTEMPTS = 3


def _ns(v) -> float:
    return (v or 0) / 1e9


class HealthGate:
    """Decides whether one container is healthy, with retries; `describe()` for the plan."""

    def __init__(self, health: dict | None, image_healthcheck: dict | None = None):
        self.health = dict(health or {})
        self.attempts = int(self.health.get("attempts") or DEFAULT_ATTEMPTS)
        hc = image_healthcheck or {}
        test = hc.get("Test") or []
        self.docker_hc = hc if (test and test[0] != "NONE") else None
        if "timeout" in self.health:
            self.timeout = float(self.health["timeout"])
        elif self.docker_hc and not self.probe_kind:
            # Wait long enough for the start period and two intervals of the image's HEALTHCHECK.
            self.timeout = min(900.0, max(DEFAULT_TIMEOUT, _ns(hc.get("StartPeriod")) + 2 * (_ns(hc.get("Interval")) or 30)
                                          + (_ns(hc.get("Timeout")) or 30)))
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
        if kind == "http":
            what = f"GET {self.health['http']} answers 2xx/3xx"
        elif kind == "tcp":
            what = f"tcp connect to {self.health['tcp']}"
        elif kind == "cmd":
            what = f"command in the container succeeds: {self.health['cmd']}"
        elif self.docker_hc:
            what = "the image's HEALTHCHECK reports healthy"
        else:
            what = f"still running after {RUNNING_GRACE:g} s"
        return f"{what} (timeout {self.timeout:g} s, {self.attempts} attempts)"

    # -- the gate ------------------------------------------------------------------------
    def wait_healthy(self, client, container_id: str, out=print) -> tuple[bool, str]:
        """Start (if needed) and probe; returns (healthy, why not). Restarts between attempts."""
        why = "not started"
        for attempt in range(1, self.attempts + 1):
            try:
                state = client.api.inspect_container(container_id)["State"]
                if attempt > 1 or not state.get("Running"):
                    if state.get("Running") or state.get("Restarting"):
                        engine.restart(client, container_id)
                    else:
                        client.api.start(container_id)
            except docker.errors.APIError as e:
                why = f"cannot start: {e.explanation or e}"
                out(f"  attempt {attempt}/{self.attempts}: {why}")
                continue
            ok, why = self._one_attempt(client, container_id)
            if ok:
                return True, ""
            out(f"  attempt {attempt}/{self.attempts} failed: {why}")
        return False, why

    def _one_attempt(self, client, cid: str) -> tuple[bool, str]:
        countdown = Countdown("waiting for the health gate", self.timeout)
        try:
            return self._watch(client, cid, countdown)
        finally:
            countdown.close()

    def _watch(self, client, cid: str, countdown: Countdown) -> tuple[bool, str]:
        st = client.api.inspect_container(cid)["State"]
        started_at = st.get("StartedAt")
        restarts = client.api.inspect_container(cid).get("RestartCount", 0)
        deadline = time.monotonic() + self.timeout
        t0 = time.monotonic()
        kind = self.probe_kind
        last = "no answer"
        while True:
            info = client.api.inspect_container(cid)
            st = info["State"]
            if not st.get("Running") or st.get("Restarting") or info.get("RestartCount", 0) != restarts \
                    or st.get("StartedAt") != started_at:
                if st.get("Running") or st.get("Restarting"):  # its restart policy brought it back
                    return False, "the container exited and was restarted by its restart policy"
                return False, f"the container exited (code {st.get('ExitCode')})"
            if kind:
                ok, last = self._probe(client, cid, kind)
                if ok:
                    return True, ""
            elif self.docker_hc:
                status = (st.get("Health") or {}).get("Status")
                if status == "healthy":
                    return True, ""
                if status == "unhealthy":
                    log = ((st.get("Health") or {}).get("Log") or [{}])[-1]
                    return False, f"HEALTHCHECK reports unhealthy: {str(log.get('Output', '')).strip()[:200]}"
                last = f"health status {status}"
            elif time.monotonic() - t0 >= min(RUNNING_GRACE, self.timeout):
                return True, ""
            if time.monotonic() >= deadline:
                return False, f"not healthy within {self.timeout:g} s ({last})"
            countdown.tick(last)
            time.sleep(POLL)

    def _probe(self, client, cid: str, kind: str) -> tuple[bool, str]:
        if kind == "http":
            try:
                r = requests.get(self.health["http"], timeout=2, allow_redirects=False)
            except requests.RequestException as e:
                return False, type(e).__name__
            return (200 <= r.status_code < 400), f"HTTP {r.status_code}"
        if kind == "tcp":
            host, _, port = str(self.health["tcp"]).rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2):
                    return True, ""
            except OSError as e:
                return False, e.strerror or type(e).__name__
        cmd = self.health["cmd"]
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        try:
            res = client.api.exec_create(cid, argv, stdout=True, stderr=True)
            output = client.api.exec_start(res["Id"])
            code = client.api.exec_inspect(res["Id"]).get("ExitCode")
        except docker.errors.APIError as e:
            return False, str(e.explanation or e)[:200]
        return code == 0, f"exit {code}: {output.decode(errors='replace').strip()[:200]}"

