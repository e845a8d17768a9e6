"""A corrupted payload is always a refusal of the format, never a raw zstd error.

Every byte of a payload reaches the reader through one place; a random 16-byte corruption
anywhere in the compressed frame must end in `FormatError` (refused, check named), or in bytes
whose hashes the gate then refuses, and never in a zstandard exception escaping to the user."""

import hashlib
import io
import os
import random

import pytest
import zstandard

from bundlecore import format as fmt

def _prose(n_words: int) -> bytes:
    """Compressible but not trivial text: corruption then lands inside compressed blocks, where
    zstd itself (not the frame walker) is the one to notice."""
    rng = random.Random(1)
    words = [bytes(rng.choice(b"abcdefghijklmnop") for _ in range(rng.randrange(2, 9))) for _ in range(500)]
    return b" ".join(rng.choice(words) for _ in range(n_words))


MEMBERS = [("images/a/layer.tar", _prose(300_000)),
           ("images/b/layer.tar", os.urandom(100_000)),
           ("images/manifest.json", b"[]")]


@pytest.fixture(scope="module")
def bundle_parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("corrupt")
    payload = io.BytesIO()
    writer = fmt.PayloadWriter(payload, mtime=0)
    for path, data in MEMBERS:
        writer.add_bytes(path, data)
    writer.close()
    head = fmt.compress_head(b"{}", b"sums\n", b"sig\n", 0)
    return d, head, payload.getvalue()


def read_all(path, head_path) -> dict[str, str]:
    head = fmt.read_head(head_path)
    reader = fmt.PayloadReader(path, head, [(p, len(d)) for p, d in MEMBERS])
    got = {}
    for member, _, chunks in reader.members():
        h = hashlib.sha256()
        for c in chunks:
            h.update(c)
        got[member] = h.hexdigest()
    return got


def test_an_intact_payload_reads_back(bundle_parts):
    d, head, payload = bundle_parts
    f = d / "intact.zst"
    f.write_bytes(head + payload)
    assert read_all(f, f) == {p: hashlib.sha256(data).hexdigest() for p, data in MEMBERS}


@pytest.mark.parametrize("seed", range(60))
def test_random_corruption_is_a_format_error_or_a_hash_mismatch(bundle_parts, seed):
    d, head, payload = bundle_parts
    rng = random.Random(seed)
    at = rng.randrange(0, len(payload) - 16)
    bad = bytearray(payload)
    bad[at:at + 16] = rng.randbytes(16)
    f = d / f"bad-{seed}.zst"
    f.write_bytes(head + bytes(bad))
    try:
        got = read_all(f, f)
    except fmt.FormatError:
        return
    except zstandard.ZstdError as e:  # the bug this test exists for
        pytest.fail(f"raw ZstdError escaped at offset {at}: {e}")
    assert got != {p: hashlib.sha256(data).hexdigest() for p, data in MEMBERS}
