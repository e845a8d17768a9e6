"""The metrics-gated update (issue 12), end to end: real signed bundles built and imported with the
`bundle` command, a real Prometheus (the session's, scraping every second) scraping the app's
`/metrics` on a fixed loopback port, the host policy and the site file as an admin writes them.

The app is the demo app whose busybox httpd also serves /www/metrics (`app_errors_total`); a test
raises the counter with `docker exec`. The gate's query is `sum(app_errors_total{job="NAME"})`,
its limit 0.5: the counter at 0 keeps the release, at 5 rolls it back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from importer.kinds.container.journal import SwapJournal
from importer.steps import pending
from tests.craft import snapshot_dir
from tests.support import BUNDLE, build_app_image, one_line, run_bundle
from tests.swap_fixtures import (containers_named, data_files, digest, free_port, remove_images, seed_data,
                                 served_version, wait_until)
from tests.test_health import _build, _in_probation, _spec

UPDATE_FAILED, REFUSED = 4, 3
METRICS = "RUN mkdir -p /www && printf '# TYPE app_errors_total counter\\napp_errors_total 0\\n' > /www/metrics"


@pytest.fixture(scope="module")
def metrics_images(docker_client):
    """v1 and v2 of the demo app, each serving /metrics with app_errors_total 0 from its start."""
    tag = f"metricstest/app-{uuid.uuid4().hex[:8]}"
    made = {}
    for key, version in (("v1", "1.0.0"), ("v2", "2.0.0")):
        ref = f"{tag}:{version}"
        made[key] = {"ref": ref, "version": version,
                     "id": build_app_image(docker_client, ref, version, dockerfile_extra=f"{METRICS}\nLABEL t={tag}")}
    yield made
    remove_images(docker_client, made)


class Host:
    """One intranet host's view of the app: its trust store (with host-policy.toml), state dir and
    site file, the app installed at v1 with user data, scraped by Prometheus as job NAME."""

    def __init__(self, client, swap_env, images, prometheus, key, keys_dir, tmp_path):
        self.client, self.env, self.images, self.prom, self.key = client, swap_env, images, prometheus, key
        self.name, self.port, self.tmp = swap_env["name"], swap_env["port"], tmp_path
        self.keys, self.state = keys_dir, swap_env["state"].root
        self.site = tmp_path / "site.toml"
        self.query = f'sum(app_errors_total{{job="{self.name}"}})'

    def allow(self, *urls: str, app: str | None = None) -> None:
        quoted = ", ".join(f'"{u}"' for u in urls)
        (self.keys / "host-policy.toml").write_text(f"[apps.{app or self.name}]\nprometheus_urls = [{quoted}]\n")

    def site_url(self, url: str) -> None:
        self.site.write_text(f'[health.prometheus]\nurl = "{url}"\n')
        self.site.chmod(0o644)

    def bundle(self, key: str, sequence: int, *, gated: bool = True, url: str | None = None,
               query: str | None = None, max_: float = 0.5, window: str = "6s"):
        """A signed bundle of `key` (v1/v2), with a metrics gate (url None: the spec names none)."""
        extra = ""
        if gated:
            parts = ([f'url = "{url}"'] if url else []) + [f"query = '{query or self.query}'", f"max = {max_}",
                                                           f'window = "{window}"']
            extra = f"prometheus = {{ {', '.join(parts)} }}\n"
        return _build(self.tmp, _spec(self.tmp, self.name, self.images[key], sequence, self.port, extra), self.key)

    def import_args(self, bundle, *extra):
        site = ("--site", self.site) if self.site.exists() else ()
        return ["import", bundle, "--keys", self.keys, "--state-dir", self.state, "--yes", *site, *extra]

    def import_(self, bundle, *extra):
        return run_bundle(*self.import_args(bundle, *extra))

    def start_import(self, bundle) -> subprocess.Popen:
        return subprocess.Popen([str(BUNDLE), *map(str, self.import_args(bundle))], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def raise_errors(self, to: int) -> None:
        """The running container's error counter jumps (what a bad release does under load)."""
        exec_id = self.client.api.exec_create(self.name, ["sh", "-c", f"printf 'app_errors_total {to}\\n' > /www/metrics"])
        self.client.api.exec_start(exec_id)
        assert self.client.api.exec_inspect(exec_id)["ExitCode"] == 0

    def assert_back_on_v1(self, before: dict, stderr: str) -> str:
        """Exit 4's line says v1 runs again; v1 serves with exactly its data; one container; nothing pending."""
        line = [ln for ln in stderr.splitlines() if ln.strip()][-1]
        assert "the previous version 1.0.0 is running again" in line, stderr
        assert served_version(self.env) == "1.0.0"
        assert self.env["state"].installed(self.name)["version"] == "1.0.0"
        assert len(containers_named(self.client, self.name)) == 1
        assert digest(data_files(self.client, self.name)) == digest(before)
        assert pending(self.env["state"]) == []
        return line


@pytest.fixture
def host(docker_client, swap_env, metrics_images, prometheus, pgp_keys, trust_store_of, tmp_path):
    h = Host(docker_client, swap_env, metrics_images, prometheus, pgp_keys.builder,
             trust_store_of([pgp_keys.builder]), tmp_path)
    r = h.import_(h.bundle("v1", 1, gated=False))
    assert r.code == 0, str(r)
    seed_data(docker_client, h.name)
    prometheus.scrape(h.name, f"127.0.0.1:{h.port}")
    prometheus.wait_for(h.query, lambda found: found and found[0][1] == 0)
    h.before = data_files(docker_client, h.name)
    return h


def test_a_metrics_gated_update_is_rolled_back_when_errors_rise_in_its_window(host):
    url = f"http://{host.prom.address}"
    host.allow(url)
    proc = host.start_import(host.bundle("v2", 2, url=url, window="30s"))
    try:
        assert wait_until(lambda: _in_probation(host.env), timeout=90), proc.communicate(timeout=30)
        assert served_version(host.env) == "2.0.0"
        host.raise_errors(5)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == UPDATE_FAILED, err
    line = host.assert_back_on_v1(host.before, err)
    assert f"metrics gate '{host.query}' at {url}: its value 5 is above the limit 0.5" in line, line
    assert time.monotonic() - t0 < 20, "it should stop at the first evaluation above the limit, not at the window's end"
    assert f"metrics gate: Prometheus {url}: {host.query} at most 0.5 for 30 s" in out, out
    assert f"host access: metrics queries to Prometheus at {url} (granted by [apps.{host.name}] prometheus_urls)" in out


def test_a_metrics_gated_update_is_committed_when_errors_stay_low(host):
    """The signed spec names no URL; this host's site file sets it (and the policy allows it)."""
    url = f"http://{host.prom.address}/"
    host.allow(url)
    host.site_url(url)
    r = host.import_(host.bundle("v2", 2, window="5s"))
    assert r.code == 0, str(r)
    assert served_version(host.env) == "2.0.0" and host.env["state"].installed(host.name)["version"] == "2.0.0"
    assert len(containers_named(host.client, host.name)) == 1 and pending(host.env["state"]) == []
    assert f"  health.prometheus.url {url}" in r.stdout and f"metrics gate: Prometheus {url}:" in r.stdout, r.stdout
    last = SwapJournal.last(host.env["state"].app_dir(host.name))
    assert last["probation_until"] <= time.time()  # it watched the whole window
    assert last["health"]["prometheus"]["url"] == url  # what recovery and `bundle rollback` use


CANNOT_EVALUATE = {
    # id: (query (None: the app's), the line's words)
    "bad PromQL": ("sum(app_errors_total{job=", "it could not be evaluated: Prometheus says error: "),
    "Prometheus unreachable": (None, "it could not be evaluated: cannot reach it (ConnectionError)"),
    "Prometheus hangs": (None, "it could not be evaluated: no answer within 5 s"),
    "HTTP error": (None, "it could not be evaluated: HTTP 404, not a Prometheus API answer"),
    "matrix result": ("app_errors_total[10s]", "it could not be evaluated: the result is a matrix, not an "
                                               "instant vector or scalar"),
    "no data by the end": ('app_errors_total{job="no-such-job"}', "it returned no data by the end of the window"),
}


@pytest.mark.parametrize("case", CANNOT_EVALUATE, ids=list(CANNOT_EVALUATE))
def test_a_query_that_cannot_be_evaluated_rolls_back(host, case):
    query, expected = CANNOT_EVALUATE[case]
    with socket.socket() as hung:  # accepts connections (the kernel's backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = {"Prometheus unreachable": f"http://127.0.0.1:{free_port()}",
               "Prometheus hangs": f"http://127.0.0.1:{hung.getsockname()[1]}",
               "HTTP error": f"http://{host.prom.address}/no/such/prefix"}.get(case, f"http://{host.prom.address}")
        host.allow(url)
        r = host.import_(host.bundle("v2", 2, url=url, query=query, window="3s"))
    assert r.code == UPDATE_FAILED, str(r)
    line = host.assert_back_on_v1(host.before, r.stderr)
    assert f"failed its probation: metrics gate '{query or host.query}' at {url}: {expected}" in line, line


class HostilePrometheus:
    """A loopback server answering every query as a hostile or broken Prometheus would: `drip`
    sends its headers and then one byte every 2 s (issue 18: the import hung with its lock held);
    `nested` a JSON answer 200,000 levels deep (a RecursionError in the parser)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.sock = mode, socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        if self.mode == "nested":
            body = b"[" * 200_000 + b"]" * 200_000
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))
            if self.mode == "drip":
                for i in range(len(body)):
                    conn.sendall(body[i:i + 1])
                    time.sleep(2)
            else:
                conn.sendall(body)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


HOSTILE = {"drip": "it could not be evaluated: no complete answer within 5 s",
           "nested": "it could not be evaluated: HTTP 200, the answer is nested too deeply to be read"}


@pytest.mark.parametrize("mode", HOSTILE)
def test_a_hostile_prometheus_fails_the_evaluation_and_rolls_back_never_hangs(host, mode):
    """Finding 5: each evaluation has a total deadline and a parser that cannot overflow: a
    Prometheus that drips its answer or nests it 200,000 deep is a failed evaluation with its
    reason, and the release rolls back (exit 4) within seconds, the lock released."""
    prom = HostilePrometheus(mode)
    try:
        host.allow(prom.url)
        proc = host.start_import(host.bundle("v2", 2, url=prom.url, window="3s"))
        try:
            assert wait_until(lambda: _in_probation(host.env) or proc.poll() is not None, timeout=90)
            started = time.monotonic()
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    finally:
        prom.close()
    assert proc.returncode == UPDATE_FAILED, err
    assert time.monotonic() - started < 40, "it should fail at the first evaluation's deadline, not hang"
    line = host.assert_back_on_v1(host.before, err)
    assert f"failed its probation: metrics gate '{host.query}' at {prom.url}: {HOSTILE[mode]}" in line, line
    assert "Traceback" not in err
    r = run_bundle("status", host.name, "--state-dir", host.state)  # the lock is free, the state is true
    assert r.code == 0 and "1.0.0" in r.stdout, str(r)


REFUSALS = {
    # id: (host-policy grant (None: no policy file), site URL, signed URL or None, the line's words)
    "no policy at all": (None, None, "{prom}", "asks for metrics queries to Prometheus at {prom}, which this host "
                                               'does not allow (to grant it: [apps.{app}] prometheus_urls = ["{prom}"]'),
    "another URL granted": ("http://prom.intranet:9090", None, "{prom}", "which this host does not allow"),
    "granted to another app": ("{prom}@other-app", None, "{prom}", "which this host does not allow"),
    "site overrides with a URL not granted": ("{prom}", "http://10.66.0.1:9090", "{prom}",
                                              "Prometheus at http://10.66.0.1:9090, which this host does not allow"),
    "no URL anywhere": ("{prom}", None, None, "set [health.prometheus] url in the site settings of {app}"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_prometheus_url_the_host_does_not_allow_is_refused_before_anything_is_loaded(host, case):
    grant, site, signed, words = (None if v is None else v.format(prom=f"http://{host.prom.address}", app=host.name)
                                  for v in REFUSALS[case])
    if grant:
        url, _, app = grant.partition("@")
        host.allow(url, app=app or None)
    if site:
        host.site_url(site)
    bundle = host.bundle("v2", 2, url=signed, query=host.query)
    running = host.client.api.inspect_container(host.name)
    state_before = {k: v for k, v in snapshot_dir(host.state).items() if k not in ("audit.log", "lock", "metrics/bundle.prom")}
    r = host.import_(bundle)
    assert r.code == REFUSED, str(r)
    line = one_line(r.stderr)
    assert line.startswith("refused: host policy: target.health.prometheus.url asks for") and words in line, line
    assert "loaded" not in r.stdout, r.stdout
    # nothing changed: v1 is the same container, still running since before, its data and records untouched
    now = host.client.api.inspect_container(host.name)
    assert (now["Id"], now["State"]["StartedAt"], now["State"]["Running"]) == (
        running["Id"], running["State"]["StartedAt"], True)
    assert served_version(host.env) == "1.0.0" and digest(data_files(host.client, host.name)) == digest(host.before)
    written = ("audit.log", "lock", "metrics/bundle.prom")
    assert {k: v for k, v in snapshot_dir(host.state).items() if k not in written} == state_before
    if signed and not site:  # `bundle verify` judges the signed URL alone, the same way
        r = run_bundle("verify", bundle, "--keys", host.keys, "--state-dir", host.state)
        assert r.code == REFUSED and words in one_line(r.stderr), str(r)


@pytest.mark.parametrize("errors_meanwhile", [False, True], ids=["quiet", "errors-while-nobody-watched"])
def test_a_kill_during_the_metrics_window_is_recovered_onto_exactly_one_version(host, errors_meanwhile):
    """kill -9 mid-window: `bundle recover` resumes the journaled window and evaluates the query
    again (at least once, at its end): errors that rose while nobody watched roll back."""
    url = f"http://{host.prom.address}"
    host.allow(url)
    proc = host.start_import(host.bundle("v2", 2, url=url, window="12s"))
    try:
        assert wait_until(lambda: _in_probation(host.env), timeout=90), proc.communicate(timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL and pending(host.env["state"]) == [host.name]
    if errors_meanwhile:
        host.raise_errors(5)
    r = run_bundle("recover", "--yes", "--state-dir", host.state)
    assert r.code == 0, str(r)
    assert pending(host.env["state"]) == [] and len(containers_named(host.client, host.name)) == 1
    if errors_meanwhile:
        assert "its value 5 is above the limit 0.5" in r.stdout + r.stderr, str(r)
        assert served_version(host.env) == "1.0.0" and host.env["state"].installed(host.name)["version"] == "1.0.0"
        assert digest(data_files(host.client, host.name)) == digest(host.before)
    else:
        assert "metrics gate: Prometheus" in r.stdout, str(r)
        assert served_version(host.env) == "2.0.0" and host.env["state"].installed(host.name)["version"] == "2.0.0"


CRAFTED = {
    # id: (the signed manifest's target.health.prometheus, check, the line's words)
    "credentials in the url": ({"url": "http://admin:secret@prom:9090", "query": "up", "max": 0, "window": 60},
                               "manifest", "fails its schema at target.health.prometheus.url"),
    "window over a day": ({"url": "http://prom:9090", "query": "up", "max": 0, "window": 86401},
                          "manifest", "fails its schema at target.health.prometheus.window"),
    "infinite limit": ({"url": "http://prom:9090", "query": "up", "max": 1e300, "window": 60},
                       "manifest", "fails its schema at target.health.prometheus.max"),
    "a NaN limit": ({"url": "http://prom:9090", "query": "up", "max": float("nan"), "window": 60},
                    "manifest", "manifest.json has NaN, which is not JSON"),
    "a control character in the query": ({"url": "http://prom:9090", "query": "up\r0 < 1", "max": 0, "window": 60},
                                         "manifest", "control or non-printing character at target.health.prometheus.query"),
}


@pytest.mark.parametrize("case", CRAFTED, ids=list(CRAFTED))
def test_a_validly_signed_but_crafted_metrics_gate_is_refused(base_bundle, docker_client, installed_app, tmp_path, case):
    """What a builder key could sign without `bundle build`'s checks: refused by `bundle verify` and
    `bundle import` alike, one line, nothing changed (tests.test_gate.Gate.refused asserts it)."""
    from tests.test_gate import Gate
    prom, check, words = CRAFTED[case]
    gate = Gate(base_bundle, docker_client, installed_app, tmp_path)
    v = gate.variant()
    v.manifest["target"]["health"] = {"http": "http://127.0.0.1:8080/health", "timeout": 5, "attempts": 1,
                                      "prometheus": prom}
    gate.refused(v.write(gate.path("crafted-gate")), check, words)
