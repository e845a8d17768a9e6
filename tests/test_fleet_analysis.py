"""Analysis on a staged service release (issue 19): each stage is watched by the metrics gate of
`[target.health] prometheus` (importer.analysis, the container kind's gate too) before the next
one starts; a failed analysis rolls back every service the release touched.

Real parts only: the single-node swarm and loopback registry of tests/test_fleet.py, a real
Prometheus scraping a real node_exporter, whose textfile collector serves the error counter of
each service (`app_errors_total{service=...}`), written by the test the way the app would export
it: at 0 for a good release, jumping to 5 once the bad release's first stage runs. The Prometheus
URL is this host's: the site file sets it, host-policy.toml grants it; the signed spec names none.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.keys import trust_store
from tests.support import BUNDLE, one_line, run_bundle
from tests.swap_fixtures import wait_until
from tests.test_fleet import fleet, pinned, running, services, spec_image, swarm  # noqa: F401 (fixtures)

UPDATE_FAILED, INACTIVE = 4, 7
WINDOW = "4s"


class FleetHost:
    """Imports of one app on the fleet under this host's policy: the Prometheus URL set by the site
    file and granted by host-policy.toml, with the fleet's registry and overlay network."""

    def __init__(self, fleet, state: Path, prometheus, tmp: Path, app: str):  # noqa: F811
        self.fleet, self.state, self.prom, self.tmp, self.app = fleet, state, prometheus, tmp, app
        self.url = f"http://{prometheus.address}"
        self.keys = trust_store(tmp / "store", [fleet["key"]])
        (self.keys / "host-policy.toml").write_text(f'[apps.{self.app}]\nprometheus_urls = ["{self.url}"]\n'
                                                    f'registries = ["{fleet["registry"]}"]\n'
                                                    f'shared_networks = ["{fleet["net"]}"]\n')
        self.site = tmp / "site.toml"
        self.site.write_text(f'[health.prometheus]\nurl = "{self.url}"\n')
        self.site.chmod(0o644)

    def sign(self, spec: Path) -> Path:
        """`bundle build --local` of `spec`, signed with the fleet's key."""
        out = spec.with_suffix(".bundle.zst")
        k = self.fleet["key"]
        r = run_bundle("build", spec, "-o", out, "--sign-key", k.fpr, "--gnupghome", k.home, "--local")
        assert r.code == 0, str(r)
        return out

    def args(self, bundle: Path, *more) -> list:
        return ["import", bundle, "--keys", self.keys, "--state-dir", self.state, "--yes", "--site", self.site,
                "--registry", self.fleet["registry"], *more]

    def import_(self, bundle: Path, *more, env=None):
        return run_bundle(*self.args(bundle, *more), env=env)


class Release(FleetHost):
    """Two stages (s1, then s2) of the fleet's image, gated by the error counter of each stage's services."""

    def __init__(self, fleet, state: Path, prometheus, node_exporter, tmp: Path):  # noqa: F811
        tok = fleet["tok"]
        super().__init__(fleet, state, prometheus, tmp, f"staged-{tok}")
        self.s1, self.s2 = f"fl-{tok}-s1", f"fl-{tok}-s2"
        self.metrics = node_exporter.textfile_dir / f"{tok}.prom"
        self.query = f'max(app_errors_total{{service=~"{self.s1}|{self.s2}"}})'

    def errors(self, **by_service: int) -> None:
        """The counter each service exports (written to a temp name, then renamed, as node_exporter wants)."""
        tmp = self.metrics.with_suffix(".tmp")
        tmp.write_text("# TYPE app_errors_total counter\n" + "".join(
            f'app_errors_total{{service="{s}"}} {v}\n' for s, v in by_service.items()))
        tmp.rename(self.metrics)

    def bundle(self, version: str, sequence: int, *, extra_health: str = "") -> Path:
        f = self.fleet
        ref = f"{f['repo']}:{version}"
        spec = self.tmp / f"staged-{version}-{sequence}.toml"
        spec.write_text(
            f'name = "{self.app}"\nversion = "{version}"\nsequence = {sequence}\nimages = ["{ref}"]\n\n'
            f'[target]\nkind = "service"\nname = "{self.s1}"\nimage = "{ref}"\n\n'
            f'[target.run]\nreplicas = 1\nendpoint_mode = "dnsrr"\nnetworks = ["{f["net"]}"]\nstop_timeout = 1\n\n'
            '[target.rollout]\nparallelism = 1\ndelay = "0s"\norder = "start-first"\nmonitor = "2s"\n'
            'max_failure_ratio = 0\nfailure_action = "rollback"\n\n'
            '[target.health]\ntcp = "127.0.0.1:8080"\ntimeout = "10s"\nattempts = 2\n'
            f"prometheus = {{ query = '{self.query}', max = 0.5, window = \"{WINDOW}\" }}\n{extra_health}\n"
            f'[[stage]]\nservices = ["{self.s1}"]\nsoak = "0s"\n\n[[stage]]\nservices = ["{self.s2}"]\nsoak = "0s"\n')
        return self.sign(spec)

    def install_v1(self) -> None:
        self.errors(**{self.s1: 0, self.s2: 0})
        self.prom.wait_for(self.query, lambda found: found and found[0][1] == 0)
        r = self.import_(self.bundle("1.0.0", 1))
        assert r.code == 0, str(r)


@pytest.fixture
def release(fleet, services, prometheus, node_exporter, tmp_path):  # noqa: F811 (fixtures)
    r = Release(fleet, services, prometheus, node_exporter, tmp_path)
    yield r
    r.metrics.unlink(missing_ok=True)


def test_a_good_staged_release_passes_the_analysis_of_every_stage_and_completes(release, swarm):  # noqa: F811
    release.install_v1()
    r = release.import_(release.bundle("2.0.0", 2))
    assert r.code == 0, str(r)
    v2 = pinned(release.fleet, "2.0.0")
    assert running(swarm, release.s1) == {v2: 1} and running(swarm, release.s2) == {v2: 1}
    assert f"analysis after each stage: Prometheus {release.url}: {release.query} at most 0.5 for 4 s" in r.stdout
    assert "stage 1 of 2: soaking 4s; analysis:" in r.stdout and "stage 2 of 2 done" in r.stdout, r.stdout
    assert (f"host access: metrics queries to Prometheus at {release.url} "
            f"(granted by [apps.{release.app}] prometheus_urls)") in r.stdout


def test_a_release_whose_errors_rise_is_stopped_by_the_analysis_of_stage_1_and_rolled_back(release, swarm):  # noqa: F811
    release.install_v1()
    v1, v2 = pinned(release.fleet, "1.0.0"), pinned(release.fleet, "2.0.0")
    s2_before = swarm.api.inspect_service(release.s2)["Version"]["Index"]
    proc = subprocess.Popen([str(BUNDLE), *map(str, release.args(release.bundle("2.0.0", 2)))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        # the new version of stage 1 starts answering with errors once it runs
        assert wait_until(lambda: spec_image(swarm, release.s1) == v2, timeout=120, every=0.2), proc.communicate()
        release.errors(**{release.s1: 5, release.s2: 0})
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == UPDATE_FAILED, out + err
    line = one_line(err)
    assert line.startswith("update failed: stage 1 of 2: analysis failed: "), line
    assert f"metrics gate '{release.query}' at {release.url}: its value 5 is above the limit 0.5" in line, line
    assert "every service of stage(s) 1 rolled back; later stage(s) not started" in line, line
    # stage 1 is back on v1; stage 2 was never touched
    assert spec_image(swarm, release.s1) == v1 and running(swarm, release.s1) == {v1: 1}
    assert swarm.api.inspect_service(release.s2)["Version"]["Index"] == s2_before
    assert running(swarm, release.s2) == {v1: 1}
    # the installed records and the anti-rollback mark say v1; nothing is pending
    st = json.loads((release.state / "installed" / f"{release.s1}.json").read_text())
    assert st["version"] == "1.0.0" and st["image"] == v1
    assert not (release.state / "apps" / release.s1 / "release.json").exists()
    h = run_bundle("history", release.app, "--state-dir", release.state)
    assert "1.0.0 -> 2.0.0  result: rolled-back" in h.stdout and "its value 5 is above the limit 0.5" in h.stdout, str(h)


def test_a_release_whose_query_has_no_data_fails_its_analysis(release, swarm):  # noqa: F811
    """No data by the end of the window (a metric nobody exports) is a failed evaluation, not a pass."""
    release.install_v1()
    release.query = 'max(app_errors_total{service="nobody-exports-this"})'
    r = release.import_(release.bundle("2.0.0", 3), "--json")
    assert r.code == UPDATE_FAILED, str(r)
    doc = json.loads(r.stdout)
    assert "it returned no data by the end of the window" in doc["error"]["message"], doc
    # the failure document says what runs now (the app's services, recorded per service)
    assert (doc["name"], doc["version"], doc["running_version"]) == (release.app, "2.0.0", "1.0.0"), doc
    v1 = pinned(release.fleet, "1.0.0")
    assert running(swarm, release.s1) == {v1: 1} and running(swarm, release.s2) == {v1: 1}


def test_probation_on_a_service_release_is_a_soak_of_every_stage_not_ignored(release, swarm):  # noqa: F811
    """`--probation` over a service bundle: each stage is watched that long (at least its analysis window)."""
    release.install_v1()
    started = time.monotonic()
    r = release.import_(release.bundle("2.0.0", 4), "--probation", "7s")
    assert r.code == 0, str(r)
    assert r.stdout.count("(update from") == 2 and r.stdout.count("; soak 7s\n") == 2, r.stdout  # the plan says so
    assert "stage 1 of 2: soaking 7s" in r.stdout and "stage 2 of 2: soaking 7s" in r.stdout, r.stdout
    assert time.monotonic() - started >= 14
    v2 = pinned(release.fleet, "2.0.0")
    assert running(swarm, release.s1) == {v2: 1} and running(swarm, release.s2) == {v2: 1}


# the crash points of a staged release (importer.kinds.service.release): its mark is written, then
# the stage rolls (release_stage_N), then it is watched (release_watch_N); what recover leaves
@pytest.mark.parametrize("point, s1, s2, stopped_after", [
    ("release_watch_1", "1.0.0", "1.0.0", None),  # stage 1 rolled back: nothing of the release runs
    ("release_stage_2", "2.0.0", "1.0.0", 1),     # stage 2 had not started: stopped after stage 1
    ("release_watch_2", "2.0.0", "1.0.0", 1),     # stage 2 rolled, killed in its analysis: rolled back
])
def test_kill_9_inside_a_staged_release_then_recover_leaves_no_silent_half_state(
        release, swarm, point, s1, s2, stopped_after):  # noqa: F811
    release.install_v1()
    bundle = release.bundle("2.0.0", 2)
    r = release.import_(bundle, env={"BUNDLE_CRASH_AT": point, "BUNDLE_CRASH_WHEN": "before"})
    assert r.code == -signal.SIGKILL, str(r)
    rec = run_bundle("recover", "--state-dir", release.state, "--yes")
    assert rec.code == 0, str(rec)
    mark = release.state / "apps" / release.s1 / "release.json"
    f = release.fleet
    assert running(swarm, release.s1) == {pinned(f, s1): 1} and running(swarm, release.s2) == {pinned(f, s2): 1}
    for service, version in ((release.s1, s1), (release.s2, s2)):
        assert json.loads((release.state / "installed" / f"{service}.json").read_text())["version"] == version
    st = run_bundle("status", release.app, "--state-dir", release.state)
    if stopped_after is None:
        assert st.code == 0 and f"{release.app} (app of 2 service(s)): 1.0.0 [active]" in st.stdout, str(st)
        assert not mark.exists() and "nothing of it runs" in rec.stdout, rec.stdout
        again = release.import_(bundle)  # a plain import of the same bundle runs it from the start
    else:
        doc = json.loads(mark.read_text())
        assert (doc["done"], doc["running"]) == (stopped_after, None), doc
        assert f"stopped after stage {stopped_after} of 2: continue with `bundle import --resume`" in rec.stdout
        # services on two versions of one release: never "active"
        assert st.code == INACTIVE and "1.0.0, 2.0.0 [inactive]" in st.stdout, str(st)
        assert f"partial: release 2.0.0 stopped after stage {stopped_after} of 2" in st.stdout, st.stdout
        again = release.import_(bundle, "--resume")
    assert again.code == 0, str(again)
    v2 = pinned(f, "2.0.0")
    assert running(swarm, release.s1) == {v2: 1} and running(swarm, release.s2) == {v2: 1}
    assert not mark.exists()
    st = run_bundle("status", release.app, "--state-dir", release.state)
    assert st.code == 0 and f"{release.app} (app of 2 service(s)): 2.0.0 [active]" in st.stdout, str(st)
    assert f"  stage 2: {release.s2} 2.0.0: 1/1 running it, 0 running another image [active]" in st.stdout
    listed = run_bundle("list", "--state-dir", release.state)
    assert listed.code == 0 and "None" not in listed.stdout, listed.stdout
    assert f"{release.app} 2.0.0 app of 2 service(s) in 2 stage(s): [active]" in listed.stdout, listed.stdout
    assert f"{release.s1} 2.0.0 service: 1/1 running [active]" in listed.stdout, listed.stdout
