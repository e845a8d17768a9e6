"""`bundle import` end to end on an upgrade: only what the engine lacks goes to docker load."""

from __future__ import annotations

import json

import docker

from bundlecore import format as fmt
from tests.support import child_image, run_bundle


def test_an_upgrade_sends_docker_load_only_the_layers_the_engine_lacks(
        docker_client, app_image, pgp_keys, trust_store_of, tmp_path, uniq):
    base_ref, child_ref, name = f"importtest/base-{uniq}:1.0.0", f"importtest/app-{uniq}:2.0.0", f"importtest-{uniq}"
    app_image(base_ref, "1.0.0")
    base_layers = docker_client.images.get(base_ref).attrs["RootFS"]["Layers"]
    child_id = child_image(docker_client, base_ref, child_ref)
    spec = tmp_path / "bundle.toml"
    spec.write_text(f'name = "{name}"\nversion = "2.0.0"\nsequence = 2\nimages = ["{child_ref}"]\n\n'
                    f'[target]\nkind = "container"\nname = "{name}"\nimage = "{child_ref}"\n\n'
                    '[target.health]\ncmd = ["/bin/true"]\ntimeout = "20s"\nattempts = 1\n')
    bundle = tmp_path / "app.bundle.zst"
    key = pgp_keys.builder
    r = run_bundle("build", spec, "-o", bundle, "--sign-key", key.fpr, "--gnupghome", key.home, "--local")
    assert r.code == 0, str(r)
    docker_client.images.remove(child_ref)  # the intranet has the old release, not the new one
    try:
        r = run_bundle("import", bundle, "--keys", trust_store_of([key]), "--state-dir", tmp_path / "state", "--yes")
        assert r.code == 0, str(r)
        assert f"{len(base_layers)} layer(s) the engine already had were verified, not sent" in r.stdout, str(r)
        assert docker_client.images.get(child_ref).id == child_id
        # the bundle itself still carries every layer: a complete, self-contained release
        manifest = json.loads(fmt.read_head(bundle).manifest)
        assert len(manifest["images"][0]["layers"]) == len(base_layers) + 1
        assert docker_client.containers.get(name).attrs["Image"] == child_id
    finally:
        for c in docker_client.containers.list(all=True, filters={"name": name}):
            c.remove(force=True)
        try:
            docker_client.images.remove(child_ref, force=True)
        except docker.errors.APIError:
            pass
