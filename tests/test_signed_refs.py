"""Several signed refs of ONE image (`app:1` and `app:1.0`): build, verify and import them.

`docker save` of two tags of one image writes one archive entry with both RepoTags; the bundle's
archive manifest carries them in one entry for the one config, and the signed manifest lists each
ref as an image. Before, every verify/import refused such a bundle with "docker archive"."""

from __future__ import annotations

import json

import docker
import pytest

from bundlecore import format as fmt
from tests.support import run_bundle


def test_two_refs_of_one_image_build_verify_and_import(docker_client, app_image, pgp_keys, trust_store_of,
                                                        tmp_path, uniq):
    repo, name = f"signedrefs-{uniq}/app", f"signedrefs-{uniq}"
    ref, alias = f"{repo}:1", f"{repo}:1.0"
    image_id = app_image(ref, "1.0.0", dockerfile_extra=f"LABEL bundle.signed-refs-test={uniq}")
    docker_client.images.get(image_id).tag(repo, "1.0")
    spec = tmp_path / "bundle.toml"
    spec.write_text(f'name = "{name}"\nversion = "1.0.0"\nsequence = 1\nimages = ["{ref}", "{alias}"]\n\n'
                    f'[target]\nkind = "container"\nname = "{name}"\nimage = "{alias}"\n\n'
                    '[target.health]\ncmd = ["/bin/true"]\ntimeout = "20s"\nattempts = 1\n')
    bundle = tmp_path / "app.bundle"
    key = pgp_keys.builder
    keys = trust_store_of([key])
    try:
        r = run_bundle("build", spec, "-o", bundle, "--sign-key", key.fpr, "--gnupghome", key.home, "--local")
        assert r.code == 0, str(r)
        manifest = json.loads(fmt.read_head(bundle).manifest)
        assert [(i["ref"], i["id"]) for i in manifest["images"]] == [(ref, image_id), (alias, image_id)]
        docker_client.images.remove(image_id, force=True)  # the intranet has never seen the image

        r = run_bundle("verify", bundle, "--keys", keys, "--state-dir", tmp_path / "state")
        assert r.code == 0, str(r)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(image_id)

        r = run_bundle("import", bundle, "--keys", keys, "--state-dir", tmp_path / "state", "--yes")
        assert r.code == 0, str(r)
        assert docker_client.images.get(ref).id == image_id
        assert docker_client.images.get(alias).id == image_id
        assert docker_client.containers.get(name).attrs["Image"] == image_id
    finally:
        for c in docker_client.containers.list(all=True, filters={"name": name}):
            c.remove(force=True)
        try:
            docker_client.images.remove(image_id, force=True)
        except docker.errors.APIError:
            pass
