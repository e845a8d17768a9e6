"""The verified feed into `docker load`, without an engine: what reaches the upload, and when.

A member's last chunk and its padding go only once its sum matched; the archive's end only after
the whole payload; a refusal ends the stream inside a member (a header promising bytes never sent)."""

from __future__ import annotations

import tarfile
import threading
from io import BytesIO

from bundlecore import format as fmt
from bundlecore.refusals import PayloadMismatch
from importer.load import VerifiedFeed

MEMBERS = {"images/a/layer.tar": b"A" * fmt.CHUNK + b"B" * 700, "images/manifest.json": b"[]"}


class _Release:
    """What the feed reads of a signed release: the payload's sizes."""
    images: list = []
    delta = None

    def __init__(self, members: dict[str, bytes] = MEMBERS):
        self.sizes = {name: len(data) for name, data in members.items()}

    def payload_sizes(self) -> dict[str, int]:
        return self.sizes


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


def _run(tmp_path, fail_at=None, release=None, members=MEMBERS) -> tuple[bytes, BaseException | None]:
    feed = VerifiedFeed(release or _Release(), set(MEMBERS), tmp_path)
    check = _gate(members, fail_at)
    worker = threading.Thread(target=feed.run_gate, args=(lambda on_verified: check(feed, on_verified),))
    worker.start()
    got, error = bytearray(), None
    upload = feed.upload()
    try:
        for piece in upload:
            got += piece
    except (ValueError, PayloadMismatch) as e:
        error = e
    worker.join()
    assert len(got) <= len(upload), "more bytes sent than the upload's Content-Length"
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
    return pos > len(stream) or len(stream) % fmt.BLOCK != 0  # a partial block is no archive's end either


def test_a_verified_payload_streams_as_a_complete_docker_archive(tmp_path):
    stream, error = _run(tmp_path)
    assert error is None
    with tarfile.open(fileobj=BytesIO(stream)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar} == {
            name[len(fmt.PAYLOAD_PREFIX):]: data for name, data in MEMBERS.items()}
    assert stream.endswith(fmt.TAR_END)
    assert len(stream) == VerifiedFeed(_Release(), set(MEMBERS)).upload_size, "the Content-Length is not the archive's"
    assert not any(tmp_path.iterdir()), "a streamed member was written to staging"


def test_a_payload_longer_than_signed_is_cut_before_the_upload_overruns_its_length(tmp_path):
    """The upload's Content-Length comes from the signed sizes: should the verified stream ever
    grow past it, the upload is cut inside the archive (never an archive the engine reads whole)."""
    grown = {**MEMBERS, "images/a/layer.tar": MEMBERS["images/a/layer.tar"] + b"C" * fmt.BLOCK}
    stream, error = _run(tmp_path, members=grown)
    assert isinstance(error, PayloadMismatch) and "longer than" in str(error)
    assert not stream.endswith(fmt.TAR_END)
    assert _ends_inside_a_member(stream)


def test_a_payload_shorter_than_signed_never_gets_the_archive_end(tmp_path):
    shrunk = {**MEMBERS, "images/manifest.json": b""}
    stream, error = _run(tmp_path, members=shrunk)
    assert isinstance(error, PayloadMismatch) and "promises" in str(error)
    assert _ends_inside_a_member(stream)


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
    feed = VerifiedFeed(_Release(big), set(big), tmp_path)
    check = _gate(big)
    worker = threading.Thread(target=feed.run_gate, args=(lambda on_verified: check(feed, on_verified),))
    worker.start()
    next(iter(feed.tar_stream()))
    feed.cancelled.set()
    worker.join(timeout=5)
    assert not worker.is_alive(), "the gate thread is stuck on a full queue"
