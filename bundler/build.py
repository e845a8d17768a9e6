"""`bundle build`: pinned images -> one signed zstd bundle, in one streaming pass over `docker save`.

The docker save stream (asked for as early as possible: the engine exports every layer before
its first byte) is read as tar and each file goes straight through sha256 and zstd into the
output's temp file, behind room left for the head; the head (manifest, SHA256SUMS, signature) is
made afterwards and put right in front of the payload without copying it (`fmt.place_head`)
while the whole file is hashed for OUT.sha256. Nothing lands under the final name until it is
complete.

Delta (`--since OLD` / `--have INVENTORY`): a layer is left out when its whole chain (its diff ID
and every diff ID below it) is one the base carried or the engine holds -- `docker load` skips a
layer only by chain ID, so a layer equal by diff ID on a different parent is still carried. The
file names of layers in `docker save` do not say their diff ID and its manifest comes last, so in
a delta build each layer is spooled (hashed) to a temp file in the output directory first and
added after the manifest was read, unless it is left out. OLD is read, not verified: a forged
OLD can only make a delta that the importer refuses (its gate checks the omitted layers).
With `--split SIZE` the finished file is cut into OUT.part001, ... (the head frame in the first).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from bundlecore import __version__, layerpatch
from bundlecore import format as fmt
from bundlecore.engine import EngineError, EngineNotFound, connect, image_platform
from bundlecore.errors import EnvironmentProblem, UsageProblem
from bundlecore.fsutil import TooLarge, create_fresh, read_capped, temp_name
from bundlecore.gpg import gpg_for, sign_detached, signing_key
from bundlecore.inventory import MAX_INVENTORY, chain_ids, known_chains, parse_inventory
from bundlecore.platforms import platforms_match
from bundlecore.progress import Progress, PullProgress
from bundlecore.schema import first_error
from bundlecore.timeutil import format_ts, plus, utc_now
from bundler.dockersave import DockerSaveReader
from bundler.spec import BuildSpec, load_spec, split_ref

MAX_DOCKER_MANIFEST = 4 << 20
PATCH_DIR = fmt.PAYLOAD_PREFIX + "patches/"


@dataclass
class BuildResult:
    path: Path
    size: int
    sha256: str
    images: list[dict]
    duration: float
    parts: list[Path] = field(default_factory=list)
    delta: dict | None = None

    def summary(self) -> dict:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256,
                "images": [{"ref": i["ref"], "id": i["id"]} for i in self.images],
                "duration": round(self.duration, 3), "parts": [str(p) for p in self.parts],
                "delta": self.delta}


@dataclass(frozen=True)
class BaseLayer:
    """A layer the base bundle carried: what a changed layer may be patched against."""

    path: str        # its payload path in the base bundle
    diff_id: str
    size: int
    repo: str        # the image (ref without its tag) that used it, and where
    position: int


@dataclass
class DeltaBase:
    """What a delta may leave out: the layer chains (chain IDs: bundlecore.inventory.chain_ids) the
    base carried or the engine holds, and how the signed manifest names that base. With `source` (the
    base bundle, for `--since` without `--no-patch`), the layers it carried, which changed layers
    may be patched against; `patched` is filled by the build with the manifest's entries."""

    base: dict
    chains: set[str]
    source: Path | None = None
    layers: list[BaseLayer] = field(default_factory=list)
    patched: list[dict] = field(default_factory=list)

    @classmethod
    def from_bundle(cls, path: Path, name: str, patch: bool = True) -> "DeltaBase":
        if not fmt.BundleFiles.exists(path):
            raise UsageProblem(f"base bundle {path} not found")
        try:
            files = fmt.BundleFiles.of(path)
            manifest = fmt.loads_strict_json(fmt.read_head(path).manifest, "the base bundle's manifest.json")
            h = hashlib.sha256()
            with files.open() as f:
                while chunk := f.read(4 * fmt.CHUNK):
                    h.update(chunk)
            base = {"kind": "bundle", "sha256": h.hexdigest(), "name": manifest["name"],
                    "version": manifest["version"], "sequence": manifest["sequence"]}
            chains = known_chains(img["diff_ids"] for img in manifest["images"])
            layers = _carried_layers(manifest) if patch else []
        except (fmt.FormatError, KeyError, TypeError, ValueError) as e:  # ValueError: layers and diff IDs differ in number
            raise UsageProblem(f"cannot read the base bundle {path}: {e}") from None
        if base["name"] != name:
            raise UsageProblem(f"the base bundle {path} is {base['name']}, not a release of {name}")
        return cls(base, chains, Path(path) if patch else None, layers)

    @classmethod
    def from_inventory(cls, path: Path) -> "DeltaBase":
        try:
            raw = read_capped(path, MAX_INVENTORY)  # the cap holds while reading, not after
        except TooLarge:
            raise UsageProblem(f"{path} is not a `bundle inventory --json` file: it is over its cap of "
                               f"{MAX_INVENTORY} bytes") from None
        except OSError as e:
            raise UsageProblem(f"cannot read the inventory {path}: {e.strerror or e}") from None
        try:
            inventory = parse_inventory(raw)
        except fmt.FormatError as e:
            raise UsageProblem(f"{path} is not a `bundle inventory --json` file: {e}") from None
        base = {"kind": "inventory", "sha256": hashlib.sha256(raw).hexdigest(), "name": inventory["host"]}
        return cls(base, known_chains(img["diff_ids"] for img in inventory["images"]))


def _carried_layers(manifest: dict) -> list[BaseLayer]:
    sizes = {p["path"]: p["size"] for p in manifest["payload"]}
    return [BaseLayer(path, diff, sizes[path], split_ref(img["ref"])[0], k)
            for img in manifest["images"]
            for k, (path, diff) in enumerate(zip(img["layers"], img["diff_ids"], strict=True)) if path in sizes]


def omitted_layers(images: list[dict], chains: set[str]) -> dict[str, str]:
    """{layer payload path: diff ID} of the layers every image using them has in `chains` (chain IDs)."""
    keep, maybe = set(), {}
    for img in images:
        for path, diff, chain in zip(img["layers"], img["diff_ids"], chain_ids(img["diff_ids"]), strict=True):
            if chain in chains:
                maybe[path] = diff
            else:
                keep.add(path)
    return {p: d for p, d in maybe.items() if p not in keep}


def choose_base(repo: str, position: int, size: int, layers: list[BaseLayer]) -> BaseLayer | None:
    """The base layer a changed layer most likely resembles: the one at the same position in the
    same image; else the one closest in size (a cheap measure that holds for the usual case, an
    app layer rebuilt with a few files changed keeps about its size)."""
    same = next((b for b in layers if b.repo == repo and b.position == position), None)
    if same is not None or not layers:
        return same
    return min(layers, key=lambda b: (abs(b.size - size) / max(b.size, size, 1), b.path))


def resolve_images(client, spec: BuildSpec, platform: str, local: bool) -> tuple[list[dict], int]:
    """Pull (or find locally) every image for `platform`; returns what the manifest records of
    each, and their total size (for the progress display)."""
    records, total = [], 0
    for ref in spec.images:
        if local:
            image = client.image(ref)
            if image is None:
                raise UsageProblem(f"image {ref} is not in the local engine (drop --local to pull it)") from None
        else:
            repo, tag = split_ref(ref)
            try:
                image = _pull(client, ref, repo, tag, platform)
            except EngineNotFound:
                raise UsageProblem(f"image {ref} not found in its registry") from None
            except EngineError as e:
                raise EnvironmentProblem(f"cannot pull {ref}: {getattr(e, 'explanation', None) or e}") from None
        got = image_platform(image)
        if not platforms_match(got, platform):
            raise UsageProblem(f"image {ref} is {got}, not {platform}")
        repo_name = split_ref(ref)[0]
        digests = [d for d in image.get("RepoDigests") or [] if d.split("@")[0] == repo_name]
        records.append({
            "ref": ref,
            "platform": got,
            "repo_digest": digests[0] if digests else None,
            "id": image["Id"],
            "diff_ids": list(image["RootFS"].get("Layers") or []),
        })
        total += image.get("Size", 0)
    return records, total


def _pull(client, ref: str, repo: str, tag: str | None, platform: str):
    """`docker pull` with its progress shown (bundlecore.progress.PullProgress)."""
    shown = PullProgress(ref)
    for ev in client.pull(repo, tag, platform):
        shown.event(ev)
    shown.close()
    return client.inspect_image(f"{repo}@{tag}" if tag and tag.startswith("sha256:") else f"{repo}:{tag or 'latest'}")


def _save_stream(client, refs: list[str]):
    """The raw `docker save` tar stream of all refs at once (so shared layers come once)."""
    try:
        return client.save(refs)
    except EngineError as e:
        raise EnvironmentProblem(f"docker save failed: {e}") from None


class SaveRequest:
    """`docker save` asked for as soon as the refs are known. The engine exports every layer to its
    own temp dir before it sends the first byte (about 1 s per 300 MB), so for a local build the
    request goes out on a thread while this side resolves and checks the images; `response()`
    waits for it. The saved layers are still checked against what the engine reported."""

    def __init__(self, client, refs: list[str]):
        self._result = None
        self._used = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(client, sorted(set(refs))),
                                        name="docker-save-request", daemon=True)
        self._thread.start()

    def _run(self, client, refs: list[str]) -> None:
        try:
            result = _save_stream(client, refs)
        except BaseException as e:  # handed to response()
            result = e
        with self._lock:
            self._result = result
            if self._used and not isinstance(result, BaseException):
                result.close()  # abandoned: the build stopped before reading it

    def response(self):
        self._thread.join()
        with self._lock:
            self._used = True
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result

    def abandon(self) -> None:
        """The build stopped first: close the response now or when it arrives."""
        with self._lock:
            if self._used:
                return
            self._used = True
            if self._result is not None and not isinstance(self._result, BaseException):
                self._result.close()


@dataclass
class _Spooled:
    """A layer held back in a delta build until the docker save manifest says which it is."""

    file: IO[bytes]
    size: int
    sha256: str


def _spool(spool_dir: Path | None, size: int, chunks) -> _Spooled:
    f = tempfile.TemporaryFile(dir=spool_dir)
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
        f.write(chunk)
    return _Spooled(f, size, h.hexdigest())


def _spooled_chunks(f):
    f.seek(0)
    while chunk := f.read(fmt.CHUNK):
        yield chunk


def make_patches(delta: DeltaBase, images: list[dict], spooled: dict[str, _Spooled], omitted: dict[str, str],
                 spool_dir: Path | None) -> dict[str, _Spooled]:
    """{layer path: its patch} for each carried layer whose patch against its base layer (bundlecore.
    layerpatch) is smaller than the layer compressed normally; their manifest entries go to
    `delta.patched`. The base layers are streamed out of the base bundle's payload."""
    assert delta.source is not None  # patches are made against a base bundle only
    delta.patched = []
    chosen: dict[str, tuple[str, BaseLayer]] = {}
    for img in images:
        repo = split_ref(img["ref"])[0]
        for k, (path, diff) in enumerate(zip(img["layers"], img["diff_ids"], strict=True)):
            if path in spooled and path not in omitted and path not in chosen:
                base = choose_base(repo, k, spooled[path].size, delta.layers)
                if base is not None:
                    chosen[path] = (diff, base)
    bases = _spool_base_layers(delta.source, {b.path: b for _, b in chosen.values()}, spool_dir)
    patches: dict[str, _Spooled] = {}
    for path, (diff, base) in chosen.items():
        member = f"{PATCH_DIR}{diff.removeprefix('sha256:')}.patch"
        if base.path not in bases or any(p["patch"] == member for p in delta.patched):
            continue  # not in the base bundle as its diff ID says, or this diff ID patched already
        patch = _encode_patch(bases[base.path], spooled[path], spool_dir)
        if _compresses_below(spooled[path].file, patch.size):
            patch.file.close()
            continue
        patches[path] = patch
        delta.patched.append({"path": path, "diff_id": diff, "size": spooled[path].size,
                              "base_diff_id": base.diff_id, "patch": member, "patch_sha256": patch.sha256})
    for held in bases.values():
        held.file.close()
    return patches


def _spool_base_layers(source: Path, wanted: dict[str, BaseLayer], spool_dir: Path | None) -> dict[str, _Spooled]:
    """The `wanted` layers of the base bundle, spooled from its payload stream; one whose bytes are
    not its diff ID is left out (the base bundle is read, not verified)."""
    got: dict[str, _Spooled] = {}
    if not wanted:
        return got
    try:
        head = fmt.read_head(source)
        manifest = fmt.loads_strict_json(head.manifest, "the base bundle's manifest.json")
        members = fmt.PayloadReader(source, head, [(p["path"], p["size"]) for p in manifest["payload"]]).members()
        left = len(wanted)
        for path, size, chunks in members:
            if path not in wanted:
                for _ in chunks:
                    pass
                continue
            held = _spool(spool_dir, size, chunks)
            if "sha256:" + held.sha256 == wanted[path].diff_id:
                got[path] = held
            else:
                held.file.close()
            left -= 1
            if not left:
                break
        members.close()
    except (fmt.FormatError, KeyError, TypeError) as e:
        raise UsageProblem(f"cannot read the base bundle {source}: {e}") from None
    return got


def _encode_patch(base: _Spooled, new: _Spooled, spool_dir: Path | None) -> _Spooled:
    f = tempfile.TemporaryFile(dir=spool_dir)
    base.file.seek(0)
    new.file.seek(0)
    size = layerpatch.encode(base.file, base.size, new.file, new.size, f)
    h = hashlib.sha256()
    for chunk in _spooled_chunks(f):
        h.update(chunk)
    return _Spooled(f, size, h.hexdigest())


def _compresses_below(f, limit: int) -> bool:
    """Does the layer compress, as the payload would, to at most `limit` bytes? Stops once it cannot."""
    cobj = zstandard.ZstdCompressor(level=fmt.COMPRESSION_LEVEL).compressobj()
    out = 0
    for chunk in _spooled_chunks(f):
        out += len(cobj.compress(chunk))
        if out > limit:
            return False
    return out + len(cobj.flush()) <= limit


def write_payload(client, images: list[dict], payload_fh, mtime: int, progress,
                  delta: DeltaBase | None = None, spool_dir: Path | None = None,
                  save: SaveRequest | None = None) -> tuple[list[fmt.PayloadFile], dict[str, str]]:
    """Stream `docker save` (`save`, if already asked for) into the payload; fills each image's
    config/layers payload paths. Returns the payload files and, for a delta, the layers left out
    ({path: diff ID})."""
    writer = fmt.PayloadWriter(payload_fh, mtime)
    docker_manifest = None
    links: dict[str, str] = {}
    spooled: dict[str, _Spooled] = {}
    resp = (save or SaveRequest(client, [i["ref"] for i in images])).response()
    reader = DockerSaveReader(resp.raw)
    for member in reader.members():
        name = os.path.normpath(member.name).lstrip("/")
        if member.kind == "symlink":
            links[name] = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
        elif member.kind == "hardlink":
            links[name] = os.path.normpath(member.linkname)
        elif member.kind != "file":
            continue
        elif name == "manifest.json":
            if member.size > MAX_DOCKER_MANIFEST:
                raise EnvironmentProblem("docker save wrote an oversized manifest.json")
            docker_manifest = fmt.loads_strict_json(b"".join(reader.chunks(member)), "docker save manifest.json")
        elif delta is not None and name.endswith("/layer.tar"):
            spooled[fmt.PAYLOAD_PREFIX + name] = _spool(spool_dir, member.size, reader.chunks(member))
        elif name != "repositories":
            writer.add(fmt.PAYLOAD_PREFIX + name, member.size, reader.chunks(member), progress)
    resp.close()
    if docker_manifest is None:
        raise EnvironmentProblem("docker save wrote no manifest.json")
    by_path = {f.path: f for f in writer.files} | spooled
    entries: dict[str, dict] = {}   # one archive entry per image (config), carrying each signed ref
    for img in images:
        entry = next((e for e in docker_manifest if img["ref"] in (e.get("RepoTags") or [])
                      or _config_id(e, links, by_path) == img["id"]), None)
        if entry is None:
            raise EnvironmentProblem(f"docker save did not include {img['ref']}")
        config = fmt.PAYLOAD_PREFIX + _resolve(entry["Config"], links)
        layers = [fmt.PAYLOAD_PREFIX + _resolve(p, links) for p in entry["Layers"]]
        if "sha256:" + by_path[config].sha256 != img["id"]:
            raise EnvironmentProblem(f"docker save gave a config for {img['ref']} whose digest is not its image ID")
        if ["sha256:" + by_path[p].sha256 for p in layers] != img["diff_ids"]:
            raise EnvironmentProblem(f"docker save gave layers for {img['ref']} that do not match its diff IDs")
        img["config"], img["layers"] = config, layers
        entry = entries.setdefault(config, {"Config": config[len(fmt.PAYLOAD_PREFIX):], "RepoTags": [],
                                            "Layers": [p[len(fmt.PAYLOAD_PREFIX):] for p in layers]})
        entry["RepoTags"].append(img["ref"])
    omitted = omitted_layers(images, delta.chains) if delta is not None else {}
    patches = make_patches(delta, images, spooled, omitted, spool_dir) if delta is not None and delta.source else {}
    for path, held in spooled.items():
        if delta is not None and path in patches:
            _add_patch(writer, delta, path, patches[path], progress)
        elif path not in omitted:
            writer.add(path, held.size, _spooled_chunks(held.file), progress)
        held.file.close()
    writer.add_bytes(fmt.DOCKER_ARCHIVE_MANIFEST, fmt.dumps_canonical(list(entries.values())))
    writer.close()
    return writer.files, omitted


def _add_patch(writer: fmt.PayloadWriter, delta: DeltaBase, path: str, patch: _Spooled, progress) -> None:
    member = next(p["patch"] for p in delta.patched if p["path"] == path)
    writer.add(member, patch.size, _spooled_chunks(patch.file), progress)
    patch.file.close()


def _resolve(path: str, links: dict[str, str]) -> str:
    path = os.path.normpath(path)
    seen = 0
    while path in links and seen < 8:
        path, seen = links[path], seen + 1
    return path


def _config_id(entry: dict, links, by_path) -> str | None:
    f = by_path.get(fmt.PAYLOAD_PREFIX + _resolve(entry.get("Config", ""), links))
    return "sha256:" + f.sha256 if f else None


def _write_new(path: Path, text: str) -> None:
    with create_fresh(path, 0o666) as f:
        f.write(text.encode())


def _unlink_quietly(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def build(spec_path: Path, out: Path, sign_key: str, gnupghome: str | None = None, *, local: bool = False,
          allow_latest: bool = False, show_progress: bool | None = None, split: int | None = None,
          since: Path | None = None, have: Path | None = None, patch: bool = True) -> BuildResult:
    spec = load_spec(spec_path, allow_latest=allow_latest)
    if since is not None and have is not None:
        raise UsageProblem("--since and --have are two ways to name the base: give one")
    delta = (DeltaBase.from_bundle(since, spec.name, patch) if since is not None
             else DeltaBase.from_inventory(have) if have is not None else None)
    return build_spec(spec, out, sign_key, gnupghome, local=local, allow_latest=allow_latest,
                      show_progress=show_progress, split=split, delta=delta)


def build_spec(spec: BuildSpec, out: Path, sign_key: str, gnupghome: str | None = None, *, local: bool = False,
               allow_latest: bool = False, show_progress: bool | None = None, split: int | None = None,
               delta: DeltaBase | None = None) -> BuildResult:
    """Build from a spec already loaded (and possibly changed in memory, as `bundle check --build` does)."""
    started = time.monotonic()
    out = Path(out)
    stale = sorted(out.parent.glob(out.name + ".part[0-9][0-9][0-9]")) + ([out] if split and out.exists() else [])
    if stale:  # a reader would take them for parts of this bundle; never removed for the operator
        raise UsageProblem(f"{stale[0]} is in the way: move the old bundle or parts of {out.name} away first")
    gpg = gpg_for(gnupghome)
    key = signing_key(gpg, sign_key)  # a missing, expired or revoked key stops us before any work
    client = connect()
    save = SaveRequest(client, spec.images) if local else None  # overlaps the engine's export with the checks
    try:
        platform = spec.platform or client.platform()
        images, total = resolve_images(client, spec, platform, local)
    except BaseException:
        if save:
            save.abandon()
        raise

    created = utc_now()
    mtime = int(created.timestamp())
    # every file is created fresh under an unpredictable name (bundlecore.fsutil): the output
    # directory may be shared, and a link planted at a guessable name would be written through
    tmp_payload, tmp_out, tmp_sum = temp_name(out, "payload"), temp_name(out), temp_name(fmt.sums_path(out))
    tmp_parts: list[Path] = []
    try:
        progress = Progress("save+compress", total or None, enabled=show_progress)
        with create_fresh(tmp_out, 0o666) as payload_fh:  # the head goes in front at the end (fmt.place_head)
            payload_fh.seek(fmt.PAYLOAD_OFFSET)
            files, omitted = write_payload(client, images, payload_fh, mtime, progress, delta, out.parent, save)
        progress.close()
        manifest: dict[str, Any] = {
            "format_version": fmt.FORMAT_VERSION,
            "name": spec.name,
            "version": spec.version,
            "sequence": spec.sequence if spec.sequence is not None else mtime,
            "created": format_ts(created),
            "expires": format_ts(plus(created, spec.expires_seconds)),
            "builder": {"tool": f"bundle {__version__}", "host": socket.gethostname(),
                        "engine": client.version().get("Version", "unknown")},
            "platform": platform,
            "allow_latest": allow_latest,
            "images": images,
            "payload": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
            "target": spec.target,
        }
        if delta is not None and (omitted or delta.patched):  # omitted is empty without a delta
            manifest["delta"] = {"base": delta.base, "omitted": [{"path": p, "diff_id": d} for p, d in sorted(omitted.items())]}
            if delta.patched:
                manifest["delta"]["patched"] = delta.patched
        problem = first_error("manifest.schema.json", manifest)
        if problem:
            raise UsageProblem(f"the manifest this spec produces is invalid {problem}")
        manifest_bytes = fmt.dumps_canonical(manifest)
        sums = fmt.format_sha256sums([(fmt.MANIFEST, hashlib.sha256(manifest_bytes).hexdigest())]
                                     + [(f.path, f.sha256) for f in files])
        signature = sign_detached(gpg, key["fingerprint"], sums)
        head = fmt.compress_head(manifest_bytes, sums, signature, mtime)
        head_room = len(head) + fmt.FS_BLOCK + 8  # with its padding (fmt.place_head)
        if split is not None and split < head_room:
            raise UsageProblem(f"--split {split} is smaller than the head frame ({head_room} bytes), "
                               f"which must fit in the first part")
        if split is not None and head_room + tmp_out.stat().st_size - fmt.PAYLOAD_OFFSET > fmt.MAX_PARTS * split:
            raise UsageProblem(f"--split {split} would make more than {fmt.MAX_PARTS} parts: choose a larger size")
        digest = fmt.place_head(tmp_out, head)
        if digest is None:  # this filesystem cannot drop the front: copy the payload behind the head
            digest = fmt.assemble(tmp_payload, head, tmp_out, fmt.PAYLOAD_OFFSET)
            os.replace(tmp_payload, tmp_out)
        size = tmp_out.stat().st_size
        if split is None:
            _write_new(tmp_sum, f"{digest}  {out.name}\n")
            os.replace(tmp_out, out)
            parts = []
        else:
            written = fmt.write_parts(tmp_out, out, split)
            tmp_parts += [tmp for tmp, _, _ in written]
            _write_new(tmp_sum, "".join(f"{h}  {final.name}\n" for _, final, h in written) + f"{digest}  {out.name}\n")
            for tmp, final, _ in written:
                os.replace(tmp, final)
            parts = [final for _, final, _ in written]
        os.replace(tmp_sum, fmt.sums_path(out))
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise EnvironmentProblem(f"disk full while writing {out}; nothing was left under that name") from None
        raise EnvironmentProblem(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        if save:
            save.abandon()
        _unlink_quietly(tmp_payload, tmp_out, tmp_sum, *tmp_parts)
    return BuildResult(parts[0] if parts else out, size, digest, images, time.monotonic() - started,
                       parts, manifest.get("delta"))
