"""A transient engine error during a rollback is retried, not turned into "operator needed"
(bundlecore.engine; issue 18 item 7), against the real engine behind a proxy that answers the
failed release's removal with the engine's own `500 ... directory not empty` twice."""

from __future__ import annotations

import json

from importer.backup.data import STATE_LABEL
from importer.steps import pending
from tests.engineproxy import EngineProxy
from tests.swap_fixtures import (bundle_for, containers_named, data_files, digest, install, run_driver, seed_data,
                                 served_version, target_for)

UPDATE_FAILED = 4


def test_rollback_retries_a_transient_removal_failure_and_ends_with_the_old_version(
        docker_client, swap_env, demo_images, tmp_path):
    name, broken = swap_env["name"], demo_images["v3"]
    install(docker_client, swap_env, demo_images["v1"], 1)
    seed_data(docker_client, name)
    before = data_files(docker_client, name)

    def the_failed_release(ref: str) -> bool:
        """Only removals of the broken release's container (not the restore helpers)."""
        try:
            return docker_client.api.inspect_container(ref)["Image"] == broken["id"]
        except Exception:
            return False

    target = target_for(swap_env, broken, timeout=5, attempts=1)
    with EngineProxy(tmp_path / "engine.sock", the_failed_release, times=2) as proxy:
        r = run_driver("swap", swap_env["state"].root, json.dumps(target), broken["id"],
                       json.dumps(bundle_for(broken, 3)), env={"DOCKER_HOST": proxy.docker_host})

    assert r.returncode == UPDATE_FAILED, r.stderr
    assert len(proxy.failed) == 2, r.stderr
    retries = [ln for ln in r.stderr.splitlines() if "engine busy:" in ln]
    # at least the two answered here (a restarting container's removal may really be busy once more)
    assert len(retries) >= 2 and all(f"retrying removal of container {proxy.failed[0][:12]} in" in ln
                                     for ln in retries), r.stderr
    assert "filesystem still busy" in retries[0]
    line = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert "1.0.0 is running again" in line, r.stderr
    # the old version runs, healthy, with its data; the failed release's container is gone
    assert served_version(swap_env) == "1.0.0"
    assert [c["ImageID"] for c in containers_named(docker_client, name)] == [demo_images["v1"]["id"]]
    assert docker_client.api.inspect_container(name)["State"]["Running"]
    # (only this test's state dir's containers: other tests may run the same image at the same time)
    assert not docker_client.api.containers(all=True, filters={
        "ancestor": broken["id"], "label": f"{STATE_LABEL}={swap_env['state'].identity}"})
    assert swap_env["state"].installed(name)["version"] == "1.0.0"
    assert digest(data_files(docker_client, name)) == digest(before)
    assert pending(swap_env["state"]) == []
