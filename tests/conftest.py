"""Shared fixtures: a real Docker engine, real app images built from busybox, a scratch area.

No mocks: when the engine cannot be had the tests fail (a skip is allowed only outside CI, when
the developer sets BUNDLE_TESTS_ALLOW_NO_DOCKER=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import io
import uuid
from pathlib import Path

import docker
import pytest

REPO = Path(__file__).resolve().parent.parent
APP_CONTEXT = REPO / "examples" / "demo" / "app"


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


def _build_context(extra_files: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in APP_CONTEXT.iterdir():
            tar.add(p, arcname=p.name)
        tar.add("/bin/busybox", arcname="bin/busybox")
        for name, text in (extra_files or {}).items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_app_image(client, tag: str, version: str, broken: bool = False, dockerfile_extra: str = "") -> str:
    """Build the demo app (examples/demo/app) as `tag`; returns the image ID.

    `dockerfile_extra` lines are appended to the Dockerfile (e.g. a HEALTHCHECK or VOLUME)."""
    extra = {}
    if dockerfile_extra:
        extra["Dockerfile"] = (APP_CONTEXT / "Dockerfile").read_text() + dockerfile_extra + "\n"
    ctx = _build_context(extra)
    image, _ = client.images.build(
        fileobj=io.BytesIO(ctx), custom_context=True, tag=tag, rm=True, forcerm=True,
        buildargs={"APP_VERSION": version, "APP_BROKEN": "1" if broken else "0"},
    )
    return image.id


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
def busybox_available():
    if not Path("/bin/busybox").exists():
        pytest.fail("/bin/busybox is missing: run scripts/ensure-docker.sh (installs busybox-static)", pytrace=False)
