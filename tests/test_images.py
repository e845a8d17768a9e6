"""Issue 20, point 7: the tool removes only images its own loads created and no kept generation
needs (importer.delivery.LoadedImages, importer.kinds.container.machine `prune`); an image or a tag
the admin owns is never removed, and `--keep` counts generations, not the admin's tags."""

from __future__ import annotations

import docker
import pytest

from tests.support import child_image
from tests.swap_fixtures import served_version
from tests.test_swap_merge import Site


@pytest.fixture
def site(docker_client, swap_env, pgp_keys, trust_store_of, tmp_path) -> Site:
    swap_env["client"] = docker_client
    return Site(swap_env, pgp_keys.builder, trust_store_of([pgp_keys.builder]), tmp_path)


def _image(client, ref: str):
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def test_pruning_keeps_the_admins_local_image_and_tag_and_removes_only_what_its_loads_created(
        site: Site, demo_images, docker_client, uniq):
    port, api = site.env["port"], docker_client.api
    v1 = demo_images["v1"]  # built on this host, as `bundle build --local` bundles it: the admin's image
    made = {}
    for n in (2, 3):  # releases whose images reach this host only through the bundle: its load creates them
        ref = f"swaptest/img-{uniq}:{n}.0.0"
        made[n] = {"ref": ref, "id": child_image(docker_client, demo_images["v2"]["ref"], ref, f"echo {uniq}-{n} > /u"),
                   "version": "2.0.0"}
    bundles = {1: site.build(v1, 1, port=port)}
    bundles |= {n: site.build(made[n], n, port=port) for n in (2, 3)}
    bundles[4] = site.build(demo_images["v4"], 4, port=port)
    mine = f"mine-{uniq}:keep"
    try:
        for n in (2, 3):
            api.remove_image(made[n]["ref"])
            assert _image(docker_client, made[n]["id"]) is None
        for n in (1, 2, 3):
            r = site.import_(bundles[n], "--keep", "1")
            assert r.code == 0, str(r)
            if n == 2:
                api.tag(made[2]["id"], f"mine-{uniq}", "keep")  # the admin's own name for a loaded image
        assert _image(docker_client, v1["ref"]).id == v1["id"], "a generation pruned so far removed the admin's image"
        r = site.import_(bundles[4], "--keep", "1")
        assert r.code == 0, str(r)
        assert served_version(site.env) == "4.0.0"

        # the admin's local image, which the first import found in the engine, keeps its tag
        assert _image(docker_client, v1["ref"]).id == v1["id"]
        # the tool's tag on its loaded image is gone; the image stays, named by the admin's tag
        assert _image(docker_client, made[2]["ref"]) is None
        assert _image(docker_client, mine).id == made[2]["id"]
        # what a load created and nothing else names is removed, tag and image
        assert _image(docker_client, made[3]["ref"]) is None and _image(docker_client, made[3]["id"]) is None
        gens = site.env["state"].app_dir(site.env["name"]) / "generations.json"
        assert '"loaded_image_ids"' in gens.read_text()
    finally:
        for ref in (mine, *(m["ref"] for m in made.values()), *(m["id"] for m in made.values())):
            try:
                api.remove_image(ref, force=True)
            except docker.errors.APIError:
                pass

