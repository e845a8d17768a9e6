"""Upstream releases on GitHub: the REST client, version ordering and tag -> image mapping.

Rules:
- Versions order as versions, never as strings: 1.10.0 > 1.9.0; a pre-release orders below its
  release (1.10.0-rc.1 < 1.10.0), pre-release identifiers compare like SemVer (numbers as numbers,
  numbers below words, a longer list above its prefix). A leading `v` is not part of the version.
- A tag is upstream's text: it becomes a version and an image tag only when it has the shape of
  one (no spaces, no `/`, no control characters, at most 128 characters); anything else is skipped
  in a list and refused when it is the one release asked for.
- Drafts and pre-releases count only when asked. `/releases/latest` is asked when neither counts
  (GitHub already leaves both out there); the list when either does.
- Manners: `GITHUB_TOKEN` as a Bearer token; the last ETag is sent as `If-None-Match` and a 304
  (which costs no rate limit) means "as last time"; 5xx, timeouts and connection errors are
  retried a few times with exponential backoff; a rate limit is one line saying when it resets;
  proxies come from the usual environment variables (requests reads them); each request has a
  total deadline (`timeout`, over connect, headers and body) and its body a cap
  (bundlecore.remote); a body that is slow, too large, cut short, nested too deeply or of the
  wrong type is one line, not retried.
- Everything GitHub says is upstream's text: it is printed escaped (line breaks included), and
  only a tag of a version's shape reaches an image ref or a file name.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from bundlecore import __version__
from bundlecore.errors import EnvironmentProblem
from bundlecore.remote import Failure, RemoteProblem, Reply, fetch
from bundlecore.timeutil import format_ts

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_TIMEOUT = 10.0
ATTEMPTS = 4
# Seconds before the first retry (doubling after); tests make it tiny through the environment.
BACKOFF_ENV = "BUNDLE_BACKOFF_BASE"
DEFAULT_BACKOFF = 1.0
MAX_BODY = 8 << 20
NOTES_EXCERPT = 500
_PLAIN_NUMBER = re.compile(r"[0-9]{1,12}")

_VERSION = re.compile(r"[vV]?(?P<release>[0-9]+(?:\.[0-9]+)*)(?:-?(?P<pre>[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*))?"
                      r"(?:\+(?P<build>[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*))?")


class NotAVersion(ValueError):
    """A tag that has no version shape."""


class RateLimited(EnvironmentProblem):
    """GitHub refused for the rate limit; the message says when it resets."""


class UpstreamUnavailable(EnvironmentProblem):
    """GitHub could not be asked or answered something unusable."""


def backoff_base() -> float:
    try:
        return max(0.0, float(os.environ.get(BACKOFF_ENV, DEFAULT_BACKOFF)))
    except ValueError:
        return DEFAULT_BACKOFF


@dataclass(frozen=True, order=True)
class Version:
    """Ordered and compared by `key` only: (release numbers without trailing zeros,
    1 for a release / 0 for a pre-release, pre-release identifiers)."""

    text: str = field(compare=False)  # as the tag wrote it, minus a leading v
    key: tuple = ()

    @property
    def is_prerelease(self) -> bool:
        return self.key[1] == 0

    def __str__(self) -> str:
        return self.text


def parse_version(tag: str) -> Version:
    """'v1.10.0-rc.1' -> Version('1.10.0-rc.1'); NotAVersion for anything without that shape."""
    m = _VERSION.fullmatch(tag) if isinstance(tag, str) and len(tag) <= 128 else None
    if not m:
        raise NotAVersion(f"tag {tag!r} is not a version")
    release = [int(p) for p in m["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:  # 1.10 == 1.10.0
        release.pop()
    pre = m["pre"]
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.-]", pre)) if pre else ()
    text = tag[1:] if tag[0] in "vV" else tag
    return Version(text, (tuple(release), 0 if pre else 1, pre_key))


def image_for_tag(template: str, tag: str) -> str:
    """The image ref of a release: `{version}` in the template replaced by the tag minus its v."""
    version = parse_version(tag).text
    if "+" in version:  # build metadata: not allowed in a Docker tag
        raise NotAVersion(f"tag {tag!r} cannot be an image tag")
    return template.replace("{version}", version)


@dataclass(frozen=True)
class Release:
    tag: str
    version: Version
    name: str
    published_at: str | None
    url: str
    notes: str
    draft: bool
    prerelease: bool

    @classmethod
    def from_api(cls, obj) -> Release:
        """One release object of the GitHub API; NotAVersion / UpstreamUnavailable when unusable."""
        if not isinstance(obj, dict) or not isinstance(obj.get("tag_name"), str):
            raise UpstreamUnavailable("GitHub answered a release without a tag_name")

        def text(key: str) -> str:
            return obj[key] if isinstance(obj.get(key), str) else ""

        return cls(tag=obj["tag_name"], version=parse_version(obj["tag_name"]), name=text("name")[:NOTES_EXCERPT],
                   published_at=text("published_at")[:NOTES_EXCERPT] or None,
                   url=text("html_url")[:NOTES_EXCERPT], notes=text("body")[:NOTES_EXCERPT],
                   draft=obj.get("draft") is True, prerelease=obj.get("prerelease") is True)

    def summary(self) -> dict:
        return {"version": self.version.text, "tag": self.tag, "name": self.name,
                "published_at": self.published_at, "url": self.url, "prerelease": self.prerelease,
                "draft": self.draft}


def newest(releases: list, prereleases: bool, drafts: bool) -> Release | None:
    """The highest version among the API's release objects that count; tags that are not
    versions are skipped."""
    counted = []
    for obj in releases:
        try:
            release = Release.from_api(obj)
        except NotAVersion:
            continue
        if (release.draft and not drafts) or (release.prerelease and not prereleases):
            continue
        counted.append(release)
    return max(counted, key=lambda r: r.version.key, default=None)


@dataclass
class Answer:
    """What GitHub said: the release objects, and the ETag to send next time."""

    url: str
    releases: list
    etag: str | None
    not_modified: bool = False


@dataclass
class GitHubReleases:
    api_url: str = DEFAULT_API_URL
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    attempts: int = ATTEMPTS
    backoff: float = field(default_factory=backoff_base)

    def releases_url(self, repo: str, listing: bool) -> str:
        base = f"{self.api_url.rstrip('/')}/repos/{repo}/releases"
        return f"{base}?per_page=100" if listing else f"{base}/latest"

    def fetch(self, repo: str, listing: bool, etag: str | None = None, cached: list | None = None) -> Answer:
        """The latest release (as a one-item list) or the release list; with `etag` and a 304,
        `cached` is returned as it is."""
        url = self.releases_url(repo, listing)
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": f"bundle/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if etag and cached is not None:
            headers["If-None-Match"] = etag
        reply = self._get(url, headers)
        if reply.status_code == 304 and cached is not None:
            return Answer(url, cached, etag, not_modified=True)
        _raise_for_status(reply, repo)
        try:
            releases = reply.json(f"the answer of {url}", list if listing else dict)
        except RemoteProblem as e:
            raise UpstreamUnavailable(str(e)) from None
        return Answer(url, releases if listing else [releases], reply.headers.get("ETag"))

    def _get(self, url: str, headers: dict) -> Reply:
        """GET within the total deadline `timeout` (bundlecore.remote), retried with exponential
        backoff on 5xx and when the server could not be reached or sent no headers in time. A body
        that is slow, too large or cut short is not retried: the server answered, badly."""
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = fetch("GET", url, timeout=self.timeout, max_bytes=MAX_BODY, headers=headers)
            except RemoteProblem as e:
                if e.answered:
                    raise UpstreamUnavailable(f"{url}: {e}") from None
                problem = (f"cannot connect: {e.cause}" if e.failure is not Failure.TIMEOUT
                           else f"timed out after {self.timeout:g}s resolving {e.unresolved}" if e.unresolved
                           else f"timed out after {self.timeout:g}s")
                continue
            if reply.status_code < 500:
                return reply
            problem = f"answered HTTP {reply.status_code}"
        raise UpstreamUnavailable(f"{url} {problem} ({self.attempts} attempts)")


def _raise_for_status(resp: Reply, repo: str) -> None:
    if resp.status_code == 200:
        return
    remaining = resp.headers.get("X-RateLimit-Remaining")
    if resp.status_code == 429 or (resp.status_code == 403 and (remaining == "0" or "Retry-After" in resp.headers)):
        raise RateLimited(f"GitHub rate limit reached for {resp.url.split('?')[0]}; {_reset_text(resp.headers)}"
                          " (set GITHUB_TOKEN for a higher limit)")
    if resp.status_code == 404:
        raise UpstreamUnavailable(f"GitHub has no releases for {repo} ({resp.url.split('?')[0]}: 404)")
    raise UpstreamUnavailable(f"GitHub answered HTTP {resp.status_code} for {resp.url.split('?')[0]}")


def _reset_text(headers) -> str:
    """When the rate limit resets, from headers that are upstream's text: a value that is not a
    plain number of sane size, or a time out of range, says nothing rather than failing."""
    reset, retry_after = headers.get("X-RateLimit-Reset", ""), headers.get("Retry-After", "")
    if _PLAIN_NUMBER.fullmatch(reset):
        try:
            at = datetime.fromtimestamp(int(reset), timezone.utc)
        except (OverflowError, OSError, ValueError):
            at = None
        if at is not None:
            minutes = max(0, round((at - datetime.now(timezone.utc)).total_seconds() / 60))
            return f"it resets at {format_ts(at)} (in {minutes} min)"
    if _PLAIN_NUMBER.fullmatch(retry_after):
        return f"retry after {retry_after}s"
    return "GitHub did not say when it resets"
