"""The container kind's kill -9 matrix on a real Podman service (issue 23): kill -9 at every forward step
of an upgrade and of a rollback and at every step of the undo, then `bundle recover` in a fresh process: one container of
the app's name on the old or the new version, its data exact, its systemd unit starting that container.
(tests/test_swap_crash.py runs the matrix at both crash points of every step on Docker; the fixtures and
checks are tests/test_podman.py's.)"""

from __future__ import annotations

import json

import pytest

from importer.kinds.container.journal import FORWARD_STEPS, UNDO_STEPS
from tests.support import run_bundle
from tests.swap_fixtures import bundle_for, data_files, install, run_driver, target_for
from tests import test_podman
from tests.test_podman import KILLED, _assert_runs, _cli, _migrated, _with_v1

pod_env, podman_images = test_podman.pod_env, test_podman.podman_images  # its fixtures, for this file's tests

# The container kind's kill -9 matrix on Podman (tests/test_swap_crash.py runs it at both crash points of
# every step on Docker): every forward step of an upgrade once, and every step of its undo once, with the
# app's systemd unit written at install, so a recovery that replays the commit keeps it right too.
UPGRADE_KILLS = FORWARD_STEPS["upgrade"]
UNDO_KILLS = [(s, "before" if s == "restore_data" else "after") for s in UNDO_STEPS]


@pytest.mark.parametrize("step", UPGRADE_KILLS)
def test_an_upgrade_killed_on_podman_is_recovered(podman_client, pod_env, podman_images, step, monkeypatch):
    monkeypatch.setenv("BUNDLE_SYSTEMD_DIR", str(pod_env["units"]))
    before = _with_v1(podman_client, pod_env, podman_images, systemd_unit=True)
    target = target_for(pod_env, podman_images["v2"])
    r = run_driver("swap", pod_env["state"].root, json.dumps(target), podman_images["v2"]["id"],
                   json.dumps(bundle_for(podman_images["v2"], 2)),
                   env={**pod_env["env"], "BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": "after"})
    assert r.returncode == KILLED, r.stderr
    r = _cli(pod_env, "recover", "--yes")
    assert r.code == 0, str(r)
    committed = step in ("probation", "commit", "prune")  # past the gate: recovery finishes the swap
    _assert_runs(podman_client, pod_env, "2.0.0" if committed else "1.0.0",
                 _migrated(before, "2.0.0") if committed else before)


@pytest.mark.parametrize("step, when", UNDO_KILLS)
def test_the_undo_of_a_failed_upgrade_killed_on_podman_is_recovered(podman_client, pod_env, podman_images, step,
                                                                    when):
    before = _with_v1(podman_client, pod_env, podman_images)
    target = target_for(pod_env, podman_images["v3"], timeout=3, attempts=1)
    r = run_driver("swap", pod_env["state"].root, json.dumps(target), podman_images["v3"]["id"],
                   json.dumps(bundle_for(podman_images["v3"], 3)),
                   env={**pod_env["env"], "BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": when})
    assert r.returncode == KILLED, r.stderr
    r = _cli(pod_env, "recover", "--yes")
    assert r.code == 0, str(r)
    _assert_runs(podman_client, pod_env, "1.0.0", before)


# The forward steps only a rollback has (the others are the upgrade's, above).
ROLLBACK_KILLS = [s for s in FORWARD_STEPS["rollback"] if s not in FORWARD_STEPS["upgrade"]]


@pytest.mark.parametrize("step", ROLLBACK_KILLS)
def test_a_rollback_killed_on_podman_is_recovered(podman_client, pod_env, podman_images, step, monkeypatch):
    """Killed before its gate: recovery puts the version it was rolling back from back, with that
    version's data, and the unit still starts it."""
    monkeypatch.setenv("BUNDLE_SYSTEMD_DIR", str(pod_env["units"]))
    _with_v1(podman_client, pod_env, podman_images, systemd_unit=True)
    install(podman_client, pod_env, podman_images["v2"], 2)
    v2_data = data_files(podman_client, pod_env["name"])
    r = run_bundle("rollback", pod_env["name"], "--yes", "--state-dir", pod_env["state"].root,
                   env={**pod_env["env"], "BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": "after"})
    assert r.returncode == KILLED, r.stderr
    r = _cli(pod_env, "recover", "--yes")
    assert r.code == 0, str(r)
    _assert_runs(podman_client, pod_env, "2.0.0", v2_data)
