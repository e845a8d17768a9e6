"""Issue 20, verdicts that stay true: SIGINT or SIGTERM sent to `bundle import` while the journal
shows a step in progress. The old container (busybox httpd ignores SIGTERM) takes its whole stop
timeout to stop and is then killed: an interrupt inside that stop used to get "the previous version
is running again" (exit 4) printed while the engine was still stopping it, and `Exited (137)`
seconds later. The verdict printed must still be true 15 s after the exit. An interrupt before
anything changed is exit 130 with nothing changed. Real engine, real bundles, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import docker
import pytest

from tests.support import BUNDLE, child_image, one_line, run_bundle
from tests.swap_fixtures import wait_until

STOP_TIMEOUT = 6   # seconds the old container takes to stop (it ignores SIGTERM): the window hit
AFTER_EXIT = 15    # the verdict must still be true this long after the exit


@pytest.fixture
def builder(docker_client, app_image, pgp_keys, trust_store_of, tmp_path, uniq):
    """The v1 image; `bundle_of(version, sequence)` builds signed releases (a bind mount of `bind`:
    one the default host policy refuses)."""
    name, repo = f"inttest-{uniq}", f"inttest/app-{uniq}"
    key = pgp_keys.builder
    app_image(f"{repo}:1.0.0", "1.0.0")
    env = {"name": name, "repo": repo, "store": trust_store_of([key]), "state": tmp_path / "state",
           "tmp": tmp_path, "made": [f"{repo}:1.0.0"]}

    def bundle_of(version: str, sequence: int, big: bool = False, bind: str | None = None,
                  run: str = f"stop_timeout = {STOP_TIMEOUT}\n", health: str = 'cmd = ["/bin/true"]') -> Path:
        ref = f"{repo}:{version}"
        if version != "1.0.0":  # one more layer (a large one: a long verify+load window)
            child_image(docker_client, f"{repo}:1.0.0", ref,
                        run="head -c 40000000 /dev/urandom > /big" if big else f"echo {version} > /v")
            env["made"].append(ref)
        spec = tmp_path / f"{version}.toml"
        spec.write_text(f'name = "{name}"\nversion = "{version}"\nsequence = {sequence}\nimages = ["{ref}"]\n\n'
                        f'[target]\nkind = "container"\nname = "{name}"\nimage = "{ref}"\n\n'
                        f'[target.run]\n{run}'
                        + (f'volumes = ["{bind}:/host:ro"]\n' if bind else "") + '\n'
                        f'[target.health]\n{health}\ntimeout = "20s"\nattempts = 1\n')
        out = tmp_path / f"{version}{'-bind' if bind else ''}.bundle.zst"
        r = run_bundle("build", spec, "-o", out, "--sign-key", key.fpr, "--gnupghome", key.home, "--local")
        assert r.code == 0, str(r)
        return out

    env["bundle_of"] = bundle_of
    yield env
    for c in docker_client.api.containers(all=True, filters={"name": name}):
        docker_client.api.remove_container(c["Id"], force=True)
    for ref in env["made"]:
        try:
            docker_client.images.remove(ref, force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture
def app(docker_client, builder):
    """v1 imported and running."""
    r = run_bundle("import", builder["bundle_of"]("1.0.0", 1), "--keys", builder["store"], "--state-dir",
                   builder["state"], "--yes")
    assert r.code == 0, str(r)
    builder["v1_id"] = docker_client.api.inspect_container(builder["name"])["Id"]
    return builder


def _import_until(app, bundle: Path, when, *more: str) -> subprocess.Popen:
    """`bundle import BUNDLE --yes` in a child, returned once `when()` says so."""
    proc = subprocess.Popen([str(BUNDLE), "import", str(bundle), "--keys", str(app["store"]), "--state-dir",
                             str(app["state"]), "--yes", *more], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not when():
        assert proc.poll() is None, f"ended too early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.02)
    return proc


def _import_and_signal(app, bundle: Path, sig: int, when) -> tuple[int, str, str]:
    """`sig` to `bundle import` once `when()` says so; (exit code, stdout, stderr)."""
    proc = _import_until(app, bundle, when)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def _journal_at(app, step: str):
    """True once the app's journal shows `step` started (and not done yet)."""
    path = app["state"] / "apps" / app["name"] / "journal.json"

    def at() -> bool:
        try:
            doc = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        return doc.get("step") == step and doc.get("phase") == "started"
    return at


def _still_v1_after(docker_client, app) -> None:
    """15 s after the exit: v1's own container runs under its name, and `status` says active."""
    time.sleep(AFTER_EXIT)
    info = docker_client.api.inspect_container(app["name"])
    assert info["Id"] == app["v1_id"] and info["State"]["Running"] and not info["State"]["Restarting"], info["State"]
    r = run_bundle("status", app["name"], "--state-dir", app["state"])
    assert r.code == 0 and "[active]" in r.stdout, str(r)
    assert not (app["state"] / "apps" / app["name"] / "journal.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_the_old_container_stops_is_undone_and_the_verdict_stays_true(
        docker_client, app, sig):
    bundle = app["bundle_of"]("2.0.0", 2)
    code, out, err = _import_and_signal(app, bundle, sig, _journal_at(app, "stop_old"))
    name = signal.Signals(sig).name
    line = one_line(_last_line(err))
    assert code == 4, (out, err)
    assert line == (f"update failed: interrupted by {name} during step stop_old; "
                    "the previous version 1.0.0 is running again"), err
    assert f"{name} received: stopping after the step in progress" in err
    assert f"stopping {app['name']} 1.0.0 (up to {STOP_TIMEOUT} s)" in out
    assert "KeyboardInterrupt" not in out + err
    _still_v1_after(docker_client, app)


def test_an_interrupt_during_the_streamed_load_is_exit_130_and_nothing_changed(docker_client, app):
    """SIGINT once the plan is printed, while the 40 MB layer streams into the engine."""
    bundle = app["bundle_of"]("2.0.0", 2, big=True)
    proc = subprocess.Popen([str(BUNDLE), "import", str(bundle), "--keys", str(app["store"]), "--state-dir",
                             str(app["state"]), "--yes"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(ln) for ln in proc.stdout], daemon=True)
    reader.start()
    assert wait_until(lambda: any(ln.startswith("engine: ") for ln in lines) or proc.poll() is not None, timeout=120)
    proc.send_signal(signal.SIGINT)  # the plan's last line: the load is next
    err = proc.stderr.read()
    proc.wait(timeout=180)
    reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == 130, (out, err)
    assert "payload files" not in out, out  # it came during the load, not after it
    assert one_line(err) == "interrupted by SIGINT; nothing changed"
    staging = app["state"] / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    assert not (app["state"] / "apps" / app["name"] / "journal.json").exists()
    rec = json.loads((app["state"] / "installed" / f"{app['name']}.json").read_text())
    assert rec["version"] == "1.0.0" and rec["container_id"] == app["v1_id"]
    info = docker_client.api.inspect_container(app["name"])
    assert info["Id"] == app["v1_id"] and info["State"]["Running"]
    r = run_bundle("history", app["name"], "--state-dir", app["state"], "--json")
    last = json.loads(r.stdout)["events"][-1]
    assert last["result"] == "interrupted" and last["exit_code"] == 130, last


def _last_line(err: str) -> str:
    """stderr without the one notice the signal handler prints (`SIGINT received: ...`)."""
    return "\n".join(ln for ln in err.splitlines() if ln.strip() and " received: " not in ln)


def test_status_during_a_running_import_says_in_progress_not_interrupted(docker_client, app):
    # a probation keeps the import running long enough for two `status` runs on a loaded machine
    proc = _import_until(app, app["bundle_of"]("2.0.0", 2), _journal_at(app, "stop_old"), "--probation", "20s")
    r = run_bundle("status", app["name"], "--state-dir", app["state"])
    j = run_bundle("status", app["name"], "--state-dir", app["state"], "--json")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, (out, err)
    assert f"upgrade in progress, pid {proc.pid} (step " in r.stdout, str(r)  # the step moves on meanwhile
    assert j.code in (0, 7), str(j)  # what the engine shows meanwhile (the old one stopping, the new one starting)
    assert "interrupted" not in r.stdout and "bundle recover" not in r.stdout, str(r)
    op = json.loads(j.stdout)["apps"][0]["operation"]
    assert op["pid"] == proc.pid and op["kind"] == "upgrade", j.stdout
    assert out.splitlines()[-1] == f"installed {app['name']} 2.0.0 (generation 2), healthy", out  # issue 20 point 4


def test_history_lists_each_operation_once_and_a_refused_dry_run_with_its_check(app, tmp_path):
    r = run_bundle("import", app["bundle_of"]("2.0.0", 2, bind=str(tmp_path)), "--keys", app["store"],
                   "--state-dir", app["state"], "--dry-run")
    assert r.code == 3, str(r)
    h = run_bundle("history", app["name"], "--state-dir", app["state"], "--json")
    events = json.loads(h.stdout)["events"]
    assert [(e["event"], e["result"]) for e in events] == [("install", "done"), ("import", "refused")], h.stdout
    refused = events[-1]
    assert refused["details"]["dry_run"] is True and refused["check"] and refused["message"] == one_line(r.stderr)
    text = run_bundle("history", app["name"], "--state-dir", app["state"]).stdout.splitlines()
    assert len(text) == 2 and "  install  1.0.0  result: done" in text[0], text
    assert (f"  import (dry run)  1.0.0 -> 2.0.0  result: refused  check: {refused['check']}" in text[1]
            and text[1].endswith(f"({refused['message']})")), text


def test_a_generation_without_a_version_is_shown_by_its_image_never_as_none(docker_client, builder):
    """A container started by hand and adopted has no version: status and the rollback plan say its image."""
    name, v1_ref = builder["name"], f"{builder['repo']}:1.0.0"
    docker_client.api.start(docker_client.api.create_container(v1_ref, name=name)["Id"])
    r = run_bundle("import", builder["bundle_of"]("2.0.0", 2), "--keys", builder["store"], "--state-dir",
                   builder["state"], "--yes", "--adopt")
    assert r.code == 0, str(r)
    assert r.stdout.splitlines()[-1] == f"installed {name} 2.0.0 (generation 2), healthy", r.stdout
    s = run_bundle("status", name, "--state-dir", builder["state"])
    assert f"previous: generation 1 {v1_ref} (no version recorded) as {name}.previous-1" in s.stdout, str(s)
    plan = run_bundle("rollback", name, "--state-dir", builder["state"])  # not a terminal: the plan, then exit 2
    assert plan.code == 2, str(plan)
    assert (f"roll back {name}: 2.0.0 ({builder['repo']}:2.0.0) -> {v1_ref} (no version recorded)"
            in plan.stdout), str(plan)
    assert "None" not in s.stdout + plan.stdout + plan.stderr


# v1 runs for ever the first time; started again, it passes its health gate (two probes) and exits
# a second later: what "running again" must not be said of.
FRAGILE = ("rm -f /ok1 /ok2; if [ ! -e /first-done ]; then touch /first-done; "
           "while :; do sleep 1; done; fi; while [ ! -e /ok2 ]; do sleep 0.2; done; sleep 1; exit 3")
PROBE = "if [ -e /ok1 ]; then touch /ok2; else touch /ok1; fi"


def test_a_previous_version_that_dies_right_after_its_gate_is_exit_5_not_running_again(docker_client, builder):
    name, state = builder["name"], builder["state"]
    v1 = builder["bundle_of"]("1.0.0", 1, run=f'command = ["sh", "-c", "{FRAGILE}"]\nstop_timeout = 0\n',
                              health=f'cmd = ["sh", "-c", "{PROBE}"]')
    r = run_bundle("import", v1, "--keys", builder["store"], "--state-dir", state, "--yes")
    assert r.code == 0, str(r)
    v2 = builder["bundle_of"]("2.0.0", 2, run='command = ["sh", "-c", "exit 1"]\nstop_timeout = 0\n')
    r = run_bundle("import", v2, "--keys", builder["store"], "--state-dir", state, "--yes")
    assert r.code == 5, str(r)
    line = one_line(r.stderr)
    assert line.startswith("operator needed: ") and "running again" not in line, line
    assert "passed its health gate, but 3 s later it is exited (exit code 3)" in line, line
    time.sleep(AFTER_EXIT)  # the verdict is still true
    assert not docker_client.api.inspect_container(name)["State"]["Running"]
    s = run_bundle("status", name, "--state-dir", state)
    assert s.code == 7 and "interrupted swap is pending: run `bundle recover`" in s.stdout, str(s)


# v1 runs for ever the first time; started again, it exits a second later: what an undone
# uninstall must not call "as it was" (with a restart policy, a look at the wrong moment sees it up).
DIES_WHEN_STARTED_AGAIN = ("if [ ! -e /first-done ]; then touch /first-done; while :; do sleep 1; done; fi; "
                           "sleep 1; exit 3")


@pytest.mark.parametrize("restart", ["no", "always"])
def test_an_undone_uninstall_whose_app_dies_when_started_again_is_exit_5_not_as_it_was(docker_client, builder,
                                                                                      restart):
    name, state = builder["name"], builder["state"]
    v1 = builder["bundle_of"]("1.0.0", 1, run=f'command = ["sh", "-c", "{DIES_WHEN_STARTED_AGAIN}"]\n'
                                              f'stop_timeout = 0\nrestart = "{restart}"\n')
    r = run_bundle("import", v1, "--keys", builder["store"], "--state-dir", state, "--yes")
    assert r.code == 0, str(r)
    r = run_bundle("uninstall", name, "--yes", "--state-dir", state,
                   env={"BUNDLE_CRASH_AT": "stop_old", "BUNDLE_CRASH_WHEN": "after"})
    assert r.code == -9, str(r)
    r = run_bundle("recover", "--yes", "--state-dir", state)
    assert r.code == 5, str(r)
    line = one_line(r.stderr)
    assert line.startswith("operator needed: ") and "as it was" not in line, line
    assert "nothing was removed, but" in line and "3 s later it " in line, line
    # a restart policy: caught between two runs ("restarting") or running again since ("restarted")
    seen = ("exited (exit code 3)",) if restart == "no" else ("has exited and been restarted",
                                                              "is restarting (exit code 3)")
    assert any(s in line for s in seen), line
    info = docker_client.api.inspect_container(name)  # nothing was removed: the app is still installed
    assert info["HostConfig"]["RestartPolicy"]["Name"] == restart
    assert run_bundle("status", name, "--state-dir", state).code != 0
