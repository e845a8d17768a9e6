"""Split bundles read as one stream, delta layer choice and the inventory file: the pure parts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tracemalloc

import pytest

from bundlecore import format as fmt
from bundlecore.inventory import MAX_INVENTORY, chain_ids, known_chains, parse_inventory
from bundler.build import omitted_layers


def _bundle(tmp_path, payload_size=600_000):
    """A well-formed (unsigned) bundle whose payload does not compress: several 64K parts."""
    files = [("images/a/layer.tar", os.urandom(payload_size)), ("images/manifest.json", b"[]")]
    body = tmp_path / "payload"
    with open(body, "wb") as f:
        w = fmt.PayloadWriter(f, 0)
        for name, data in files:
            w.add_bytes(name, data)
        w.close()
    head = fmt.compress_head(b"{}", b"", b"sig", 0)
    out = tmp_path / "b.bundle.zst"
    digest = fmt.assemble(out, head, body)
    return out, digest, [(n, len(d)) for n, d in files]


def _split(tmp_path, out, digest, size=64 << 10, sidecar=True):
    written = fmt.write_parts(out, out, size)
    for tmp, final, _ in written:
        os.replace(tmp, final)
    if sidecar:
        fmt.sums_path(out).write_text("".join(f"{h}  {f.name}\n" for _, f, h in written) + f"{digest}  {out.name}\n")
    whole = out.read_bytes()
    out.unlink()
    return [f for _, f, _ in written], whole


def _read_all(path, expected):
    head = fmt.read_head(path)
    reader = fmt.PayloadReader(path, head, expected)
    for _, _, chunks in reader.members():
        for _ in chunks:
            pass
    return reader.file_sha256


@pytest.mark.parametrize("text, size", [("64K", 64 << 10), ("3900M", 3900 << 20), ("2g", 2 << 30), ("70000", 70000)])
def test_part_sizes_are_read_with_binary_suffixes(text, size):
    assert fmt.parse_part_size(text) == size


@pytest.mark.parametrize("text", ["", "10", "63K", "1.5G", "-5M", "3900MB", "M"])
def test_part_sizes_below_the_minimum_or_malformed_are_refused(text):
    with pytest.raises(ValueError):
        fmt.parse_part_size(text)


@pytest.mark.parametrize("sidecar", [True, False])
@pytest.mark.parametrize("name", ["b.bundle.zst", "b.bundle.zst.part001", "b.bundle.zst.part003"])
def test_parts_read_as_one_stream_from_any_part_or_the_prefix(tmp_path, sidecar, name):
    out, digest, expected = _bundle(tmp_path)
    parts, whole = _split(tmp_path, out, digest, sidecar=sidecar)
    assert len(parts) > 3 and all(p.stat().st_size == 64 << 10 for p in parts[:-1])
    assert _read_all(tmp_path / name, expected) == digest == hashlib.sha256(whole).hexdigest()


def test_join_gives_the_unsplit_bytes_and_checks_the_whole(tmp_path):
    out, digest, _ = _bundle(tmp_path)
    _, whole = _split(tmp_path, out, digest)
    joined = tmp_path / "joined"
    assert fmt.join_parts(tmp_path / "b.bundle.zst.part002", joined) == digest
    assert joined.read_bytes() == whole


def _break(parts, how):
    if how == "missing":
        parts[2].unlink()
    elif how == "swapped":
        a, b = parts[1].read_bytes(), parts[2].read_bytes()
        parts[1].write_bytes(b)
        parts[2].write_bytes(a)
    elif how == "truncated":
        parts[2].write_bytes(parts[2].read_bytes()[:-100])
    elif how == "corrupted":
        data = bytearray(parts[2].read_bytes())
        data[1000] ^= 0xFF
        parts[2].write_bytes(bytes(data))


@pytest.mark.parametrize("how, named", [("missing", "part003"), ("swapped", "part002"), ("truncated", "part003"),
                                        ("corrupted", "part003")])
def test_a_bad_part_is_named_from_the_sidecar(tmp_path, how, named):
    out, digest, expected = _bundle(tmp_path)
    parts, _ = _split(tmp_path, out, digest)
    _break(parts, how)
    with pytest.raises(fmt.FormatError) as e:
        _read_all(parts[0], expected)
    assert e.value.check == "parts" and f"b.bundle.zst.{named}" in str(e.value)
    with pytest.raises(fmt.FormatError):
        fmt.join_parts(parts[0], tmp_path / "joined")
    assert not (tmp_path / "joined").exists() and not list(tmp_path.glob(".joined*"))


@pytest.mark.parametrize("how", ["missing", "swapped", "truncated", "corrupted"])
def test_without_a_sidecar_the_part_where_the_stream_broke_is_named(tmp_path, how):
    out, digest, expected = _bundle(tmp_path)
    parts, _ = _split(tmp_path, out, digest, sidecar=False)
    _break(parts, how)
    with pytest.raises(fmt.FormatError) as e:
        assert _read_all(parts[0], expected) != digest  # a change that kept the stream whole changes the hash
    assert re.search(r"the stream broke in part b\.bundle\.zst\.part0[0-9][0-9]|part b\.bundle\.zst\.part003 is missing",
                     str(e.value))


def test_a_part_not_listed_in_the_sidecar_is_refused(tmp_path):
    out, digest, expected = _bundle(tmp_path)
    parts, _ = _split(tmp_path, out, digest)
    fmt.part_path(out, len(parts) + 1).write_bytes(b"stray")
    with pytest.raises(fmt.FormatError, match="is not listed"):
        fmt.read_head(parts[0])


def test_the_head_frame_must_be_inside_the_first_part(tmp_path):
    out, digest, _ = _bundle(tmp_path)
    head_size = fmt.read_head(out).frame_size
    data = out.read_bytes()
    fmt.part_path(out, 1).write_bytes(data[:head_size - 10])
    fmt.part_path(out, 2).write_bytes(data[head_size - 10:])
    out.unlink()
    with pytest.raises(fmt.FormatError, match="not inside the first part") as e:
        fmt.read_head(out)
    assert e.value.check == "parts"


A, B, C, D = (f"sha256:{c * 64}" for c in "abcd")


@pytest.mark.parametrize("images, chains, omitted", [
    # one layer changed on top of the same base: the base is left out
    ([{"layers": ["images/1", "images/2"], "diff_ids": [A, B]}], {(A,)}, {"images/1": A}),
    # equal diff ID on another parent is another layer for docker load: carried
    ([{"layers": ["images/1", "images/2"], "diff_ids": [A, B]}], {(B,), (C, B)}, {}),
    # a layer shared by two images is left out only if both have its chain
    ([{"layers": ["images/1"], "diff_ids": [A]}, {"layers": ["images/1", "images/2"], "diff_ids": [A, C]}],
     {(A,), (A, C)}, {"images/1": A, "images/2": C}),
    ([{"layers": ["images/1", "images/2"], "diff_ids": [A, B]}], set(), {}),
    ([{"layers": ["images/1", "images/2"], "diff_ids": [A, B]}], {(A,), (A, B)}, {"images/1": A, "images/2": B}),
    ([{"layers": ["images/1", "images/2", "images/3"], "diff_ids": [A, B, D]}], {(A,), (A, C)}, {"images/1": A}),
])
def test_a_delta_leaves_out_exactly_the_layers_whose_chain_the_base_has(images, chains, omitted):
    assert omitted_layers(images, {chain_ids(chain)[-1] for chain in chains}) == omitted


def test_chain_ids_are_docker_chain_ids_and_linear_in_the_layers():
    assert chain_ids([A]) == [A]
    below = chain_ids([A, B])[1]
    assert below == "sha256:" + hashlib.sha256(f"{A} {B}".encode()).hexdigest()
    assert chain_ids([A, B, C])[2] == "sha256:" + hashlib.sha256(f"{below} {C}".encode()).hexdigest()
    assert chain_ids([B, A])[1] != below and known_chains([[A, B], [A]]) == {A, below}
    # issue 18: one image of 40,000 diff IDs made the build's memory grow with the square of the count
    many = [f"sha256:{i:064x}" for i in range(40_000)]
    tracemalloc.start()
    try:
        chains = known_chains([many])
        omitted = omitted_layers([{"layers": [f"images/{i}" for i in range(40_000)], "diff_ids": many}], chains)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(chains) == 40_000 and len(omitted) == 40_000
    assert peak < 64 << 20, f"{peak >> 20} MiB"  # the prefixes took about 6 GB


def _inventory(**over):
    doc = {"kind": "bundle-inventory", "version": 1, "host": "h", "engine": "20.10",
           "images": [{"id": A, "tags": [], "diff_ids": [B, C]}]}
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("raw", [
    b"not json", _inventory(kind="other"), _inventory(version=2), _inventory(host=None), _inventory(images={}),
    _inventory(images=[{"diff_ids": ["sha256:short"]}]), _inventory(images=[{"diff_ids": "x"}]),
    b'{"kind": "bundle-inventory", "kind": "bundle-inventory"}', b" " * (MAX_INVENTORY + 1),
])
def test_a_malformed_inventory_is_refused(raw):
    with pytest.raises(fmt.FormatError):
        parse_inventory(raw)


def test_an_inventory_is_read():
    assert parse_inventory(_inventory())["images"][0]["diff_ids"] == [B, C]


def test_a_member_that_does_not_match_is_blamed_on_its_part_when_the_sidecar_says_so(tmp_path):
    """The member ends inside the bad (last) part: its hash fails before the part's own check ran."""
    out, digest, expected = _bundle(tmp_path)
    parts, _ = _split(tmp_path, out, digest)
    data = bytearray(parts[-1].read_bytes())
    data[100] ^= 0x01   # inside a raw (incompressible) block: zstd cannot notice, only the member's hash
    parts[-1].write_bytes(bytes(data))
    reader = fmt.PayloadReader(parts[0], fmt.read_head(parts[0]), expected)
    members = reader.members()
    _, _, chunks = next(members)
    for _ in chunks:
        pass
    blamed = reader.blame()
    assert blamed is not None and blamed.check == "parts" and parts[-1].name in str(blamed)
    members.close()
