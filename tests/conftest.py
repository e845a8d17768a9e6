"""Shared fixtures: a real Docker engine, real app images built from busybox, a scratch area.

No mocks: when the engine cannot be had the tests fail (a skip is allowed only outside CI, when
the developer sets BUNDLE_TESTS_ALLOW_NO_DOCKER=1)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import docker
import pytest
import requests

# Real keys (tests/keys.py), crafted bundle variants (tests/craft.py) and the swap's scenario
# fixtures (tests/swap_fixtures.py), shared by the suites.
pytest_plugins = ["tests.keys", "tests.craft", "tests.swap_fixtures"]

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def registry(tmp_path_factory, docker_client):
    """A real registry (Debian's docker-registry, the reference registry) on loopback: '127.0.0.1:PORT'."""
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: warn\n")
    exe = shutil.which("docker-registry")
    if not exe:
        pytest.fail("docker-registry is missing: run scripts/ensure-docker.sh", pytrace=False)
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=open(root / "log", "w"))
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"registry did not start: {(root / 'log').read_text()[-500:]}", pytrace=False)
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


