"""kill -9 at every journal step of a two-service Compose project's upgrade (importer.kinds.compose),
before and after each step's action, then `bundle recover` in a fresh process: the project is on
exactly one version, healthy, with its data (the old version's byte for byte, or the new one's
migration of it). The swap runs in tests/test_compose.py's driver process; the undo's steps are
killed in tests/test_compose.py; a rollback's and an uninstall's in tests/test_compose_rollback_crash.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bundlecore.engine import Engine
from tests.test_compose import (KILLED, REPO, _two, _upgrade_steps, bundle_for, container, env, images,
                                project_containers, swap, target_for, volume_files)
from tests.test_compose import __file__ as DRIVER

__all__ = ["env", "images"]  # the fixtures this file's tests take


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", _upgrade_steps())
def test_upgrade_killed_at_each_step_is_recovered_to_one_healthy_version(docker_client, env, images, step, when):
    from importer.kinds.compose.status import app_status
    from importer.steps import pending
    from tests.support import run_bundle
    compose, refs = _two(images, "1", "1")
    swap(docker_client, env["state"], target_for(env, compose, refs), bundle_for(env, images, refs, "1", 1))
    data_before = volume_files(docker_client, env)
    compose, refs = _two(images, "2", "2")
    target = target_for(env, compose, refs)
    r = subprocess.run([sys.executable, DRIVER, "swap", str(env["state"].root), json.dumps(target),
                        json.dumps(bundle_for(env, images, refs, "2", 2))], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "BUNDLE_CRASH_AT": f"compose:{step}", "BUNDLE_CRASH_WHEN": when}, timeout=300)
    assert r.returncode == KILLED, f"not killed at {step}/{when}: rc={r.returncode} {r.stderr[-800:]}"
    assert pending(env["state"]) == [env["project"]]
    rec = run_bundle("recover", "--yes", "--state-dir", env["state"].root)
    assert rec.code == 0, str(rec)
    assert pending(env["state"]) == []
    st = app_status(Engine(docker_client), env["state"], env["project"])
    assert st["state"] == "active", st
    version = st["installed"]["version"]
    assert version == ("2" if step in ("commit", "prune") else "1")
    p = env["project"]
    live = [n for n in project_containers(docker_client, env) if not n.split("-1", 1)[1]]
    assert live == [f"{p}-db-1", f"{p}-web-1"]
    files = volume_files(docker_client, env)
    if version == "1":
        assert files == data_before
    else:
        assert files["data/schema"] == b"2\n" and files["data/log"] == data_before["data/log"] + b"migrated 1 -> 2\n"
    for s in ("db", "web"):
        assert container(docker_client, env, s)["Image"] == images[(s, version)]["id"]

