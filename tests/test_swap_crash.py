"""kill -9 at every journal step of a swap (and of its undo, and of a recovery), then `bundle
recover` in a fresh process (and of an uninstall: its final backup decides, finish or undo): the
application ends healthy on the old or the new version (or uninstalled), with its
data intact and exactly one container of its name; no backup is lost, no helper left behind."""

from __future__ import annotations

import json

import pytest

from bundlecore.engine import Engine
from importer.backup.data import HELPER_LABEL, STATE_LABEL
from importer.kinds.container.journal import FORWARD_STEPS, UNDO_STEPS, UNINSTALL_STEPS
from importer.steps import pending
from importer.kinds.container.plan import plan_swap
from importer.kinds.container.run import run_swap
from importer.kinds.container.status import app_status
from tests.support import run_bundle
from tests.swap_fixtures import (bundle_for, containers_named, data_files, digest, install,
                                 run_driver, seed_data, served_version, target_for, typed, delivery)

KILLED = -9
# The new version had passed its gate: recovery finishes the swap (an unfinished probation window
# is resumed first; with no probation set, the step is a no-op).
GATE_PASSED = ("probation", "commit", "prune")


def _swap_killed(swap_env, image, sequence, step, when, health: dict | None = None, **target_kw):
    target = target_for(swap_env, image, **target_kw)
    target["health"].update(health or {})
    r = run_driver("swap", swap_env["state"].root, json.dumps(target), image["id"],
                   json.dumps(bundle_for(image, sequence)),
                   env={"BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": when})
    assert r.returncode == KILLED, f"not killed at {step}/{when}: rc={r.returncode} {r.stderr[-500:]}"
    assert pending(swap_env["state"]) == [swap_env["name"]]


def _recover(swap_env, env=None):
    r = run_bundle("recover", "--yes", "--state-dir", swap_env["state"].root, env=env)
    return r


def _assert_healthy_on(client, swap_env, version, data_before):
    name = swap_env["name"]
    assert pending(swap_env["state"]) == []
    assert len(containers_named(client, name)) == 1
    info = client.api.inspect_container(name)
    assert info["State"]["Running"], info["State"]
    assert served_version(swap_env) == version
    rec = swap_env["state"].installed(name)
    assert rec["version"] == version and rec["container_id"] == info["Id"]
    after = data_files(client, name)
    if data_before["data/schema-version"] == f"{version}\n".encode():  # back on the old version: exact
        assert digest(after) == digest(data_before)
    else:  # on the new version: exactly the old data plus the new version's migration
        migrated = {**data_before, "data/schema-version": f"{version}\n".encode(),
                    "data/migrations.log": data_before["data/migrations.log"] + f"migrated to {version}\n".encode()}
        assert digest(after) == digest(migrated)
    mine = [HELPER_LABEL, f"{STATE_LABEL}={swap_env['state'].identity}"]  # other state dirs' are not ours
    assert client.api.containers(all=True, filters={"label": mine}) == []
    # Parked containers are stopped and cannot come back by themselves.
    for c in client.api.containers(all=True):
        if any(n.startswith(f"/{name}.previous-") for n in c["Names"]):
            parked = client.api.inspect_container(c["Id"])
            assert not parked["State"]["Running"] and parked["HostConfig"]["RestartPolicy"]["Name"] == "no"


def _with_v1(client, swap_env, demo_images):
    install(client, swap_env, demo_images["v1"], 1)
    seed_data(client, swap_env["name"])
    return data_files(client, swap_env["name"])


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", FORWARD_STEPS["upgrade"])
def test_upgrade_killed_at_each_step_is_recovered(docker_client, swap_env, demo_images, step, when):
    before = _with_v1(docker_client, swap_env, demo_images)
    _swap_killed(swap_env, demo_images["v2"], 2, step, when)
    r = _recover(swap_env)
    assert r.returncode == 0, r.stderr
    committed = step in GATE_PASSED
    _assert_healthy_on(docker_client, swap_env, "2.0.0" if committed else "1.0.0", before)
    last = app_status(Engine(docker_client), swap_env["state"], swap_env["name"])["last_swap"]
    assert last["result"] == ("installed" if committed else "rolled back")


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", UNDO_STEPS)
def test_undo_of_a_failed_migration_killed_at_each_step_is_recovered(docker_client, swap_env, demo_images, step, when):
    before = _with_v1(docker_client, swap_env, demo_images)
    _swap_killed(swap_env, demo_images["v3"], 3, step, when, timeout=3, attempts=1)
    r = _recover(swap_env)
    assert r.returncode == 0, r.stderr
    _assert_healthy_on(docker_client, swap_env, "1.0.0", before)
    assert b"3.0.0" not in data_files(docker_client, swap_env["name"])["data/migrations.log"]


@pytest.mark.parametrize("step", ["create_new", "start_new", "probation", "commit"])
def test_first_install_killed_is_recovered(docker_client, swap_env, demo_images, step):
    _swap_killed(swap_env, demo_images["v1"], 1, step, "after")
    r = _recover(swap_env)
    assert r.returncode == 0, r.stderr
    assert pending(swap_env["state"]) == []
    if step in GATE_PASSED:
        assert served_version(swap_env) == "1.0.0" and len(containers_named(docker_client, swap_env["name"])) == 1
    else:
        assert containers_named(docker_client, swap_env["name"]) == []
        assert swap_env["state"].installed(swap_env["name"]) is None


def test_recovery_killed_while_restoring_is_recovered_again(docker_client, swap_env, demo_images):
    before = _with_v1(docker_client, swap_env, demo_images)
    _swap_killed(swap_env, demo_images["v3"], 3, "start_new", "before", timeout=3, attempts=1)
    # The broken version never started: make it run (and damage the data) as if the kill came later.
    name = swap_env["name"]
    broken = next(c for c in containers_named(docker_client, name))
    docker_client.api.start(broken["Id"])
    docker_client.api.wait(broken["Id"], timeout=30)
    assert "data/important.txt" not in data_files(docker_client, broken["Id"])
    r = _recover(swap_env, env={"BUNDLE_CRASH_AT": "restore_data", "BUNDLE_CRASH_WHEN": "before"})
    assert r.returncode == KILLED
    r = _recover(swap_env)
    assert r.returncode == 0, r.stderr
    _assert_healthy_on(docker_client, swap_env, "1.0.0", before)


def test_import_refuses_to_swap_over_a_pending_journal(docker_client, swap_env, demo_images):
    _with_v1(docker_client, swap_env, demo_images)
    _swap_killed(swap_env, demo_images["v2"], 2, "backup", "after")
    plan = plan_swap(Engine(docker_client), swap_env["state"], typed(target_for(swap_env, demo_images["v2"])),
                     demo_images["v2"]["id"])
    with pytest.raises(Exception, match="bundle recover"):
        run_swap(Engine(docker_client), swap_env["state"], plan, delivery(bundle_for(demo_images["v2"], 2)))
    # What `bundle import` does first inside the lock: recover, then swap.
    install(docker_client, swap_env, demo_images["v2"], 2)
    assert served_version(swap_env) == "2.0.0" and pending(swap_env["state"]) == []


@pytest.mark.parametrize("step,when", [(s, "after") for s in FORWARD_STEPS["rollback"]]
                         + [("restore_target", "before"), ("rename_target", "before")])
def test_manual_rollback_killed_at_each_step_is_recovered(docker_client, swap_env, demo_images, step, when):
    v1_data = _with_v1(docker_client, swap_env, demo_images)
    install(docker_client, swap_env, demo_images["v2"], 2)
    name = swap_env["name"]
    docker_client.api.exec_start(docker_client.api.exec_create(name, ["sh", "-c", "echo v2 > /data/v2-only.txt"]))
    v2_data = data_files(docker_client, name)
    r = run_bundle("rollback", name, "--yes", "--state-dir", swap_env["state"].root,
                   env={"BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": when})
    assert r.returncode == KILLED, r.stderr
    r = _recover(swap_env)
    assert r.returncode == 0, r.stderr
    if step in GATE_PASSED:
        _assert_healthy_on(docker_client, swap_env, "1.0.0", v1_data)
        assert "data/v2-only.txt" not in data_files(docker_client, name)
    else:
        _assert_healthy_on(docker_client, swap_env, "2.0.0", v2_data)
    # Whatever happened, the other generation is still kept for a later rollback.
    assert len(app_status(Engine(docker_client), swap_env["state"], name)["previous"]) == 1


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", UNINSTALL_STEPS)
def test_uninstall_killed_at_each_step_is_recovered(docker_client, swap_env, demo_images, step, when):
    """Before the final backup is complete, recovery puts the app back untouched; from then on it
    finishes the uninstall (the data is safe in the backup)."""
    before = _with_v1(docker_client, swap_env, demo_images)
    name, state = swap_env["name"], swap_env["state"]
    anonymous = [m["Name"] for m in docker_client.api.inspect_container(name)["Mounts"] if m["Type"] == "volume"]
    r = run_bundle("uninstall", name, "--yes", "--state-dir", state.root,
                   env={"BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": when})
    assert r.returncode == KILLED, r.stderr
    r = _recover(swap_env)
    assert r.returncode == 0, r.stderr
    assert pending(state) == []
    finished = UNINSTALL_STEPS.index(step) > UNINSTALL_STEPS.index("backup") or (step, when) == ("backup", "after")
    if finished:
        assert containers_named(docker_client, name) == [] and state.installed(name) is None
        assert not any(v["Name"] == swap_env["volume"] for v in docker_client.api.volumes()["Volumes"] or [])
        (kept,) = (state.root / "removed").iterdir()
        assert (kept / "final-backup" / "backup.json").exists()
    else:
        _assert_healthy_on(docker_client, swap_env, "1.0.0", before)
        info = docker_client.api.inspect_container(name)
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    for v in anonymous:  # the image's anonymous VOLUME, if the uninstall left it
        try:
            docker_client.api.remove_volume(v, force=True)
        except Exception:
            pass


def test_recovery_refuses_to_restore_over_data_written_after_the_new_version_stopped(docker_client, swap_env, demo_images):
    """Killed right before the restore; then someone writes to the volume (say, the old version
    started by hand). `recover` must not throw that away: exit 5 naming the volume, nothing
    overwritten, the journal kept for the operator."""
    _with_v1(docker_client, swap_env, demo_images)
    _swap_killed(swap_env, demo_images["v3"], 3, "restore_data", "before", timeout=3, attempts=1)
    name, vol = swap_env["name"], swap_env["volume"]
    writer = docker_client.api.create_container_from_config(
        {"Image": demo_images["v1"]["ref"], "Entrypoint": ["sh", "-c", "echo late > /data/late.txt"], "Cmd": None,
         "HostConfig": {"Binds": [f"{vol}:/data"]}}, name=f"writer-{swap_env['uniq']}")["Id"]
    docker_client.api.start(writer)
    assert docker_client.api.wait(writer, timeout=30)["StatusCode"] == 0
    written = data_files(docker_client, writer)
    r = _recover(swap_env)
    assert r.returncode == 5, r.stderr
    assert len(r.stderr_lines) == 1 and r.stderr.startswith("operator needed:"), r.stderr
    assert f"volume {vol} changed since the update was stopped; nothing was overwritten; the backup is in" in r.stderr
    assert data_files(docker_client, writer) == written and written["data/late.txt"] == b"late\n"
    assert pending(swap_env["state"]) == [name]
    mine = [HELPER_LABEL, f"{STATE_LABEL}={swap_env['state'].identity}"]
    assert docker_client.api.containers(all=True, filters={"label": mine}) == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_upgrade_killed_at_probation_with_a_window_resumes_it_and_commits(docker_client, swap_env, demo_images, when):
    """With probation on: killed before the window was journaled (recovery starts it) or after it
    ended (recovery only checks the restarts since the journaled base), then commits."""
    before = _with_v1(docker_client, swap_env, demo_images)
    _swap_killed(swap_env, demo_images["v2"], 2, "probation", when, health={"probation": 3, "max_restarts": 0})
    r = _recover(swap_env)
    assert r.returncode == 0, r.stderr
    assert ("probation: watching" in r.stdout) is (when == "before")
    _assert_healthy_on(docker_client, swap_env, "2.0.0", before)
    assert app_status(Engine(docker_client), swap_env["state"], swap_env["name"])["last_swap"]["result"] == "installed"


@pytest.mark.parametrize("when,query,expect", [
    ("before", "vector(0)", "2.0.0"),   # window not journaled yet: recovery runs all of it, query fine: commit
    ("before", "vector(1)", "1.0.0"),   # ... query above the limit: the recovery rolls back
    ("after", "vector(0)", "2.0.0"),    # the window and its last evaluation passed: recovery commits
])
def test_upgrade_killed_at_a_metrics_gated_probation_lands_on_one_version(
        docker_client, swap_env, demo_images, prometheus, when, query, expect):
    """The metrics gate is evaluated within the probation step (importer.analysis): a kill
    before it resumes the window and evaluates the query (a real Prometheus) before deciding."""
    before = _with_v1(docker_client, swap_env, demo_images)
    gate = {"url": f"http://{prometheus.address}", "query": query, "max": 0.5, "window": 3}
    _swap_killed(swap_env, demo_images["v2"], 2, "probation", when, health={"prometheus": gate})
    r = _recover(swap_env)
    assert r.returncode == 0, r.stderr
    _assert_healthy_on(docker_client, swap_env, expect, before)
    last = app_status(Engine(docker_client), swap_env["state"], swap_env["name"])["last_swap"]
    assert last["result"] == ("installed" if expect == "2.0.0" else "rolled back")
    if expect == "1.0.0":
        assert f"metrics gate '{query}' at http://{prometheus.address}: its value 1 is above the limit 0.5" in r.stdout
