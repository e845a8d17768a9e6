"""The data of a Swarm service: its named volume (local driver, tasks on this node) is backed up
before an update and before `bundle rollback`, and restored exactly when Swarm rolled an update
back, or when the operator rolls back. Real single-node swarm, real registry, the demo app (its
start migrates /data like AnythingLLM: schema-version, migrations.log; the broken v3 rewrites
notes.txt, deletes important.txt, leaves created-by-broken.txt, then dies), the real `bundle`.
Every journal step the restore adds is killed with -9 and recovered."""

from __future__ import annotations

import json
import signal

import docker
import pytest

from tests.support import one_line, run_bundle
from tests.swap_fixtures import wait_until
from tests.test_fleet import _remove_services, bundle_of, do_import, fleet, pinned, running, services, spec_image, swarm  # noqa: F401

LIST = ('cd /data && find . | sort | while read -r f; do '
        'if [ -f "$f" ]; then echo "== $f"; cat "$f"; else echo "-- $f"; fi; done')


@pytest.fixture
def volume(fleet, services, docker_client, uniq):
    """A named volume for this test's service; removed after the service and its tasks are."""
    name = f"fl-{fleet['tok']}-data-{uniq}"
    yield name
    _remove_services(docker_client, fleet["tok"])
    for c in docker_client.api.containers(all=True, filters={"volume": name}):
        if fleet["tok"] in (c["Names"] or [""])[0] or "com.docker.swarm.service.name" in (c.get("Labels") or {}):
            docker_client.api.remove_container(c["Id"], force=True)
    try:
        docker_client.api.remove_volume(name)
    except docker.errors.NotFound:
        pass


def in_volume(client, fleet, volume: str, script: str, mode: str = "ro") -> str:
    """Run `script` in a throwaway container (the v1 image) with the volume at /data."""
    out = client.containers.run(f"{fleet['repo']}:1.0.0", ["sh", "-c", script], remove=True,
                                name=f"fl-{fleet['tok']}-peek-{id(script) % 100000}-{mode}",
                                volumes={volume: {"bind": "/data", "mode": mode}}, network_mode="none")
    return out.decode()


def content(client, fleet, volume: str) -> str:
    """Every path in the volume, and every file's bytes (what "exactly the same data" means)."""
    return in_volume(client, fleet, volume, LIST)


def installed_v1_with_user_data(fleet, services, swarm, volume) -> str:
    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1, volume=volume), services).code == 0
    in_volume(swarm, fleet, volume, "echo original notes > /data/notes.txt; echo keep me > /data/important.txt; "
                                    "mkdir -p /data/sub && echo nested > /data/sub/file", mode="rw")
    before = content(swarm, fleet, volume)
    assert "== ./schema-version\n1.0.0\n" in before and "== ./important.txt\nkeep me\n" in before
    return before


def record(fleet, services) -> dict:
    return json.loads((services / "installed" / f"{fleet['web']}.json").read_text())


def test_a_failed_migration_is_undone_on_the_volume_when_swarm_rolls_back(fleet, services, swarm, volume):
    before = installed_v1_with_user_data(fleet, services, swarm, volume)
    r = do_import(fleet, bundle_of(fleet, "3.0.0", 3, volume=volume), services)
    assert r.code == 4, str(r)
    print(f"\nfailed update of 2 replicas with a named volume, Swarm rollback and data restore: {r.seconds:.1f} s")
    line = one_line(r.stderr)
    v1 = pinned(fleet, "1.0.0")
    assert f"Swarm rolled the update back to {v1}; its volumes were restored from " in line, line
    assert "backed up 1 volume(s)" in r.stdout and "restored 1 volume(s)" in r.stdout
    assert content(swarm, fleet, volume) == before, "the volume holds exactly what it held before the update"
    assert spec_image(swarm, fleet["web"]) == v1 and running(swarm, fleet["web"]) == {v1: 2}
    assert record(fleet, services)["version"] == "1.0.0"
    assert not (services / "apps" / fleet["web"] / "journal.json").exists()


def test_a_successful_update_keeps_the_data_the_new_version_migrated(fleet, services, swarm, volume):
    installed_v1_with_user_data(fleet, services, swarm, volume)
    r = do_import(fleet, bundle_of(fleet, "2.0.0", 2, volume=volume), services)
    assert r.code == 0, str(r)
    after = content(swarm, fleet, volume)
    assert "== ./schema-version\n2.0.0\n" in after and "migrated to 2.0.0" in after
    assert "== ./important.txt\nkeep me\n" in after
    backup = services / "apps" / fleet["web"] / record(fleet, services)["data_backup"]
    assert json.loads((backup / "backup.json").read_text())["mounts"][0]["name"] == volume


def test_bundle_rollback_puts_back_the_data_of_before_the_update_and_keeps_the_newer_data(
        fleet, services, swarm, volume):
    before = installed_v1_with_user_data(fleet, services, swarm, volume)
    assert do_import(fleet, bundle_of(fleet, "2.0.0", 2, volume=volume), services).code == 0
    v2_data = content(swarm, fleet, volume)
    assert v2_data != before
    r = run_bundle("rollback", fleet["web"], "--state-dir", services, "--yes")
    assert r.code == 0, str(r)
    v1 = pinned(fleet, "1.0.0")
    assert spec_image(swarm, fleet["web"]) == v1 and running(swarm, fleet["web"]) == {v1: 2}
    assert content(swarm, fleet, volume) == before
    rec = record(fleet, services)
    assert rec["image"] == v1 and rec["version"] == "1.0.0" and rec["previous_version"] == "2.0.0"
    assert f"{fleet['web']} 1.0.0 " in r.stdout and "its volumes were restored from" in r.stdout
    kept = services / "apps" / fleet["web"] / rec["data_backup"]  # v2's data, what a roll forward puts back
    assert (kept / "backup.json").exists() and "before-rollback" in kept.name


def test_a_rollback_whose_backup_was_tampered_with_stops_at_0_replicas_with_exit_5_and_the_backup_named(
        fleet, services, swarm, volume):
    installed_v1_with_user_data(fleet, services, swarm, volume)
    assert do_import(fleet, bundle_of(fleet, "2.0.0", 2, volume=volume), services).code == 0
    v2_data = content(swarm, fleet, volume)
    backup = services / "apps" / fleet["web"] / record(fleet, services)["data_backup"]
    archive = backup / "mount-0.tar.zst"
    archive.write_bytes(archive.read_bytes()[:-1] + b"\0")
    r = run_bundle("rollback", fleet["web"], "--state-dir", services, "--yes")
    assert r.code == 5, str(r)
    line = one_line(r.stderr)
    assert "could not be restored cleanly" in line and str(backup) in line and "0 replicas" in line, line
    assert content(swarm, fleet, volume) == v2_data, "nothing in the volume was changed"
    assert wait_until(lambda: not running(swarm, fleet["web"]), timeout=30), "no version runs on unrestored data"


# every journal step the data adds to a failed update, and the data recover must leave
@pytest.mark.parametrize("step,when", [("service_backup", "before"), ("service_stop", "before"),
                                       ("service_stop", "after"), ("service_restore", "before"),
                                       ("service_start", "before"), ("service_start", "after")])
def test_kill_9_during_the_data_restore_of_a_failed_update_then_recover_lands_on_v1_with_its_data(
        fleet, services, swarm, volume, step, when):
    before = installed_v1_with_user_data(fleet, services, swarm, volume)
    r = do_import(fleet, bundle_of(fleet, "3.0.0", 3, volume=volume), services,
                  env={"BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": when})
    assert r.code == -signal.SIGKILL, str(r)
    assert (services / "apps" / fleet["web"] / "journal.json").exists()
    rec = run_bundle("recover", "--state-dir", services, "--yes")
    assert rec.code == 0, str(rec)
    v1 = pinned(fleet, "1.0.0")
    assert wait_until(lambda: running(swarm, fleet["web"]) == {v1: 2}, timeout=60), running(swarm, fleet["web"])
    assert spec_image(swarm, fleet["web"]) == v1
    assert content(swarm, fleet, volume) == before
    assert not (services / "apps" / fleet["web"] / "journal.json").exists()


@pytest.mark.parametrize("step,when", [("service_backup", "before"), ("service_stop", "after"),
                                       ("service_restore", "before"), ("service_start", "before"),
                                       ("service_commit", "before")])
def test_kill_9_during_bundle_rollback_then_recover_lands_on_one_version_with_matching_data(
        fleet, services, swarm, volume, step, when):
    before = installed_v1_with_user_data(fleet, services, swarm, volume)
    assert do_import(fleet, bundle_of(fleet, "2.0.0", 2, volume=volume), services).code == 0
    v2_data = content(swarm, fleet, volume)
    r = run_bundle("rollback", fleet["web"], "--state-dir", services, "--yes",
                   env={"BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": when})
    assert r.code == -signal.SIGKILL, str(r)
    rec = run_bundle("recover", "--state-dir", services, "--yes")
    assert rec.code == 0, str(rec)
    v1, v2 = pinned(fleet, "1.0.0"), pinned(fleet, "2.0.0")
    want, data = (v2, v2_data) if step == "service_backup" else (v1, before)
    assert wait_until(lambda: running(swarm, fleet["web"]) == {want: 2}, timeout=60), running(swarm, fleet["web"])
    assert content(swarm, fleet, volume) == data
    assert record(fleet, services)["image"] == want
