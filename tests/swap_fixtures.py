"""Fixtures and helpers for the swap tests (real engine, real containers, no mocks).

Also a tiny driver run in a separate process (`python tests/swap_fixtures.py swap ...`), so a
test can SIGKILL a swap at a journal step (BUNDLE_CRASH_AT) and recover in a fresh process.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.daemons import free_port  # noqa: E402  (the scenario files import it from here)



def image_extra(version: str) -> str:
    """Per-version image defaults (a label and a VOLUME) the swap must not freeze into the container."""
    return f"LABEL org.demo.release={version}\nVOLUME /state"


@pytest.fixture(scope="module")
def demo_images(docker_client):
    """v1, v2 (working), v3 (broken migration), v4 (working) of the demo app, built once per module."""
    from tests.support import build_app_image
    tag = f"swaptest/app-{uuid.uuid4().hex[:8]}"
    made = {}
    for key, version, broken in (("v1", "1.0.0", False), ("v2", "2.0.0", False), ("v3", "3.0.0", True),
                                 ("v4", "4.0.0", False)):
        ref = f"{tag}:{version}"
        made[key] = {"ref": ref, "id": build_app_image(docker_client, ref, version, broken, image_extra(version)),
                     "version": version}
    yield made
    remove_images(docker_client, made)


def remove_images(client, made: dict) -> None:
    """Remove the tags a module built ({key: {"ref": ...}}), whatever state a test left them in."""
    for m in made.values():
        try:
            client.images.remove(m["ref"], force=True)
        except Exception:
            pass


class Cleanup:
    """Removes, after a test, every container/volume/network whose name contains the test's token,
    and the restore helpers its state dir left (identity: importer.state.StateDir.identity)."""

    def __init__(self, client, token: str, state_identity: str | None = None):
        self.client, self.token, self.state_identity = client, token, state_identity

    def __call__(self):
        api = self.client.api
        volumes = set()
        for c in api.containers(all=True):
            if any(self.token in n for n in c.get("Names") or []):
                volumes |= {m["Name"] for m in c.get("Mounts") or [] if m.get("Type") == "volume"}
                api.remove_container(c["Id"], force=True, v=True)
        helpers = ["io.bundle.helper", f"io.bundle.state={self.state_identity}"]
        for c in api.containers(all=True, filters={"label": helpers}) if self.state_identity else []:
            try:
                api.remove_container(c["Id"], force=True, v=True)
            except Exception:
                pass  # already going
        volumes |= {v["Name"] for v in (api.volumes().get("Volumes") or []) if self.token in v["Name"]}
        for v in volumes:  # named ones, and the anonymous ones the test's containers used
            try:
                api.remove_volume(v, force=True)
            except Exception:
                pass
        for n in api.networks():
            if self.token in n["Name"]:
                api.remove_network(n["Id"])


@pytest.fixture
def swap_env(docker_client, uniq, tmp_path):
    """A fresh state dir, app name, host port, and cleanup of everything named with `uniq`."""
    from importer.state import StateDir
    env = {
        "name": f"demo-{uniq}", "port": free_port(), "state": StateDir(tmp_path / "state"),
        "volume": f"demo-{uniq}-data", "uniq": uniq,
    }
    yield env
    Cleanup(docker_client, uniq, env["state"].identity)()


def target_for(env: dict, image: dict, *, timeout: int = 5, attempts: int = 2, run_extra: dict | None = None) -> dict:
    run = {"ports": [f"127.0.0.1:{env['port']}:8080"], "volumes": [f"{env['volume']}:/data"],
           "env": {"GREETING": "hello"}, "restart": "unless-stopped", "cap_add": ["SYS_ADMIN"],
           "labels": {"org.user.owner": "ops"}, "command": None, "network": None,
           "stop_timeout": 0}  # busybox httpd ignores SIGTERM: do not wait 10 s per stop in tests
    run.update(run_extra or {})
    return {"kind": "container", "name": env["name"], "image": image["ref"], "run": run,
            "health": {"http": f"http://127.0.0.1:{env['port']}/health", "timeout": timeout, "attempts": attempts}}


def bundle_for(image: dict, sequence: int) -> dict:
    """A test bundle as JSON (it crosses into the swap driver's process); `delivery` types it."""
    return {"name": "demo", "version": image["version"], "sequence": sequence, "sha256": "ab" * 32,
            "signers": ["F" * 40], "images": {image["ref"]: image["id"]}}


def typed(target: dict):
    """The typed target (bundlecore.release) of a test target dict, as the gate hands it on."""
    from bundlecore.release import target_from_json
    return target_from_json(target)


def delivery(bundle: dict):
    """What the import hands run_swap for a test bundle (bundle_for): the release with the fields the
    swap reads (a placeholder where it reads none), the bundle's sha256 and loaded images."""
    from bundlecore.release import Builder, ContainerTarget, Release, RunSettings, signers_of
    from importer.delivery import Delivery, LoadedImages
    release = Release(format_version=1, app=bundle["name"], version=bundle["version"], sequence=bundle["sequence"],
                      created="", expires="", builder=Builder("test", "test", "test"), platform="linux/amd64",
                      allow_latest=False, images=(), payload=(), target=ContainerTarget("-", "-", RunSettings()),
                      signers=signers_of(bundle["signers"]))
    return Delivery(release, bundle["sha256"], bundle["images"], LoadedImages.from_json(bundle))


def loaded_by_the_tool(bundle: dict) -> dict:
    """A test bundle whose images the import's load created (as importer.delivery.LoadedImages records)."""
    return {**bundle, "loaded_tags": dict(bundle["images"]), "loaded_image_ids": sorted(bundle["images"].values())}


def install(client, env: dict, image: dict, sequence: int, *, loaded: bool = False, systemd_unit: bool = False,
            **kw) -> dict:
    """plan + run_swap under the lock, as `bundle import` does (`loaded`: as if its load created the image;
    `systemd_unit`: as `--systemd-unit` asks)."""
    from bundlecore.engine import engine_for
    from importer.kinds import recover_all
    from importer.kinds.container.plan import plan_swap
    from importer.kinds.container.run import run_swap
    target = target_for(env, image, **kw)
    client = engine_for(client)  # Docker's, or Podman's (tests/test_podman.py)
    with env["state"].lock():
        recover_all(client, env["state"], out=lambda s: None)
        plan = plan_swap(client, env["state"], typed(target), image["id"], systemd_unit=systemd_unit)
        bundle = bundle_for(image, sequence)
        return run_swap(client, env["state"], plan, delivery(loaded_by_the_tool(bundle) if loaded else bundle),
                        out=lambda s: None)


def served_version(env: dict) -> str | None:
    try:
        return requests.get(f"http://127.0.0.1:{env['port']}/version", timeout=2).text.strip()
    except requests.RequestException:
        return None


def data_files(client, container: str, path: str = "/data") -> dict[str, bytes]:
    """Every regular file under `path` (name -> bytes) and every other entry (name -> type), via the API."""
    stream, _ = client.api.get_archive(container, path)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as t:
        for m in t.getmembers():
            out[m.name] = t.extractfile(m).read() if m.isreg() else f"<{m.type!r} {m.mode:o} {m.linkname}>".encode()
    return out


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def seed_data(client, container: str) -> None:
    """The user's data: notes, an important file, a subdirectory, a symlink, an empty dir."""
    client.api.exec_start(client.api.exec_create(container, ["sh", "-c",
        "echo 'my notes' > /data/notes.txt; echo 'do not lose me' > /data/important.txt;"
        "mkdir -p /data/docs/a /data/empty; head -c 20000 /dev/urandom > /data/docs/a/blob.bin;"
        "ln -sf docs/a/blob.bin /data/link; chmod 640 /data/important.txt"]))


def containers_named(client, name: str) -> list[dict]:
    return [c for c in client.api.containers(all=True) if f"/{name}" in (c.get("Names") or [])]


def run_driver(*args, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=str(REPO))


def wait_until(pred, timeout: float = 10.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(every)


def _driver(argv: list[str]) -> int:
    """`swap STATE_DIR TARGET_JSON IMAGE_ID BUNDLE_JSON`: one import's swap in this process."""
    from bundlecore.engine import connect
    from bundlecore.errors import BundleError
    from importer.kinds import recover_all
    from importer.kinds.container.plan import plan_swap
    from importer.kinds.container.run import run_swap
    from importer.state import StateDir
    cmd, state_dir, target, image_id, bundle = argv
    assert cmd == "swap"
    client = connect(timeout=300)
    state = StateDir(state_dir)
    try:
        with state.lock():
            recover_all(client, state)
            plan = plan_swap(client, state, typed(json.loads(target)), image_id)
            run_swap(client, state, plan, delivery(json.loads(bundle)))
    except BundleError as e:
        print(e.line(), file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1:]))
