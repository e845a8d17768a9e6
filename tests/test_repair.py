"""Issue 20, point 5: idempotency and repair, with signed bundles and the real CLI on a real engine.
The installed release imported again is "already installed" (exit 0, nothing touched) when its
container runs as recorded, and a repair when the container is missing (recreated from the recorded
settings, with its data); an older sequence is still refused unless --allow-downgrade, whose plan
says what it accepts."""

from __future__ import annotations

import json

import pytest

from bundlecore.schema import cli_schema_name, first_error

from tests.support import run_bundle
from tests.swap_fixtures import data_files, seed_data, served_version
from tests.test_swap_merge import Site


@pytest.fixture
def site(docker_client, swap_env, pgp_keys, trust_store_of, tmp_path) -> Site:
    swap_env["client"] = docker_client
    return Site(swap_env, pgp_keys.builder, trust_store_of([pgp_keys.builder]), tmp_path)


def _last_event(site: Site) -> dict:
    return json.loads((site.env["state"].root / "audit.log").read_text().splitlines()[-1])


def test_importing_the_installed_release_again_is_already_installed_and_touches_nothing(site, demo_images):
    bundle = site.build(demo_images["v1"], 1, port=site.env["port"])
    assert site.import_(bundle).code == 0
    before = site.container()
    generations = (site.env["state"].app_dir(site.env["name"]) / "generations.json").read_text()

    r = site.import_(bundle)
    assert r.code == 0, str(r)
    assert f"{site.env['name']} 1.0.0 (sequence 1) is already installed: nothing loaded or changed" in r.stdout
    assert "is already installed and healthy" in r.stdout and "loaded" not in r.stdout.replace("nothing loaded", "")
    r = site.import_(bundle, "--json")
    doc = json.loads(r.stdout)
    assert r.code == 0 and first_error(cli_schema_name("import"), doc) is None, (r, first_error(cli_schema_name("import"), doc))
    assert doc["result"] == "already installed" and doc["app"]["state"] == "active"
    r = site.import_(bundle, "--json", "--dry-run")
    doc = json.loads(r.stdout)
    assert r.code == 0 and first_error(cli_schema_name("import"), doc) is None, r
    assert doc["plan"]["action"] == "current" and any("is already installed and healthy" in ln
                                                      for ln in doc["plan"]["lines"])
    after = site.container()
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])
    assert (site.env["state"].app_dir(site.env["name"]) / "generations.json").read_text() == generations
    event = _last_event(site)
    assert event["result"] == "unchanged" and event["exit_code"] == 0
    assert served_version(site.env) == "1.0.0"


def test_a_container_deleted_by_hand_is_repaired_from_its_record_with_its_data(site, demo_images, docker_client):
    bundle = site.build(demo_images["v1"], 1, port=site.env["port"])
    assert site.import_(bundle).code == 0
    name = site.env["name"]
    seed_data(docker_client, name)
    data = data_files(docker_client, name)
    old_id = site.container()["Id"]
    docker_client.api.remove_container(name, force=True)  # by hand; its named volume stays

    r = site.import_(bundle)
    assert r.code == 0, str(r)
    assert f"repair {name}: 1.0.0 is installed (generation 1) but its container is missing" in r.stdout
    assert f"recreate {name} with the settings recorded at install" in r.stdout
    info = site.container()
    assert info["Id"] != old_id and info["State"]["Running"] and served_version(site.env) == "1.0.0"
    assert data_files(docker_client, name) == data  # the data is intact
    rec = site.env["state"].installed(name)
    assert rec["container_id"] == info["Id"] and rec["generation"] == 1 and rec["sequence"] == 1
    status = run_bundle("status", name, "--state-dir", site.env["state"].root)
    assert status.code == 0, str(status)

    again = site.import_(bundle)  # repaired: now it is the installed release as recorded
    assert again.code == 0 and "is already installed" in again.stdout, str(again)
    assert site.container()["Id"] == info["Id"]


def test_a_container_stopped_by_hand_is_repaired_by_replacing_it(site, demo_images, docker_client):
    bundle = site.build(demo_images["v1"], 1, port=site.env["port"])
    assert site.import_(bundle).code == 0
    name = site.env["name"]
    seed_data(docker_client, name)
    data = data_files(docker_client, name)
    old_id = site.container()["Id"]
    docker_client.api.stop(name, timeout=0)

    r = site.import_(bundle)
    assert r.code == 0, str(r)
    assert f"repair {name}: 1.0.0 is installed (generation 1) but it is exited" in r.stdout
    assert f"replace {name}: 1.0.0 -> 1.0.0" in r.stdout
    info = site.container()
    assert info["Id"] != old_id and info["State"]["Running"] and served_version(site.env) == "1.0.0"
    assert data_files(docker_client, name) == data
    assert site.env["state"].installed(name)["container_id"] == info["Id"]


def test_a_lower_sequence_is_still_refused_and_allow_downgrade_says_what_it_accepts(site, demo_images):
    port = site.env["port"]
    old = site.build(demo_images["v1"], 1, port=port)
    assert site.import_(site.build(demo_images["v2"], 2, port=port)).code == 0
    running = site.container()

    r = site.import_(old)
    assert r.code == 3, str(r)
    assert r.stderr.strip() == (f"refused: sequence: downgrade: {site.env['name']} sequence 1 is not above 2, "
                                f"the highest installed (--allow-downgrade overrides)")
    r = site.import_(old, "--allow-downgrade", "--dry-run")
    assert r.code == 0, str(r)
    assert "note: downgrade allowed by --allow-downgrade: accepting sequence 1 below 2, the highest installed" in r.stdout
    after = site.container()
    assert (after["Id"], after["State"]["StartedAt"]) == (running["Id"], running["State"]["StartedAt"])
    assert served_version(site.env) == "2.0.0" and site.env["state"].installed(site.env["name"])["sequence"] == 2
