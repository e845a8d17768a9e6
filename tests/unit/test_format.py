"""Unit tests of the format's pure functions: the zstd frame walker, the strict tar header parser,
SHA256SUMS and strict JSON, the pax size record for members of 8 GiB and more.

No Docker, no gpg: these run in milliseconds."""

from __future__ import annotations

import io
import os
import struct
import tarfile

import pytest
import zstandard

from bundlecore import format as fmt

pytest.register_assert_rewrite("tests.craft")

from tests.craft import raw_tar_header  # noqa: E402

GIB = 1 << 30


# =============================================================================================
# ZstdFrameScanner
# =============================================================================================

def frames_of(*parts: bytes, **kw) -> list[bytes]:
    return [zstandard.ZstdCompressor(**kw).compress(p) for p in parts]


def scan(data: bytes, step: int | None = None) -> fmt.ZstdFrameScanner:
    s = fmt.ZstdFrameScanner()
    if step is None:
        s.feed(data)
    else:
        for i in range(0, len(data), step):
            s.feed(data[i:i + step])
    return s


PAYLOADS = {
    "text": b"the quick brown fox jumps over the lazy dog\n" * 5000,   # compressed blocks
    "random": os.urandom(300_000),                                   # raw blocks, several of them
    "zeros": b"\0" * 400_000,                                        # RLE blocks
    "empty": b"",                                                    # a frame with one empty block
    "tiny": b"x",
}


@pytest.mark.parametrize("kind", list(PAYLOADS))
@pytest.mark.parametrize("checksum", [True, False], ids=["checksum", "no-checksum"])
@pytest.mark.parametrize("step", [None, 1, 7, 4096], ids=["whole", "bytewise", "step7", "step4096"])
def test_scanner_finds_the_exact_end_of_every_frame(kind, checksum, step):
    data = PAYLOADS[kind]
    frames = frames_of(data, b"second frame", data, write_checksum=checksum)
    s = scan(b"".join(frames), step)
    ends, at = [], 0
    for f in frames:
        at += len(f)
        ends.append(at)
    assert s.frame_ends == ends
    assert s.frames_ended == 3
    assert s.at_frame_boundary
    # the boundaries it found cut out frames zstd itself decompresses to the original
    starts = [0] + ends[:-1]
    blob = b"".join(frames)
    assert zstandard.ZstdDecompressor().decompress(blob[starts[2]:ends[2]]) == data


def test_scanner_handles_frames_without_content_size_and_with_a_window_descriptor():
    cctx = zstandard.ZstdCompressor(write_content_size=False, write_checksum=True)
    obj = cctx.compressobj()
    frame = obj.compress(PAYLOADS["text"]) + obj.flush()
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    s = scan(frame + frame, 3)
    assert s.frame_ends == [len(frame), 2 * len(frame)]


def test_scanner_is_not_at_a_frame_boundary_inside_a_frame():
    frame = frames_of(PAYLOADS["text"], write_checksum=True)[0]
    for cut in (1, 4, 5, len(frame) // 2, len(frame) - 1):
        s = scan(frame[:cut])
        assert not s.at_frame_boundary, cut
        assert s.frame_ends == []


def test_scanner_refuses_a_skippable_frame():
    frame = frames_of(b"hello")[0]
    for magic in (0x184D2A50, 0x184D2A5F):
        with pytest.raises(fmt.FormatError, match="skippable zstd frame at byte %d" % len(frame)) as e:
            scan(frame + struct.pack("<II", magic, 3) + b"abc")
        assert e.value.check == "zstd"


@pytest.mark.parametrize("garbage", [b"\0\0\0\0", b"PK\x03\x04", b"\x1f\x8b\x08\x00", b"trailing text"])
def test_scanner_refuses_bytes_that_are_not_a_zstd_frame(garbage):
    frame = frames_of(b"hello")[0]
    with pytest.raises(fmt.FormatError, match="not a zstd frame") as e:
        scan(frame + garbage)
    assert e.value.check == "zstd"


def test_scanner_refuses_the_reserved_frame_header_bit():
    frame = bytearray(frames_of(b"hello")[0])
    frame[4] |= 0x08
    with pytest.raises(fmt.FormatError, match="reserved bit"):
        scan(bytes(frame))


def test_scanner_refuses_a_block_of_the_reserved_type():
    frame = bytearray(frames_of(b"hello", write_checksum=False, write_content_size=False)[0])
    fhd = frame[4]
    assert fhd >> 6 == 0 and not fhd & 3        # no content size, no dictionary ID
    header_end = 5 + (0 if fhd & 0x20 else 1)   # window descriptor unless single segment
    frame[header_end] |= 0b110                  # block type 3
    with pytest.raises(fmt.FormatError, match="reserved type"):
        scan(bytes(frame))


# =============================================================================================
# tar headers
# =============================================================================================

def test_writer_header_parses_back_to_name_and_size():
    hdr = fmt.tar_member_header("images/abc/layer.tar", 12345, 1700000000)
    assert len(hdr) == fmt.BLOCK
    assert fmt.parse_tar_header(hdr) == fmt.TarMember("images/abc/layer.tar", 12345)
    info = tarfile.TarInfo.frombuf(hdr, "utf-8", "strict")  # and the stdlib agrees
    assert (info.name, info.size, info.mtime, info.isreg()) == ("images/abc/layer.tar", 12345, 1700000000, True)


def test_zero_block_is_the_tar_end():
    assert fmt.parse_tar_header(b"\0" * fmt.BLOCK) is None


def test_tar_member_pads_to_whole_blocks():
    for n in (0, 1, 511, 512, 513):
        member = fmt.tar_member("images/x", b"a" * n, 0)
        assert len(member) % fmt.BLOCK == 0
        assert len(member) == fmt.BLOCK + -(-n // fmt.BLOCK) * fmt.BLOCK
        assert fmt.tar_member_size("images/x", n) == len(member)


def test_member_size_of_8_gib_and_more_counts_its_pax_record():
    """The Content-Length of the import's upload (importer.load) is a sum of these."""
    assert fmt.tar_member_size("images/huge/layer.tar", LIMIT) == 3 * fmt.BLOCK + LIMIT + fmt.pad(LIMIT)


def test_header_with_a_wrong_checksum_is_refused():
    hdr = bytearray(fmt.tar_member_header("images/x", 1, 0))
    hdr[0] = ord("j")
    with pytest.raises(fmt.FormatError, match="checksum mismatch"):
        fmt.parse_tar_header(bytes(hdr))


def rechecksummed(hdr: bytearray) -> bytes:
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr)


@pytest.mark.parametrize("field", [b"9" * 11 + b"\0", b"-1" + b"\0" * 10, b"\0" * 12, b"0x10" + b"\0" * 8])
def test_header_with_a_malformed_size_is_refused(field):
    hdr = bytearray(raw_tar_header("images/x", 0))
    hdr[124:136] = field
    with pytest.raises(fmt.FormatError, match="malformed size"):
        fmt.parse_tar_header(rechecksummed(hdr))


def test_header_with_a_malformed_checksum_is_refused():
    hdr = bytearray(raw_tar_header("images/x", 1))
    hdr[148:156] = b"zzzzzz\0 "
    with pytest.raises(fmt.FormatError, match="malformed checksum"):
        fmt.parse_tar_header(bytes(hdr))


def test_header_that_is_not_ustar_is_refused():
    with pytest.raises(fmt.FormatError, match="not ustar"):
        fmt.parse_tar_header(raw_tar_header("images/x", 1, magic=b"\0" * 8))


@pytest.mark.parametrize("typeflag, kind", [
    (b"1", "hard link"), (b"2", "symlink"), (b"3", "character device"), (b"4", "block device"),
    (b"5", "directory"), (b"6", "fifo"), (b"7", "contiguous file"), (b"g", "global pax header"),
    (b"L", "GNU long name"), (b"K", "GNU long link"), (b"S", "special entry"), (b"V", "special entry"),
])
def test_every_member_that_is_not_a_regular_file_is_refused(typeflag, kind):
    with pytest.raises(fmt.FormatError, match=f"is a {kind}, not a regular file") as e:
        fmt.parse_tar_header(raw_tar_header("images/x", 0, typeflag=typeflag, linkname="images/y"))
    assert e.value.check == "tar"


@pytest.mark.parametrize("name, why", [
    ("../x", "'..'"), ("images/../../etc/passwd", "'..'"), ("images/./x", "'.'"), ("images//x", "empty path"),
    ("images/x/", "empty path"), (".", "'.'"), ("/etc/passwd", "absolute path"), ("images\\..\\x", "absolute path"),
])
def test_member_names_that_could_escape_are_refused(name, why):
    with pytest.raises(fmt.FormatError, match="tar member") as e:
        fmt.parse_tar_header(raw_tar_header(name, 0))
    assert why in str(e.value)


def test_ustar_prefix_field_is_joined_and_checked():
    ok = raw_tar_header("layer.tar", 3, prefix=b"images/abc")
    assert fmt.parse_tar_header(ok) == fmt.TarMember("images/abc/layer.tar", 3)
    with pytest.raises(fmt.FormatError, match="'..'"):
        fmt.parse_tar_header(raw_tar_header("x", 3, prefix=b"images/.."))


def test_member_name_that_is_not_utf8_is_refused():
    with pytest.raises(fmt.FormatError, match="not UTF-8"):
        fmt.parse_tar_header(raw_tar_header(b"images/\xff\xfe", 0))


def test_writer_refuses_names_longer_than_the_ustar_field():
    with pytest.raises(ValueError, match="too long"):
        fmt.tar_member_header("images/" + "a" * 100, 1, 0)


# -- sizes of 8 GiB and more: a pax record ------------------------------------------------------

LIMIT = 8 ** 11  # 8 GiB: the first size a 11-digit octal field cannot hold


def test_size_just_below_8_gib_is_a_plain_ustar_header():
    hdr = fmt.tar_member_header("images/big", LIMIT - 1, 0)
    assert len(hdr) == fmt.BLOCK
    assert fmt.parse_tar_header(hdr).size == LIMIT - 1


@pytest.mark.parametrize("size", [LIMIT, 10 * GIB, 1 << 40, 99_999_999_999_999])
def test_size_of_8_gib_and_more_goes_in_a_pax_record(size):
    hdr = fmt.tar_member_header("images/huge/layer.tar", size, 1700000000)
    assert len(hdr) == 3 * fmt.BLOCK                 # pax header, pax body, the member's header
    pax = fmt.parse_tar_header(hdr[:fmt.BLOCK])
    assert pax.size == -1                             # a pax record: the caller reads its body
    body_len = int(hdr[124:136].rstrip(b"\0"), 8)
    body = hdr[fmt.BLOCK:fmt.BLOCK + body_len]
    assert fmt.parse_pax_size(body) == size
    member = fmt.parse_tar_header(hdr[2 * fmt.BLOCK:], pax_size=size)
    assert member == fmt.TarMember("images/huge/layer.tar", size)
    # Python's tarfile reads the same headers to the same member
    info = tarfile.open(fileobj=io.BytesIO(hdr + b"\0" * 1024), mode="r|").next()
    assert (info.name, info.size) == ("images/huge/layer.tar", size)


def test_pax_record_length_counts_its_own_digits():
    """The record's leading length includes its own digits, also where that adds a digit."""
    for size in [0, 1, 9, 10, 99, 100, 10 ** 5, 10 ** 6 - 1, 10 ** 6, LIMIT, 10 ** 18]:
        rec = b" size=%d\n" % size
        for length in range(len(rec) + 1, len(rec) + 4):
            if len(b"%d" % length) + len(rec) == length:
                body = b"%d" % length + rec
                assert fmt.parse_pax_size(body) == size
                break
        else:
            pytest.fail(f"no self-consistent length for {size}")


@pytest.mark.parametrize("body", [
    b"20 path=images/evil\n",          # any other key
    b"16 size=1000\n",                 # wrong length
    b"15 size=1000\n15 size=2000\n",   # two records
    b"14 size=-100\n",                 # not a number
    b"",
])
def test_pax_record_with_anything_but_one_size_is_refused(body):
    with pytest.raises(fmt.FormatError, match="pax header"):
        fmt.parse_pax_size(body)


# =============================================================================================
# SHA256SUMS
# =============================================================================================

A, B = "a" * 64, "0123456789abcdef" * 4


def test_sha256sums_round_trip_sorted_by_name():
    raw = fmt.format_sha256sums([("manifest.json", A), ("images/x.json", B)])
    assert raw == f"{B}  images/x.json\n{A}  manifest.json\n".encode()
    assert fmt.parse_sha256sums(raw) == {"manifest.json": A, "images/x.json": B}


@pytest.mark.parametrize("raw, why", [
    (f"{A}  manifest.json".encode(), "does not end with a newline"),
    (b"", "does not end with a newline"),
    (b"\n", "line 1"),
    (f"{A}  manifest.json\n{B}  manifest.json\n".encode(), "names manifest.json twice"),
    (f"{A} manifest.json\n".encode(), "line 1"),                    # one space
    (f"{A} *manifest.json\n".encode(), "line 1"),                   # binary-mode marker
    (f"{A.upper()}  manifest.json\n".encode(), "line 1"),
    (f"{A[:-1]}  manifest.json\n".encode(), "line 1"),
    (f"{A}  manifest.json\r\n".encode(), "line 1"),
    (f"{A}  manifest.json\n\n".encode(), "line 2"),
    (f"{A}  my file\n".encode(), "line 1"),
    (f"{A}  manifest.json\n".encode() + "é".encode(), "not ASCII"),
])
def test_sha256sums_that_are_not_exactly_the_writers_format_are_refused(raw, why):
    with pytest.raises(fmt.FormatError, match=why) as e:
        fmt.parse_sha256sums(raw)
    assert e.value.check == "sums"


# =============================================================================================
# strict JSON
# =============================================================================================

def test_strict_json_parses_ordinary_json():
    assert fmt.loads_strict_json(b'{"a": [1, {"b": null}], "c": "\\u00e9"}', "x") == {"a": [1, {"b": None}], "c": "é"}


@pytest.mark.parametrize("raw", [b'{"a": 1, "a": 2}', b'{"x": {"a": 1, "a": 1}}', b'[{"k": 1}, {"k": 1, "k": 2}]'])
def test_strict_json_refuses_duplicate_keys_at_any_depth(raw):
    with pytest.raises(fmt.FormatError, match="has the key 'a' twice|has the key 'k' twice") as e:
        fmt.loads_strict_json(raw, "manifest.json")
    assert e.value.check == "json"
    assert str(e.value).startswith("manifest.json ")


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b"{", b"", b'{"a": 1} trailing'])
def test_strict_json_refuses_what_is_not_json(raw):
    with pytest.raises(fmt.FormatError, match="is not valid JSON"):
        fmt.loads_strict_json(raw, "manifest.json")


def test_canonical_json_is_sorted_and_stable():
    a = fmt.dumps_canonical({"b": 1, "a": {"d": 2, "c": 3}})
    b = fmt.dumps_canonical({"a": {"c": 3, "d": 2}, "b": 1})
    assert a == b and a.endswith(b"\n")
    assert fmt.loads_strict_json(a, "x") == {"a": {"c": 3, "d": 2}, "b": 1}


# =============================================================================================
# read_head: the head frame is inflated only within its cap
# =============================================================================================

def _head_bomb(tmp_path, content_size: bool):
    tar = fmt.tar_member(fmt.MANIFEST, b"{}", 0)
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=content_size)
    obj = cctx.compressobj(size=len(tar) + GIB if content_size else -1)
    parts = [obj.compress(tar)]
    zeros = b"\0" * (64 << 20)
    parts += [obj.compress(zeros) for _ in range(GIB // len(zeros))]
    parts.append(obj.flush())
    path = tmp_path / "bomb.bundle"
    path.write_bytes(b"".join(parts))
    assert path.stat().st_size < fmt.MAX_HEAD_FRAME
    return path


@pytest.mark.parametrize("content_size, check", [(True, "cap"), (False, "zstd")], ids=["declared", "undeclared"])
def test_read_head_refuses_a_head_frame_bomb_without_inflating_it(tmp_path, content_size, check):
    """1 GiB of zeros in a small first frame: refused with at most the cap's worth of memory,
    whether or not the frame declares its size (zstandard trusts a declared size)."""
    import tracemalloc
    path = _head_bomb(tmp_path, content_size)
    tracemalloc.start()
    try:
        with pytest.raises(fmt.FormatError) as e:
            fmt.read_head(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.check == check, str(e.value)
    assert peak < 2 * fmt.MAX_HEAD_TAR + (8 << 20), f"read_head allocated {peak >> 20} MiB"


def test_state_files_are_written_in_the_same_canonical_json(tmp_path):
    from bundlecore.fsutil import atomic_write_json

    obj = {"z": [1, {"b": 2, "a": 1}], "a": "ü"}
    atomic_write_json(tmp_path / "state.json", obj)
    assert (tmp_path / "state.json").read_bytes() == fmt.dumps_canonical(obj)
