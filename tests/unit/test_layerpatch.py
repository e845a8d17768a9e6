"""The layer patch codec (bundlecore.layerpatch): what encode writes, decode rebuilds byte for byte,
at every size relation between segments, base and new layer; a patch that does not fit is refused."""

from __future__ import annotations

import io
import os
import struct

import pytest

from bundlecore import layerpatch as lp

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


RANDOM = os.urandom(5 * SEG + 123)


@pytest.mark.parametrize("base, new", [
    (b"", b""),                                           # empty layer, empty base
    (RANDOM, b""),                                        # empty new layer
    (b"", RANDOM[:SEG]),                                  # no base bytes at all
    (RANDOM, RANDOM[:100]),                               # layer smaller than a segment
    (RANDOM, RANDOM[:SEG]),                               # exactly one segment
    (RANDOM, RANDOM[:SEG + 1]),                           # one byte into the second segment
    (RANDOM, RANDOM[:3 * SEG]),                           # ends on a segment boundary
    (RANDOM[:SEG // 2], RANDOM),                          # base shorter than the new layer
    (RANDOM + os.urandom(9 * SEG), RANDOM),               # base longer than the new layer
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
