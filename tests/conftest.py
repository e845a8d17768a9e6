"""Shared fixtures: a real Docker engine, real app images built from busybox, a scratch area.

No mocks: when the engine cannot be had the tests fail (a skip is allowed only outside CI, when
the developer sets BUNDLE_TESTS_ALLOW_NO_DOCKER=1)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

# Real keys (tests/keys.py), crafted bundle variants (tests/craft.py) and the swap's scenario
# fixtures (tests/swap_fixtures.py), shared by the suites.
pytest_plugins = ["tests.keys", "tests.craft", "tests.swap_fixtures"]

REPO = Path(__file__).resolve().parent.parent
APP_CONTEXT = REPO / "examples" / "demo" / "app"
BUNDLE = Path(os.environ.get("BUNDLE_BIN") or Path(sys.executable).parent / "bundle")


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


def child_image(client, parent: str, tag: str, run: str = "echo two > /two.txt") -> str:
    """An image FROM `parent` with one more layer (a release that changed one layer); returns its ID."""
    dockerfile = f"FROM {parent}\nRUN {run}\n".encode()
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    image, _ = client.images.build(fileobj=io.BytesIO(ctx.getvalue()), custom_context=True, tag=tag, rm=True)
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


@dataclass
class CliResult:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    maxrss_mib: float
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def returncode(self) -> int:  # as subprocess.CompletedProcess names it
        return self.code

    def __str__(self) -> str:
        return (f"`bundle {' '.join(self.args)}` exited {self.code}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


def run_bundle(*args, timeout: float = 600, env: dict | None = None) -> CliResult:
    """Run the installed `bundle` command; returns exit code, output, and the child's own peak RSS
    (os.wait4 gives the rusage of exactly this child)."""
    args = [str(a) for a in args]
    environ = {k: v for k, v in os.environ.items() if k not in ("BUNDLE_KEYS", "BUNDLE_STATE_DIR")}
    environ.update(env or {})
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen([str(BUNDLE), *args], stdin=devnull, stdout=out, stderr=err, env=environ)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return CliResult(args, proc.returncode, out.read().decode(errors="replace"),
                         err.read().decode(errors="replace"), usage.ru_maxrss / 1024, time.monotonic() - started)


def one_line(stderr: str) -> str:
    """The single line a user-caused error must print (no traceback)."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]
