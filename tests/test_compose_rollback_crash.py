"""kill -9 once at each kind of step of a Compose project's `bundle rollback` (one service each) and
of its `bundle uninstall`, then `bundle recover` in a fresh process: the project is on exactly one
generation, healthy, with that generation's data byte for byte (a rollback), or is as it was or
uninstalled with its final backup kept (an uninstall). A file of its own so that it runs beside
tests/test_compose_crash.py."""

from __future__ import annotations

import pytest

from bundlecore.engine import Engine
from tests.test_compose import (KILLED, _two, bundle_for, container, env, images, project_containers, swap, target_for,
                                upgraded, volume_files)

__all__ = ["env", "images"]  # the fixtures this file's tests take


# one crash point per kind of step of a two-service rollback (db and web both put back)
ROLLBACK_POINTS = ["begin", "networks", "stop_old:web", "rename_old:db", "backup:web", "restore_target:db",
                   "rename_target:web", "start_new:db", "commit", "prune"]


@pytest.mark.parametrize("step", ROLLBACK_POINTS)
def test_rollback_killed_at_each_step_is_recovered_to_one_healthy_generation(docker_client, env, images, step):
    from importer.kinds.compose.status import app_status
    from importer.steps import pending
    from tests.support import run_bundle
    p, state = env["project"], env["state"].root
    before = upgraded(docker_client, env, images, worker=None, db="2", web="2")
    v2_files = volume_files(docker_client, env)
    r = run_bundle("rollback", p, "--yes", "--state-dir", state,
                   env={"BUNDLE_CRASH_AT": f"compose:{step}", "BUNDLE_CRASH_WHEN": "after"})
    assert r.code == KILLED, f"not killed at {step}: {r}"
    assert pending(env["state"]) == [p]
    rec = run_bundle("recover", "--yes", "--state-dir", state)
    assert rec.code == 0, str(rec)
    assert pending(env["state"]) == []
    st = app_status(Engine(docker_client), env["state"], p)
    assert st["state"] == "active", st
    version = st["installed"]["version"]
    assert version == ("1" if step in ("commit", "prune") else "2")
    assert volume_files(docker_client, env) == (before["files"] if version == "1" else v2_files)
    live = [n for n in project_containers(docker_client, env) if not n.split("-1", 1)[1]]
    assert live == [f"{p}-db-1", f"{p}-web-1"]
    for s in ("db", "web"):
        assert container(docker_client, env, s)["Image"] == images[(s, version)]["id"]


# one crash point per kind of step of a project's uninstall: before its first complete final backup
# it is undone (every service running again), after it finished
UNINSTALL_POINTS = {"stop_old:db": "undone", "backup:db": "finished", "remove_old:web": "finished",
                    "remove_volumes": "finished", "clear_state": "finished"}


@pytest.mark.parametrize("step", UNINSTALL_POINTS)
def test_uninstall_killed_at_each_step_is_finished_or_undone_by_recover(docker_client, env, images, step):
    from importer.kinds.compose.status import app_status
    from importer.steps import pending
    from tests.support import run_bundle
    p, state = env["project"], env["state"]
    compose, refs = _two(images, "1", "1")
    swap(docker_client, state, target_for(env, compose, refs), bundle_for(env, images, refs, "1", 1))
    data_before = volume_files(docker_client, env)
    r = run_bundle("uninstall", p, "--yes", "--state-dir", state.root,
                   env={"BUNDLE_CRASH_AT": f"compose:{step}", "BUNDLE_CRASH_WHEN": "after"})
    assert r.code == KILLED, f"not killed at {step}: {r}"
    rec = run_bundle("recover", "--yes", "--state-dir", state.root)
    assert rec.code == 0, str(rec)
    assert pending(state) == []
    if UNINSTALL_POINTS[step] == "undone":
        st = app_status(Engine(docker_client), state, p)
        assert st["state"] == "active" and st["installed"]["version"] == "1", st
        assert volume_files(docker_client, env) == data_before
    else:
        assert state.installed(p) is None and project_containers(docker_client, env) == []
        (kept,) = list((state.root / "removed").glob(f"{p}-*"))
        assert (kept / "final-backup" / "db" / "backup.json").is_file()
