"""`bundle build`: one signed zstd file from pinned images, checkable with standard tools alone."""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import zstandard

from bundlecore import format as fmt
from bundlecore.schema import first_error
from tests.support import one_line, run_bundle
from tests.keys import KeyFactory, gpg, trust_store



@pytest.fixture(scope="session")
def builder_key(pgp_keys):
    return pgp_keys.builder.home, pgp_keys.builder.fpr


def write_spec(path: Path, images: list[str], name: str = "app", version: str = "1.0.0", extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        name = "{name}"
        version = "{version}"
        sequence = 7
        expires = "30d"
        images = {json.dumps(images)}
        {extra}
        [target]
        kind = "container"
        name = "{name}"
        image = "{images[0]}"

        [target.run]
        ports = ["127.0.0.1:18099:8080"]
        volumes = ["{name}-data:/data"]
        env = {{ GREETING = "hello" }}
        restart = "unless-stopped"

        [target.health]
        http = "http://127.0.0.1:18099/health"
        timeout = "60s"
        """))
    return path


def build(spec, out, key, *more):
    home, fpr = key
    return run_bundle("build", spec, "-o", out, "--sign-key", fpr, "--gnupghome", home, *more)


@pytest.fixture
def local_app(app_image, uniq):
    tag = f"buildtest/app-{uniq}:1.0.0"
    image_id = app_image(tag, "1.0.0")
    return tag, image_id


def test_bundle_is_checkable_with_zstd_tar_gpg_and_sha256sum(tmp_path, local_app, builder_key, docker_client):
    tag, image_id = local_app
    spec = write_spec(tmp_path / "bundle.toml", [tag])
    out = tmp_path / "app.bundle.zst"
    r = build(spec, out, builder_key, "--local", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["path"] == str(out) and summary["size"] == out.stat().st_size
    assert summary["images"] == [{"ref": tag, "id": image_id}]

    home, _ = builder_key
    x = tmp_path / "x"
    x.mkdir()

    def sh(cmd, cwd=x):
        return subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, executable="/bin/bash")

    assert sh(f"zstd -dc {out} | tar -x").returncode == 0
    listing = sh(f"zstd -dc {out} | tar -t").stdout.split()
    assert listing[:3] == ["manifest.json", "SHA256SUMS", "SHA256SUMS.asc"]
    assert all(name.startswith("images/") for name in listing[3:])
    assert sh(f"gpg --homedir {home} --verify SHA256SUMS.asc SHA256SUMS").returncode == 0
    check = sh("sha256sum -c SHA256SUMS")
    assert check.returncode == 0 and check.stdout.count(": OK") == len(listing) - 2
    assert sh(f"sha256sum -c {out.name}.sha256", cwd=tmp_path).returncode == 0

    manifest = json.loads((x / "manifest.json").read_text())
    assert first_error("manifest.schema.json", manifest) is None
    engine_image = docker_client.images.get(tag)
    [img] = manifest["images"]
    assert img["id"] == engine_image.id and img["diff_ids"] == engine_image.attrs["RootFS"]["Layers"]
    assert manifest["name"] == "app" and manifest["sequence"] == 7 and manifest["allow_latest"] is False
    assert manifest["target"]["health"] == {"http": "http://127.0.0.1:18099/health", "timeout": 60, "attempts": 3}
    # the docker archive inside loads with plain docker, tagging only the signed ref
    archive = json.loads((x / "images" / "manifest.json").read_text())
    assert archive == [{"Config": img["config"][7:], "Layers": [ln[7:] for ln in img["layers"]], "RepoTags": [tag]}]


def test_head_is_a_frame_of_its_own_before_any_payload(tmp_path, local_app, builder_key):
    tag, _ = local_app
    out = tmp_path / "b.zst"
    assert build(write_spec(tmp_path / "s.toml", [tag]), out, builder_key, "--local").returncode == 0
    head = fmt.read_head(out)
    first = zstandard.ZstdDecompressor().decompress(out.read_bytes()[: head.frame_size])
    # the first frame holds exactly the three head members and no tar end: payload comes after
    assert len(first) == sum(512 + len(m) + (-len(m) % 512) for m in (head.manifest, head.sums, head.signatures))
    assert fmt.parse_sha256sums(head.sums).keys() >= {"manifest.json", "images/manifest.json"}


def test_layers_shared_by_two_images_are_stored_once(tmp_path, app_image, uniq, builder_key):
    v1, v2 = f"buildtest/a-{uniq}:1.0.0", f"buildtest/b-{uniq}:2.0.0"
    app_image(v1, "1.0.0")
    app_image(v2, "2.0.0")
    out = tmp_path / "two.zst"
    r = build(write_spec(tmp_path / "s.toml", [v1, v2]), out, builder_key, "--local")
    assert r.returncode == 0, r.stderr
    manifest = json.loads(fmt.read_head(out).manifest)
    layers = [ln for img in manifest["images"] for ln in img["layers"]]
    paths = [p["path"] for p in manifest["payload"]]
    assert len(paths) == len(set(paths))
    assert len(set(layers)) < len(layers)  # the busybox layer is shared, and stored once
    assert set(layers) <= set(paths)


def test_images_are_pulled_from_a_registry_with_their_digest(tmp_path, app_image, uniq, builder_key, registry, docker_client):
    ref = f"{registry}/buildtest/pulled-{uniq}:3.1.4"
    app_image(ref, "3.1.4")
    for _ in docker_client.images.push(ref, stream=True, decode=True):
        pass
    docker_client.images.remove(ref)
    out = tmp_path / "pulled.zst"
    r = build(write_spec(tmp_path / "s.toml", [ref]), out, builder_key, "--json")
    assert r.returncode == 0, r.stderr
    [img] = json.loads(fmt.read_head(out).manifest)["images"]
    assert img["repo_digest"].startswith(f"{registry}/buildtest/pulled-{uniq}@sha256:")
    assert docker_client.images.get(ref).id == img["id"]


@pytest.mark.parametrize("ref", ["buildtest/unpinned", "buildtest/unpinned:latest"])
def test_unpinned_image_is_refused_unless_allowed_and_recorded(tmp_path, app_image, uniq, builder_key, ref):
    ref = ref.replace("unpinned", f"unpinned-{uniq}")
    app_image(ref if ":" in ref else ref + ":latest", "1.0.0")
    spec = write_spec(tmp_path / "s.toml", [ref])
    out = tmp_path / "u.zst"
    r = build(spec, out, builder_key, "--local")
    assert r.returncode == 2 and "is not pinned" in one_line(r.stderr)
    assert not out.exists()
    r = build(spec, out, builder_key, "--local", "--allow-latest")
    assert r.returncode == 0, r.stderr
    assert json.loads(fmt.read_head(out).manifest)["allow_latest"] is True


def test_unknown_spec_key_is_one_clear_line(tmp_path, builder_key):
    spec = write_spec(tmp_path / "s.toml", ["x/y:1"], extra='colour = "blue"')
    r = build(spec, tmp_path / "o.zst", builder_key, "--local")
    assert r.returncode == 2
    assert "colour" in one_line(r.stderr)


def test_missing_local_image_is_one_clear_line(tmp_path, builder_key, uniq):
    r = build(write_spec(tmp_path / "s.toml", [f"buildtest/none-{uniq}:1.0"]), tmp_path / "o.zst", builder_key, "--local")
    assert r.returncode == 2 and "not in the local engine" in one_line(r.stderr)


def test_unreachable_registry_is_an_environment_error(tmp_path, builder_key, docker_client):
    r = build(write_spec(tmp_path / "s.toml", ["127.0.0.1:1/nothing/here:1.0"]), tmp_path / "o.zst", builder_key)
    assert r.returncode == 1 and "cannot pull 127.0.0.1:1/nothing/here:1.0" in one_line(r.stderr)
    assert not (tmp_path / "o.zst").exists()


def test_unknown_expired_and_revoked_signing_keys_stop_the_build_first(tmp_path, local_app, builder_key, pgp_keys):
    tag, _ = local_app
    spec = write_spec(tmp_path / "s.toml", [tag])
    out = tmp_path / "o.zst"
    home, _ = builder_key
    r = run_bundle("build", spec, "-o", out, "--sign-key", "0" * 40, "--gnupghome", home, "--local")
    assert r.returncode == 2 and "is not in the keyring" in one_line(r.stderr)

    # a keyring where the builder's own key has been revoked (its revocation certificate imported)
    factory = KeyFactory(tmp_path / "revoking")
    revoked = factory.generate("selfrevoked")
    cert = (factory.home / "openpgp-revocs.d" / f"{revoked.fpr}.rev").read_bytes()
    gpg(factory.home, "--import", input=cert.replace(b":-----BEGIN", b"-----BEGIN"))
    try:
        for key, word in ((pgp_keys.expired, "expired"), (revoked, "revoked")):
            r = run_bundle("build", spec, "-o", out, "--sign-key", key.fpr, "--gnupghome", key.home, "--local")
            assert r.returncode == 2 and f"is {word}" in one_line(r.stderr), r.stderr
    finally:
        factory.close()
    assert list(tmp_path.glob("*.zst*")) == [] and list(tmp_path.glob(".o.zst*")) == []


def test_disk_full_leaves_nothing_under_the_final_name(tmp_path, local_app, builder_key):
    tag, _ = local_app
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", small], check=True)
    try:
        r = build(write_spec(tmp_path / "s.toml", [tag]), small / "o.zst", builder_key, "--local")
        assert r.returncode == 1 and "disk full" in one_line(r.stderr)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", small], check=True)


def test_inspect_reads_the_head_and_says_nothing_is_verified(tmp_path, local_app, builder_key):
    tag, image_id = local_app
    out = tmp_path / "b.zst"
    assert build(write_spec(tmp_path / "s.toml", [tag]), out, builder_key, "--local").returncode == 0
    with open(out, "r+b") as f:  # wreck the payload: inspect must not care, it reads frame 1 only
        f.seek(fmt.read_head(out).frame_size + 100)
        f.write(b"\xff" * 64)
    r = run_bundle("inspect", out, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["verified"] is False and info["name"] == "app" and info["images"][0]["id"] == image_id
    assert info["signers"] == [{"fingerprint": builder_key[1], "uid": None, "roles": []}]
    text = run_bundle("inspect", out).stdout
    assert "NOT verified" in text and tag in text


@pytest.mark.parametrize("args,needle", [
    (["build", "-o", "x.zst"], "Missing option '--sign-key'"),
    (["verify", "/nonexistent.zst"], "not found"),  # a bundle may be the prefix of its parts
    (["frobnicate"], "No such command"),
])
def test_usage_errors_are_one_line_with_exit_2(args, needle):
    r = run_bundle(*args)
    assert r.code == 2 and needle in one_line(r.stderr)


def test_the_head_goes_in_front_without_a_copy_and_by_a_copy_where_the_filesystem_cannot(tmp_path, local_app, builder_key,
                                                                                         pgp_keys):
    """ext4 drops the room left for the head (fallocate COLLAPSE_RANGE, the head padded to a 4 KiB
    block); tmpfs cannot, so the payload is copied behind an unpadded head. Either way: a bundle any
    zstd reads, the sidecar's hash is the file's, bundle verify accepts it, no temp file is left."""
    tag, _ = local_app
    spec = write_spec(tmp_path / "s.toml", [tag])
    store = trust_store(tmp_path / "keys", [pgp_keys.builder])
    shm = tmp_path / "shm"
    shm.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", shm], check=True)
    try:
        in_place, copied = tmp_path / "ext4.zst", shm / "tmpfs.zst"
        for out in (in_place, copied):
            r = build(spec, out, builder_key, "--local")
            assert r.returncode == 0, r.stderr
            data = out.read_bytes()
            assert out.with_name(out.name + ".sha256").read_text() == f"{hashlib.sha256(data).hexdigest()}  {out.name}\n"
            assert subprocess.run(["zstd", "-t", "-q", out]).returncode == 0
            assert sorted(p.name for p in out.parent.iterdir() if out.name in p.name) == [out.name, out.name + ".sha256"]
            v = run_bundle("verify", out, "--keys", store, "--state-dir", tmp_path / f"state-{out.stem}")
            assert v.returncode == 0, v.stderr
        assert fmt.read_head(in_place).frame_size % fmt.FS_BLOCK == 0   # padded: the payload starts on a block
        assert fmt.read_head(copied).frame_size < fmt.FS_BLOCK           # the copy: the head as compressed
    finally:
        subprocess.run(["umount", shm], check=True)
