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


