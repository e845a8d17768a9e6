"""Issue 8, findings 2 and 3: the scope of a signature on this host. A bundle signed for one app
cannot take over a container this tool never installed, or installed for another app, or move a
tag that app never loaded -- unless the operator passes --adopt, and then the plan says so -- and
a renamed old bundle cannot take a container back below the sequence it has already run."""

from __future__ import annotations

import json

import docker
import pytest

from bundlecore import format as fmt
from tests.craft import EngineSnapshot, imported_for_real
from tests.test_gate import Gate

pytest.register_assert_rewrite("tests.craft")


@pytest.fixture
def gate(base_bundle, docker_client, installed_app, tmp_path) -> Gate:
    return Gate(base_bundle, docker_client, installed_app, tmp_path, adopt=False)


def signed_for(gate: Gate, label: str, *, app: str, container: str, sequence: int = 5, ref: str | None = None):
    """The base bundle re-signed for app `app` targeting `container` (its image under `ref`)."""
    v = gate.variant()
    v.manifest.update(name=app, sequence=sequence)
    v.manifest["target"]["name"] = container
    if ref:
        v.manifest["images"][0]["ref"] = v.manifest["target"]["image"] = ref
        archive = v.member(fmt.DOCKER_ARCHIVE_MANIFEST)
        entries = json.loads(archive.data)
        entries[0]["RepoTags"] = [ref]
        archive.data = json.dumps(entries).encode()
        v.relist()
    return v.write(gate.path(label))


def dry_run_plan(gate: Gate, bundle, *extra) -> list[str]:
    before = EngineSnapshot.take(gate.client, gate.base.target_name)
    r = gate.import_(bundle, "--dry-run", *extra)
    assert r.code == 0, str(r)
    after = EngineSnapshot.take(gate.client, gate.base.target_name)
    assert after.containers == before.containers, "the dry run touched a container"
    assert all(after.tags.get(t, i) == i for t, i in before.tags.items()), "the dry run moved a tag"
    assert gate.base.image["id"] not in after.image_ids - before.image_ids, "the dry run loaded the image"
    return r.stdout.splitlines()


# -- finding 2: containers --------------------------------------------------------------------

def test_a_bundle_of_another_app_cannot_take_over_a_container_bundle_never_installed(gate, uniq):
    victim = gate.installed.name  # started with `docker run`, its data and environment are the prize
    bundle = signed_for(gate, "evil", app=f"evil-{uniq}", container=victim)
    (r,) = gate.refused(bundle, "ownership", f"container {victim} exists and is not installed by bundle",
                        verify=False)
    assert "--adopt" in r.stderr
    assert f"adopt container {victim}, not installed by bundle" in dry_run_plan(gate, bundle, "--adopt")


def test_a_bundle_of_app_b_cannot_take_over_the_container_installed_for_app_a(gate, uniq):
    shared = f"{gate.base.target_name}-shared-{uniq}"
    app_a, app_b = f"{gate.base.target_name}-a-{uniq}", f"{gate.base.target_name}-b-{uniq}"
    with imported_for_real(gate, signed_for(gate, "a", app=app_a, container=shared), shared):
        b = signed_for(gate, "b", app=app_b, container=shared, sequence=6)
        (r,) = gate.refused(b, "ownership", f"container {shared} exists and is installed by bundle for app {app_a}",
                            verify=False)
        assert "--adopt" in r.stderr
        assert f"adopt container {shared}, installed by bundle for app {app_a}" in dry_run_plan(gate, b, "--adopt")
        # app A's own next release needs no flag
        plan = dry_run_plan(gate, signed_for(gate, "a6", app=app_a, container=shared, sequence=6))
        assert not any(line.startswith("adopt") for line in plan), plan


# -- finding 2: tags --------------------------------------------------------------------------

@pytest.fixture
def victim_tag(gate, uniq):
    """`victim-<uniq>/db:15`, a local tag of an image no bundle loaded."""
    repo = f"victim-{uniq}/db"
    gate.client.api.tag(gate.installed.image_id, repo, "15")
    yield f"{repo}:15"
    gate.client.api.remove_image(f"{repo}:15")  # the tag only: the image keeps its own


def test_a_bundle_cannot_move_a_tag_its_app_never_loaded(gate, uniq, victim_tag):
    bundle = signed_for(gate, "retag", app=f"evil-{uniq}", container=f"{gate.base.target_name}-evil-{uniq}",
                        ref=victim_tag)
    (r,) = gate.refused(bundle, "tags", f"{victim_tag} already names {gate.installed.image_id[:19]}", verify=False)
    assert "--adopt" in r.stderr
    assert gate.client.api.inspect_image(victim_tag)["Id"] == gate.installed.image_id
    move = f"move tag {victim_tag} from {gate.installed.image_id[:19]}… to {gate.base.image['id'][:19]}… (adopted)"
    assert move in dry_run_plan(gate, bundle, "--adopt")
    assert gate.client.api.inspect_image(victim_tag)["Id"] == gate.installed.image_id


def test_moving_a_tag_the_app_loaded_before_is_allowed_and_shown_in_the_plan(gate, uniq):
    app = container = f"{gate.base.target_name}-own-{uniq}"
    ref = gate.base.image["ref"]
    with imported_for_real(gate, signed_for(gate, "own", app=app, container=container), container):
        gate.client.api.tag(gate.installed.image_id, *ref.rsplit(":", 1))  # the tag now names another image
        try:
            plan = dry_run_plan(gate, signed_for(gate, "own6", app=app, container=container, sequence=6))
            assert f"move tag {ref} from {gate.installed.image_id[:19]}… to {gate.base.image['id'][:19]}…" in plan
        finally:
            try:
                gate.client.api.remove_image(ref)
            except docker.errors.APIError:
                pass


# -- finding 3: the container's high-water mark ----------------------------------------------

def test_a_renamed_older_bundle_cannot_take_a_container_below_its_sequence(gate, uniq):
    app, seqc = f"{gate.base.target_name}-seq-{uniq}", f"{gate.base.target_name}-seqc-{uniq}"
    with imported_for_real(gate, signed_for(gate, "seq10", app=app, container=seqc, sequence=10), seqc):
        canary = signed_for(gate, "canary", app=f"{app}-canary", container=seqc, sequence=1)
        gate.refused(canary, "sequence", f"downgrade: {app}-canary sequence 1 is not above 10, the highest "
                                         f"installed in container {seqc} (--allow-downgrade overrides)")
        # allowing the downgrade does not make the container the canary's
        gate.refused(canary, "ownership", f"installed by bundle for app {app}", verify=False,
                     extra=("--allow-downgrade",))
