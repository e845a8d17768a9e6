"""Shared fixtures: a real Docker engine, real app images built from busybox, a scratch area.

No mocks: when the engine cannot be had the tests fail (a skip is allowed only outside CI, when
the developer sets BUNDLE_TESTS_ALLOW_NO_DOCKER=1)."""

from __future__ import annotations

import os
import subprocess
import uuid

import docker
import pytest

# Real keys (tests/keys.py), crafted bundle variants (tests/craft.py) and the swap's scenario
# fixtures (tests/swap_fixtures.py), shared by the suites.
pytest_plugins = ["tests.keys", "tests.craft", "tests.swap_fixtures"]

from tests.daemons import start_node_exporter, start_prometheus, start_registry  # noqa: E402
from tests.support import REPO, build_app_image  # noqa: E402  (fixtures below use them)

# Tiers (markers registered in pyproject.toml; `make test` runs them all): `unit` for tests/unit
# (pure logic, no engine), `engine` for every other file (the real engine, registry, gpg,
# Prometheus, Swarm), `slow` for the files that wait on real windows (probation, soak, Swarm
# rollouts, kill -9 matrices). `-m unit`, `-m "engine and not slow"` select a tier.
#
# Balance for `--dist loadgroup` (Makefile): every file is one xdist group (its module fixtures
# built once), except the files that hold more than one worker's share, split into contiguous
# chunks. SLOW is ordered by measured time (one full run summed per file; the ranking matters,
# not the figures) and goes first, chunks of different files interleaved, so that no long group
# starts last and a worker waiting on a window runs beside one that computes.
SLOW = {  # file: groups
    "test_swap_crash.py": 4, "test_fleet_data.py": 4, "test_fleet.py": 2, "test_health.py": 2,
    "test_metrics_gate.py": 2, "test_swap_data.py": 1, "test_lifecycle.py": 2, "test_swap.py": 2,
    "test_split.py": 1, "test_swap_merge.py": 1, "test_swap_lifecycle.py": 1, "test_audit.py": 1,
}
UNIT_DIR = REPO / "tests" / "unit"


def _chunks(items: list, n: int) -> list[list]:
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    by_file: dict[str, list] = {}
    for item in items:
        path = item.path
        item.add_marker(pytest.mark.unit if UNIT_DIR in path.parents else pytest.mark.engine)
        if path.name in SLOW:
            item.add_marker(pytest.mark.slow)
        by_file.setdefault(str(path.relative_to(REPO)), []).append(item)
    slow, rest = [], []
    for rel, its in by_file.items():
        name = rel.rsplit("/", 1)[-1]
        groups = _chunks(its, SLOW.get(name, 1))
        for k, group in enumerate(groups):
            for item in group:
                item.add_marker(pytest.mark.xdist_group(f"{rel}#{k}" if len(groups) > 1 else rel))
        if name in SLOW:
            slow.append((list(SLOW).index(name), groups))
        else:
            rest.extend(its)
    slow.sort(key=lambda x: x[0])
    ordered = []
    for k in range(max((len(g) for _, g in slow), default=0)):  # round robin over the slow files
        for _, groups in slow:
            if k < len(groups):
                ordered.extend(groups[k])
    items[:] = ordered + rest


def _engine_or_fail():
    r = subprocess.run(["bash", str(REPO / "scripts" / "ensure-docker.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        msg = f"no Docker engine: {r.stderr.strip() or r.stdout.strip()}"
        if os.environ.get("CI") != "true" and os.environ.get("BUNDLE_TESTS_ALLOW_NO_DOCKER") == "1":
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)
    return docker.from_env(timeout=300)


@pytest.fixture(scope="session")
def docker_client():
    return _engine_or_fail()


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


