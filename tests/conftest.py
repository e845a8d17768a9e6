"""Shared fixtures: a real Docker engine, real app images built from busybox, a scratch area.

No mocks: when the engine cannot be had the tests fail (a skip is allowed only outside CI, when
the developer sets BUNDLE_TESTS_ALLOW_NO_DOCKER=1)."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import uuid
from typing import NoReturn
from collections import Counter
from pathlib import Path

import docker
import pytest

# Real keys (tests/keys.py), crafted bundle variants (tests/craft.py) and the swap's scenario
# fixtures (tests/swap_fixtures.py), shared by the suites.
pytest_plugins = ["tests.keys", "tests.craft", "tests.swap_fixtures"]

from tests.daemons import start_node_exporter, start_prometheus, start_registry  # noqa: E402
from tests.support import REPO, build_app_image, build_helper_image, set_up  # noqa: E402  (fixtures below use them)

# Tiers (markers registered in pyproject.toml; `make test` runs them all): `unit` for tests/unit
# (pure logic, no engine), `engine` for every other file (the real engine, registry, gpg,
# Prometheus, Swarm), `slow` for the files that take longest (real probation windows, soaks, Swarm
# rollouts, kill -9 matrices, many real refusals). `-m unit`, `-m "engine and not slow"` select a tier.
#
# Balance for `--dist loadfile --no-loadscope-reorder` (Makefile): each file is one work unit for
# one worker (its module fixtures built once, its tests in order), in the order collected here: SLOW
# first, heaviest first (one full run summed per file; the ranking matters, not the figures), so that
# no long file starts last; the kill -9 matrices of SPLIT are cut into several units (the scheduler
# below). (xdist's loadgroup cannot do this under pytest 9: it renames `item._nodeid`, which pytest 9
# no longer reads.)
SLOW = ["test_swap_crash.py", "test_compose_crash.py", "test_compose_rollback_crash.py", "test_podman_crash.py",
        "test_podman.py",
        "test_fleet_data.py", "test_fleet.py", "test_fleet_canary.py", "test_fleet_analysis.py", "test_fleet_pause.py",
        "test_health.py",
        "test_metrics_gate.py", "test_swap_data.py", "test_compose.py", "test_compose_site.py", "test_lifecycle.py",
        "test_swap.py",
        "test_gate.py", "test_split.py",
        "test_swap_merge.py", "test_swap_lifecycle.py", "test_verdicts.py", "test_everyday_verbs.py", "test_audit.py",
        "test_registry_ownership.py", "test_resource_ownership.py", "test_load_stream.py"]
# The kill -9 matrices that would alone outlast the rest of the suite in one worker: each is cut into
# this many work units (its cases dealt round-robin; work_units).
SPLIT = {"test_swap_crash.py": {"test_upgrade_killed_at_each_step_is_recovered": 3,
                                "test_manual_rollback_killed_at_each_step_is_recovered": 3,
                                "test_undo_of_a_failed_migration_killed_at_each_step_is_recovered": 2,
                                "test_uninstall_killed_at_each_step_is_recovered": 1},
         "test_compose_crash.py": {"test_upgrade_killed_at_each_step_is_recovered_to_one_healthy_version": 4},
         "test_compose_rollback_crash.py": {"test_rollback_killed_at_each_step_is_recovered_to_one_healthy_generation": 2},
         "test_podman_crash.py": {"test_an_upgrade_killed_on_podman_is_recovered": 2},
         "test_fleet_data.py": {
             "test_kill_9_during_the_data_restore_of_a_failed_update_then_recover_lands_on_v1_with_its_data": 2,
             "test_kill_9_during_bundle_rollback_then_recover_lands_on_one_version_with_matching_data": 2}}


def work_units(nodeids: list[str]) -> dict[str, str]:
    """The xdist work unit of each test: its file, or for the i-th case of a matrix of SPLIT cut in
    n, `FILE::FUNCTION#(i mod n)`."""
    dealt: Counter = Counter()
    units = {}
    for nodeid in nodeids:
        path, _, test = nodeid.partition("::")
        function = test.partition("[")[0]
        n = SPLIT.get(Path(path).name, {}).get(function)
        units[nodeid] = f"{path}::{function}#{dealt[path, function] % n}" if n else path
        dealt[path, function] += 1
    return units


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the matrices of SPLIT in several units (work_units)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SplitFileScheduling(LoadFileScheduling):
        units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.units is None and self.collection:  # the collection every worker agreed on
                self.units = work_units(self.collection)
            return (self.units or {}).get(nodeid) or nodeid.split("::", 1)[0]

    return SplitFileScheduling(config, log)


# A test phase (setup, call, teardown) still running after this long has hung: it fails, naming
# itself, with the stack of every thread on its stderr, and the suite goes on. Without it one test
# waiting forever holds `make test` until CI's own limit kills the run and reports nothing useful.
# The slowest test takes under 90 s.
HANG_LIMIT_S = float(os.environ.get("BUNDLE_TESTS_HANG_LIMIT", "600"))


class TestHung(Exception):
    """A test phase outlived HANG_LIMIT_S."""

    __test__ = False


def _hang_guard(item):
    def on_alarm(signum, frame):
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        raise TestHung(f"{item.nodeid} still running after {HANG_LIMIT_S:.0f} s (every thread's stack is on stderr)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_LIMIT_S)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _hang_guard(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _hang_guard(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _hang_guard(item))


UNIT_DIR = REPO / "tests" / "unit"


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW)}
    for item in items:
        item.add_marker(pytest.mark.unit if UNIT_DIR in item.path.parents else pytest.mark.engine)
        if item.path.name in rank:
            item.add_marker(pytest.mark.slow)
    # stable: a file's tests keep their order; the slow files first, by rank
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _missing(msg: str) -> NoReturn:
    """An engine the tests need cannot be had: fail (always under CI), or skip where a developer
    asked for it outside CI (BUNDLE_TESTS_ALLOW_NO_DOCKER=1)."""
    if os.environ.get("CI") != "true" and os.environ.get("BUNDLE_TESTS_ALLOW_NO_DOCKER") == "1":
        pytest.skip(msg)
    pytest.fail(msg, pytrace=False)


def _engine_or_fail():
    code, said = set_up("ensure-docker.sh")
    if code != 0:
        _missing(f"no Docker engine: {said}")
    return docker.from_env(timeout=300)


@pytest.fixture(scope="session")
def docker_client():
    client = _engine_or_fail()
    build_helper_image(client)
    return client


@pytest.fixture(scope="session")
def podman_host():
    """DOCKER_HOST of a real Podman service on its own socket (scripts/ensure-podman.sh starts it
    once; the Docker engine is left alone). Fails like docker_client when it cannot be had."""
    code, said = set_up("ensure-podman.sh")
    if code != 0:
        _missing(f"no Podman service: {said}")
    return said


@pytest.fixture(scope="session")
def podman_client(podman_host):
    """The Docker SDK pointed at the Podman service (what the product's engine layer sees there)."""
    return docker.DockerClient(base_url=podman_host, timeout=300)


@pytest.fixture
def uniq():
    """A short unique token for names of containers, volumes, tags made by one test."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def app_image(docker_client):
    """Factory: app_image(tag, version, broken=False, dockerfile_extra="") -> image ID.

    Tags made through it are removed after the test."""
    made = []

    def make(tag, version, broken=False, dockerfile_extra=""):
        made.append(tag)
        return build_app_image(docker_client, tag, version, broken, dockerfile_extra)

    yield make
    for tag in made:
        try:
            docker_client.images.remove(tag, noprune=False)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="session")
def registry(tmp_path_factory, docker_client):
    """A real registry (Debian's docker-registry, the reference registry) on loopback: '127.0.0.1:PORT'."""
    daemon = start_registry(tmp_path_factory.mktemp("registry"))
    yield daemon.address
    daemon.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    """A real Prometheus on loopback scraping every second; tests add targets with .scrape()."""
    prom = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield prom
    prom.stop()


@pytest.fixture(scope="session")
def node_exporter(tmp_path_factory, prometheus):
    """A real node_exporter (textfile collector only) reading .prom files from `.textfile_dir`,
    scraped by the `prometheus` fixture as job 'node'."""
    root = tmp_path_factory.mktemp("node-exporter")
    textfile_dir = root / "textfile"
    textfile_dir.mkdir()
    daemon = start_node_exporter(root, textfile_dir)
    daemon.textfile_dir = textfile_dir
    prometheus.scrape("node", daemon.address)
    yield daemon
    daemon.stop()


