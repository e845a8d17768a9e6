"""The verified feed into `docker load`, without an engine: what reaches the upload, and when.

A member's last chunk and its padding go only once its sum matched; the archive's end only after
the whole payload; a refusal ends the stream inside a member (a header promising bytes never sent)."""

from __future__ import annotations

import tarfile
import threading
from io import BytesIO

from bundlecore import format as fmt
from importer.load import VerifiedFeed

MEMBERS = {"images/a/layer.tar": b"A" * fmt.CHUNK + b"B" * 700, "images/manifest.json": b"[]"}


class _Release:
    images: list = []
    delta = None

    @staticmethod
    def payload_sizes() -> dict[str, int]:
        return {}


def _gate(members: dict[str, bytes], fail_at: str | None = None):
    """A stand-in for the gate's payload check: streams each member in chunks into the feed, then
    'verifies' it (refusing `fail_at` after all its bytes passed)."""
    def check(feed, on_verified):
        for name, data in members.items():
            out = feed.open(name, len(data))
            for i in range(0, len(data), fmt.CHUNK):
                out.write(data[i:i + fmt.CHUNK])
            out.close()
            if name == fail_at:
                raise ValueError(f"{name} does not match")
            on_verified(name)
        return "filesha"
    return check


def _run(tmp_path, fail_at=None) -> tuple[bytes, BaseException | None]:
    feed = VerifiedFeed(_Release(), set(MEMBERS), tmp_path)
    check = _gate(MEMBERS, fail_at)
    worker = threading.Thread(target=feed.run_gate, args=(lambda on_verified: check(feed, on_verified),))
    worker.start()
    got, error = bytearray(), None
    try:
        for piece in feed.tar_stream():
            got += piece
    except ValueError as e:
        error = e
    worker.join()
    return bytes(got), error


def _ends_inside_a_member(stream: bytes) -> bool:
    """Walk the ustar headers: does the stream stop before some member's declared bytes end?"""
    pos = 0
    while pos + fmt.BLOCK <= len(stream):
        block = stream[pos:pos + fmt.BLOCK]
        if block == b"\0" * fmt.BLOCK:
            return False  # an end block: a reader sees a complete archive
        size = int(block[124:136].strip(b"\0 ") or b"0", 8)
        pos += fmt.BLOCK + size + (-size % fmt.BLOCK)
    return pos > len(stream)


def test_a_verified_payload_streams_as_a_complete_docker_archive(tmp_path):
    stream, error = _run(tmp_path)
    assert error is None
    with tarfile.open(fileobj=BytesIO(stream)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar} == {
            name[len(fmt.PAYLOAD_PREFIX):]: data for name, data in MEMBERS.items()}
    assert stream.endswith(fmt.TAR_END)
    assert not any(tmp_path.iterdir()), "a streamed member was written to staging"


def test_a_member_failing_its_sum_never_reaches_the_upload_whole(tmp_path):
    stream, error = _run(tmp_path, fail_at="images/a/layer.tar")
    assert isinstance(error, ValueError)
    data = MEMBERS["images/a/layer.tar"]
    assert data[:fmt.CHUNK] in stream, "the chunks before the last stream on"
    assert data[fmt.CHUNK:] not in stream, "the last chunk was sent before the member matched"
    assert not stream.endswith(fmt.TAR_END)
    assert _ends_inside_a_member(stream)


def test_a_refusal_after_the_last_member_still_ends_inside_a_member(tmp_path):
    """Every member sent whole, then the gate refuses (e.g. bytes after the tar end): the stream
    ends with a header whose data never comes, so no reader takes it for a complete archive."""
    stream, error = _run(tmp_path, fail_at="images/manifest.json")
    assert isinstance(error, ValueError)
    assert MEMBERS["images/manifest.json"] not in stream
    assert _ends_inside_a_member(stream)


def test_an_upload_that_ends_early_stops_the_gate_instead_of_blocking_it(tmp_path):
    """The engine fails mid-upload: nobody reads the queue any more; the gate's thread must end."""
    big = {f"images/{i}/layer.tar": b"x" * fmt.CHUNK for i in range(VerifiedFeed.DEPTH * 3)}
    feed = VerifiedFeed(_Release(), set(big), tmp_path)
    check = _gate(big)
    worker = threading.Thread(target=feed.run_gate, args=(lambda on_verified: check(feed, on_verified),))
    worker.start()
    next(iter(feed.tar_stream()))
    feed.cancelled.set()
    worker.join(timeout=5)
    assert not worker.is_alive(), "the gate thread is stuck on a full queue"
