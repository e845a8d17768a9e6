"""Staging verified payload and loading it into Docker: the archive is checked before, the images after.

`docker load` applies whatever RepoTags the archive names and moves existing tags silently, so the
archive's manifest.json is checked against the signed manifest before a byte goes to the engine,
and each image ID and tag is checked again once the engine has loaded them.

A delta's patched layer (`delta.patched`) is rebuilt once its patch member matched its hash: the
base layer is streamed out of this engine (`docker save` of an image holding it, which gives the
layer tar byte for byte) through bundlecore.layerpatch into staging, and only a rebuilt layer
whose sha256 is its signed diff ID is queued for `docker load`.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tarfile
import threading
from pathlib import Path


from bundlecore import format as fmt
from bundlecore import layerpatch
from bundlecore.engine import EngineError
from bundlecore.errors import EnvironmentProblem
from bundlecore.inventory import chain_ids, known_chains
from bundlecore.refusals import DeltaBaseRefused, LoadedImageMismatch, PatchedLayerMismatch, PayloadMismatch
from bundlecore.release import PatchedLayer, Release
from importer.inventory import inspected_images
from importer.steps import crash_hook

# kill -9 points of the streamed load (importer.steps.crash_hook, BUNDLE_CRASH_WHEN=after): half the
# upload sent; the whole verified archive sent, the engine's answer not read yet
CRASH_MIDWAY, CRASH_SENT = "load_midway", "load_sent"
LOAD_CRASH_POINTS = (CRASH_MIDWAY, CRASH_SENT)

SPACE_MARGIN = 64 << 20


def docker_archive_members(release: Release) -> set[str]:
    """What `docker load` needs of the payload: the archive manifest, the configs, the layers
    (a patched layer's patch member, from which it is rebuilt)."""
    patch_of = {p.path: p.patch for p in patched_layers(release).values()}
    return {fmt.DOCKER_ARCHIVE_MANIFEST} | {patch_of.get(p, p) for img in release.images
                                            for p in [img.config, *img.layers]}


def patched_layers(release: Release) -> dict[str, PatchedLayer]:
    """{patch member: its signed `delta.patched` entry}."""
    return {p.patch: p for p in release.delta.patched} if release.delta else {}


def engine_images(client) -> dict[str, list[str]]:
    """{image ID: its diff IDs, bottom first} of every image in the engine."""
    return {attrs["Id"]: attrs["RootFS"].get("Layers") or [] for attrs in inspected_images(client)}


def diff_ids_in_engine(client) -> set[str]:
    return {d for ids in engine_images(client).values() for d in ids}


def layers_in_engine(client, release: Release) -> set[str]:
    """Payload paths of layers the engine already has, with the same chain of diff IDs below them.

    `docker load` skips such a layer without opening its file, so it is verified like every
    member but neither staged nor sent: an upgrade moves only the layers that changed. Only on an
    engine with that skip rule (`Engine.skips_known_layers`); any other gets everything."""
    if not client.skips_known_layers():
        return set()
    chains = known_chains(engine_images(client).values())  # linear in the layers (chain IDs)
    needed, layers = set(), set()
    for img in release.images:
        for path, chain in zip(img.layers, chain_ids(img.diff_ids), strict=False):
            layers.add(path)
            if chain not in chains:
                needed.add(path)
    return layers - needed


def rebuild_layer(client, entry: PatchedLayer, patch: Path, out: Path) -> None:
    """Rebuild the patched layer `entry` (signed) from `patch` and this engine's base layer into
    `out`; refused unless it is exactly the signed size and diff ID.

    One `docker save` of an image holding the base, read as it streams and left as soon as the
    layer is rebuilt: the archive's manifest, which says which tar is which layer, comes last, so
    each file of the base's size is tried in turn (usually the only one) and the first that
    rebuilds the signed diff ID is the base."""
    image = next((image for image, ids in engine_images(client).items() if entry.base_diff_id in ids), None)
    if image is None:
        raise DeltaBaseRefused(f"this engine no longer has the base layer {entry.base_diff_id} of a patched layer")
    with open(patch, "rb") as patch_fh:
        try:
            base_size = layerpatch.read_header(patch_fh).base_size
        except layerpatch.PatchError as e:
            raise PatchedLayerMismatch(f"layer {entry.diff_id} cannot be rebuilt from its patch: {e}") from None
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    outcome = f"no layer of {base_size} bytes in the docker save of {image}"
    with _DockerSave(client, image) as saved, os.fdopen(fd, "wb") as out_fh:
        for member in saved:
            if not member.isfile() or member.size != base_size:
                continue
            out_fh.seek(0)
            out_fh.truncate()
            h = hashlib.sha256()
            with open(patch, "rb") as patch_fh:
                src = saved.extractfile(member)
                assert src is not None  # a regular file
                try:
                    size = layerpatch.decode(src, patch_fh, _Hashing(out_fh, h, entry.size))
                except layerpatch.PatchError as e:
                    outcome = str(e)
                    continue
            if size == entry.size and "sha256:" + h.hexdigest() == entry.diff_id:
                return
            outcome = f"sha256:{h.hexdigest()} ({size} bytes)"
    raise PatchedLayerMismatch(f"layer {entry.diff_id} rebuilt from its patch and base layer "
                               f"{entry.base_diff_id} is not what was signed ({outcome}); nothing loaded")


class _Hashing:
    """A writer that hashes what passes and refuses to grow past the signed size."""

    def __init__(self, fh, h, cap: int):
        self.fh, self.h, self.left = fh, h, cap

    def write(self, data: bytes) -> int:
        self.left -= len(data)
        if self.left < 0:
            raise layerpatch.PatchError("it rebuilds more bytes than the signed size")
        self.h.update(data)
        return self.fh.write(data)


class _DockerSave:
    """`docker save IMAGE` as a tar read forward as it streams (the engine's own output)."""

    def __init__(self, client, image: str):
        try:
            self._resp = client.save([image])
        except EngineError as e:
            raise EnvironmentProblem(f"docker save of {image} failed: {e}") from None

    def __enter__(self) -> tarfile.TarFile:
        self._tar = tarfile.open(fileobj=self._resp.raw, mode="r|")
        return self._tar

    def __exit__(self, *exc) -> None:
        self._tar.close()
        self._resp.close()


class _StreamedMember:
    """A member on its way into the upload while it is hashed: its header and every chunk but
    the last go at once; the last chunk and the padding go only once the member matched its signed
    sum (`release`). So a member that fails its check never reaches the engine whole: the upload
    is cut inside it, and `docker load`, which untars the whole stream before it reads
    manifest.json, fails on the short archive and registers nothing."""

    def __init__(self, feed: VerifiedFeed, member: str, size: int):
        self.feed, self.size = feed, size
        self.held: bytes | None = None
        feed.put(fmt.tar_member_header(member[len(fmt.PAYLOAD_PREFIX):], size, 0))

    def write(self, chunk: bytes) -> None:
        if self.held is not None:
            self.feed.put(self.held)
        self.held = bytes(chunk)

    def close(self) -> None:
        """Called whether or not the member matched: nothing more is sent until `release`."""

    def release(self) -> None:
        self.feed.put((self.held or b"") + b"\0" * fmt.pad(self.size))
        self.held = None


def check_free_space(where: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(where).free
    if free < needed + SPACE_MARGIN:
        raise EnvironmentProblem(
            f"not enough free space in {where} for {what}: need {needed + SPACE_MARGIN} bytes, have {free}")


class VerifiedFeed:
    """The gate's payload sink (`open`, bundlecore.verify.PayloadSink) and the source of the
    `docker load` upload (`tar_stream`), handing the payload from the gate's thread to the upload
    as it is verified.

    Bytes flow through a short queue (a few chunks: memory and scratch disk stay flat whatever
    the bundle's size). A member the engine needs (`keep`) streams while it is hashed, its last
    chunk held back until its sha256 matched (and, for the archive manifest, the docker archive
    rule passed); other members are verified and dropped. Only a patch member is written to disk,
    under the private `staging` directory (never outside it), and the layer rebuilt from it is
    sent from there once its diff ID matched. The archive's end goes only after the whole payload
    verified. On a refusal the upload is cut inside a member, so Docker never receives a complete
    archive holding an unverified byte, and loads nothing."""

    _END = object()
    DEPTH = 8

    def __init__(self, release: Release, keep: set[str], staging: Path | None = None, client=None):
        self.release = release
        self.keep = keep
        self.client = client
        self.patches = {member: p for member, p in patched_layers(release).items() if member in keep}
        if self.patches and staging is None:
            raise ValueError("a patched layer is rebuilt in a staging directory: none given")
        self.staging = staging
        self.queue: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self.streaming: dict[str, _StreamedMember] = {}
        self.error: BaseException | None = None
        self.cancelled = threading.Event()
        self.upload_size = self._upload_size(release.payload_sizes())
        self._crash_at = self.upload_size // 2  # the kill -9 tests' midway

    def _upload_size(self, sizes: dict[str, int]) -> int:
        """The exact byte count of the verified archive (what the signed manifest says `keep`
        streams: a patch member as the layer it rebuilds), sent as the upload's Content-Length."""
        total = len(fmt.TAR_END)
        for member in self.keep:
            name, size = (self.patches[member].path, self.patches[member].size) if member in self.patches \
                else (member, sizes[member])
            total += fmt.tar_member_size(name[len(fmt.PAYLOAD_PREFIX):], size)
        return total

    def staged(self, member: str) -> Path:
        assert self.staging is not None  # only patch members and their layers are staged
        return self.staging / member

    def open(self, member: str, size: int):
        """Where the gate writes `member` while it hashes it: the upload, a staging file, or nowhere."""
        if member not in self.keep:
            return None
        if member not in self.patches:
            self.streaming[member] = streamed = _StreamedMember(self, member, size)
            return streamed
        target = self.staged(member)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        return os.fdopen(fd, "wb")

    def put(self, item) -> None:
        """Queue `item` for the upload; gives up (raising _Cancelled) once the upload has ended."""
        while True:
            if self.cancelled.is_set():
                raise _Cancelled()
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def member_verified(self, member: str) -> None:
        if member not in self.keep:
            return
        if member in self.streaming:
            self.streaming.pop(member).release()
            return
        if member in self.patches:  # the layer it rebuilds goes to docker load instead
            entry = self.patches[member]
            rebuild_layer(self.client, entry, self.staged(member), self.staged(entry.path))
            self.staged(member).unlink()
            self._send_file(entry.path)

    def _send_file(self, member: str) -> None:
        path = self.staged(member)
        size = path.stat().st_size
        self.put(fmt.tar_member_header(member[len(fmt.PAYLOAD_PREFIX):], size, 0))
        with open(path, "rb") as f:
            while chunk := f.read(fmt.CHUNK):
                self.put(chunk)
        self.put(b"\0" * fmt.pad(size))
        path.unlink()

    def run_gate(self, gate_payload_check) -> None:
        """Thread body: run the payload check; its end (or its refusal) closes the feed."""
        try:
            self.sha256 = gate_payload_check(self.member_verified)
        except _Cancelled:
            pass
        except BaseException as e:  # handed to the loading side, which re-raises it
            self.error = e
        finally:
            try:
                self.put(self._END)
            except _Cancelled:
                pass

    def upload(self) -> "_Upload":
        """`tar_stream` with its exact length: sent with a Content-Length instead of chunked
        (the engine reads it faster, and a cut upload is as short either way)."""
        return _Upload(self.tar_stream(), self.upload_size)

    def tar_stream(self):
        """The docker archive as a tar stream (paths without images/); raises, cutting the
        upload, if the gate refused; the end-of-archive blocks only after everything verified,
        and only when the archive is exactly `upload_size` long."""
        sent, members_end = 0, self.upload_size - len(fmt.TAR_END)
        while (item := self.queue.get()) is not self._END:
            if sent + len(item) > members_end:
                self.cancelled.set()
                yield from self._cut(item, f"the verified payload is longer than the {members_end} bytes its signed "
                                           f"manifest promises")
            yield item
            if sent < self._crash_at <= sent + len(item):
                crash_hook(CRASH_MIDWAY, "after")  # kill -9 tests: the engine holds half the upload
            sent += len(item)
        if self.error is not None:
            # The archive must end inside a member, whatever the HTTP framing: it already does when
            # a member's held-back tail was never sent; otherwise a member is promised and not sent.
            if not any(m.held for m in self.streaming.values()):
                yield fmt.tar_member_header("refused", fmt.BLOCK, 0)
            raise self.error
        if sent != members_end:
            yield from self._cut(b"\0", f"the verified payload is {sent} bytes, its signed manifest promises {members_end}")
        yield fmt.TAR_END
        crash_hook(CRASH_SENT, "after")  # kill -9 tests: the engine holds the whole verified archive

    @staticmethod
    def _cut(item: bytes, why: str):
        """End the upload inside a tar block (one byte of `item`: no reader takes a partial block
        for an archive's end) and refuse."""
        yield item[:1]
        raise PayloadMismatch(f"{why}; nothing loaded")


class _Upload:
    """An iterable body of known length: the HTTP client sends it with a Content-Length."""

    def __init__(self, chunks, size: int):
        self.chunks, self.size = chunks, size

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return self.size


class _Cancelled(Exception):
    """The upload ended (the engine failed or the load was interrupted): the gate stops feeding."""


def stage_and_load(client, feed: VerifiedFeed, gate_payload_check) -> tuple[str, dict[str, str]]:
    """Verify the payload (in a thread) while it streams into `docker load`.

    Returns (sha256 of the bundle file, {ref: image ID}); raises the gate's refusal if any."""
    worker = threading.Thread(target=feed.run_gate, args=(gate_payload_check,), name="payload-gate", daemon=True)
    worker.start()
    try:
        images = _docker_load(client, feed.upload(), feed.release)
    except BaseException:
        feed.cancelled.set()  # the gate thread stops at its next queued chunk
        worker.join()
        if feed.error is not None:
            raise feed.error from None
        raise
    worker.join()
    return feed.sha256, images


def _docker_load(client, stream, release: Release) -> dict[str, str]:
    """`docker load` of `stream`; returns {ref: image ID} after checking IDs and tags."""
    try:
        events = client.load(stream)
        loaded = []
        for event in events:
            if "error" in event:
                raise EnvironmentProblem(f"docker load failed: {event['error']}")
            text = event.get("stream", "").strip()
            if text.startswith("Loaded image: "):
                loaded.append(text[len("Loaded image: "):])
            elif text.startswith("Loaded image ID: "):
                loaded.append(text[len("Loaded image ID: "):])
    except EngineError as e:
        raise EnvironmentProblem(f"docker load failed: {getattr(e, 'explanation', None) or e}") from None
    signed = {img.ref: img.id for img in release.images}
    for name in loaded:
        if name in signed.values():
            continue
        # the engine's name for it (Podman: `localhost/demo/app:1.0.0`) and the image it names, by ID
        ref = client.signed_ref_of(name, signed)
        if ref is None:
            raise LoadedImageMismatch(f"docker load set {name}, which was not signed")
        got = (client.image(name) or {}).get("Id")
        if got != signed[ref]:
            raise LoadedImageMismatch(f"docker load set {name} to {got}, the signed ID of {ref} is {signed[ref]}")
    for ref, image_id in signed.items():
        got = (client.image(ref) or {}).get("Id")
        if got is None:
            raise LoadedImageMismatch(f"{ref} is not in the engine after loading")
        if got != image_id:
            raise LoadedImageMismatch(f"{ref} is {got} in the engine, the signed ID is {image_id}")
    return signed
