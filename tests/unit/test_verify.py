"""The shared verifier's pure rules, fed plain dicts: the manifest against the signed SHA256SUMS,
the docker archive manifest against the signed images, and the check names every refusal carries."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from bundlecore import format as fmt
from bundlecore.errors import Refused
from bundlecore.refusals import ArchiveRefused, Check, MalformedBundle, ManifestRefused
from bundlecore.verify import BundleVerifier, VerifiedHead, check_docker_archive


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CONFIG, LAYER, LAYER2 = "images/blobs/sha256/config", "images/blobs/sha256/layer", "images/blobs/sha256/layer2"


def signed() -> tuple[dict, dict[str, str]]:
    """A consistent (manifest, sums) pair of one image with two layers."""
    files = {fmt.DOCKER_ARCHIVE_MANIFEST: sha("archive"), CONFIG: sha("config"), LAYER: sha("layer"),
             LAYER2: sha("layer2")}
    manifest = {
        "payload": [{"path": p, "size": 1, "sha256": d} for p, d in files.items()],
        "images": [{"ref": "app:1", "id": "sha256:" + files[CONFIG], "config": CONFIG, "platform": "linux/amd64",
                    "layers": [LAYER, LAYER2], "diff_ids": ["sha256:" + files[LAYER], "sha256:" + files[LAYER2]]}],
        "target": {"image": "app:1"},
    }
    return manifest, {**files, fmt.MANIFEST: sha("manifest")}


def test_a_consistent_manifest_passes_the_cross_check():
    BundleVerifier.cross_check(*signed())


def _drop(m, s):
    del s[LAYER2]


def _extra_sum(m, s):
    s["images/extra"] = sha("extra")


def _other_digest(m, s):
    m["payload"][1]["sha256"] = sha("other")


def _payload_twice(m, s):
    m["payload"].append(dict(m["payload"][1]))


def _no_archive_manifest(m, s):
    m["payload"] = [p for p in m["payload"] if p["path"] != fmt.DOCKER_ARCHIVE_MANIFEST]
    del s[fmt.DOCKER_ARCHIVE_MANIFEST]


def _image_twice(m, s):
    m["images"].append(copy.deepcopy(m["images"][0]))


def _wrong_id(m, s):
    m["images"][0]["id"] = "sha256:" + sha("not the config")


def _config_not_in_payload(m, s):
    m["images"][0]["config"] = "images/blobs/sha256/elsewhere"


def _diff_id_of_other_layer(m, s):
    m["images"][0]["diff_ids"].reverse()


def _missing_diff_id(m, s):
    m["images"][0]["diff_ids"].pop()


def _layer_not_in_payload(m, s):
    m["images"][0]["layers"][1] = "images/blobs/sha256/elsewhere"


def _target_not_an_image(m, s):
    m["target"]["image"] = "other:1"


@pytest.mark.parametrize("mutate, why", [
    (_drop, "list different files (e.g. images/blobs/sha256/layer2)"),
    (_extra_sum, "list different files (e.g. images/extra)"),
    (_other_digest, "disagree on images/blobs/sha256/config"),
    (_payload_twice, "lists a payload file twice"),
    (_no_archive_manifest, "the payload has no images/manifest.json"),
    (_image_twice, "lists an image ref twice"),
    (_wrong_id, "image app:1: its config is not in the payload with digest"),
    (_config_not_in_payload, "image app:1: its config is not in the payload"),
    (_diff_id_of_other_layer, "image app:1: its layers do not match its diff IDs"),
    (_missing_diff_id, "image app:1: its layers do not match its diff IDs"),
    (_layer_not_in_payload, "image app:1: its layers do not match its diff IDs"),
    (_target_not_an_image, "target image other:1 is not one of the bundle's images"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_a_manifest_that_disagrees_with_the_signed_sums_is_refused(mutate, why):
    manifest, sums = signed()
    mutate(manifest, sums)
    with pytest.raises(ManifestRefused) as e:
        BundleVerifier.cross_check(manifest, sums)
    assert why in str(e.value)
    assert e.value.line().startswith("refused: manifest: ")


# ---------------------------------------------------------------------------------------------
# rule 9: the docker archive manifest

def archive(**change) -> list[dict]:
    entry = {"Config": CONFIG[len(fmt.PAYLOAD_PREFIX):], "RepoTags": ["app:1"],
             "Layers": [LAYER[len(fmt.PAYLOAD_PREFIX):], LAYER2[len(fmt.PAYLOAD_PREFIX):]]}
    entry.update(change)
    return [entry]


def verified() -> VerifiedHead:
    manifest, sums = signed()
    return VerifiedHead(manifest, sums, [], head=None)


@pytest.mark.parametrize("entries", [archive(), archive(RepoTags=None), archive(RepoTags=[])],
                         ids=["tagged", "tags-null", "untagged"])
def test_an_archive_that_loads_exactly_the_signed_image_passes(entries):
    assert check_docker_archive(json.dumps(entries).encode(), verified()) == entries


@pytest.mark.parametrize("raw, why", [
    (json.dumps(archive(RepoTags=["app:1", "installed:1"])), "tags installed:1, which is not a signed ref"),
    (json.dumps(archive(RepoTags=["app:2"])), "tags app:2, which is not a signed ref"),
    (json.dumps(archive(Config="blobs/sha256/unknown")), "loads config 'blobs/sha256/unknown', whose digest is no signed"),
    (json.dumps(archive(Layers=["blobs/sha256/layer"])), "gives image app:1 other layers than signed"),
    (json.dumps(archive(Layers=["blobs/sha256/layer2", "blobs/sha256/layer"])), "other layers than signed"),
    (json.dumps(archive(Parent="sha256:x")), "has an entry with unexpected fields"),
    (json.dumps(["not an entry"]), "has an entry with unexpected fields"),
    (json.dumps([]), "is not a list of images"),
    (json.dumps({"Config": "x"}), "is not a list of images"),
    ('[{"Config": "a", "Config": "b"}]', "has the key 'Config' twice"),
    ("not json", "is not valid JSON"),
], ids=["extra-tag", "other-tag", "unknown-config", "fewer-layers", "other-order", "unexpected-field",
        "entry-not-object", "empty", "not-a-list", "duplicate-key", "not-json"])
def test_an_archive_that_would_load_anything_unsigned_is_refused(raw, why):
    with pytest.raises(ArchiveRefused) as e:
        check_docker_archive(raw.encode(), verified())
    assert why in str(e.value)
    assert e.value.line().startswith("refused: docker archive: ")


def test_an_archive_that_misses_a_signed_image_is_refused():
    v = verified()
    second = copy.deepcopy(v.manifest["images"][0]) | {"ref": "sidecar:1", "config": "images/blobs/sha256/sidecar"}
    v.manifest["images"].append(second)
    with pytest.raises(ArchiveRefused, match="does not load sidecar:1"):
        check_docker_archive(json.dumps(archive()).encode(), v)


def two_refs_of_one_image() -> VerifiedHead:
    """app:1 and app:1.0 signed as two images with ONE config (as `bundle build` records them)."""
    v = verified()
    v.manifest["images"].append(copy.deepcopy(v.manifest["images"][0]) | {"ref": "app:1.0"})
    return v


@pytest.mark.parametrize("tags", [["app:1", "app:1.0"], ["app:1.0", "app:1"]], ids=["in-order", "reversed"])
def test_one_archive_entry_carrying_every_signed_ref_of_one_image_passes(tags):
    entries = archive(RepoTags=tags)
    assert check_docker_archive(json.dumps(entries).encode(), two_refs_of_one_image()) == entries


def test_one_entry_per_ref_of_the_same_image_passes():
    """What builds before the fix wrote: two entries with the same Config, one tag each."""
    entries = archive(RepoTags=["app:1"]) + archive(RepoTags=["app:1.0"])
    assert check_docker_archive(json.dumps(entries).encode(), two_refs_of_one_image()) == entries


@pytest.mark.parametrize("tags, why", [
    (["app:1"], "does not load app:1.0"),
    (["app:1", "app:1.0", "app:2"], "tags app:2, which is not a signed ref"),
], ids=["one-ref-missing", "extra-tag"])
def test_two_refs_of_one_image_still_refuse_a_missing_or_extra_tag(tags, why):
    with pytest.raises(ArchiveRefused, match=why):
        check_docker_archive(json.dumps(archive(RepoTags=tags)).encode(), two_refs_of_one_image())


# ---------------------------------------------------------------------------------------------
# check names

def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_every_refusal_carries_a_check_and_every_check_has_a_refusal():
    import bundlecore.trust, bundlecore.verify, importer.gate, importer.load  # noqa: E401,F401  every refusal in use

    classes = list(_all_subclasses(Refused))
    assert classes
    assert {c.__module__ for c in classes} == {"bundlecore.refusals"}, "refusal classes live in one module"
    assert all(isinstance(c.check, Check) for c in classes)
    named = {c.check for c in classes} | set(MalformedBundle.CHECK_OF_KIND.values())
    assert named == set(Check)


@pytest.mark.parametrize("kind, check", [
    ("cap", "size cap"), ("zstd", "zstd"), ("truncated", "truncated"), ("trailing", "trailing data"),
    ("tar", "tar members"), ("head", "tar members"), ("members", "tar members"), ("parts", "parts"),
])
def test_format_errors_are_refused_under_todays_check_names(kind, check):
    e = MalformedBundle(fmt.FormatError(kind, "boom"))
    assert e.check == check and e.line() == f"refused: {check}: boom" and e.exit_code == 3


def test_the_checks_bundle_verify_reports_are_derived_in_the_order_they_run():
    from importer.pipeline import CHECKS

    assert CHECKS == ["parts", "size cap", "zstd", "truncated", "trailing data", "tar members", "signature", "manifest",
                      "platform", "expiry", "created", "sequence", "host policy", "delta base", "payload",
                      "docker archive"]
    assert json.loads(json.dumps(CHECKS)) == CHECKS
