"""The layer patch codec (bundlecore.layerpatch): what encode writes, decode rebuilds byte for byte,
at every size relation between segments, base and new layer; a patch that does not fit is refused.
Also which base a layer is patched against, and the verifier's cross-check of patched layers."""

from __future__ import annotations

import io
import os
import random
import struct

import pytest

from bundlecore import layerpatch as lp
from bundlecore.refusals import ManifestRefused
from bundlecore.verify import BundleVerifier
from bundler.build import BaseLayer, choose_base
from tests.unit.test_verify import signed

SEG = 4096
MARGIN = 1024


def _roundtrip(base: bytes, new: bytes, segment: int = SEG, margin: int = MARGIN) -> bytes:
    out = io.BytesIO()
    size = lp.encode(io.BytesIO(base), len(base), io.BytesIO(new), len(new), out, segment=segment, margin=margin)
    assert size == len(out.getvalue())
    return out.getvalue()


def _decode(base: bytes, patch: bytes) -> bytes:
    out = io.BytesIO()
    assert lp.decode(io.BytesIO(base), io.BytesIO(patch), out) == len(out.getvalue())
    return out.getvalue()


# seeded, so that parameter ids are the same in every process (pytest -n collects in each worker)
_RNG = random.Random(20261130)
RANDOM = _RNG.randbytes(5 * SEG + 123)


@pytest.mark.parametrize("base, new", [
    (b"", b""),                                           # empty layer, empty base
    (RANDOM, b""),                                        # empty new layer
    (b"", RANDOM[:SEG]),                                  # no base bytes at all
    (RANDOM, RANDOM[:100]),                               # layer smaller than a segment
    (RANDOM, RANDOM[:SEG]),                               # exactly one segment
    (RANDOM, RANDOM[:SEG + 1]),                           # one byte into the second segment
    (RANDOM, RANDOM[:3 * SEG]),                           # ends on a segment boundary
    (RANDOM[:SEG // 2], RANDOM),                          # base shorter than the new layer
    (RANDOM + _RNG.randbytes(9 * SEG), RANDOM),           # base longer than the new layer
    (RANDOM, RANDOM[:SEG - 7] + b"changed" + RANDOM[SEG:]),  # a change across a boundary
    (RANDOM, RANDOM[500:]),                               # everything shifted, within the margin
    (RANDOM, RANDOM[5000:]),                              # shifted past the margin: still exact
])
def test_a_patch_rebuilds_the_new_layer_byte_for_byte(base, new):
    assert _decode(base, _roundtrip(base, new)) == new


def test_a_layer_that_changed_a_little_patches_to_a_small_fraction_of_its_size():
    base = b"".join(os.urandom(2048) + b"text line\n" * 200 for _ in range(100))
    new = base[:100_000] + os.urandom(3000) + base[100_000:]
    patch = _roundtrip(base, new, segment=64 << 10, margin=16 << 10)
    assert len(patch) < len(new) // 20


def test_the_default_segment_and_margin_work_on_real_sizes():
    base = os.urandom(3 << 20) + bytes(9 << 20)
    new = base[:5 << 20] + b"x" * 100 + base[5 << 20:]
    out = io.BytesIO()
    lp.encode(io.BytesIO(base), len(base), io.BytesIO(new), len(new), out)
    assert len(out.getvalue()) < 64 << 10
    assert _decode(base, out.getvalue()) == new


PATCH = _roundtrip(RANDOM, RANDOM[:2 * SEG] + b"new" + RANDOM[2 * SEG:])


def _with_header(**fields) -> bytes:
    magic, new_size, base_size, segment, margin = struct.unpack("<8sQQII", PATCH[:32])
    values = dict(magic=magic, new_size=new_size, base_size=base_size, segment=segment, margin=margin) | fields
    return struct.pack("<8sQQII", *values.values()) + PATCH[32:]


@pytest.mark.parametrize("base, patch, says", [
    (RANDOM, PATCH[:-10], "ends inside segment"),
    (RANDOM, PATCH[:40], "ends"),
    (RANDOM, PATCH + b"x", "bytes after"),
    (RANDOM, b"", "bad header"),
    (RANDOM, b"NOTPATCH" + PATCH[8:], "bad header"),
    (RANDOM, _with_header(segment=0), "out of range"),
    (RANDOM, _with_header(segment=lp.MAX_SEGMENT + 1), "out of range"),
    (RANDOM, _with_header(margin=lp.MAX_MARGIN + 1), "out of range"),
    (RANDOM, PATCH[:36 + struct.unpack("<I", PATCH[32:36])[0]], "ends before segment 1"),
    (RANDOM, _with_header(new_size=len(RANDOM)), "does not declare"),
    (RANDOM[:-1], PATCH, "the patch was made against"),         # base one byte short
    (RANDOM + b"x", PATCH, "the patch was made against"),        # base one byte long
    (RANDOM, PATCH[:32] + struct.pack("<I", 1 << 30) + PATCH[36:], "over its cap"),
])
def test_a_patch_that_does_not_fit_its_base_or_is_malformed_is_refused(base, patch, says):
    with pytest.raises(lp.PatchError, match=says):
        _decode(base, patch)


def test_a_patch_applied_to_another_base_of_the_same_size_gives_other_bytes_not_an_error_the_hash_decides():
    other = os.urandom(len(RANDOM))
    try:
        rebuilt = _decode(other, PATCH)
    except lp.PatchError:
        return
    assert rebuilt != _decode(RANDOM, PATCH)


# ---------------------------------------------------------------------------------------------
# which base a changed layer is patched against (bundler.build.choose_base)

def _base(path, repo="app", position=0, size=100):
    return BaseLayer(path, "sha256:" + path, size, repo, position)


BASES = [_base("a", "app", 0, 10), _base("b", "app", 1, 1000), _base("c", "other", 1, 500)]


@pytest.mark.parametrize("repo, position, size, chosen", [
    ("app", 1, 10, "b"),        # same position in the same image wins over a closer size
    ("app", 2, 480, "c"),       # no such position: the closest in size
    ("new", 0, 12, "a"),        # another image: the closest in size
    ("app", 5, 10_000, "b"),
])
def test_a_changed_layer_is_patched_against_the_layer_at_its_place_else_the_closest_in_size(repo, position, size, chosen):
    assert choose_base(repo, position, size, BASES).path == chosen


def test_without_base_layers_nothing_is_patched():
    assert choose_base("app", 0, 10, []) is None


# ---------------------------------------------------------------------------------------------
# the manifest's patched layers against the signed sums (bundlecore.verify cross-check)

def _patched(m, s, **change):
    layer2 = m["images"][0]["layers"][1]
    entry = {"path": layer2, "diff_id": m["images"][0]["diff_ids"][1], "size": 1,
             "base_diff_id": "sha256:" + "b" * 64, "patch": "images/patches/x.patch", "patch_sha256": "c" * 64}
    m["payload"] = [p for p in m["payload"] if p["path"] != layer2] + [
        {"path": entry["patch"], "size": 1, "sha256": entry["patch_sha256"]}]
    del s[layer2]
    s[entry["patch"]] = entry["patch_sha256"]
    m["delta"] = {"base": {}, "omitted": [], "patched": [entry | change]}
    return m, s


def test_a_consistent_patched_layer_passes_the_cross_check():
    BundleVerifier.cross_check(*_patched(*signed()))


@pytest.mark.parametrize("change, why", [
    ({"patch_sha256": "d" * 64}, "the patch of images/blobs/sha256/layer2 is not in the payload"),
    ({"patch": "images/patches/other.patch"}, "is not in the payload"),
    ({"diff_id": "sha256:" + "e" * 64}, "its layers do not match its diff IDs"),
    ({"path": "images/blobs/sha256/layer"}, "is patched and also carried"),
    ({"path": "images/blobs/sha256/nobody"}, "its layers do not match its diff IDs"),  # layer2 then has no bytes
])
def test_a_patched_layer_that_disagrees_with_the_signed_manifest_is_refused(change, why):
    manifest, sums = _patched(*signed(), **change)
    with pytest.raises(ManifestRefused, match=why):
        BundleVerifier.cross_check(manifest, sums)


def test_a_layer_both_left_out_and_patched_is_refused():
    manifest, sums = _patched(*signed())
    manifest["delta"]["omitted"] = [{"path": "images/blobs/sha256/layer2", "diff_id": manifest["images"][0]["diff_ids"][1]}]
    with pytest.raises(ManifestRefused, match="patched and also carried, left out"):
        BundleVerifier.cross_check(manifest, sums)
