"""Binary deltas on the real engine: a release that changed ~1% of the files of its app layer
crosses as a patch against the base bundle's app layer, a fraction of the layer-level delta; the
importer rebuilds the layer from this engine's base layer and checks it before `docker load`; a
missing base, a patch that rebuilds other bytes and a damaged patch are refused, nothing loaded."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from bundlecore.engine import Engine
from bundlecore import format as fmt
from bundlecore import layerpatch
from importer.load import _DockerSave
from tests.craft import BaseBundle, _read_members, _remove_image, sha256
from tests.support import build_app_image, one_line, run_bundle
from tests.test_delta import Scene as DeltaScene, _spec

FILES = 200          # ~3 MB app layer: half random, half text
CHANGED = {17, 120}  # 1% of its files


def _app_files(changed: set[int], extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    rnd = random.Random(11)
    files = {}
    for i in range(FILES):
        data = rnd.randbytes(16384) if i % 2 else (f"line {i} of a text file of the app\n" * 450).encode()
        if i in changed:
            data = random.Random(1000 + i).randbytes(len(data))
        files[f"app/f{i:03d}"] = data
    return files | (extra or {})


def _app_release(client, parent: str, tag: str, files: dict[str, bytes]) -> str:
    """`parent` plus one layer COPYing `files` (fixed metadata, so equal files give equal tar bytes)."""
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        for name, data in {"Dockerfile": f"FROM {parent}\nCOPY app/ /app/\n".encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    image, _ = client.images.build(fileobj=io.BytesIO(ctx.getvalue()), custom_context=True, tag=tag, rm=True)
    return image.id


class Scene(DeltaScene):
    """Release 1 and release 2 of one app: the same parent, an app layer that differs in 1% of its
    files (building, importing and "nothing changed" as in tests/test_delta.py)."""

    def __init__(self, client, root: Path, uniq: str, key, keys_dir: Path, keep_release2: bool = False):
        self.client, self.root, self.key, self.keys = client, root, key, keys_dir
        self.name = f"bindelta-{uniq}"
        repo = f"bindeltatest/app-{uniq}"
        self.ref0, self.ref1, self.ref2 = f"{repo}:base", f"{repo}:1.0.0", f"{repo}:2.0.0"
        build_app_image(client, self.ref0, "1.0.0")
        self.id1 = _app_release(client, self.ref0, self.ref1, _app_files(set()))
        self.id2 = _app_release(client, self.ref0, self.ref2,
                                _app_files(CHANGED, {"app/new-in-2.txt": f"release 2 of {self.name}\n".encode()}))
        self.layers1 = client.images.get(self.ref1).attrs["RootFS"]["Layers"]
        self.layers2 = client.images.get(self.ref2).attrs["RootFS"]["Layers"]
        self.state = root / "state"
        self.v1 = root / "v1.bundle.zst"
        r = self.build(_spec(root / "v1.toml", self.name, self.ref1, "1.0.0", 1), self.v1)
        assert r.code == 0, str(r)
        self.spec2 = _spec(root / "v2.toml", self.name, self.ref2, "2.0.0", 2)
        self.patched = root / "v2-patched.bundle.zst"
        r = self.build(self.spec2, self.patched, "--since", self.v1)
        assert r.code == 0, str(r)
        assert "1 carried as patches" in r.stdout, str(r)
        self.layer_level = root / "v2-layers.bundle.zst"
        r = self.build(self.spec2, self.layer_level, "--since", self.v1, "--no-patch")
        assert r.code == 0 and "patches" not in r.stdout, str(r)
        if not keep_release2:
            _remove_image(client, self.ref2)   # the intranet has release 1, not release 2

    def manifest(self, bundle: Path) -> dict:
        return json.loads(fmt.read_head(bundle).manifest)

    def repacked(self, out: Path, change, bundle: Path | None = None) -> Path:
        """The patched bundle (or `bundle`) with its members changed by `change(variant)`, re-signed
        by the builder unless `change` sets the sums itself (tests.craft's Variant)."""
        bundle = bundle or self.patched
        head = fmt.read_head(bundle)
        manifest = json.loads(head.manifest)
        variant = BaseBundle(bundle, head, manifest, _read_members(bundle, head, manifest),
                             self.key, self.keys, "").variant()
        change(variant)
        return variant.write(out)

    def cleanup(self) -> None:
        super().cleanup()
        _remove_image(self.client, self.ref0)


@pytest.fixture
def scene(docker_client, tmp_path, uniq, pgp_keys, trust_store_of):
    s = Scene(docker_client, tmp_path, uniq, pgp_keys.builder, trust_store_of([pgp_keys.builder]))
    yield s
    s.cleanup()


def test_a_release_changing_1pc_of_a_layers_files_crosses_as_a_small_patch_imports_and_runs(scene, docker_client):
    layer_level = scene.layer_level
    assert "patched" not in scene.manifest(layer_level)["delta"]
    delta = scene.manifest(scene.patched)["delta"]
    (entry,) = delta["patched"]
    assert entry["diff_id"] == scene.layers2[-1] and entry["base_diff_id"] == scene.layers1[-1]
    assert {o["diff_id"] for o in delta["omitted"]} == set(scene.layers2[:-1])
    assert entry["patch"] in {p["path"] for p in scene.manifest(scene.patched)["payload"]}
    assert entry["path"] not in {p["path"] for p in scene.manifest(scene.patched)["payload"]}
    patched_size, layer_size = scene.patched.stat().st_size, layer_level.stat().st_size
    print(f"\nrelease changing {len(CHANGED)} of {FILES} files of a {entry['size']} byte layer: "
          f"layer-level delta {layer_size} bytes, binary delta {patched_size} bytes ({100 * patched_size / layer_size:.1f}%)")
    assert patched_size < 0.1 * layer_size
    r = run_bundle("inspect", scene.patched)
    assert r.code == 0 and f"patched layer {entry['diff_id']}" in r.stdout and entry["base_diff_id"] in r.stdout, str(r)

    r = scene.import_(scene.patched)
    assert r.code == 0, str(r)
    assert docker_client.images.get(scene.ref2).id == scene.id2, "image ID checked after the load"
    container = docker_client.containers.get(scene.name)
    assert container.attrs["Image"] == scene.id2 and container.status == "running"
    code, out = container.exec_run(["/bin/busybox", "cat", "/app/new-in-2.txt", f"/app/f{min(CHANGED):03d}"])
    assert code == 0 and out.startswith(f"release 2 of {scene.name}\n".encode())
    assert out.endswith(_app_files(CHANGED)[f"app/f{min(CHANGED):03d}"])
    r = run_bundle("verify", scene.patched, "--keys", scene.keys, "--state-dir", scene.root / "fresh", "--json")
    assert r.code == 0 and any("base layers of its 1 patched layer(s) are in this engine" in n
                               for n in json.loads(r.stdout)["notes"]), str(r)


def test_the_engine_reproduces_each_layer_tar_byte_for_byte_in_docker_save(scene, docker_client):
    """What rebuilding rests on: the layer tars streamed out of this engine are the signed diff IDs."""
    hashes = set()
    with _DockerSave(Engine(docker_client), scene.id1) as saved:
        for member in saved:
            if member.isfile():
                h, f = hashlib.sha256(), saved.extractfile(member)
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                hashes.add("sha256:" + h.hexdigest())
    assert set(scene.layers1) <= hashes
    assert json.loads(fmt.read_head(scene.v1).manifest)["images"][0]["diff_ids"] == scene.layers1


def test_a_patch_whose_base_layer_is_not_in_the_engine_is_refused_naming_it(scene, docker_client):
    _remove_image(docker_client, scene.ref1)   # release 1's app layer goes; the parent's layers stay
    for verb in ("verify", "import"):
        r = run_bundle(verb, scene.patched, "--keys", scene.keys, "--state-dir", scene.state,
                       *(["--yes"] if verb == "import" else []))
        assert r.code == 3, str(r)
        line = one_line(r.stderr)
        assert line.startswith("refused: delta base: this engine lacks 1 base layer(s) the delta's patches"), line
        assert scene.layers1[-1] in line and f"{scene.name} 1.0.0" in line, line
    scene.nothing_changed()


def test_a_signed_patch_that_rebuilds_other_bytes_is_refused_naming_the_layer_and_nothing_is_loaded(scene):
    entry = scene.manifest(scene.patched)["delta"]["patched"][0]

    def against_another_base(variant):
        # a patch made against a base of the right size but other bytes: it decodes, to the wrong layer
        member = variant.member(entry["patch"])
        layer = _app_files(CHANGED, {"app/new-in-2.txt": b"x"})
        other_base = io.BytesIO(b"\0" * layerpatch.read_header(io.BytesIO(member.data)).base_size)
        out = io.BytesIO()
        new = b"".join(layer.values())
        layerpatch.encode(other_base, len(other_base.getvalue()), io.BytesIO(new), len(new), out)
        member.data = out.getvalue()
        variant.relist()
        variant.manifest["delta"]["patched"][0]["patch_sha256"] = sha256(member.data)

    crafted = scene.repacked(scene.root / "wrong-bytes.bundle.zst", against_another_base)
    r = scene.import_(crafted)
    assert r.code == 3, str(r)
    line = one_line(r.stderr)
    assert line.startswith(f"refused: payload: layer {entry['diff_id']} ") and "nothing loaded" in line, line
    scene.nothing_changed()


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_patch_member_is_refused_by_the_signed_sums(scene, damage):
    entry = scene.manifest(scene.patched)["delta"]["patched"][0]

    def damaged(variant):   # the signed manifest and SHA256SUMS stay as built
        variant.sums, variant.signatures = fmt.read_head(scene.patched).sums, fmt.read_head(scene.patched).signatures
        variant.manifest_bytes = fmt.read_head(scene.patched).manifest
        member = variant.member(entry["patch"])
        data = bytearray(member.data)
        if damage == "corrupted":
            data[len(data) // 2] ^= 0xFF
        else:
            del data[len(data) // 2:]
        member.data = bytes(data)

    crafted = scene.repacked(scene.root / f"{damage}.bundle.zst", damaged)
    r = scene.import_(crafted)
    assert r.code == 3, str(r)
    line = one_line(r.stderr)
    assert entry["patch"] in line, line
    assert (line.startswith("refused: payload: ") and line.endswith("does not match its line in the signed SHA256SUMS")
            if damage == "corrupted" else line.startswith("refused: tar members: ") and "the manifest says" in line), line
    scene.nothing_changed()


def test_a_base_bundle_whose_layer_is_not_its_diff_id_gives_no_patch_but_a_whole_layer(docker_client, tmp_path, uniq,
                                                                                      pgp_keys, trust_store_of):
    """OLD is read, not verified: a tampered base layer must not become a base for patches."""
    s = Scene(docker_client, tmp_path, uniq, pgp_keys.builder, trust_store_of([pgp_keys.builder]), keep_release2=True)
    try:
        app_layer = s.manifest(s.v1)["images"][0]["layers"][-1]

        def tampered(variant):
            member = variant.member(app_layer)
            member.data = member.data[:1000] + bytes([member.data[1000] ^ 1]) + member.data[1001:]
            variant.relist()

        old = s.repacked(tmp_path / "tampered-v1.bundle.zst", tampered, bundle=s.v1)
        out = tmp_path / "v2-from-tampered.bundle.zst"
        r = s.build(s.spec2, out, "--since", old)
        assert r.code == 0 and "patches" not in r.stdout, str(r)
        delta = s.manifest(out)["delta"]
        assert "patched" not in delta
        assert s.manifest(out)["images"][0]["layers"][-1] in {p["path"] for p in s.manifest(out)["payload"]}
    finally:
        s.cleanup()
