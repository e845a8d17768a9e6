"""bundlecore.remote against raw loopback socket servers that answer as a hostile server would:
a total deadline in every phase, a body cap, a body shorter than its Content-Length, JSON nested
too deeply or of the wrong type; each is one RemoteProblem with its Failure, never a hang or a
traceback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bundlecore.errors import EnvironmentProblem
from bundlecore import remote
from bundlecore.remote import MAX_DEPTH, Failure, RemoteProblem, depth, fetch, parse_json
from tests.unit.conftest import answer, drip


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def _timed(url: str, **kw) -> tuple[RemoteProblem, float]:
    started = time.monotonic()
    with pytest.raises(RemoteProblem) as e:
        fetch("GET", url, **{"timeout": 1.0, "max_bytes": 1 << 20, **kw})
    return e.value, time.monotonic() - started


def test_a_body_dripped_one_byte_at_a_time_ends_at_the_total_deadline(serve):
    url = serve(lambda c: drip(c, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x", 0.2))
    err, took = _timed(url)
    assert err.failure is Failure.TIMEOUT and err.answered and str(err) == "no complete answer within 1 s"
    assert 0.9 < took < 2.0  # not one socket timeout per byte


def test_headers_dripped_end_at_the_total_deadline_too(serve):
    url = serve(lambda c: drip(c, b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n", 0.2))
    err, took = _timed(url)
    assert err.failure is Failure.TIMEOUT and not err.answered and str(err) == "no answer within 1 s"
    assert took < 2.0


def test_a_server_that_never_answers_ends_at_the_deadline(serve):
    url = serve(lambda c: time.sleep(5))
    err, took = _timed(url, timeout=0.5)
    assert err.failure is Failure.TIMEOUT and not err.answered and took < 1.5


def test_a_dripped_body_without_a_length_is_not_taken_for_a_wholeanswer(serve):
    url = serve(lambda c: drip(c, b"HTTP/1.0 200 OK\r\n\r\n", b"[", 0.1))
    err, _ = _timed(url, timeout=0.5)
    assert err.failure is Failure.TIMEOUT


def test_a_body_over_its_cap_is_refused_announced_or_not(serve):
    big = b"[" + b"1," * 600 + b"1]"
    err, _ = _timed(serve(answer(big)), max_bytes=1000)
    assert err.failure is Failure.TOO_LARGE and f"({len(big)} announced)" in str(err)
    url = serve(lambda c: drip(c, b"HTTP/1.0 200 OK\r\n\r\n", b"x" * 4096, 0, count=10))
    err, _ = _timed(url, max_bytes=10000)
    assert err.failure is Failure.TOO_LARGE and str(err) == "the answer is over 10000 bytes"


def test_a_body_shorter_than_its_content_length_is_truncated_not_ananswer(serve):
    err, _ = _timed(serve(answer(b'{"a": 1}', length=1000)))
    assert err.failure is Failure.TRUNCATED and "before the 1000 bytes its Content-Length announced" in str(err)


def test_nobody_listening_is_unreachable_and_names_the_cause():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err, _ = _timed(f"http://127.0.0.1:{port}/")
    assert err.failure is Failure.UNREACHABLE and err.cause == "ConnectionError"


def test_a_resolver_that_does_not_answer_ends_at_the_deadline_and_says_so(monkeypatch):
    """A dead DNS server makes getaddrinfo wait 5 s per try and server: the deadline covers it."""
    asked = []

    def silent(host, *args):
        asked.append(host)
        time.sleep(5)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(remote, "_getaddrinfo", silent)
    err, took = _timed("http://updates.example.test:8080/x", timeout=0.5)
    assert asked == ["updates.example.test"]
    assert err.failure is Failure.TIMEOUT and not err.answered and not err.host_unreachable
    assert err.unresolved == "updates.example.test"
    assert str(err) == "no answer within 0.5 s (the name updates.example.test did not resolve in time)"
    assert took < 1.5


def test_a_name_the_resolver_cannot_find_is_unreachable_at_once(monkeypatch):
    def unknown(host, *args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(remote, "_getaddrinfo", unknown)
    err, took = _timed("http://nowhere.example.test/x", timeout=5)
    assert err.failure is Failure.UNREACHABLE and err.unresolved is None and took < 1


def test_a_host_name_is_connected_to_at_the_address_it_resolves_to_and_keeps_its_name():
    """localhost, through the deadline's resolver: the connection goes to the address it resolves
    to, and the request still names the host (the Host header; TLS would verify the same name)."""
    seen = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve_one():
            conn, _ = listener.accept()
            with conn:
                seen.append(conn.recv(65536))
                answer(b'{"ok": 1}')(conn)

        threading.Thread(target=serve_one, daemon=True).start()
        reply = fetch("GET", f"http://localhost:{listener.getsockname()[1]}/x", timeout=2, max_bytes=100, direct=True)
    assert reply.status_code == 200 and reply.json(expect=dict) == {"ok": 1}
    assert b"\r\nHost: localhost:" in seen[0]


def test_a_whole_answer_in_time_is_returned_and_status_only_reads_no_body(serve):
    reply = fetch("GET", serve(answer(b'{"ok": [1, 2]}')), timeout=2, max_bytes=100)
    assert reply.status_code == 200 and reply.json(expect=dict) == {"ok": [1, 2]}
    url = serve(lambda c: drip(c, b"HTTP/1.1 204 No Content\r\nContent-Length: 100000\r\n\r\n", b"x", 0.2))
    started = time.monotonic()
    assert fetch("POST", url, json={}, timeout=2, max_bytes=0, read_body=False).status_code == 204
    assert time.monotonic() - started < 1


def test_json_nested_200000_levels_is_one_error_not_a_recursion_error():
    with pytest.raises(RemoteProblem) as e:
        parse_json(b"[" * 200_000 + b"]" * 200_000, "the answer")
    assert e.value.failure is Failure.TOO_DEEP
    with pytest.raises(RemoteProblem) as e:  # deeper than the cap but well inside the parser's limit
        parse_json(b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1))
    assert e.value.failure is Failure.TOO_DEEP
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None


@pytest.mark.parametrize("body, failure", [
    (b"not json", Failure.NOT_JSON), (b"\xff\xfe\x00", Failure.NOT_JSON), (b"1" * 5000, Failure.NOT_JSON),
    (b"[]", Failure.WRONG_TYPE), (b'"text"', Failure.WRONG_TYPE)])
def test_json_that_is_not_json_or_not_an_object_is_one_error(body, failure):
    with pytest.raises(RemoteProblem) as e:
        parse_json(body, "the answer", dict)
    assert e.value.failure is failure and "\n" not in str(e.value)


def test_depth_is_linear_and_counts_containers_only():
    assert depth(1) == 0 and depth([]) == 1 and depth({"a": [1, {"b": 2}]}) == 3
    wide = [[i] for i in range(100_000)]
    assert depth(wide) == 2


def test_a_registry_that_drips_its_answer_is_one_line_within_its_deadline(serve, monkeypatch, tmp_path):
    """importer.registry's own requests (GET /v2/, tokens, digests) go through the same deadline."""
    from importer import registry

    monkeypatch.setattr(registry, "REQUEST_TIMEOUT", 1.0)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no credentials
    url = serve(lambda c: drip(c, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x", 0.2))
    address = url.split("/")[2]
    started = time.monotonic()
    with pytest.raises(EnvironmentProblem) as e:
        registry.check_access(address)
    assert str(e.value) == f"registry {address} does not answer usably (no complete answer within 1 s)"
    assert time.monotonic() - started < 2


def test_a_head_answer_has_no_body_whatever_its_content_length(serve):
    url = serve(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 165\r\nDocker-Content-Digest: sha256:x\r\n\r\n"))
    reply = fetch("HEAD", url, timeout=2, max_bytes=100)
    assert reply.status_code == 200 and reply.body == b"" and reply.headers["Docker-Content-Digest"] == "sha256:x"
