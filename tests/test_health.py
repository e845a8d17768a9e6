"""Health checks that cannot be fooled, and probation (importer.health), against a real engine.

Each release variant is the demo app built in the test with its start-up replaced: one that never
listens (a long migration, then exit 1), one that answers for a moment and then crashes, one that
crashes every few seconds, one whose health page disappears. A `tcp` check on 127.0.0.1:PORT must
not be passed by Docker's port proxy, and probation must roll back what its gate could not see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import socket
import time
import uuid

import pytest

from bundlecore.engine import Engine
from importer.health import HealthGate, ProbeRoute
from importer.kinds.container.journal import SwapJournal
from importer.steps import pending
from importer.kinds.container.status import app_status
from tests.support import build_app_image, one_line, run_bundle
from tests.swap_fixtures import (REPO, bundle_for, containers_named, data_files, digest, free_port, install,
                                 remove_images, run_driver, seed_data, served_version, target_for, wait_until)

UPDATE_FAILED = 4

# Start-ups replacing the demo app's (examples/demo/app/start.sh), as a release would ship them.
_SERVE = "mkdir -p /www; echo ok > /www/health; echo $APP_VERSION > /www/version; httpd -f -p 8080 -h /www & "
VARIANTS = {
    # A long migration that never listens, then dies: the port proxy alone would accept connections.
    "never-listens": "sleep 4; echo 'migration failed' >&2; exit 1",
    # Answers exactly one request, then crashes (and its restart policy brings it back to do it
    # again): however slow the machine, the gate's second probe finds it gone. (A release that
    # lives a fixed time, e.g. `sleep 1; exit 1`, races the gate's spacing on a loaded host.)
    "answers-once": "printf 'HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nok\\n'"
                    " | nc -l -p 8080; exit 1",
    # Serves for 4 s, then crashes: passes a gate (even on a loaded machine), not a probation.
    "crashes-every-4s": _SERVE + "sleep 4; exit 1",
    # Keeps running, but its health page is gone after 4 s.
    "health-goes": _SERVE + "sleep 4; rm /www/health; wait",
}


@pytest.fixture(scope="module")
def variants(docker_client, demo_images):
    tag = f"healthtest/app-{uuid.uuid4().hex[:8]}"
    made = {}
    for i, (key, script) in enumerate(VARIANTS.items()):
        ref, version = f"{tag}:{key}", f"5.{i}.0"
        cmd = json.dumps(["/bin/sh", "-c", script])
        made[key] = {"ref": ref, "version": version,
                     "id": build_app_image(docker_client, ref, version, dockerfile_extra=f"CMD {cmd}")}
    yield made
    remove_images(docker_client, made)


def _v1(client, swap_env, demo_images, **kw):
    """v1 installed with some user data. An upgrade copies the running container's settings (its
    restart policy too), so a test's restart policy is set here."""
    install(client, swap_env, demo_images["v1"], 1, **kw)
    seed_data(client, swap_env["name"])
    return data_files(client, swap_env["name"])


def _swap(swap_env, image, sequence, *, health=None, run_extra=None, timeout=5, attempts=1):
    target = target_for(swap_env, image, timeout=timeout, attempts=attempts, run_extra=run_extra)
    target["health"] = {**target["health"], **(health or {})}
    for k in [k for k, v in target["health"].items() if v is None]:
        del target["health"][k]
    return run_driver("swap", swap_env["state"].root, json.dumps(target), image["id"],
                      json.dumps(bundle_for(image, sequence)))


def _tcp(swap_env):
    return {"http": None, "tcp": f"127.0.0.1:{swap_env['port']}"}


def _assert_back_on_v1(client, swap_env, before, r):
    """Exit 4, the one line, v1 answering with exactly its data, one container, nothing pending."""
    name = swap_env["name"]
    assert r.returncode == UPDATE_FAILED, r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert "is running again" in line, r.stderr
    assert served_version(swap_env) == "1.0.0"
    assert len(containers_named(client, name)) == 1
    info = client.api.inspect_container(name)
    assert info["State"]["Running"] and swap_env["state"].installed(name)["version"] == "1.0.0"
    assert digest(data_files(client, name)) == digest(before)
    assert pending(swap_env["state"]) == []
    return line


def test_the_port_proxy_does_not_pass_a_tcp_check_of_a_release_that_never_listens(
        docker_client, swap_env, demo_images, variants):
    before = _v1(docker_client, swap_env, demo_images)
    # The trap itself: with the release running and nothing listening inside, the published port accepts.
    r = _swap(swap_env, variants["never-listens"], 2, health=_tcp(swap_env), timeout=3)
    line = _assert_back_on_v1(docker_client, swap_env, before, r)
    assert "did not become healthy" in line and ("refused" in line.lower() or "exited" in line), line


def test_a_release_that_answers_once_and_then_crashes_is_rolled_back(docker_client, swap_env, demo_images, variants):
    before = _v1(docker_client, swap_env, demo_images)
    r = _swap(swap_env, variants["answers-once"], 2, timeout=5, attempts=2)
    line = _assert_back_on_v1(docker_client, swap_env, before, r)
    assert "did not become healthy after 2 attempt(s)" in line, line
    assert "exited" in line or "restarted" in line, line


@pytest.mark.parametrize("probe", ["tcp", "http"])
def test_a_good_release_passes_a_check_at_the_container_s_own_address(docker_client, swap_env, demo_images, probe):
    _v1(docker_client, swap_env, demo_images)
    r = _swap(swap_env, demo_images["v2"], 2, health=_tcp(swap_env) if probe == "tcp" else None)
    assert r.returncode == 0, r.stderr
    assert served_version(swap_env) == "2.0.0"
    assert swap_env["state"].installed(swap_env["name"])["version"] == "2.0.0"
    assert "through the published port" not in r.stdout + r.stderr  # the bridge is reachable here


def test_through_the_port_proxy_only_a_connection_held_open_counts(docker_client, swap_env, demo_images, variants):
    """The fallback for a container this host cannot reach: Docker's proxy accepts a connection to
    the published port even when nothing listens inside (the trap), then closes it at once; a real
    listener keeps it open. The fallback probe tells them apart."""
    gate = HealthGate({"tcp": "127.0.0.1:1"})
    for n, (image, listens) in enumerate(((variants["never-listens"], False), (demo_images["v2"], True))):
        port = free_port()
        cid = docker_client.api.create_container(
            image["id"], name=f"probe-{swap_env['uniq']}-{n}",
            host_config=docker_client.api.create_host_config(port_bindings={8080: ("127.0.0.1", port)}))["Id"]
        docker_client.api.start(cid)
        if listens:
            assert wait_until(lambda port=port: requests_ok(port), timeout=20)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the trap: accepted either way
        gate.health["tcp"] = f"127.0.0.1:{port}"
        route = ProbeRoute(None, "probing through the published port")
        ok, why = gate.probe(Engine(docker_client), cid, docker_client.api.inspect_container(cid), route)
        assert ok is listens, why
        if not listens:
            assert why == "the port proxy closed the connection (nothing listens inside)"
        # The normal route: the container's own address, where nothing listening is a refusal.
        route = gate.route(docker_client.api.inspect_container(cid))
        assert route.address and route.address[1] == 8080 and route.why_fallback == ""
        assert gate.probe(Engine(docker_client), cid, docker_client.api.inspect_container(cid), route)[0] is listens


def requests_ok(port: int) -> bool:
    return served_version({"port": port}) == "2.0.0"


def test_probation_rolls_back_a_release_that_crashes_4_times_in_its_window(
        docker_client, swap_env, demo_images, variants):
    before = _v1(docker_client, swap_env, demo_images, run_extra={"restart": "always"})
    r = _swap(swap_env, variants["crashes-every-4s"], 2, health={"probation": 25, "max_restarts": 3},
              run_extra={"restart": "always"})
    line = _assert_back_on_v1(docker_client, swap_env, before, r)
    assert "failed its probation: it restarted 4 times in its probation (at most 3 allowed)" in line, line
    assert "probation: watching" in r.stdout
    assert app_status(Engine(docker_client), swap_env["state"], swap_env["name"])["last_swap"]["result"] == "rolled back"


def test_probation_rolls_back_a_release_that_exits_with_restart_policy_no(docker_client, swap_env, demo_images, variants):
    before = _v1(docker_client, swap_env, demo_images, run_extra={"restart": "no"})
    r = _swap(swap_env, variants["crashes-every-4s"], 2, health={"probation": 8}, run_extra={"restart": "no"})
    line = _assert_back_on_v1(docker_client, swap_env, before, r)
    assert "in its probation and is not being restarted" in line, line


def test_probation_rolls_back_a_release_whose_health_check_keeps_failing(docker_client, swap_env, demo_images, variants):
    before = _v1(docker_client, swap_env, demo_images)
    r = _swap(swap_env, variants["health-goes"], 2, health={"probation": 12}, timeout=3)
    line = _assert_back_on_v1(docker_client, swap_env, before, r)
    assert "its health check failed for 3 s in its probation (HTTP 404)" in line, line


def _popen_swap(swap_env, image, sequence, health):
    target = target_for(swap_env, image)
    target["health"].update(health)
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "swap_fixtures.py"), "swap", swap_env["state"].root,
                             json.dumps(target), image["id"], json.dumps(bundle_for(image, sequence))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))


def _in_probation(swap_env) -> bool:
    j = SwapJournal.load(swap_env["state"].app_dir(swap_env["name"]))
    return bool(j and j.record.step == "probation" and j.record.probation_until)


def test_probation_keeps_the_old_version_parked_and_commits_a_release_that_stays_up(
        docker_client, swap_env, demo_images):
    _v1(docker_client, swap_env, demo_images)
    name = swap_env["name"]
    proc = _popen_swap(swap_env, demo_images["v2"], 2, {"probation": 8, "max_restarts": 3})
    try:
        assert wait_until(lambda: _in_probation(swap_env), timeout=60), proc.stderr
        # During the window: v2 serves, v1 waits parked (stopped), nothing is committed yet.
        assert served_version(swap_env) == "2.0.0"
        parked = docker_client.api.inspect_container(f"{name}.previous-1")
        assert not parked["State"]["Running"]
        assert swap_env["state"].installed(name)["version"] == "1.0.0"
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert served_version(swap_env) == "2.0.0" and swap_env["state"].installed(name)["version"] == "2.0.0"
    last = SwapJournal.last(swap_env["state"].app_dir(name))
    assert [f"{h['step']}:{h['phase']}" for h in last["history"] if h["step"] == "probation"] == [
        "probation:started", "probation:done"]
    assert last["probation_until"] - time.time() < 1  # it waited the whole window


@pytest.mark.parametrize("release,expect", [("v2", "2.0.0"), ("crashes-every-4s", "1.0.0")])
def test_a_kill_during_probation_resumes_the_same_window_on_recovery(
        docker_client, swap_env, demo_images, variants, release, expect):
    """kill -9 in the middle of the window: `bundle recover` watches what is left of it, counting
    restarts from the journaled base (those that happened while nobody watched count too)."""
    before = _v1(docker_client, swap_env, demo_images, run_extra={"restart": "always"})
    image = demo_images.get(release) or variants[release]
    proc = _popen_swap(swap_env, image, 2, {"probation": 25, "max_restarts": 1})
    try:
        assert wait_until(lambda: _in_probation(swap_env), timeout=60), proc.communicate(timeout=30)
        time.sleep(2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert pending(swap_env["state"]) == [swap_env["name"]]
    r = run_bundle("recover", "--yes", "--state-dir", swap_env["state"].root)
    assert r.returncode == 0, r.stderr
    assert pending(swap_env["state"]) == []
    assert served_version(swap_env) == expect
    assert swap_env["state"].installed(swap_env["name"])["version"] == expect
    assert len(containers_named(docker_client, swap_env["name"])) == 1
    if expect == "1.0.0":
        assert digest(data_files(docker_client, swap_env["name"])) == digest(before)
        assert "restarted" in r.stdout + r.stderr


def _spec(tmp_path, name, image, sequence, port, health_extra=""):
    spec = tmp_path / f"bundle-{sequence}.toml"
    spec.write_text(f'name = "{name}"\nversion = "{image["version"]}"\nsequence = {sequence}\nimages = ["{image["ref"]}"]\n\n'
                    f'[target]\nkind = "container"\nname = "{name}"\nimage = "{image["ref"]}"\n\n'
                    f'[target.run]\nports = ["127.0.0.1:{port}:8080"]\nvolumes = ["{name}-data:/data"]\n'
                    'restart = "always"\nstop_timeout = 0\n\n'
                    f'[target.health]\nhttp = "http://127.0.0.1:{port}/health"\ntimeout = "5s"\nattempts = 1\n'
                    + health_extra)
    return spec


def _build(tmp_path, spec, key):
    out = spec.with_suffix(".bundle.zst")
    r = run_bundle("build", spec, "-o", out, "--sign-key", key.fpr, "--gnupghome", key.home, "--local")
    assert r.code == 0, str(r)
    return out


def test_import_with_probation_flag_rolls_back_a_release_the_bundle_lets_restart_3_times(
        docker_client, swap_env, demo_images, variants, pgp_keys, trust_store_of, tmp_path):
    """End to end: the bundle's signed `max_restarts = 3` (with a 1 s window) and `--probation 25s`
    for this import: the crash-looping release is watched 25 s, restarts a 4th time, is rolled back."""
    name, port, key = swap_env["name"], swap_env["port"], pgp_keys.builder
    keys, state = trust_store_of([key]), swap_env["state"].root
    v1 = _build(tmp_path, _spec(tmp_path, name, demo_images["v1"], 1, port), key)
    r = run_bundle("import", v1, "--keys", keys, "--state-dir", state, "--yes")
    assert r.code == 0, str(r)
    bad = _build(tmp_path, _spec(tmp_path, name, variants["crashes-every-4s"], 2, port,
                                 'probation = "1s"\nmax_restarts = 3\n'), key)
    r = run_bundle("import", bad, "--keys", keys, "--state-dir", state, "--yes", "--probation", "25s")
    assert r.code == UPDATE_FAILED, str(r)
    assert "probation 25 s, at most 3 restart(s)" in r.stdout, r.stdout  # the plan says it
    assert "it restarted 4 times in its probation (at most 3 allowed)" in r.stderr, r.stderr
    assert served_version(swap_env) == "1.0.0" and swap_env["state"].installed(name)["version"] == "1.0.0"
    assert len(containers_named(docker_client, name)) == 1 and pending(swap_env["state"]) == []


@pytest.mark.parametrize("value", ["soon", "0s", "2d", "25h"])
def test_a_bad_probation_flag_is_a_usage_error_that_changes_nothing(tmp_path, value):
    bundle = tmp_path / "x.bundle.zst"
    bundle.write_bytes(b"not even read")
    r = run_bundle("import", bundle, "--state-dir", tmp_path / "state", "--yes", "--probation", value)
    assert r.code == 2, str(r)
    assert "--probation" in one_line(r.stderr)
    assert not (tmp_path / "state" / "apps").exists()
