"""Delta bundles on the real engine: a release that changed one layer crosses without the layers
its base carried, imports where the engine has them, and is refused by name where it does not."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import docker
import pytest

from bundlecore import format as fmt
from bundlecore.inventory import parse_inventory
from tests.engineproxy import EngineProxy
from tests.support import build_app_image, child_image, one_line, run_bundle
from tests.craft import _remove_image


def _spec(path: Path, name: str, ref: str, version: str, sequence: int) -> Path:
    path.write_text(f'name = "{name}"\nversion = "{version}"\nsequence = {sequence}\nimages = ["{ref}"]\n\n'
                    f'[target]\nkind = "container"\nname = "{name}"\nimage = "{ref}"\n\n'
                    '[target.health]\ncmd = ["/bin/true"]\ntimeout = "20s"\nattempts = 1\n')
    return path


class Scene:
    """Release 1 (its own unique top layer) and release 2 (release 1 plus one layer) of one app."""

    def __init__(self, client, root: Path, uniq: str, key, keys_dir: Path):
        self.client, self.root, self.key, self.keys = client, root, key, keys_dir
        self.name = f"deltatest-{uniq}"
        self.ref1, self.ref2 = f"deltatest/app-{uniq}:1.0.0", f"deltatest/app-{uniq}:2.0.0"
        self.id1 = build_app_image(client, self.ref1, "1.0.0", dockerfile_extra=f"RUN echo {uniq} > /release1.txt")
        self.layers1 = client.images.get(self.ref1).attrs["RootFS"]["Layers"]
        self.state = root / "state"
        self.v1 = root / "v1.bundle.zst"
        r = self.build(_spec(root / "v1.toml", self.name, self.ref1, "1.0.0", 1), self.v1)
        assert r.code == 0, str(r)
        self.spec2 = _spec(root / "v2.toml", self.name, self.ref2, "2.0.0", 2)
        self.id2 = None

    def make_release2(self) -> None:
        # release 2's own layer: about 256 KiB that does not compress
        self.id2 = child_image(self.client, self.ref1, self.ref2,
                               f"head -c 262144 /dev/urandom > /two.bin && echo {self.name} > /two.txt")
        self.layers2 = self.client.images.get(self.ref2).attrs["RootFS"]["Layers"]

    def build(self, spec: Path, out: Path, *more, measure_rss: bool = False):
        return run_bundle("build", spec, "-o", out, "--sign-key", self.key.fpr, "--gnupghome", self.key.home,
                          "--local", *more, measure_rss=measure_rss)

    def import_(self, bundle: Path, *more):
        return run_bundle("import", bundle, "--keys", self.keys, "--state-dir", self.state, "--yes", *more)

    def nothing_changed(self) -> None:
        assert not self.client.containers.list(all=True, filters={"name": self.name})
        with pytest.raises(docker.errors.ImageNotFound):
            self.client.images.get(self.id2)
        installed = self.state / "installed"
        assert not installed.exists() or not list(installed.iterdir())

    def cleanup(self) -> None:
        for c in self.client.containers.list(all=True, filters={"name": self.name}):
            c.remove(force=True)
        for ref in (self.ref2, self.id2, self.ref1, self.id1):
            if ref:
                _remove_image(self.client, ref)


@pytest.fixture
def scene(docker_client, tmp_path, uniq, pgp_keys, trust_store_of):
    s = Scene(docker_client, tmp_path, uniq, pgp_keys.builder, trust_store_of([pgp_keys.builder]))
    yield s
    s.cleanup()


def test_a_delta_leaves_out_what_its_base_carried_and_is_a_fraction_of_the_full_bundle(scene):
    scene.make_release2()
    full, delta = scene.root / "v2-full.bundle.zst", scene.root / "v2-delta.bundle.zst"
    r = scene.build(scene.spec2, full)
    assert r.code == 0, str(r)
    r = scene.build(scene.spec2, delta, "--since", scene.v1, "--json")
    assert r.code == 0, str(r)
    manifest = json.loads(fmt.read_head(delta).manifest)
    base = manifest["delta"]["base"]
    v1 = json.loads(fmt.read_head(scene.v1).manifest)
    assert base == {"kind": "bundle", "name": scene.name, "version": "1.0.0", "sequence": v1["sequence"],
                    "sha256": fmt.sums_path(scene.v1).read_text().split()[0]}
    assert {o["diff_id"] for o in manifest["delta"]["omitted"]} == set(scene.layers1)
    carried = {p["path"] for p in manifest["payload"]}
    assert manifest["images"][0]["layers"][-1] in carried and not carried & {o["path"] for o in manifest["delta"]["omitted"]}
    full_size, delta_size = full.stat().st_size, delta.stat().st_size
    print(f"\nrelease changing one layer: full {full_size} bytes, delta {delta_size} bytes "
          f"({100 * delta_size / full_size:.1f}%)")
    assert delta_size < 0.5 * full_size
    r = run_bundle("inspect", delta)
    assert r.code == 0 and f"delta bundle: {len(scene.layers1)} layer(s) left out" in r.stdout, str(r)
    assert "base: bundle " + scene.name + " 1.0.0" in r.stdout
    assert "full bundle" in run_bundle("inspect", full).stdout


def test_a_delta_imports_where_the_engine_has_its_base_and_the_app_runs(scene, docker_client):
    scene.make_release2()
    delta = scene.root / "v2-delta.bundle.zst"
    assert scene.build(scene.spec2, delta, "--since", scene.v1).code == 0
    _remove_image(docker_client, scene.ref2)   # the intranet has release 1, not release 2
    # the archive docker load receives names the left-out layers without carrying them: this engine
    # loads it because it has them (docker 20.10 skips a layer whose chain ID it has, unopened)
    r = scene.import_(delta)
    assert r.code == 0, str(r)
    assert docker_client.images.get(scene.ref2).id == scene.id2, "image ID checked after the load"
    container = docker_client.containers.get(scene.name)
    assert container.attrs["Image"] == scene.id2 and container.status == "running"
    r = run_bundle("verify", delta, "--keys", scene.keys, "--state-dir", scene.root / "fresh-state", "--json")
    assert r.code == 0 and any("left-out layer(s) are in this engine" in n for n in json.loads(r.stdout)["notes"]), str(r)


def test_a_delta_is_refused_naming_the_missing_layers_where_the_engine_lacks_its_base(scene, docker_client):
    scene.make_release2()
    delta = scene.root / "v2-delta.bundle.zst"
    assert scene.build(scene.spec2, delta, "--since", scene.v1).code == 0
    for ref in (scene.ref2, scene.id2, scene.ref1, scene.id1):  # release 1's own layer is gone
        _remove_image(docker_client, ref)
    for verb in ("verify", "import"):
        r = run_bundle(verb, delta, "--keys", scene.keys, "--state-dir", scene.state,
                       *(["--yes"] if verb == "import" else []))
        assert r.code == 3, str(r)
        line = one_line(r.stderr)
        assert line.startswith("refused: delta base: this engine lacks "), line
        assert scene.layers1[-1] in line and f"{scene.name} 1.0.0" in line, line
    scene.nothing_changed()


def test_a_delta_whose_base_is_pruned_during_the_load_fails_naming_it_and_changes_nothing(scene, docker_client,
                                                                                          tmp_path):
    """The gate found the base layers in the engine; release 1's image removed when the load request
    arrives (an admin's prune): a full bundle would load again with them, a delta cannot send them.
    One line says which layer went and to import the full bundle; exit 1, nothing installed."""
    scene.make_release2()
    delta = scene.root / "v2-delta.bundle.zst"
    assert scene.build(scene.spec2, delta, "--since", scene.v1).code == 0
    _remove_image(docker_client, scene.ref2)
    pruned: list[bytes] = []

    def prune_on_load(head: bytes) -> None:
        if re.match(rb"POST /v[\d.]+/images/load", head) and not pruned:
            pruned.append(head)
            _remove_image(docker_client, scene.ref1)
            _remove_image(docker_client, scene.id1)

    with EngineProxy(tmp_path / "engine.sock", lambda cid: False, times=0, before=prune_on_load) as proxy:
        r = run_bundle("import", delta, "--keys", scene.keys, "--state-dir", scene.state, "--yes",
                       env={"DOCKER_HOST": proxy.docker_host})
    assert pruned and r.code == 1, str(r)
    line = one_line(r.stderr)
    assert line.startswith("error: layer ") and line.endswith(", which this delta bundle leaves to the engine, was "
                                                              "removed during the load (an image prune?): import the "
                                                              "full bundle"), line
    scene.nothing_changed()


def test_a_delta_is_refused_where_the_base_tag_names_an_impostor_image(scene, docker_client):
    """A wrong base in the engine: release 1's tag now names another image (same tag and version,
    another top layer). The left-out layers are looked up by content, never by tag: refused naming
    the layer it lacks, nothing loaded or created, the impostor left as it was."""
    scene.make_release2()
    delta = scene.root / "v2-delta.bundle.zst"
    assert scene.build(scene.spec2, delta, "--since", scene.v1).code == 0
    for ref in (scene.ref2, scene.id2, scene.ref1, scene.id1):
        _remove_image(docker_client, ref)
    impostor = build_app_image(docker_client, scene.ref1, "1.0.0", dockerfile_extra="RUN echo impostor > /release1.txt")
    assert docker_client.images.get(scene.ref1).attrs["RootFS"]["Layers"][-1] != scene.layers1[-1]
    r = scene.import_(delta)
    assert r.code == 3, str(r)
    line = one_line(r.stderr)
    assert line.startswith("refused: delta base: this engine lacks ") and scene.layers1[-1] in line, line
    assert docker_client.images.get(scene.ref1).id == impostor
    scene.nothing_changed()


def test_a_delta_whose_base_is_another_app_is_refused(scene, docker_client, tmp_path):
    scene.make_release2()
    delta = scene.root / "v2-delta.bundle.zst"
    assert scene.build(scene.spec2, delta, "--since", scene.v1).code == 0
    # the builder will not make one ...
    other = scene.root / "other.toml"
    _spec(other, scene.name + "-other", scene.ref2, "2.0.0", 2)
    r = scene.build(other, scene.root / "other.bundle.zst", "--since", scene.v1)
    assert r.code == 2 and "not a release of" in one_line(r.stderr), str(r)
    assert not (scene.root / "other.bundle.zst").exists()
    # ... and a signed one (a builder with another tool) is refused before anything is loaded
    head = fmt.read_head(delta)
    manifest = json.loads(head.manifest)
    manifest["delta"]["base"]["name"] = "someone-else"
    raw = fmt.dumps_canonical(manifest)
    sums = fmt.parse_sha256sums(head.sums) | {fmt.MANIFEST: hashlib.sha256(raw).hexdigest()}
    sums_raw = fmt.format_sha256sums(sums.items())
    crafted = tmp_path / "crafted.bundle.zst"
    fmt.rewrite_head(delta, crafted, fmt.Head(raw, sums_raw, b"", head.frame, head.mtime), scene.key.sign(sums_raw))
    _remove_image(docker_client, scene.ref2)
    r = scene.import_(crafted)
    assert r.code == 3, str(r)
    assert one_line(r.stderr).startswith(f"refused: delta base: {scene.name} is a delta of someone-else 1.0.0"), r.stderr
    scene.nothing_changed()


def test_have_from_a_real_inventory_builds_a_delta_that_imports(scene, docker_client):
    inventory = scene.root / "intranet.json"
    r = run_bundle("inventory", "--json")   # the intranet engine holds release 1
    assert r.code == 0, str(r)
    inventory.write_text(r.stdout)
    doc = parse_inventory(inventory.read_bytes())
    assert any(img["id"] == scene.id1 and img["diff_ids"] == scene.layers1 for img in doc["images"])
    scene.make_release2()
    delta = scene.root / "v2-have.bundle.zst"
    r = scene.build(scene.spec2, delta, "--have", inventory, measure_rss=True)
    assert r.code == 0, str(r)
    manifest = json.loads(fmt.read_head(delta).manifest)
    assert manifest["delta"]["base"]["kind"] == "inventory"
    assert {o["diff_id"] for o in manifest["delta"]["omitted"]} == set(scene.layers1)
    _remove_image(docker_client, scene.ref2)
    r = scene.import_(delta)
    assert r.code == 0, str(r)
    assert docker_client.containers.get(scene.name).attrs["Image"] == scene.id2
    r = run_bundle("inventory")
    assert r.code == 0 and scene.id2 in r.stdout and "distinct layers" in r.stdout, str(r)


HOSTILE_LAYERS = 40_000


def test_an_inventory_of_40000_layers_builds_in_linear_memory_and_a_huge_one_is_refused_while_read(
        scene, docker_client, tmp_path):
    """Finding 8: one image of 40,000 diff IDs (far under the 16 MiB cap) made the build's memory
    grow with the square of the count (about 6 GB); a file over the cap was read whole first."""
    r = run_bundle("inventory", "--json")
    assert r.code == 0, str(r)
    doc = json.loads(r.stdout)
    doc["images"].append({"id": "sha256:" + "e" * 64, "tags": ["hostile:1"],
                          "diff_ids": [f"sha256:{i:064x}" for i in range(HOSTILE_LAYERS)]})
    inventory = tmp_path / "hostile.json"
    inventory.write_text(json.dumps(doc))
    assert inventory.stat().st_size < 16 << 20
    scene.make_release2()
    delta = scene.root / "v2-hostile-have.bundle.zst"
    r = scene.build(scene.spec2, delta, "--have", inventory, measure_rss=True)
    assert r.code == 0, str(r)
    assert r.maxrss_mib < 400, f"build --have peaked at {r.maxrss_mib:.0f} MiB"
    manifest = json.loads(fmt.read_head(delta).manifest)
    assert {o["diff_id"] for o in manifest["delta"]["omitted"]} == set(scene.layers1)  # the real base still counts

    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB (sparse): refused after reading at most the cap
    out = tmp_path / "x.bundle.zst"
    r = scene.build(scene.spec2, out, "--have", huge, measure_rss=True)
    assert r.code == 2 and "over its cap of 16777216 bytes" in one_line(r.stderr), str(r)
    assert r.maxrss_mib < 300, f"build --have of a 1 GiB file peaked at {r.maxrss_mib:.0f} MiB"
    assert not out.exists()


def test_careless_delta_requests_are_usage_errors(scene, tmp_path):
    out = tmp_path / "x.bundle.zst"
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "something"}')
    for more, needle in ((("--since", tmp_path / "nope.bundle.zst"), "not found"),
                         (("--have", bad), "not a `bundle inventory --json` file"),
                         (("--since", scene.v1, "--have", bad), "give one")):
        r = scene.build(scene.spec2, out, *more)
        assert r.code == 2 and needle in one_line(r.stderr), str(r)
        assert not out.exists()
