"""`bundle check` against a real HTTP server on loopback that answers like GitHub's Releases API,
a real webhook receiver, and (for --build) the real loopback registry and engine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bundlecore import format as fmt
from bundlecore.schema import cli_schema_name, first_error
from bundlecore.timeutil import format_ts, plus, utc_now
from tests.support import BUNDLE, one_line, run_bundle

REPO = "acme/app"


@dataclass
class Reply:
    status: int = 200
    body: object = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    etag: str | None = None  # answered as ETag; a request naming it in If-None-Match gets a 304
    raw: bytes | None = None  # the body as these bytes (else `body` as JSON)
    length: int | None = None  # the Content-Length announced (else the body's)
    drip: float = 0.0  # seconds between the body's bytes, sent one by one (a hostile slow server)
    drip_head: bool = False  # drip the status line and headers too


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes


class FakeServer:
    """An HTTP server on 127.0.0.1 in a thread: each path answers its replies in turn (the last
    one again and again) and every request is recorded."""

    def __init__(self):
        self.routes: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                replies = server.routes.get(self.path.split("?")[0]) or [Reply(404, {"message": "Not Found"})]
                reply = replies.pop(0) if len(replies) > 1 else replies[0]
                time.sleep(reply.delay)
                if reply.etag and self.headers.get("If-None-Match") == reply.etag:
                    self.send_response(304)
                    self.send_header("ETag", reply.etag)
                    self.end_headers()
                    return
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode() if reply.body is not None else b""
                head = [f"HTTP/1.1 {reply.status} X"]
                for k, v in {**reply.headers, **({"ETag": reply.etag} if reply.etag else {})}.items():
                    head.append(f"{k}: {v}")
                head += ["Content-Type: application/json", f"Content-Length: {reply.length or len(data)}", "", ""]
                head_bytes = "\r\n".join(head).encode()
                try:
                    if not reply.drip_head:
                        self.wfile.write(head_bytes)
                        head_bytes = b""
                    for i in range(len(head_bytes + data) if reply.drip else 0):
                        self.wfile.write((head_bytes + data)[i:i + 1])
                        time.sleep(reply.drip)
                    self.wfile.write(b"" if reply.drip else data)
                except OSError:  # the client gave up on a slow answer
                    self.close_connection = True

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def on(self, path: str, *replies: Reply) -> None:
        self.routes[path] = list(replies)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path.split("?")[0] == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def github():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def receiver():
    server = FakeServer()
    server.on("/hook", Reply(200, {"ok": True}))
    yield server
    server.close()


LATEST = f"/repos/{REPO}/releases/latest"
LIST = f"/repos/{REPO}/releases"


def release(tag: str, published: str = "2026-11-02T10:00:00Z", prerelease=False, draft=False, body="Fixes.") -> dict:
    """A release object with the fields (and names) of GitHub's REST API."""
    return {"url": f"https://api.github.com/repos/{REPO}/releases/1", "id": 1, "tag_name": tag,
            "target_commitish": "main", "name": f"Release {tag}", "draft": draft, "prerelease": prerelease,
            "created_at": published, "published_at": published,
            "html_url": f"https://github.com/{REPO}/releases/tag/{tag}", "body": body,
            "assets": [{"name": "app.tar.gz", "browser_download_url": f"https://github.com/{REPO}/x.tar.gz"}]}


def write_spec(path: Path, version="1.9.0", repo="example/app", sequence=7, upstream_extra="") -> Path:
    path.write_text(textwrap.dedent(f"""\
        name = "app"
        version = "{version}"
        sequence = {sequence}
        expires = "30d"
        images = ["{repo}:{version}"]

        [target]
        kind = "container"
        name = "app"
        image = "{repo}:{version}"

        [upstream]
        github = "{REPO}"
        image = "{repo}:{{version}}"
        {upstream_extra}
        """))
    return path


def check_env(**more) -> dict:
    return {"BUNDLE_BACKOFF_BASE": "0.01", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
            "GITHUB_TOKEN": "", **more}


def check(spec, github, *args, env=None):
    return run_bundle("check", spec, "--api-url", github.url, *args, timeout=120, env=check_env(**(env or {})))


def test_same_version_upstream_is_up_to_date_exit_0(tmp_path, github):
    github.on(LATEST, Reply(200, release("v1.9.0")))
    r = check(write_spec(tmp_path / "bundle.toml"), github)
    assert r.code == 0, r
    assert "current 1.9.0, latest 1.9.0" in r.stdout and "up to date" in r.stdout
    assert "Authorization" not in github.seen[0].headers  # no token set, none sent


def test_newer_release_exits_10_with_current_latest_date_and_url(tmp_path, github):
    github.on(LATEST, Reply(200, release("v1.10.0", published="2026-11-20T08:30:00Z")))
    spec = write_spec(tmp_path / "bundle.toml")
    before = spec.read_bytes()
    r = check(spec, github)
    assert r.code == 10, r
    assert "app: current 1.9.0, latest 1.10.0 (published 2026-11-20T08:30:00Z)" in r.stdout  # 1.10 > 1.9
    assert f"https://github.com/{REPO}/releases/tag/v1.10.0" in r.stdout
    r = check(spec, github, "--json")
    doc = json.loads(r.stdout)
    assert first_error(cli_schema_name("check"), doc) is None and doc["exit_code"] == 10 and doc["ok"] is True
    assert r.code == 10 and doc["status"] == "newer" and doc["current"] == "1.9.0"
    assert doc["latest"]["version"] == "1.10.0" and doc["latest"]["tag"] == "v1.10.0" and doc["bundle"] is None
    assert spec.read_bytes() == before
    assert json.loads((tmp_path / "bundle.check.json").read_text())["built"] is None  # nothing built


def test_prereleases_and_drafts_are_ignored_unless_they_count(tmp_path, github):
    github.on(LATEST, Reply(200, release("v1.9.0")))
    github.on(LIST, Reply(200, [release("v2.0.0", draft=True), release("v1.10.0-rc.1", prerelease=True),
                                release("nightly", prerelease=True), release("v1.9.0"), release("v1.8.3")]))
    spec = write_spec(tmp_path / "bundle.toml")
    r = check(spec, github)
    assert r.code == 0 and "latest 1.9.0" in r.stdout, r
    assert [s.path for s in github.seen] == [LATEST]

    r = check(spec, github, "--prereleases")
    assert r.code == 10 and "latest 1.10.0-rc.1" in r.stdout, r  # the draft still does not count
    assert github.seen[-1].path == LIST + "?per_page=100"
    r = check(spec, github, "--prereleases", "--drafts")
    assert r.code == 10 and "latest 2.0.0" in r.stdout, r

    spec = write_spec(tmp_path / "pre.toml", upstream_extra="prereleases = true")  # the spec can say so too
    r = check(spec, github)
    assert r.code == 10 and "latest 1.10.0-rc.1" in r.stdout, r


def test_second_check_sends_the_etag_and_a_304_means_no_change(tmp_path, github):
    github.on(LATEST, Reply(200, release("v1.10.0"), etag='W/"r1"'))
    spec = write_spec(tmp_path / "bundle.toml")
    first = check(spec, github)
    assert first.code == 10 and "If-None-Match" not in github.seen[0].headers
    second = check(spec, github)
    assert github.seen[1].headers.get("If-None-Match") == 'W/"r1"'
    assert second.code == 10, second
    assert "latest 1.10.0" in second.stdout and "unchanged, 304" in second.stdout
    assert f"https://github.com/{REPO}/releases/tag/v1.10.0" in second.stdout


def test_rate_limit_is_exit_1_and_says_when_it_resets(tmp_path, github):
    reset = plus(utc_now(), 1800)
    github.on(LATEST, Reply(403, {"message": "API rate limit exceeded"},
                            {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0",
                             "X-RateLimit-Reset": str(int(reset.timestamp()))}))
    spec = write_spec(tmp_path / "bundle.toml")
    r = check(spec, github)
    assert r.code == 1
    line = one_line(r.stderr)
    assert "rate limit" in line and f"resets at {format_ts(reset)} (in 30 min)" in line and "GITHUB_TOKEN" in line
    assert len(github.seen) == 1  # a rate limit is not retried
    assert not (tmp_path / "bundle.check.json").exists()


def test_server_errors_are_retried_then_succeed_or_give_up(tmp_path, github):
    github.on(LATEST, Reply(500), Reply(502), Reply(200, release("v1.10.0")))
    spec = write_spec(tmp_path / "bundle.toml")
    r = check(spec, github)
    assert r.code == 10 and "latest 1.10.0" in r.stdout, r
    assert len(github.seen) == 3

    github.on(LATEST, Reply(503))
    r = check(spec, github)
    assert r.code == 1 and "answered HTTP 503 (4 attempts)" in one_line(r.stderr)


def test_a_hanging_server_is_bounded_by_the_timeout(tmp_path, github):
    github.on(LATEST, Reply(200, release("v1.10.0"), delay=5))
    started = time.monotonic()
    r = check(write_spec(tmp_path / "bundle.toml"), github, "--timeout", "0.3")
    assert r.code == 1 and "timed out after 0.3s (4 attempts)" in one_line(r.stderr)
    assert time.monotonic() - started < 4.5  # 4 x 0.3 s plus backoff and start-up, not 4 x 5 s


def test_a_dns_server_that_never_answers_is_bounded_by_the_timeout(tmp_path):
    """The resolver points at a DNS server that takes every query and never answers (in a mount
    namespace of the test's own, /etc/resolv.conf bound over): glibc waits 4 s per query, so 4
    attempts would take 16 s and more. `--timeout` is a total deadline that covers the name's
    resolution too: each attempt ends at 1 s, and the line says what was still unresolved."""
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for last in range(99, 120):  # a loopback address whose port 53 is free (a local resolver may hold one)
        try:
            dns.bind((f"127.0.0.{last}", 53))
            break
        except OSError:
            continue
    queries = []

    def swallow():
        while True:
            try:
                queries.append(dns.recv(512))
            except OSError:
                return

    threading.Thread(target=swallow, daemon=True).start()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {dns.getsockname()[0]}\noptions timeout:4 attempts:1\n")
    host = "releases.never-answers.test"
    started = time.monotonic()
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv),
                            str(BUNDLE), "check", str(write_spec(tmp_path / "bundle.toml")),
                            "--api-url", f"http://{host}:8080", "--timeout", "1"],
                           env={**os.environ, **check_env()}, capture_output=True, text=True, timeout=120)
    finally:
        dns.close()
    took = time.monotonic() - started
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert one_line(r.stderr) == (f"error: http://{host}:8080{LATEST} timed out after 1s resolving {host} "
                                  f"(4 attempts)")
    assert queries, "the resolver never asked the silent DNS server: the test proves nothing"
    assert took < 10, f"took {took:.1f} s"  # 4 x 1 s, the backoff and the start-up; 16 s and more unbounded


def test_github_token_is_sent_as_bearer_and_api_url_takes_a_path(tmp_path, github):
    github.on("/api/v3" + LATEST, Reply(200, release("v1.9.0")))
    r = run_bundle("check", write_spec(tmp_path / "bundle.toml"), "--api-url", github.url + "/api/v3/",
                   env=check_env(GITHUB_TOKEN="ghp_testtoken123"))
    assert r.code == 0, r
    [seen] = github.seen
    assert seen.path == "/api/v3" + LATEST
    assert seen.headers["Authorization"] == "Bearer ghp_testtoken123"
    assert seen.headers["Accept"] == "application/vnd.github+json"


def test_a_hostile_tag_is_refused_in_one_escaped_line_and_skipped_in_a_list(tmp_path, github):
    github.on(LATEST, Reply(200, release("v9.9.9\x1b[2J;rm -rf /")))
    spec = write_spec(tmp_path / "bundle.toml")
    r = check(spec, github)
    assert r.code == 1 and "is not a version" in one_line(r.stderr) and "\x1b" not in r.stderr
    github.on(LIST, Reply(200, [release("v9.9.9/../../x", prerelease=True), release("v1.9.0")]))
    r = check(spec, github, "--prereleases")
    assert r.code == 0 and "latest 1.9.0" in r.stdout, r


def test_spec_without_upstream_and_build_without_key_are_usage_errors(tmp_path, github):
    spec = write_spec(tmp_path / "bundle.toml")
    spec.write_text(spec.read_text().split("[upstream]")[0])
    r = check(spec, github)
    assert r.code == 2 and "no [upstream] table" in one_line(r.stderr)
    r = check(write_spec(tmp_path / "b.toml"), github, "--build")
    assert r.code == 2 and "--build needs --sign-key" in one_line(r.stderr)
    assert github.seen == []


# --- hostile answers (issue 18, finding 8) -------------------------------------------------------

def test_a_github_api_that_drips_its_answer_ends_at_the_timeout_in_one_line(tmp_path, github):
    """Headers at once, then one byte every 0.5 s: `--timeout` is a total deadline, not a per-read
    timeout, and a server that answered too slowly is not asked again."""
    github.on(LATEST, Reply(200, release("v1.10.0"), drip=0.5))
    started = time.monotonic()
    r = check(write_spec(tmp_path / "bundle.toml"), github, "--timeout", "2")
    took = time.monotonic() - started
    assert r.code == 1, r
    assert one_line(r.stderr) == f"error: {github.url}{LATEST}: no complete answer within 2 s"
    assert took < 8, f"took {took:.1f} s"  # 2 s and the start-up, not 30 s and more
    assert len(github.seen) == 1
    assert not (tmp_path / "bundle.check.json").exists()


def test_a_github_api_that_drips_its_headers_is_bounded_too(tmp_path, github):
    github.on(LATEST, Reply(200, release("v1.10.0"), drip=0.5, drip_head=True))
    started = time.monotonic()
    r = check(write_spec(tmp_path / "bundle.toml"), github, "--timeout", "1")
    assert r.code == 1 and "timed out after 1s (4 attempts)" in one_line(r.stderr), r
    assert time.monotonic() - started < 10  # 4 attempts of 1 s each


NESTED = b"[" * 200_000 + b"]" * 200_000
HOSTILE_ANSWERS = {
    # id: (reply, the line's words)
    "nested 200,000 deep": (Reply(200, raw=NESTED), "is nested too deeply to be read"),
    "nested past the cap": (Reply(200, raw=b'{"a":' * 100 + b"1" + b"}" * 100), "is nested more than 64 levels deep"),
    "huge": (Reply(200, raw=b"[" + b"0," * (5 << 20) + b"0]"), "the answer is over 8388608 bytes"),
    "shorter than its Content-Length": (Reply(200, raw=json.dumps(release("v1.10.0")).encode(), length=100_000),
                                        "the answer ended before the 100000 bytes its Content-Length announced"),
    "not JSON": (Reply(200, raw=b"<html>"), "is not JSON"),
    "a list for /latest": (Reply(200, [release("v1.10.0")]), "is a JSON list, not a JSON object"),
    "tag_name an object": (Reply(200, {**release("v1"), "tag_name": {"x": ["y"] * 10}}), "a release without a tag_name"),
    "tag_name huge": (Reply(200, release("1" * 100_000)), "which is not a version"),
    "absurd X-RateLimit-Reset": (Reply(403, {"message": "rate"}, {"X-RateLimit-Remaining": "0",
                                                                 "X-RateLimit-Reset": "999999999999"}),
                                 "GitHub did not say when it resets"),
    "X-RateLimit-Reset of 40 digits": (Reply(429, {}, {"X-RateLimit-Reset": "9" * 40}), "did not say when it resets"),
}


@pytest.mark.parametrize("case", HOSTILE_ANSWERS, ids=list(HOSTILE_ANSWERS))
def test_a_hostile_github_answer_is_one_line_and_records_nothing(tmp_path, github, case):
    reply, words = HOSTILE_ANSWERS[case]
    github.on(LATEST, reply)
    r = check(write_spec(tmp_path / "bundle.toml"), github)
    assert r.code == 1, r
    line = one_line(r.stderr)
    assert words in line and "--debug" not in line and len(line) < 400, line
    assert len(github.seen) == 1  # an answer, however bad, is not asked again


def test_wrong_types_in_a_release_are_ignored_not_fatal(tmp_path, github):
    github.on(LATEST, Reply(200, {**release("v1.10.0"), "published_at": 5, "html_url": ["x"], "name": None,
                                  "draft": "yes", "body": {"a": 1}}))
    r = check(write_spec(tmp_path / "bundle.toml"), github)
    assert r.code == 10 and "latest 1.10.0 (published unknown)" in r.stdout, r


def test_release_text_with_line_breaks_prints_no_lines_of_its_own(tmp_path, github):
    github.on(LATEST, Reply(200, {**release("v1.10.0"), "published_at": "2026-11-02T10:00:00Z\nup to date",
                                  "html_url": "https://github.com/x\r\nup to date\u2028up to date\x1b[2K"}))
    r = check(write_spec(tmp_path / "bundle.toml"), github)
    assert r.code == 10, r
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and "up to date" not in lines and lines[-1] == "newer release: 1.10.0", lines
    assert "(published 2026-11-02T10:00:00Z\\x0aup to date)" in lines[0]
    assert lines[1] == "https://github.com/x\\x0d\\x0aup to date\\u2028up to date\\x1b[2K"


@pytest.mark.parametrize("tag", ["v1.10.0/../../../x", "v1.10.0;touch pwned", "v1.10.0$(touch pwned)",
                                 "v1.10.0`touch pwned`", "v1.10.0\nup to date", "v1.10.0|sh"])
def test_a_hostile_tag_reaches_no_image_ref_and_no_file_name(tmp_path, github, tag):
    """--build with a registry nobody runs: a tag that is not a version stops before any build,
    any file name or any image ref is made from it; in a list it is skipped."""
    out = tmp_path / "out"
    github.on(LATEST, Reply(200, release(tag)))
    spec = write_spec(tmp_path / "bundle.toml", repo="127.0.0.1:1/nobody/app")
    r = check(spec, github, "--build", "--sign-key", "0" * 40, "-o", out)
    assert r.code == 1 and "which is not a version" in one_line(r.stderr), r
    assert "\n" not in r.stderr.rstrip("\n") and not out.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bundle.check.json", "bundle.toml"]
    github.on(LIST, Reply(200, [release(tag, prerelease=True), release("v1.9.0")]))
    r = check(spec, github, "--prereleases", "--build", "--sign-key", "0" * 40, "-o", out)
    assert r.code == 0 and "latest 1.9.0" in r.stdout and "up to date" in r.stdout, r
    assert not out.exists()


# --- notifications -------------------------------------------------------------------------------

def test_notify_posts_the_documented_event_once(tmp_path, github, receiver):
    github.on(LATEST, Reply(200, release("v1.10.0", body="Big release.\n\n- faster")))
    r = check(write_spec(tmp_path / "bundle.toml"), github, "--notify", receiver.url + "/hook")
    assert r.code == 10, r
    [post] = receiver.seen
    assert post.method == "POST" and post.headers["Content-Type"] == "application/json"
    event = json.loads(post.body)
    assert event == {
        "event": "bundle.release", "app": "app", "status": "newer", "current": "1.9.0", "latest": "1.10.0",
        "tag": "v1.10.0", "published_at": "2026-11-02T10:00:00Z",
        "release_url": f"https://github.com/{REPO}/releases/tag/v1.10.0", "notes": "Big release.\n\n- faster",
        "bundle": None,
        "text": f"app: release 1.10.0 is out (current 1.9.0) https://github.com/{REPO}/releases/tag/v1.10.0"}

    github.on(LATEST, Reply(200, release("v1.9.0")))  # up to date: nobody is bothered
    r = check(write_spec(tmp_path / "bundle.toml"), github, "--notify", receiver.url + "/hook")
    assert r.code == 0 and len(receiver.seen) == 1


def test_notify_is_retried_and_a_failed_delivery_never_changes_the_exit_code(tmp_path, github, receiver):
    github.on(LATEST, Reply(200, release("v1.10.0")))
    receiver.on("/hook", Reply(500), Reply(500), Reply(200))
    spec = write_spec(tmp_path / "bundle.toml")
    r = check(spec, github, "--notify", receiver.url + "/hook")
    assert r.code == 10 and r.stderr == "", r
    assert len(receiver.seen) == 3 and receiver.seen[0].body == receiver.seen[2].body

    receiver.on("/hook", Reply(500))
    r = check(spec, github, "--notify", receiver.url + "/hook")
    assert r.code == 10 and "latest 1.10.0" in r.stdout
    assert "notification to" in one_line(r.stderr) and "HTTP 500 after 4 attempts" in r.stderr
    r = check(spec, github, "--notify", "http://127.0.0.1:1/hook")  # nobody listening
    assert r.code == 10 and "ConnectionError after 4 attempts" in one_line(r.stderr)


def test_a_webhook_that_drips_is_a_bounded_warning_and_never_changes_the_exit_code(tmp_path, github, receiver):
    github.on(LATEST, Reply(200, release("v1.10.0")))
    receiver.on("/hook", Reply(200, {"ok": True}, drip=0.5, drip_head=True))
    started = time.monotonic()
    r = check(write_spec(tmp_path / "bundle.toml"), github, "--timeout", "1", "--notify", receiver.url + "/hook")
    assert r.code == 10 and "latest 1.10.0" in r.stdout, r
    assert one_line(r.stderr).endswith("failed: no answer within 1 s after 4 attempts"), r.stderr
    assert time.monotonic() - started < 10 and len(receiver.seen) == 4


# --- loop mode -----------------------------------------------------------------------------------

def test_interval_checks_again_and_stops_cleanly_on_sigterm(tmp_path, github):
    github.on(LATEST, Reply(200, release("v1.10.0")))
    env = {**os.environ, **check_env()}
    proc = subprocess.Popen([str(BUNDLE), "check", write_spec(tmp_path / "bundle.toml"), "--api-url", github.url,
                             "--interval", "1s"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(github.seen) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(github.seen) == 2, proc.poll()
        time.sleep(0.2)  # now asleep between checks
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
        assert time.monotonic() - stopped < 1
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and err == ""
    assert out.count("latest 1.10.0") == 2


def test_interval_loop_survives_every_hostile_answer_with_one_line_each(tmp_path, github):
    """docs/watch.md: a failed round is one line on stderr and the loop goes on."""
    github.on(LATEST, Reply(200, raw=NESTED), Reply(403, {}, {"X-RateLimit-Remaining": "0",
                                                             "X-RateLimit-Reset": "999999999999"}),
              Reply(200, raw=b"{}", length=5000), Reply(200, raw=b'{"tag_name": ["x"]}'),
              Reply(200, release("v1.10.0")))
    env = {**os.environ, **check_env()}
    proc = subprocess.Popen([str(BUNDLE), "check", write_spec(tmp_path / "bundle.toml"), "--api-url", github.url,
                             "--interval", "1s"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(github.seen) < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(github.seen) == 5, proc.poll()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    errors = err.splitlines()
    assert len(errors) == 4 and "Traceback" not in err, err
    assert "nested too deeply" in errors[0] and "did not say when it resets" in errors[1]
    assert "Content-Length" in errors[2] and "without a tag_name" in errors[3]
    assert "latest 1.10.0" in out


# --- --build against the loopback registry -------------------------------------------------------

@pytest.fixture(scope="session")
def builder_key(pgp_keys):
    return pgp_keys.builder.home, pgp_keys.builder.fpr


def test_build_makes_the_new_versions_bundle_and_records_it(tmp_path, github, registry, app_image, uniq,
                                                             builder_key, docker_client):
    repo = f"{registry}/watchtest/app-{uniq}"
    app_image(f"{repo}:1.10.0", "1.10.0")
    for _ in docker_client.images.push(f"{repo}:1.10.0", stream=True, decode=True):
        pass
    docker_client.images.remove(f"{repo}:1.10.0")  # so the build must pull it
    github.on(LATEST, Reply(200, release("v1.10.0")))
    spec = write_spec(tmp_path / "bundle.toml", repo=repo)
    before = spec.read_bytes()
    home, fpr = builder_key
    out_dir = tmp_path / "out"
    r = check(spec, github, "--build", "--sign-key", fpr, "--gnupghome", home, "-o", out_dir, "--json")
    assert r.code == 0, r
    doc = json.loads(r.stdout)
    assert first_error(cli_schema_name("check"), doc) is None
    bundle = out_dir / "app-1.10.0.bundle.zst"
    assert doc["status"] == "built" and doc["bundle"]["path"] == str(bundle)
    assert doc["bundle"]["sha256"] == (out_dir / "app-1.10.0.bundle.zst.sha256").read_text().split()[0]

    manifest = json.loads(fmt.read_head(bundle).manifest)
    assert manifest["version"] == "1.10.0" and manifest["sequence"] == 8
    assert [i["ref"] for i in manifest["images"]] == [f"{repo}:1.10.0"]
    assert manifest["images"][0]["repo_digest"].startswith(f"{repo}@sha256:")
    assert manifest["target"]["image"] == f"{repo}:1.10.0"
    assert spec.read_bytes() == before  # the user's spec is not rewritten
    built = json.loads((tmp_path / "bundle.check.json").read_text())["built"]
    assert built["version"] == "1.10.0" and built["sequence"] == 8 and built["path"] == str(bundle)

    r = check(spec, github)  # the state now counts: up to date at the built version
    assert r.code == 0 and "current 1.10.0, latest 1.10.0" in r.stdout, r


def test_build_of_a_release_whose_image_is_not_published_is_refused_and_records_nothing(
        tmp_path, github, registry, uniq, builder_key, docker_client):
    repo = f"{registry}/watchtest/missing-{uniq}"
    github.on(LATEST, Reply(200, release("v1.10.0")))
    spec = write_spec(tmp_path / "bundle.toml", repo=repo)
    home, fpr = builder_key
    r = check(spec, github, "--build", "--sign-key", fpr, "--gnupghome", home)
    assert r.code == 2, r
    line = one_line(r.stderr)
    assert f"cannot build app 1.10.0: image {repo}:1.10.0 not found in its registry; nothing recorded" in line
    assert list(tmp_path.glob("*.zst*")) == [] and list(tmp_path.glob(".app-*")) == []
    assert json.loads((tmp_path / "bundle.check.json").read_text())["built"] is None
    r = check(spec, github)  # still newer: the next check will try again
    assert r.code == 10
