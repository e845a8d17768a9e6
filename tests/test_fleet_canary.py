"""Progressive delivery on the fleet (issue 19): canary steps (`replicas` in a stage), parallel
stages, query placeholders, and what a client sees meanwhile.

Real parts only: the single-node swarm, loopback registry and overlay network of tests/test_fleet.py,
a real Prometheus, and an app that counts its own requests by status code (tests/apps/counter:
busybox httpd + CGI, `http_requests_total{code,version}`; its bad release answers 500 two seconds
after it starts). Prometheus on the host scrapes every task on the overlay network through a
relay container on that network (a port on loopback; `/cgi-bin/scrape?target=IP:8080`), the tasks'
addresses read from Swarm twice a second into a file_sd file, each labelled with its service.
A poller on the overlay network resolves `tasks.<service>` (the stable service's tasks and, via
its network alias, the canary's) and asks a random task every 50 ms; the failed fraction of its
requests during each import is printed.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest

from tests.support import BUNDLE, REPO, one_line, run_bundle
from tests.swap_fixtures import wait_until
from tests.test_fleet import POLLER as FLEET_POLLER
from tests.test_fleet import fleet, registry_digest, running, services, swarm  # noqa: F401 (fixtures)
from tests.test_fleet_analysis import FleetHost

UPDATE_FAILED, INACTIVE = 4, 7
COUNTER = REPO / "tests" / "apps" / "counter"
# the error ratio of the stage's new version; `> 0`: no traffic yet is no data yet, not 0/0
QUERY = ('sum(rate(http_requests_total{code="500",version="{{version}}",service=~"{{stage_services}}"}[4s])) / '
         '(sum(rate(http_requests_total{version="{{version}}",service=~"{{stage_services}}"}[4s])) > 0)')
POLLER = FLEET_POLLER.replace("GET /version", "GET /cgi-bin/hello")  # the counter app's counted page


def _build(client, tag: str, version: str, bad_after: str = "") -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in COUNTER.iterdir():
            tar.add(p, arcname=p.name)
        tar.add("/bin/busybox", arcname="bin/busybox")
    client.images.build(fileobj=io.BytesIO(buf.getvalue()), custom_context=True, tag=tag, rm=True, forcerm=True,
                        buildargs={"APP_VERSION": version, "APP_BAD_AFTER": bad_after})


@pytest.fixture(scope="module")
def counter(fleet, swarm):  # noqa: F811
    """The counter app's releases (1.0.0 and 2.0.0 good, 3.0.0 answering 500 after 2 s) and the
    relay Prometheus scrapes the tasks through (removed with the fleet's other fl-<tok> containers)."""
    repo = f"fleettest-{fleet['tok']}/counter"
    for version, bad in (("1.0.0", ""), ("2.0.0", ""), ("3.0.0", "2")):
        _build(swarm, f"{repo}:{version}", version, bad)
    relay = swarm.containers.run(f"{repo}:1.0.0", name=f"fl-{fleet['tok']}-relay", network=fleet["net"],
                                 ports={"8080/tcp": ("127.0.0.1", None)}, detach=True)
    relay.reload()
    port = relay.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    return {"repo": repo, "relay": f"127.0.0.1:{port}"}


class Targets:
    """Keeps Prometheus scraping every running task of `services` (through the relay), labelled
    with its service, until stopped."""

    def __init__(self, swarm, prometheus, fleet, relay: str, names: list[str]):  # noqa: F811
        self.swarm, self.prom, self.net, self.relay, self.names = swarm, prometheus, fleet["net"], relay, names
        self.job = f"canary-{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _addresses(self, service: str) -> list[str]:
        out = []
        try:
            tasks = self.swarm.api.tasks(filters={"service": service, "desired-state": "running"})
        except docker.errors.NotFound:  # the canary, before it is created and after it is removed
            return []
        for t in tasks:
            for a in t.get("NetworksAttachments") or []:
                if a["Network"]["Spec"]["Name"] == self.net and a.get("Addresses"):
                    out.append(a["Addresses"][0].split("/")[0])
        return out

    def _run(self) -> None:
        while not self.stopping.is_set():
            groups = [{"targets": [self.relay], "labels": {"__metrics_path__": "/cgi-bin/scrape",
                                                           "__param_target": f"{ip}:8080", "service": s, "task": ip}}
                      for s in self.names for ip in self._addresses(s)]
            tmp = self.prom.sd_dir / f".{self.job}.tmp"
            tmp.write_text(json.dumps(groups))
            tmp.rename(self.prom.sd_dir / f"{self.job}.json")
            self.stopping.wait(0.5)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        (self.prom.sd_dir / f"{self.job}.json").unlink(missing_ok=True)


class Poller:
    """A client on the overlay network asking a random task of `service` (and of its canary) every 50 ms."""

    def __init__(self, swarm, fleet, counter, service: str):  # noqa: F811
        self.c = swarm.containers.run(f"{counter['repo']}:1.0.0", ["sh", "-c", POLLER],
                                      name=f"fl-{fleet['tok']}-poll-{uuid.uuid4().hex[:4]}",
                                      network=fleet["net"], environment={"SVC": service}, detach=True)

    def counts(self) -> tuple[int, int]:
        lines = self.c.logs().decode().split()
        return lines.count("ok"), lines.count("fail")


class Fleet(FleetHost):
    """Bundles of the counter app as a service release (S with 3 replicas, T with 1)."""

    def __init__(self, fleet, counter, state: Path, prometheus, tmp: Path):  # noqa: F811
        super().__init__(fleet, state, prometheus, tmp, f"canary-{fleet['tok']}")
        self.counter = counter
        self.s, self.t = f"fl-{fleet['tok']}-cs", f"fl-{fleet['tok']}-ct"

    def pinned(self, version: str) -> str:
        f = self.fleet
        return f"{f['registry']}/{self.counter['repo']}:{version}@{registry_digest(f['registry'], self.counter['repo'], version)}"

    def bundle(self, version: str, sequence: int, stages: str, *, replicas: int = 3, analysis: bool = True,
               window: str = "8s") -> Path:
        f = self.fleet
        ref = f"{self.counter['repo']}:{version}"
        spec = self.tmp / f"canary-{version}-{sequence}-{uuid.uuid4().hex[:4]}.toml"
        gate = f"prometheus = {{ query = '{QUERY}', max = 0.05, window = \"{window}\" }}\n" if analysis else ""
        spec.write_text(
            f'name = "{self.app}"\nversion = "{version}"\nsequence = {sequence}\nimages = ["{ref}"]\n\n'
            f'[target]\nkind = "service"\nname = "{self.s}"\nimage = "{ref}"\n\n'
            f'[target.run]\nreplicas = {replicas}\nendpoint_mode = "dnsrr"\nnetworks = ["{f["net"]}"]\n'
            'stop_timeout = 1\n\n'
            '[target.rollout]\nparallelism = 1\ndelay = "0s"\norder = "start-first"\nmonitor = "1s"\n'
            'max_failure_ratio = 0\nfailure_action = "rollback"\n\n'
            f'[target.health]\ntcp = "127.0.0.1:8080"\ntimeout = "10s"\nattempts = 2\n{gate}\n{stages}')
        return self.sign(spec)

    def status(self):
        return run_bundle("status", self.app, "--state-dir", self.state)


@pytest.fixture
def canary_fleet(fleet, counter, services, prometheus, tmp_path):  # noqa: F811
    return Fleet(fleet, counter, services, prometheus, tmp_path)


def stage(names: list[str], **keys) -> str:
    return ("[[stage]]\nservices = [" + ", ".join(f'"{s}"' for s in names) + "]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()) + "\n")


def _import_watched(fl: Fleet, swarm, bundle: Path, watch) -> tuple[int, str, str, list]:  # noqa: F811
    """Run the import while `watch()` samples the swarm every 0.2 s: (exit code, stdout, stderr, samples)."""
    proc = subprocess.Popen([str(BUNDLE), *map(str, fl.args(bundle))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    samples = []
    try:
        while proc.poll() is None:
            samples.append(watch())
            time.sleep(0.2)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, err, samples


def _canary_run(fl: Fleet, swarm, bundle: Path, poller: Poller):  # noqa: F811
    """The import under the poller, sampling (canary tasks, stable tasks, stable spec index)."""
    canary = f"{fl.s}-canary"

    def canary_tasks() -> dict:
        try:  # the canary service comes and goes during the import: absent is no task
            return running(swarm, canary)
        except docker.errors.NotFound:
            return {}

    def watch():
        return canary_tasks(), running(swarm, fl.s), swarm.api.inspect_service(fl.s)["Version"]["Index"]

    assert wait_until(lambda: poller.counts()[0] >= 20, timeout=30), poller.c.logs()[-500:]
    before = poller.counts()
    assert before[1] == 0, f"failures before the release: {before}"
    started = time.monotonic()
    code, out, err, samples = _import_watched(fl, swarm, bundle, watch)
    seconds = time.monotonic() - started
    ok, fail = (a - b for a, b in zip(poller.counts(), before, strict=True))
    return code, out, err, samples, ok, fail, seconds


def test_a_canary_step_runs_exactly_one_new_task_beside_the_stable_three_then_the_rest_rolls(
        canary_fleet, swarm, prometheus, counter):  # noqa: F811
    fl = canary_fleet
    assert fl.import_(fl.bundle("1.0.0", 1, "", analysis=False)).code == 0
    v1 = fl.pinned("1.0.0")
    assert running(swarm, fl.s) == {v1: 3}
    index = swarm.api.inspect_service(fl.s)["Version"]["Index"]
    targets, poller = Targets(swarm, prometheus, fl.fleet, counter["relay"], [fl.s, f"{fl.s}-canary"]), \
        Poller(swarm, fl.fleet, counter, fl.s)
    try:
        bundle = fl.bundle("2.0.0", 2, stage([fl.s], replicas=1) + stage([fl.s]))
        code, out, err, samples, ok, fail, seconds = _canary_run(fl, swarm, bundle, poller)
    finally:
        poller.c.remove(force=True)
        targets.stop()
    print(f"\ngood release, canary 1 of 3 then the rest (start-first): {fail} of {ok + fail} polls failed "
          f"in {seconds:.1f}s")
    assert code == 0, out + err
    v2 = fl.pinned("2.0.0")
    assert f"stage 1: canary {fl.s}-canary: 1 task(s) beside {fl.s}'s 3 ({fl.s} untouched)" in out, out
    assert "stage 1 of 2: soaking 8s; analysis: Prometheus" in out and 'version="2.0.0"' in out, out
    assert f'service=~"{fl.s}-canary"' in out, out  # {{stage_services}} of a canary step: the canary
    # while the stable service's spec was untouched, exactly one new task ran: the canary's
    during = [(c, s) for c, s, i in samples if i == index and c]
    assert during and all(c in ({}, {v2: 1}) and set(s) == {v1} for c, s in during), samples
    assert ({v2: 1}, {v1: 3}) in during, samples
    assert running(swarm, fl.s) == {v2: 3} and not swarm.api.services(filters={"name": f"{fl.s}-canary"})
    st = fl.status()
    assert st.code == 0 and f"{fl.app} (app of 1 service(s)): 2.0.0 [active]" in st.stdout, str(st)
    assert ok > 20 and fail == 0, f"{fail} of {ok + fail} requests failed during a good start-first release"


def test_a_bad_canary_is_stopped_by_its_analysis_and_removed_the_stable_replicas_untouched(
        canary_fleet, swarm, prometheus, counter):  # noqa: F811
    fl = canary_fleet
    assert fl.import_(fl.bundle("1.0.0", 1, "", analysis=False)).code == 0
    v1 = fl.pinned("1.0.0")
    index = swarm.api.inspect_service(fl.s)["Version"]["Index"]
    targets, poller = Targets(swarm, prometheus, fl.fleet, counter["relay"], [fl.s, f"{fl.s}-canary"]), \
        Poller(swarm, fl.fleet, counter, fl.s)
    try:
        bundle = fl.bundle("3.0.0", 3, stage([fl.s], replicas="25%") + stage([fl.s]))
        code, out, err, samples, ok, fail, seconds = _canary_run(fl, swarm, bundle, poller)
    finally:
        poller.c.remove(force=True)
        targets.stop()
    share = 1 / 4  # one canary task beside three stable ones
    print(f"\nbad release (500s 2 s after start), canary 1 beside 3: {fail} of {ok + fail} polls failed "
          f"({fail / max(1, ok + fail):.1%}; the canary's share of tasks {share:.0%}) in {seconds:.1f}s")
    assert code == UPDATE_FAILED, out + err
    line = one_line(err)
    assert line.startswith("update failed: stage 1 of 2: analysis failed: metrics gate "), line
    assert 'version="3.0.0"' in line and "is above the limit 0.05" in line, line
    assert "every service of stage(s) 1 rolled back; later stage(s) not started" in line, line
    assert f"removing canary {fl.s}-canary" in out, out
    # the stable service was never touched: same spec version, its three tasks on v1 throughout
    assert swarm.api.inspect_service(fl.s)["Version"]["Index"] == index
    assert all(s == {v1: 3} for _, s, _ in samples), samples
    assert not swarm.api.services(filters={"name": f"{fl.s}-canary"}) and running(swarm, fl.s) == {v1: 3}
    st = fl.status()
    assert st.code == 0 and f"{fl.app} (app of 1 service(s)): 1.0.0 [active]" in st.stdout, str(st)
    h = run_bundle("history", fl.app, "--state-dir", fl.state)
    assert "1.0.0 -> 3.0.0  result: rolled-back" in h.stdout and "is above the limit 0.05" in h.stdout, str(h)
    assert 0 < fail <= (share + 0.1) * (ok + fail), f"{fail} of {ok + fail} failed: beyond the canary's share"


def test_a_parallel_stage_rolls_its_services_together_and_its_failed_analysis_rolls_both_back(
        canary_fleet, swarm, prometheus, counter):  # noqa: F811
    fl = canary_fleet
    both = stage([fl.s, fl.t], parallel=True)
    assert fl.import_(fl.bundle("1.0.0", 1, both, replicas=2, analysis=False)).code == 0
    r = fl.import_(fl.bundle("2.0.0", 2, both, replicas=2, analysis=False))
    assert r.code == 0, str(r)
    assert "; in parallel" in r.stdout and "stage 1: 2 service(s) rolling in parallel" in r.stdout, r.stdout
    v2 = fl.pinned("2.0.0")
    assert running(swarm, fl.s) == {v2: 2} and running(swarm, fl.t) == {v2: 2}
    upd = {n: swarm.api.inspect_service(n)["UpdateStatus"] for n in (fl.s, fl.t)}
    # concurrent: each update started before the other one completed
    assert upd[fl.s]["StartedAt"] < upd[fl.t]["CompletedAt"] and upd[fl.t]["StartedAt"] < upd[fl.s]["CompletedAt"], upd
    targets = Targets(swarm, prometheus, fl.fleet, counter["relay"], [fl.s, fl.t])
    poller = Poller(swarm, fl.fleet, counter, fl.s)
    try:
        r = fl.import_(fl.bundle("3.0.0", 3, both, replicas=2))
    finally:
        poller.c.remove(force=True)
        targets.stop()
    assert r.code == UPDATE_FAILED, str(r)
    assert "update failed: stage 1 of 1: analysis failed: metrics gate" in one_line(r.stderr), r.stderr
    assert running(swarm, fl.s) == {v2: 2} and running(swarm, fl.t) == {v2: 2}
    assert f"rolling service {fl.s} back" in r.stdout and f"rolling service {fl.t} back" in r.stdout, r.stdout


# the new crash points of a staged release: the canary asked for (release_canary_N), a stage's watch
# passed but not yet recorded (release_watched_N), a parallel stage's services all asked (release_parallel_N)
@pytest.mark.parametrize("point, stopped_after", [
    ("release_canary_1", None),    # the canary is removed: nothing of the release runs
    ("release_watched_1", None),   # the canary analysed, its verdict not recorded: removed too
    ("release_parallel_2", 1),     # both services rolled, never watched: rolled back, the canary stays
])
def test_kill_9_at_a_canary_or_parallel_step_then_recover_leaves_no_silent_half_state(
        canary_fleet, swarm, point, stopped_after):  # noqa: F811
    fl = canary_fleet
    assert fl.import_(fl.bundle("1.0.0", 1, stage([fl.s, fl.t], parallel=True), replicas=2, analysis=False)).code == 0
    v1, v2 = fl.pinned("1.0.0"), fl.pinned("2.0.0")
    bundle = fl.bundle("2.0.0", 2, stage([fl.s], replicas=1, soak="1s") + stage([fl.s, fl.t], parallel=True, soak="1s"),
                       replicas=2, analysis=False)
    r = fl.import_(bundle, env={"BUNDLE_CRASH_AT": point, "BUNDLE_CRASH_WHEN": "before"})
    assert r.code == -signal.SIGKILL, str(r)
    rec = run_bundle("recover", "--state-dir", fl.state, "--yes")
    assert rec.code == 0, str(rec)
    canary = f"{fl.s}-canary"
    assert running(swarm, fl.s) == {v1: 2} and running(swarm, fl.t) == {v1: 2}
    st = fl.status()
    if stopped_after is None:
        assert not swarm.api.services(filters={"name": canary}), "the canary outlived recover"
        assert st.code == 0 and f"{fl.app} (app of 2 service(s)): 1.0.0 [active]" in st.stdout, str(st)
        again = fl.import_(bundle)
    else:  # stopped after the canary step: one new task beside the stable ones, never "active"
        assert running(swarm, canary) == {v2: 1}
        assert st.code == INACTIVE and "partial: release 2.0.0 stopped after stage 1 of 2" in st.stdout, str(st)
        assert f"stage 1: {canary} 2.0.0: 1/1 running it" in st.stdout, st.stdout
        again = fl.import_(bundle, "--resume")
    assert again.code == 0, str(again)
    assert running(swarm, fl.s) == {v2: 2} and running(swarm, fl.t) == {v2: 2}
    assert not swarm.api.services(filters={"name": canary})
    st = fl.status()
    assert st.code == 0 and f"{fl.app} (app of 2 service(s)): 2.0.0 [active]" in st.stdout, str(st)
