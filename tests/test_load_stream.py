"""The import streams the payload straight into `docker load` while it hashes it (no staging copy).

The engine's rule this relies on (moby's image/tarexport load): the whole upload is untarred into
a temporary directory before manifest.json is read and any layer registered, and a stream that
ends inside a member fails that untar. A complete archive, though, is loaded even when its manifest
is wrong. So each member's last chunk waits for its sha256, the archive's end waits for the whole
payload, and a refusal cuts the upload inside a member: the layer store must not change."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import docker
import pytest

from bundlecore import format as fmt
from bundlecore.inventory import chain_ids
from importer.load import CRASH_MIDWAY, LOAD_CRASH_POINTS
from tests.engineproxy import EngineProxy
from tests.craft import SPEC, BaseBundle, EngineSnapshot, _read_members, _remove_image, run_bundle, snapshot_dir
from tests.keys import trust_store
from tests.support import build_app_image, child_image

# a layer of random bytes several CHUNKs long, so that it streams in many pieces
UNIQUE_LAYER_BYTES = 3 * fmt.CHUNK + 12345


def top_layer_registered(client, diff_ids: list[str]) -> bool:
    """Is the image's top layer (its chain ID) in the engine's layer store, orphan or not?"""
    info = client.info()
    db = Path(info["DockerRootDir"]) / "image" / info["Driver"] / "layerdb" / "sha256"
    assert db.is_dir(), f"cannot read the layer store at {db}"
    return (db / chain_ids(diff_ids)[-1].split(":", 1)[1]).exists()


@pytest.fixture(scope="module")
def unique_bundle(docker_client, pgp_keys, tmp_path_factory):
    """A real bundle whose top layer exists nowhere else (random bytes), its image then removed."""
    token = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("stream-bundle")
    base_ref = f"bundle-stream-test/base:{token}"
    ref = f"bundle-stream-test/app:1.0.0-{token}"
    build_app_image(docker_client, base_ref, "1.0.0", dockerfile_extra=f"LABEL bundle.stream-test={token}")
    image_id = child_image(docker_client, base_ref, ref,
                           run=f"head -c {UNIQUE_LAYER_BYTES} /dev/urandom > /unique-{token}")
    diff_ids = docker_client.images.get(image_id).attrs["RootFS"]["Layers"]
    spec = root / "bundle.toml"
    spec.write_text(SPEC.format(name=f"streamtest-{token}", ref=ref))
    out = root / "base.bundle"
    try:
        r = run_bundle("build", spec, "-o", out, "--sign-key", pgp_keys.builder.fpr,
                       "--gnupghome", pgp_keys.builder.home, "--local")
        assert r.code == 0, str(r)
    finally:
        _remove_image(docker_client, ref)
        _remove_image(docker_client, base_ref)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    head = fmt.read_head(out)
    manifest = json.loads(head.manifest)
    base = BaseBundle(out, head, manifest, _read_members(out, head, manifest), pgp_keys.builder,
                      trust_store(root / "keys", [pgp_keys.builder]), token)
    yield base, diff_ids
    for c in docker_client.containers.list(all=True, filters={"name": base.target_name}):
        c.remove(force=True)
    _remove_image(docker_client, image_id)


def test_tampered_last_member_registers_nothing_in_the_layer_store(unique_bundle, docker_client, tmp_path):
    """The archive's manifest.json, last in the payload, changed after signing into another valid
    manifest (a different tag): sent whole, it would make the engine load every layer before it."""
    base, diff_ids = unique_bundle
    assert not top_layer_registered(docker_client, diff_ids), "precondition: the unique layer is not in the engine"
    v = base.variant()
    last = v.members[-1]
    assert last.name == fmt.DOCKER_ARCHIVE_MANIFEST, [m.name for m in v.members]
    archive = json.loads(last.data)
    archive[0]["RepoTags"] = [f"bundle-stream-test/evil:{base.token}"]
    last.data = json.dumps(archive).encode()  # the signed sums still name the original bytes
    v.manifest["payload"][-1]["size"] = len(last.data)
    bad = v.write(tmp_path / "tampered-last.bundle")

    r = run_bundle("import", bad, "--keys", base.keys_dir, "--state-dir", tmp_path / "state", "--yes")

    assert r.code == 3, str(r)
    assert len(r.stderr_lines) == 1 and r.stderr_lines[0].startswith("refused: "), str(r)
    assert not top_layer_registered(docker_client, diff_ids), "the refused import registered the unique layer"
    with pytest.raises(docker.errors.ImageNotFound):  # (other tests build images meanwhile: ours by ID)
        docker_client.images.get(base.image["id"])
    assert not docker_client.images.list(name="bundle-stream-test/evil")
    assert not docker_client.containers.list(all=True, filters={"name": base.target_name})
    staging = tmp_path / "state" / "staging"
    assert not staging.exists() or not any(staging.iterdir()), "staging left behind"


def test_member_failing_its_signed_sum_midway_cuts_the_upload(unique_bundle, docker_client, tmp_path):
    """The unique layer itself changed after signing (the sums not re-made): refused on its sha256
    with all but its last chunk already sent; nothing registered."""
    base, diff_ids = unique_bundle
    v = base.variant()
    unique = next(m for m in v.members if m.name.endswith(".tar") and len(m.data) > UNIQUE_LAYER_BYTES)
    pos = len(unique.data) // 2
    unique.data = unique.data[:pos] + bytes([unique.data[pos] ^ 1]) + unique.data[pos + 1:]
    bad = v.write(tmp_path / "tampered-layer.bundle")

    r = run_bundle("import", bad, "--keys", base.keys_dir, "--state-dir", tmp_path / "state", "--yes")

    assert r.code == 3, str(r)
    assert r.stderr_lines == [f"refused: payload: {unique.name} does not match its line in the signed SHA256SUMS"], str(r)
    assert not top_layer_registered(docker_client, diff_ids)


def test_dry_run_verifies_the_payload_without_a_staging_dir(unique_bundle, docker_client, tmp_path):
    """A dry run hashes every member and sends none: no staging directory, nothing registered."""
    base, diff_ids = unique_bundle
    r = run_bundle("import", base.path, "--keys", base.keys_dir, "--state-dir", tmp_path / "state", "--dry-run")
    assert r.code == 0, str(r)
    assert "dry run: nothing loaded or changed" in r.stdout, str(r)
    assert not (tmp_path / "state" / "staging").exists(), "a dry run made a staging directory"
    assert not top_layer_registered(docker_client, diff_ids)


def test_good_bundle_streams_into_the_engine_without_staging_it(unique_bundle, docker_client, tmp_path):
    """The positive control: the same bundle untouched loads, with its unique layer registered."""
    base, diff_ids = unique_bundle
    r = run_bundle("import", base.path, "--keys", base.keys_dir, "--state-dir", tmp_path / "state", "--yes")
    assert r.code == 0, str(r)
    assert top_layer_registered(docker_client, diff_ids)
    assert docker_client.images.get(base.image["id"])


def test_a_layer_removed_while_the_load_runs_is_sent_on_a_second_load(unique_bundle, docker_client, tmp_path):
    """The layers the engine has are verified but left out of the upload. An image removed (an admin's
    prune) between that look and `docker load` makes the load want a file it was not sent; nothing is
    swapped yet, so the import loads again with those layers: exit 0, the signed image installed."""
    base, diff_ids = unique_bundle
    for c in docker_client.containers.list(all=True, filters={"name": base.target_name}):
        c.remove(force=True)  # an earlier test's install of the module's bundle (another state dir)
    r = run_bundle("import", base.path, "--keys", base.keys_dir, "--state-dir", tmp_path / "first", "--yes")
    assert r.code == 0, str(r)
    for c in docker_client.containers.list(all=True, filters={"name": base.target_name}):
        c.remove(force=True)  # the image stays, unused: every layer of the bundle is in the engine
    assert top_layer_registered(docker_client, diff_ids)
    removed: list[bytes] = []

    def prune_on_load(head: bytes) -> None:
        if re.match(rb"POST /v[\d.]+/images/load", head) and not removed:
            removed.append(head)
            docker_client.images.remove(base.image["id"], force=True)

    with EngineProxy(tmp_path / "engine.sock", lambda cid: False, times=0, before=prune_on_load) as proxy:
        r = run_bundle("import", base.path, "--keys", base.keys_dir, "--state-dir", tmp_path / "second", "--yes",
                       env={"DOCKER_HOST": proxy.docker_host})
    try:
        assert removed and r.code == 0, str(r)
        assert "layer(s) the engine had were removed during the load (an image prune?): loading again with them" \
            in r.stdout, r.stdout
        assert top_layer_registered(docker_client, diff_ids)
        info = docker_client.api.inspect_container(base.target_name)
        assert info["State"]["Running"] and info["Image"] == base.image["id"]
    finally:
        for c in docker_client.containers.list(all=True, filters={"name": base.target_name}):
            c.remove(force=True)


def test_the_upload_goes_with_its_exact_length_not_in_chunks(unique_bundle, docker_client, tmp_path):
    """The verified archive's size is known from the signed sizes: the upload carries it as its
    Content-Length (the engine reads it faster than chunks), the archive's two end blocks included,
    and the engine loads exactly that: exit 0, the signed image installed."""
    base, diff_ids = unique_bundle
    for c in docker_client.containers.list(all=True, filters={"name": base.target_name}):
        c.remove(force=True)
    _remove_image(docker_client, base.image["id"])
    heads: list[bytes] = []

    def record(head: bytes) -> None:
        if re.match(rb"POST /v[\d.]+/images/load", head):
            heads.append(head)

    with EngineProxy(tmp_path / "engine.sock", lambda cid: False, times=0, before=record) as proxy:
        r = run_bundle("import", base.path, "--keys", base.keys_dir, "--state-dir", tmp_path / "state", "--yes",
                       env={"DOCKER_HOST": proxy.docker_host})
    try:
        assert r.code == 0, str(r)
        assert len(heads) == 1, heads
        length = re.search(rb"\r\ncontent-length: (\d+)\r\n", heads[0], re.IGNORECASE)
        assert length, heads[0]
        assert b"chunked" not in heads[0].lower(), heads[0]
        # at most every payload member with its header and padding (layers the engine has stay out)
        most = sum(2 * fmt.BLOCK + len(m.data) for m in base.members if m.name.startswith(fmt.PAYLOAD_PREFIX))
        n = int(length.group(1))
        assert n % fmt.BLOCK == 0 and UNIQUE_LAYER_BYTES < n <= most + len(fmt.TAR_END), (n, most)
        assert top_layer_registered(docker_client, diff_ids)
        assert docker_client.api.inspect_container(base.target_name)["Image"] == base.image["id"]
    finally:
        for c in docker_client.containers.list(all=True, filters={"name": base.target_name}):
            c.remove(force=True)


@pytest.fixture(scope="module")
def upgrade(docker_client, pgp_keys, tmp_path_factory):
    """Two releases of one app: 1.0.0 (the base image) and 2.0.0 (one more layer of random bytes
    that exists nowhere else); both images removed once bundled."""
    token = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("stream-upgrade")
    name = f"streamkill-{token}"
    refs = [f"bundle-stream-test/kill:1.0.0-{token}", f"bundle-stream-test/kill:2.0.0-{token}"]
    ids = [build_app_image(docker_client, refs[0], "1.0.0", dockerfile_extra=f"LABEL bundle.stream-kill={token}")]
    ids.append(child_image(docker_client, refs[0], refs[1],
                           run=f"head -c {UNIQUE_LAYER_BYTES} /dev/urandom > /unique-{token}"))
    diff_ids = docker_client.images.get(ids[1]).attrs["RootFS"]["Layers"]
    bundles = []
    try:
        for i, ref in enumerate(refs):
            spec = root / f"bundle-{i + 1}.toml"
            # a command health check: passes in about a second, not the 10 s running grace of no check
            text = SPEC.format(name=name, ref=ref) + '\n[target.health]\ncmd = ["/bin/true"]\ntimeout = "20s"\n'
            spec.write_text(text if i else text.replace('"2.0.0"', '"1.0.0"').replace("sequence = 5", "sequence = 4"))
            bundles.append(root / f"v{i + 1}.bundle")
            r = run_bundle("build", spec, "-o", bundles[-1], "--sign-key", pgp_keys.builder.fpr,
                           "--gnupghome", pgp_keys.builder.home, "--local")
            assert r.code == 0, str(r)
    finally:
        for ref in reversed(refs):
            _remove_image(docker_client, ref)
    yield {"v1": bundles[0], "v2": bundles[1], "ref": refs[1], "id": ids[1], "diff_ids": diff_ids, "name": name,
           "keys": trust_store(root / "keys", [pgp_keys.builder])}
    for c in docker_client.containers.list(all=True, filters={"name": name}):
        c.remove(force=True)
    for image_id in reversed(ids):
        _remove_image(docker_client, image_id)


@pytest.mark.parametrize("point", LOAD_CRASH_POINTS)
def test_upgrade_killed_during_the_streamed_load_changes_nothing_and_a_rerun_installs_it(
        upgrade, docker_client, tmp_path, point):
    """kill -9 with half the upload sent (load_midway), and with the whole verified archive sent but
    the engine's answer not read (load_sent): the app runs on as it was, the state dir is as it was
    (no staging dir left behind), the new tag is absent or the signed image (never a half-loaded
    one; midway, not one layer registered); `recover` and a rerun then install the release."""
    u, state = upgrade, tmp_path / "state"
    assert not top_layer_registered(docker_client, u["diff_ids"]), "precondition: the new layer is not in the engine"
    r = run_bundle("import", u["v1"], "--keys", u["keys"], "--state-dir", state, "--yes")
    assert r.code == 0, str(r)
    state_before = {k: v for k, v in snapshot_dir(state).items() if k != "lock"}  # (the lock holds a pid)
    app_before = EngineSnapshot.take(docker_client, u["name"]).containers
    assert [running for _id, _image, running, _started in app_before.values()] == [True], app_before

    r = run_bundle("import", u["v2"], "--keys", u["keys"], "--state-dir", state, "--yes",
                   env={"BUNDLE_CRASH_AT": point, "BUNDLE_CRASH_WHEN": "after"})

    assert r.code == -9, f"not killed at {point}: {r}"
    assert {k: v for k, v in snapshot_dir(state).items() if k != "lock"} == state_before
    assert EngineSnapshot.take(docker_client, u["name"]).containers == app_before
    r = run_bundle("recover", "--yes", "--state-dir", state)
    assert r.code == 0, str(r)
    assert EngineSnapshot.take(docker_client, u["name"]).containers == app_before
    tagged = EngineSnapshot.take(docker_client, u["name"]).tags.get(u["ref"])
    if point == CRASH_MIDWAY:
        assert tagged is None and not top_layer_registered(docker_client, u["diff_ids"])
    else:  # the engine may have finished loading what it had whole: then only the signed image
        assert tagged in (None, u["id"])

    r = run_bundle("import", u["v2"], "--keys", u["keys"], "--state-dir", state, "--yes")

    assert r.code == 0, str(r)
    info = docker_client.api.inspect_container(u["name"])
    assert info["State"]["Running"] and info["Image"] == u["id"]
    assert top_layer_registered(docker_client, u["diff_ids"])
    # the next case starts from nothing again
    for c in docker_client.containers.list(all=True, filters={"name": u["name"]}):
        c.remove(force=True)
    _remove_image(docker_client, u["id"])
