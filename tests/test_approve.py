"""`bundle approve` end to end: a builder-signed bundle, an intranet policy that also wants an
approver, the approver's signature added, and the bundle still checkable with standard tools.

Real parts: the app image is built by the engine, the bundle by `bundle build`, the keys are real
gpg keys (tests/keys.py) and every step runs the installed `bundle` command."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from bundlecore import format as fmt
from tests.support import one_line, run_bundle


@pytest.fixture
def scene(tmp_path, app_image, uniq, pgp_keys, trust_store_of):
    """A builder-signed bundle; the builder's store (what the approver trusts); the intranet store
    whose policy wants one builder and one approver signature."""
    builder, approver = pgp_keys.builder, pgp_keys.approver
    tag = f"approvetest/app-{uniq}:1.0.0"
    app_image(tag, "1.0.0")
    spec = tmp_path / "bundle.toml"
    spec.write_text(textwrap.dedent(f"""\
        name = "approved-{uniq}"
        version = "1.0.0"
        sequence = 1
        expires = "30d"
        images = ["{tag}"]

        [target]
        kind = "container"
        name = "approved-{uniq}"
        image = "{tag}"
        """))
    bundle = tmp_path / "app.bundle.zst"
    r = run_bundle("build", spec, "-o", bundle, "--sign-key", builder.fpr, "--gnupghome", builder.home, "--local")
    assert r.code == 0, str(r)

    class Scene:
        path = bundle
        builders = trust_store_of([builder], name="builders")
        intranet = trust_store_of([builder, approver], name="intranet",
                                  roles={"builder": ([builder], 1), "approver": ([approver], 1)})

        @staticmethod
        def verify(*extra):
            return run_bundle("verify", bundle, "--keys", Scene.intranet, "--state-dir", tmp_path / "state", *extra)

        @staticmethod
        def approve(key, keys_dir=None):
            return run_bundle("approve", bundle, "--sign-key", key.fpr, "--gnupghome", key.home,
                              "--keys", keys_dir or Scene.builders)

    return Scene


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, executable="/bin/bash")


def test_approval_makes_a_builder_signed_bundle_meet_a_builder_and_approver_policy(scene, pgp_keys, tmp_path):
    builder, approver = pgp_keys.builder, pgp_keys.approver
    r = scene.verify()
    assert r.code == 3, str(r)
    assert one_line(r.stderr).startswith("refused: signature: role approver needs 1 distinct signing keys, found 0")

    r = scene.approve(approver)
    assert r.code == 0, str(r)
    assert f"signed after {builder.fpr}" in r.stdout

    r = scene.verify("--json")
    assert r.code == 0, str(r)
    report = json.loads(r.stdout)
    assert {s["fingerprint"]: s["roles"] for s in report["signers"]} == {
        builder.fpr: ["builder"], approver.fpr: ["approver"]}

    # the approved bundle is still checkable with zstd, tar, gpg and sha256sum alone
    x = tmp_path / "x"
    x.mkdir()
    assert sh(f"zstd -dc {scene.path} | tar -x", x).returncode == 0
    check = sh(f"gpg --homedir {builder.home} --verify SHA256SUMS.asc SHA256SUMS", x)
    assert check.returncode == 0, check.stderr
    assert check.stderr.count("Good signature") == 2
    assert builder.fpr[-16:] in check.stderr.replace(" ", "") and approver.fpr[-16:] in check.stderr.replace(" ", "")
    sums = sh("sha256sum -c SHA256SUMS", x)
    assert sums.returncode == 0 and sums.stdout.count(": OK") == len(fmt.parse_sha256sums((x / "SHA256SUMS").read_bytes()))
    assert sh(f"sha256sum -c {scene.path.name}.sha256", scene.path.parent).returncode == 0


def test_approving_twice_with_the_same_key_is_a_usage_error_and_changes_nothing(scene, pgp_keys):
    assert scene.approve(pgp_keys.approver).code == 0
    before = scene.path.read_bytes()
    r = scene.approve(pgp_keys.approver, keys_dir=scene.intranet)
    assert r.code == 2 and f"is already signed by {pgp_keys.approver.fpr}" in one_line(r.stderr)
    assert scene.path.read_bytes() == before


def test_approving_a_tampered_bundle_is_refused_and_leaves_it_byte_identical(scene, pgp_keys):
    head = fmt.read_head(scene.path)
    with open(scene.path, "r+b") as f:  # one byte of the payload, after the signed head
        size = f.seek(0, 2)
        f.seek(head.frame_size + (size - head.frame_size) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x42]))
    before = scene.path.read_bytes()
    sidecar = scene.path.with_name(scene.path.name + ".sha256").read_bytes()
    r = scene.approve(pgp_keys.approver)
    assert r.code == 3 and one_line(r.stderr).startswith("refused: "), str(r)
    assert scene.path.read_bytes() == before
    assert scene.path.with_name(scene.path.name + ".sha256").read_bytes() == sidecar
    assert sorted(p.name for p in scene.path.parent.iterdir() if p.name.startswith(".")) == []
