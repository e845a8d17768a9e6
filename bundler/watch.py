"""`bundle check`: is there an upstream release newer than the last bundle built? Build it, tell someone.

Rules:
- The current version is the newer of the spec's `version` and the last one `--build` recorded
  in the state file (next to the spec, or `<state-dir>/<name>.check.json`); the spec file is
  never rewritten.
- `--build` changes the spec in memory only: the new version, the images of `[upstream].image`'s
  repository retagged for it, a sequence one above the last; then the ordinary build
  (bundler.build.build_spec) pulls them from their registry. A missing image refuses the build
  exactly as `bundle build` does (exit 2) and nothing is recorded.
- The state file (last built bundle, the ETag and the answer it belongs to) is replaced
  atomically; it records a build only once the bundle is complete.
- A notification is sent when a newer release exists (built or not); its delivery is retried
  and a failure is a warning on stderr, never a different exit code.
- Loop mode sleeps between checks, reports a failed check and goes on, and stops with exit 0 on
  SIGTERM, even in the middle of a check (every write is atomic, a build cleans its temp files).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bundlecore.errors import BundleError, ExitCode, UsageProblem
from bundlecore.fsutil import atomic_write_json
from bundlecore.remote import Failure, RemoteProblem, fetch
from bundlecore.text import printable, say
from bundlecore.timeutil import format_ts, utc_now
from bundler.spec import BuildSpec, load_spec, split_ref
from bundler.upstream import (GitHubReleases, NotAVersion, Release, UpstreamUnavailable, backoff_base,
                              image_for_tag, newest, parse_version)

NOTIFY_ATTEMPTS = 4


class CheckStatus(str, enum.Enum):
    UP_TO_DATE = "up-to-date"
    NEWER = "newer"
    BUILT = "built"


@dataclass
class BuildRequest:
    sign_key: str
    gnupghome: str | None = None
    out_dir: Path | None = None  # default: next to the spec


@dataclass
class CheckOptions:
    github: GitHubReleases
    state_dir: Path | None = None
    prereleases: bool = False  # or-ed with the spec's [upstream] settings
    drafts: bool = False
    build: BuildRequest | None = None
    notify_url: str | None = None


@dataclass
class WatchState:
    """The state file: the last bundle built, and the last answer with its ETag."""

    built: dict | None = None  # version, sequence, path, sha256, built_at
    cache: dict | None = None  # url, etag, releases

    @classmethod
    def load(cls, path: Path) -> WatchState:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            raise UsageProblem(f"state file {path} is unreadable: {e}") from None
        if not isinstance(raw, dict):
            raise UsageProblem(f"state file {path} is not a JSON object")
        return cls(built=raw.get("built"), cache=raw.get("cache"))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, dataclasses.asdict(self), mode=0o644)


@dataclass
class CheckReport:
    app: str
    current: str
    status: CheckStatus
    latest: Release | None
    not_modified: bool
    bundle: dict | None = None  # path, sha256 of what --build made

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.NEWER if self.status is CheckStatus.NEWER else ExitCode.DONE

    def summary(self) -> dict:
        return {"app": self.app, "status": self.status.value, "current": self.current,
                "latest": self.latest.summary() if self.latest else None,
                "not_modified": self.not_modified, "bundle": self.bundle}

    def event(self) -> dict:
        """The webhook body (docs/watch.md); `text` makes it a Slack/Mattermost message as is."""
        latest = self.latest
        assert latest is not None  # an event is sent for a release only
        text = f"{self.app}: release {latest.version} is out (current {self.current}) {latest.url}"
        if self.bundle:
            text += f"; built {self.bundle['path']} sha256 {self.bundle['sha256']}, ready for approval"
        return {"event": "bundle.release", "app": self.app, "status": self.status.value,
                "current": self.current, "latest": latest.version.text, "tag": latest.tag,
                "published_at": latest.published_at, "release_url": latest.url, "notes": latest.notes,
                "bundle": self.bundle, "text": text}

    def lines(self) -> list[str]:
        """The human report; what came from upstream is escaped here, line breaks included (`say`
        keeps them), so a release cannot print lines of its own."""
        if self.latest is None:
            return [f"{self.app}: current {self.current}; upstream has no release that counts"]
        head = (f"{self.app}: current {self.current}, latest {self.latest.version} "
                f"(published {printable(self.latest.published_at or 'unknown')})"
                f"{' [unchanged, 304]' if self.not_modified else ''}")
        out = [head, printable(self.latest.url)]
        if self.status is CheckStatus.NEWER:
            out.append(f"newer release: {self.latest.version}")
        elif self.status is CheckStatus.BUILT:
            assert self.bundle is not None  # BUILT names the bundle it built
            out.append(f"built {self.bundle['path']} sha256 {self.bundle['sha256']}")
        else:
            out.append("up to date")
        return out


def state_path(spec_path: Path, spec: BuildSpec, state_dir: Path | None) -> Path:
    if state_dir is not None:
        return Path(state_dir) / f"{spec.name}.check.json"
    return spec_path.with_name(f"{spec_path.stem}.check.json")


def version_of(text: str, what: str):
    try:
        return parse_version(text)
    except NotAVersion:
        raise UsageProblem(f"{what} {text!r} is not a version (like 1.2.3 or 1.2.3-rc.1)") from None


def spec_for_release(spec: BuildSpec, release: Release, last_sequence: int | None) -> BuildSpec:
    """The spec of the release, in memory: version, the upstream repository's images, sequence."""
    assert spec.upstream is not None  # `bundle check` refuses a spec without [upstream] first
    try:
        new_ref = image_for_tag(spec.upstream.image, release.tag)
    except NotAVersion as e:
        raise UsageProblem(f"release {release.tag}: {e}") from None
    repo = split_ref(new_ref)[0]

    def swap(ref: str) -> str:
        return new_ref if split_ref(ref)[0] == repo else ref

    images = list(dict.fromkeys(swap(ref) for ref in spec.images))
    target = {**spec.target, "image": swap(spec.target["image"])}
    return dataclasses.replace(spec, version=release.version.text, images=images, target=target,
                               sequence=last_sequence + 1 if last_sequence is not None else None)


def check(spec_path: Path, opts: CheckOptions) -> CheckReport:
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    if spec.upstream is None:
        raise UsageProblem(f"spec {spec_path} has no [upstream] table: nothing to check")
    where = state_path(spec_path, spec, opts.state_dir)
    state = WatchState.load(where)
    current = version_of(spec.version, f"spec {spec_path}: version")
    if state.built:
        current = max(current, version_of(state.built.get("version", ""), f"state {where}: version"))

    prereleases = opts.prereleases or spec.upstream.prereleases
    drafts = opts.drafts or spec.upstream.drafts
    listing = prereleases or drafts
    cache = state.cache or {}
    url = opts.github.releases_url(spec.upstream.github, listing)
    fresh = cache.get("url") == url
    answer = opts.github.fetch(spec.upstream.github, listing, etag=cache.get("etag") if fresh else None,
                               cached=cache.get("releases") if fresh else None)
    if not answer.not_modified:
        state.cache = {"url": answer.url, "etag": answer.etag, "releases": answer.releases}
        state.save(where)
    latest = newest(answer.releases, prereleases, drafts)
    if listing is False and latest is None and answer.releases:
        raise UpstreamUnavailable(f"the latest release of {spec.upstream.github} has tag "
                                  f"{repr(answer.releases[0].get('tag_name'))[:140]}, which is not a version")
    report = CheckReport(spec.name, current.text, CheckStatus.UP_TO_DATE, latest, answer.not_modified)
    if latest is None or latest.version <= current:
        return report
    report.status = CheckStatus.NEWER
    if opts.build:
        new_spec = spec_for_release(spec, latest, (state.built or {}).get("sequence", spec.sequence))
        report.bundle = _build(spec_path, new_spec, opts.build)
        report.status = CheckStatus.BUILT
        state.built = {"version": new_spec.version, "sequence": new_spec.sequence, **report.bundle,
                       "built_at": format_ts(utc_now())}
        state.save(where)
    return report


def _build(spec_path: Path, spec: BuildSpec, request: BuildRequest) -> dict:
    from bundler.build import build_spec  # the Docker SDK only when a build is asked for

    out = (request.out_dir or spec_path.parent) / f"{spec.name}-{spec.version}.bundle.zst"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = build_spec(spec, out, request.sign_key, request.gnupghome, show_progress=False)
    except UsageProblem as e:
        raise UsageProblem(f"cannot build {spec.name} {spec.version}: {e}; nothing recorded") from None
    return {"path": str(result.path), "sha256": result.sha256}


def notify(url: str, event: dict, timeout: float, attempts: int = NOTIFY_ATTEMPTS) -> str | None:
    """POST the event, retrying with backoff, each attempt within the total deadline `timeout`
    (only the status is read); None when delivered, else what went wrong."""
    problem = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff_base() * 2 ** (attempt - 1))
        try:
            reply = fetch("POST", url, json=event, timeout=timeout, max_bytes=0, read_body=False)
        except RemoteProblem as e:
            problem = e.cause if e.failure is Failure.UNREACHABLE else str(e)
            continue
        if 200 <= reply.status_code < 300:
            return None
        problem = f"HTTP {reply.status_code}"
    return f"{problem} after {attempts} attempts"


def check_and_notify(spec_path: Path, opts: CheckOptions) -> CheckReport:
    report = check(spec_path, opts)
    if opts.notify_url and report.status is not CheckStatus.UP_TO_DATE:
        failed = notify(opts.notify_url, report.event(), opts.github.timeout)
        if failed:
            say(f"warning: notification to {opts.notify_url} failed: {failed}", err=True)
    return report


class _Stopped(Exception):
    pass


def _stop(signum, frame):
    raise _Stopped()


def run_every(interval: int, once: Callable[[], object]) -> int:
    """Call `once` now and then every `interval` seconds until SIGTERM; a failed round, whatever
    failed, is one escaped line on stderr and the loop goes on. Returns the exit code (0)."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            try:
                once()
            except BundleError as e:
                say(printable(e.line()), err=True)
            except Exception as e:  # a bug or an answer nobody foresaw: this round failed, not the watch
                say(printable(f"error: {type(e).__name__}: {e}"), err=True)
            time.sleep(interval)
    except _Stopped:
        return ExitCode.DONE
    finally:
        signal.signal(signal.SIGTERM, previous)
