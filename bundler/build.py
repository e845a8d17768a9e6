"""`bundle build`: pinned images -> one signed zstd bundle, in one streaming pass over `docker save`.

The docker save stream is read as tar and each file goes straight through sha256 and zstd into
a temporary payload file; the head (manifest, SHA256SUMS, signature) is made afterwards and
written in front of the payload while the whole file is hashed for OUT.sha256. Nothing lands
under the final name until it is complete.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import requests

from bundlecore import __version__
from bundlecore import format as fmt
from bundlecore.docker_engine import connect, engine_platform, image_platform
from bundlecore.errors import EnvironmentProblem, UsageProblem
from bundlecore.gpg import gpg_for, sign_detached, signing_key
from bundlecore.platforms import platforms_match
from bundlecore.progress import Progress, PullProgress
from bundlecore.schema import first_error
from bundlecore.timeutil import format_ts, plus, utc_now
from bundler.dockersave import DockerSaveReader
from bundler.spec import BuildSpec, load_spec, split_ref

MAX_DOCKER_MANIFEST = 4 << 20


@dataclass
class BuildResult:
    path: Path
    size: int
    sha256: str
    images: list[dict]
    duration: float

    def summary(self) -> dict:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256,
                "images": [{"ref": i["ref"], "id": i["id"]} for i in self.images],
                "duration": round(self.duration, 3)}


def resolve_images(client, spec: BuildSpec, platform: str, local: bool) -> tuple[list[dict], int]:
    """Pull (or find locally) every image for `platform`; returns what the manifest records of
    each, and their total size (for the progress display)."""
    records, total = [], 0
    for ref in spec.images:
        if local:
            try:
                image = client.images.get(ref)
            except docker.errors.ImageNotFound:
                raise UsageProblem(f"image {ref} is not in the local engine (drop --local to pull it)") from None
        else:
            repo, tag = split_ref(ref)
            try:
                image = _pull(client, ref, repo, tag, platform)
            except docker.errors.NotFound:
                raise UsageProblem(f"image {ref} not found in its registry") from None
            except (docker.errors.APIError, requests.RequestException) as e:
                raise EnvironmentProblem(f"cannot pull {ref}: {getattr(e, 'explanation', None) or e}") from None
        got = image_platform(image.attrs)
        if not platforms_match(got, platform):
            raise UsageProblem(f"image {ref} is {got}, not {platform}")
        repo_name = split_ref(ref)[0]
        digests = [d for d in image.attrs.get("RepoDigests") or [] if d.split("@")[0] == repo_name]
        records.append({
            "ref": ref,
            "platform": got,
            "repo_digest": digests[0] if digests else None,
            "id": image.id,
            "diff_ids": list(image.attrs["RootFS"].get("Layers") or []),
        })
        total += image.attrs.get("Size", 0)
    return records, total


def _pull(client, ref: str, repo: str, tag: str | None, platform: str):
    """`docker pull` with its progress shown (bundlecore.progress.PullProgress)."""
    shown = PullProgress(ref)
    for ev in client.api.pull(repo, tag=tag, platform=platform, stream=True, decode=True):
        if ev.get("error"):
            raise docker.errors.APIError(ev["error"], explanation=ev["error"])
        shown.event(ev)
    shown.close()
    return client.images.get(f"{repo}@{tag}" if tag and tag.startswith("sha256:") else f"{repo}:{tag or 'latest'}")


def _save_stream(client, refs: list[str]):
    """The raw `docker save` tar stream of all refs at once (so shared layers come once)."""
    try:
        resp = client.api.get(client.api._url("/images/get"), params={"names": refs}, stream=True)
        resp.raise_for_status()
    except (requests.RequestException, docker.errors.APIError) as e:
        raise EnvironmentProblem(f"docker save failed: {e}") from None
    return resp


def write_payload(client, images: list[dict], payload_fh, mtime: int, progress) -> list[fmt.PayloadFile]:
    """Stream `docker save` into the payload; fills each image's config/layers payload paths."""
    writer = fmt.PayloadWriter(payload_fh, mtime)
    docker_manifest = None
    links: dict[str, str] = {}
    resp = _save_stream(client, sorted({i["ref"] for i in images}))
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
        elif name != "repositories":
            writer.add(fmt.PAYLOAD_PREFIX + name, member.size, reader.chunks(member), progress)
    resp.close()
    if docker_manifest is None:
        raise EnvironmentProblem("docker save wrote no manifest.json")
    by_path = {f.path: f for f in writer.files}
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
    writer.add_bytes(fmt.DOCKER_ARCHIVE_MANIFEST, fmt.dumps_canonical(list(entries.values())))
    writer.close()
    return writer.files


def _resolve(path: str, links: dict[str, str]) -> str:
    path = os.path.normpath(path)
    seen = 0
    while path in links and seen < 8:
        path, seen = links[path], seen + 1
    return path


def _config_id(entry: dict, links, by_path) -> str | None:
    f = by_path.get(fmt.PAYLOAD_PREFIX + _resolve(entry.get("Config", ""), links))
    return "sha256:" + f.sha256 if f else None


def _unlink_quietly(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def build(spec_path: Path, out: Path, sign_key: str, gnupghome: str | None = None, *, local: bool = False,
          allow_latest: bool = False, show_progress: bool | None = None) -> BuildResult:
    spec = load_spec(spec_path, allow_latest=allow_latest)
    return build_spec(spec, out, sign_key, gnupghome, local=local, allow_latest=allow_latest,
                      show_progress=show_progress)


def build_spec(spec: BuildSpec, out: Path, sign_key: str, gnupghome: str | None = None, *, local: bool = False,
               allow_latest: bool = False, show_progress: bool | None = None) -> BuildResult:
    """Build from a spec already loaded (and possibly changed in memory, as `bundle check --build` does)."""
    started = time.monotonic()
    gpg = gpg_for(gnupghome)
    key = signing_key(gpg, sign_key)  # a missing, expired or revoked key stops us before any work
    client = connect()
    platform = spec.platform or engine_platform(client)
    images, total = resolve_images(client, spec, platform, local)

    created = utc_now()
    mtime = int(created.timestamp())
    out = Path(out)
    tmp_payload = out.with_name(f".{out.name}.payload-{os.getpid()}")
    tmp_out = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp_sum = out.with_name(f".{out.name}.sha256.tmp-{os.getpid()}")
    try:
        progress = Progress("save+compress", total or None, enabled=show_progress)
        with open(tmp_payload, "wb") as payload_fh:
            files = write_payload(client, images, payload_fh, mtime, progress)
        progress.close()
        manifest = {
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
        problem = first_error("manifest.schema.json", manifest)
        if problem:
            raise UsageProblem(f"the manifest this spec produces is invalid {problem}")
        manifest_bytes = fmt.dumps_canonical(manifest)
        sums = fmt.format_sha256sums([(fmt.MANIFEST, hashlib.sha256(manifest_bytes).hexdigest())]
                                     + [(f.path, f.sha256) for f in files])
        signature = sign_detached(gpg, key["fingerprint"], sums)
        head = fmt.compress_head(manifest_bytes, sums, signature, mtime)
        digest = fmt.assemble(tmp_out, head, tmp_payload)
        tmp_sum.write_text(f"{digest}  {out.name}\n")
        os.replace(tmp_out, out)
        os.replace(tmp_sum, out.with_name(out.name + ".sha256"))
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise EnvironmentProblem(f"disk full while writing {out}; nothing was left under that name") from None
        raise EnvironmentProblem(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        _unlink_quietly(tmp_payload, tmp_out, tmp_sum)
    return BuildResult(out, out.stat().st_size, digest, images, time.monotonic() - started)
