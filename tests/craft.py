"""A toolkit to craft bundle variants that break exactly one rule of the trust gate.

One real bundle is built per session (`bundle build --local` of a tiny app image, signed by the
session's builder key) and read back: head members and every payload file. The app image is then
removed from the engine, as on an intranet machine that has never seen it, so an import that
wrongly loaded anything would show up as a new image.

A `Variant` starts as an exact copy of that bundle and re-packs it with bundlecore.format's writer
pieces (tar_member, compress_head, format_sha256sums, dumps_canonical) after a test changed one
thing. Changing the manifest or the payload files and leaving `sums`/`signatures` alone recomputes
SHA256SUMS and re-signs it with `signers`, so the signature is good and only the changed rule can
fail; setting `sums`, `signatures`, `head_members`, the tar end, trailing bytes or frames takes
them as given. Byte-level damage (flips, truncation, appended bytes) is done on a written file with
`damaged()`.

Also here: `run_bundle` (the real CLI in a subprocess, with its peak memory) and snapshots of the
engine and of a state directory, to prove that a refusal changed nothing.

Used as a pytest plugin (`pytest_plugins = ["tests.keys", "tests.craft"]`) for the session
fixtures `base_bundle` and `installed_app`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import zstandard

from bundlecore import format as fmt
from tests.support import CliResult, run_bundle

IMAGE_REPO = "bundle-gate-test/app"


# ---------------------------------------------------------------------------------------------
# running the CLI
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# tar members and frames
# ---------------------------------------------------------------------------------------------

def raw_tar_header(name: str | bytes, size: int, typeflag: bytes = b"0", linkname: str = "", mtime: int = 0,
                   mode: int = 0o644, magic: bytes = b"ustar\x0000", prefix: bytes = b"",
                   devmajor: int = 0, devminor: int = 0, checksum_delta: int = 0) -> bytes:
    """A ustar header block with whatever fields a test wants (links, devices, odd names...)."""
    raw = name if isinstance(name, bytes) else name.encode()
    hdr = bytearray(fmt.BLOCK)
    hdr[0:len(raw)] = raw
    hdr[100:108] = b"%07o\0" % mode
    hdr[108:116] = b"%07o\0" % 0
    hdr[116:124] = b"%07o\0" % 0
    hdr[124:136] = b"%011o\0" % size
    hdr[136:148] = b"%011o\0" % mtime
    hdr[148:156] = b" " * 8
    hdr[156:157] = typeflag
    link = linkname.encode()
    hdr[157:157 + len(link)] = link
    hdr[257:265] = magic
    hdr[329:337] = b"%07o\0" % devmajor
    hdr[337:345] = b"%07o\0" % devminor
    hdr[345:345 + len(prefix)] = prefix
    hdr[148:156] = b"%06o\0 " % (sum(hdr) + checksum_delta)
    return bytes(hdr)


@dataclass
class Member:
    """One tar member. Regular files go through fmt.tar_member (the writer's own code)."""

    name: str
    data: bytes = b""
    typeflag: bytes = b"0"
    linkname: str = ""

    @property
    def regular(self) -> bool:
        return self.typeflag == b"0" and not self.linkname

    def tar(self, mtime: int) -> bytes:
        if self.regular and len(self.name.encode()) <= 100:
            return fmt.tar_member(self.name, self.data, mtime)
        return (raw_tar_header(self.name, len(self.data), self.typeflag, self.linkname, mtime)
                + self.data + b"\0" * (-len(self.data) % fmt.BLOCK))


def zstd_frame(data: bytes, *, level: int = 3, zeros_after: int = 0, content_size: bool = True) -> bytes:
    """One zstd frame (with checksum) of `data`, then `zeros_after` zero bytes, streamed in."""
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=content_size)
    if not zeros_after:
        return cctx.compress(data)
    obj = cctx.compressobj(size=len(data) + zeros_after if content_size else -1)
    parts = [obj.compress(data)]
    chunk = b"\0" * (16 << 20)
    left = zeros_after
    while left:
        n = min(left, len(chunk))
        parts.append(obj.compress(chunk[:n]))
        left -= n
    parts.append(obj.flush())
    return b"".join(parts)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# the base bundle and its variants
# ---------------------------------------------------------------------------------------------

@dataclass
class BaseBundle:
    """The session's real bundle, read back; `variant()` makes a modifiable copy of it."""

    path: Path
    head: fmt.Head
    manifest: dict
    members: list[Member]
    signer: object              # tests.keys.Key
    keys_dir: Path              # a trust store holding only the builder's key
    token: str

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def target_name(self) -> str:
        return self.manifest["target"]["name"]

    @property
    def image(self) -> dict:
        return self.manifest["images"][0]

    def variant(self) -> "Variant":
        return Variant(self)


class Variant:
    """A copy of the base bundle; change what the test is about, then `write(path)`."""

    def __init__(self, base: BaseBundle):
        self.base = base
        self.manifest: dict = copy.deepcopy(base.manifest)
        self.manifest_bytes: bytes | None = None      # raw manifest.json instead of dumps_canonical(manifest)
        self.members: list[Member] = [Member(m.name, m.data) for m in base.members]
        self.sums: bytes | None = None                # raw SHA256SUMS instead of the computed one
        self.signatures: bytes | None = None          # raw SHA256SUMS.asc instead of signing
        self.signers: list = [base.signer]
        self.head_members: list[Member] | None = None  # raw head tar members instead of the three
        self.head_frame: bytes | None = None           # raw first frame instead of compressing the head
        self.tar_end: bytes = fmt.TAR_END
        self.zeros_after_end = 0                       # zero bytes after the tar end, in the payload frame
        self.between = b""                             # raw bytes between the head frame and the payload
        self.appended = b""                            # raw bytes after the last frame
        self.mtime = base.head.mtime

    # -- the pieces, computed unless given ----------------------------------------------
    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def relist(self) -> "Variant":
        """Make manifest.payload list the current regular images/ members (after changing files)."""
        self.manifest["payload"] = [{"path": m.name, "size": len(m.data), "sha256": sha256(m.data)}
                                    for m in self.members if m.regular and m.name.startswith(fmt.PAYLOAD_PREFIX)]
        return self

    def final_manifest(self) -> bytes:
        return self.manifest_bytes if self.manifest_bytes is not None else fmt.dumps_canonical(self.manifest)

    def final_sums(self) -> bytes:
        if self.sums is not None:
            return self.sums
        return fmt.format_sha256sums([(fmt.MANIFEST, sha256(self.final_manifest()))]
                                     + [(p["path"], p["sha256"]) for p in self.manifest["payload"]])

    def final_signatures(self) -> bytes:
        if self.signatures is not None:
            return self.signatures
        sums = self.final_sums()
        return b"".join(k.sign(sums) for k in self.signers)

    def default_head_members(self) -> list[Member]:
        return [Member(fmt.MANIFEST, self.final_manifest()), Member(fmt.SUMS, self.final_sums()),
                Member(fmt.SIGNATURES, self.final_signatures())]

    def head(self) -> bytes:
        if self.head_frame is not None:
            return self.head_frame
        if self.head_members is None:
            return fmt.compress_head(self.final_manifest(), self.final_sums(), self.final_signatures(), self.mtime)
        return zstd_frame(b"".join(m.tar(self.mtime) for m in self.head_members), level=19)

    def payload(self) -> bytes:
        tar = b"".join(m.tar(self.mtime) for m in self.members) + self.tar_end
        return zstd_frame(tar, zeros_after=self.zeros_after_end)

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.write_bytes(self.head() + self.between + self.payload() + self.appended)
        return path


def damaged(src: Path, dst: Path, *, flip_at: int | None = None, truncate_to: int | None = None,
            append: bytes = b"", overwrite: tuple[int, bytes] | None = None) -> Path:
    """A copy of `src` with one byte inverted, cut short, overwritten or extended."""
    data = bytearray(Path(src).read_bytes())
    if flip_at is not None:
        data[flip_at] ^= 0xFF
    if overwrite is not None:
        at, raw = overwrite
        data[at:at + len(raw)] = raw
    if truncate_to is not None:
        del data[truncate_to:]
    data += append
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def resign(src: Path, dst: Path, signatures: bytes) -> Path:
    """`src` with a new SHA256SUMS.asc, through the product's own rewrite_head (as `bundle approve`)."""
    fmt.rewrite_head(Path(src), Path(dst), fmt.read_head(Path(src)), signatures)
    return Path(dst)


# ---------------------------------------------------------------------------------------------
# snapshots: proving that nothing changed
# ---------------------------------------------------------------------------------------------

@dataclass
class EngineSnapshot:
    image_ids: set[str]
    tags: dict[str, str]                        # repo tag -> image ID
    containers: dict[str, tuple]                # name -> (id, image, running, started_at)

    @classmethod
    def take(cls, client, name_prefix: str) -> "EngineSnapshot":
        # one API call (docker-py's images.list() inspects each image afterwards, which races with
        # anything else removing images on the same engine)
        images = client.api.images(all=True)
        tags = {t: i["Id"] for i in images for t in (i.get("RepoTags") or []) if t != "<none>:<none>"}
        containers = {}
        for c in client.containers.list(all=True, sparse=True):
            name = (c.attrs.get("Names") or ["/"])[0].lstrip("/")
            if name.startswith(name_prefix):
                info = client.api.inspect_container(c.id)
                containers[name] = (info["Id"], info["Image"], info["State"]["Running"], info["State"]["StartedAt"])
        return cls({i["Id"] for i in images}, tags, containers)


def snapshot_dir(root: Path) -> dict[str, bytes | None]:
    """Every file (relative path -> content) and directory (-> None) under `root`."""
    root = Path(root)
    if not root.exists():
        return {}
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = None if p.is_dir() else p.read_bytes()
    return out


@contextlib.contextmanager
def imported_for_real(gate, bundle: Path, container: str, *extra: str, keys_dir: Path | None = None):
    """`bundle import --yes` of a variant of the base bundle into its own container (asserted to
    succeed); its containers (parked generations too) and the base image are removed afterwards."""
    try:
        r = gate.import_(bundle, *extra, keys_dir=keys_dir)
        assert r.code == 0, str(r)
        yield r
    finally:
        for c in gate.client.containers.list(all=True, filters={"name": container}):
            c.remove(force=True)
        _remove_image(gate.client, gate.base.image["id"])


# ---------------------------------------------------------------------------------------------
# session fixtures
# ---------------------------------------------------------------------------------------------

SPEC = """\
name = "{name}"
version = "2.0.0"
sequence = 5
expires = "30d"
images = ["{ref}"]

[target]
kind = "container"
name = "{name}"
image = "{ref}"

[target.run]
env = {{ GREETING = "hello from the gate tests" }}
restart = "no"
"""


def _read_members(path: Path, head: fmt.Head, manifest: dict) -> list[Member]:
    reader = fmt.PayloadReader(path, head, [(p["path"], p["size"]) for p in manifest["payload"]])
    return [Member(name, b"".join(chunks)) for name, _size, chunks in reader.members()]


def _remove_image(client, ref: str) -> None:
    try:
        client.images.remove(ref, force=True)
    except docker.errors.APIError:
        pass


@pytest.fixture(scope="session")
def base_bundle(docker_client, pgp_keys, tmp_path_factory) -> BaseBundle:
    """The session's real bundle (sequence 5, expires in 30 days), signed by pgp_keys.builder; its
    image is NOT in the engine afterwards."""
    from tests.support import build_app_image
    from tests.keys import trust_store

    token = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("base-bundle")
    ref = f"{IMAGE_REPO}:2.0.0-{token}"
    # the label makes the image unique to this session (the build cache would otherwise hand
    # back an image other tests may hold, and removing our tag would not remove it)
    image_id = build_app_image(docker_client, ref, "2.0.0", dockerfile_extra=f"LABEL bundle.gate-test={token}")
    spec = root / "bundle.toml"
    spec.write_text(SPEC.format(name=f"gatetest-{token}", ref=ref))
    out = root / "base.bundle"
    try:
        r = run_bundle("build", spec, "-o", out, "--sign-key", pgp_keys.builder.fpr, "--gnupghome", pgp_keys.builder.home,
                       "--local")
        assert r.code == 0, str(r)
    finally:
        _remove_image(docker_client, ref)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)
    head = fmt.read_head(out)
    manifest = json.loads(head.manifest)
    assert manifest["images"][0]["id"] == image_id
    base = BaseBundle(out, head, manifest, _read_members(out, head, manifest), pgp_keys.builder,
                      trust_store(root / "keys", [pgp_keys.builder]), token)
    yield base
    _remove_image(docker_client, image_id)  # only there if an import wrongly loaded it


@dataclass
class InstalledApp:
    """The 'previous version' of the base bundle's app, running under the target's name."""

    container_id: str
    image_id: str
    ref: str
    name: str


@pytest.fixture(scope="session")
def installed_app(docker_client, base_bundle) -> InstalledApp:
    from tests.support import build_app_image

    ref = f"{IMAGE_REPO}:1.0.0-{base_bundle.token}"
    image_id = build_app_image(docker_client, ref, "1.0.0",
                               dockerfile_extra=f"LABEL bundle.gate-test={base_bundle.token}-installed")
    name = base_bundle.target_name
    c = docker_client.containers.run(ref, name=name, detach=True, environment={"GREETING": "old"})
    try:
        deadline = time.monotonic() + 20
        while True:
            c.reload()
            if c.status == "running":
                break
            assert time.monotonic() < deadline, f"the installed app did not start: {c.status}"
            time.sleep(0.2)
        yield InstalledApp(c.id, image_id, ref, name)
    finally:
        for cont in docker_client.containers.list(all=True, filters={"name": name}):
            cont.remove(force=True)
        _remove_image(docker_client, ref)


__all__ = ["CliResult", "run_bundle", "raw_tar_header", "Member", "zstd_frame", "sha256", "BaseBundle",
           "Variant", "damaged", "resign", "EngineSnapshot", "snapshot_dir", "InstalledApp", "base_bundle",
           "installed_app"]
