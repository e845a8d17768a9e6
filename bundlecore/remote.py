"""Every remote answer this tool reads (GitHub's API and a webhook for `bundle check`, Prometheus
during probation, a registry during an import) goes through `fetch` and `parse_json`.

Why one helper: a socket timeout bounds one read, not the answer. A server that sends its headers
and then one byte a second (or drips its headers) keeps a per-read timeout happy forever, holding
an import's lock or a cron job. So:

- `fetch` has a TOTAL deadline over connect, headers and body: a watchdog shuts the connection's
  socket down when it passes, whatever phase the request is in, and the body is read in chunks
  against the same deadline and a size cap (a declared Content-Length above the cap is refused
  before reading; a body that ends before its Content-Length is an error, not an answer);
- `parse_json` never raises anything but the one typed error: not JSON, not UTF-8, nested deeper
  than MAX_DEPTH (the parser's own recursion limit would be a RecursionError: a traceback), or
  not the type asked for.

Every failure is a `RemoteProblem` (an EnvironmentProblem, exit 1, one line) whose `failure` says
what went wrong as an enum, so callers decide (retry, count as a failed evaluation) on that, never
on the message. Name resolution is inside the deadline too: the resolver is asked on a thread
that the request waits for only until the deadline (a DNS server that does not answer makes glibc
wait 5 s per try and per server), and the connection then goes to the addresses it gave.
"""

from __future__ import annotations

import enum
import errno
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.connection import allowed_gai_family, create_connection

from bundlecore.errors import EnvironmentProblem

CHUNK = 64 << 10
MAX_DEPTH = 64  # GitHub's and Prometheus' answers nest 5 or 6 levels


class Failure(str, enum.Enum):
    TIMEOUT = "timeout"          # no complete answer within the deadline
    UNREACHABLE = "unreachable"  # no connection, TLS failure, broken protocol
    TOO_LARGE = "too-large"      # the body is over its cap
    TRUNCATED = "truncated"      # the body ended before its Content-Length
    NOT_JSON = "not-json"        # not JSON (or not UTF-8)
    TOO_DEEP = "too-deep"        # JSON nested deeper than MAX_DEPTH
    WRONG_TYPE = "wrong-type"    # JSON, but not the type asked for


class RemoteProblem(EnvironmentProblem):
    """A remote answer that cannot be used; `failure` says why, `answered` whether the server had
    sent its status line and headers (a timeout after that is a slow body, not a slow server)."""

    def __init__(self, failure: Failure, message: str, answered: bool = False, cause: str = "",
                 host_unreachable: bool = False, unresolved: str | None = None) -> None:
        super().__init__(message)
        self.failure = failure
        self.answered = answered
        self.cause = cause or failure.value  # the underlying exception's name, when there was one
        # no route to the host at all (as opposed to "nothing listens there" or "it did not answer")
        self.host_unreachable = host_unreachable
        self.unresolved = unresolved  # a TIMEOUT while the resolver was still asked for this name


@dataclass(frozen=True)
class Reply:
    """A whole answer, read within the deadline and under the cap."""

    url: str
    status_code: int
    headers: Mapping[str, str]
    body: bytes

    def json(self, what: str = "the answer", expect: type | None = None) -> Any:
        return parse_json(self.body, what, expect)


def parse_json(body: bytes, what: str = "the answer", expect: type | None = None) -> Any:
    """`body` as JSON, at most MAX_DEPTH levels deep (and an instance of `expect` when given);
    RemoteProblem (NOT_JSON, TOO_DEEP, WRONG_TYPE) otherwise."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise RemoteProblem(Failure.TOO_DEEP, f"{what} is nested too deeply to be read") from None
    except ValueError:  # also UnicodeDecodeError, and an integer of more than 4300 digits
        raise RemoteProblem(Failure.NOT_JSON, f"{what} is not JSON") from None
    if depth(doc) > MAX_DEPTH:
        raise RemoteProblem(Failure.TOO_DEEP, f"{what} is nested more than {MAX_DEPTH} levels deep")
    if expect is not None and not isinstance(doc, expect):
        raise RemoteProblem(Failure.WRONG_TYPE, f"{what} is a JSON {type(doc).__name__}, not a JSON "
                                              f"{'object' if expect is dict else expect.__name__}")
    return doc


def depth(doc: object) -> int:
    """How deeply lists and objects nest in `doc` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        obj, level = stack.pop()
        children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


class _Watchdog:
    """Shuts down every socket of one request when its deadline passes (a blocked read returns)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def adopt(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def passed(self) -> bool:
        return self.expired or time.monotonic() >= self.deadline

    def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """getaddrinfo(host, port) for a TCP connection, waited for until the deadline at most (then
        _NameTimeout); the thread asking is left to end when the resolver gives up."""
        answer: list[list[tuple[Any, ...]] | BaseException] = []
        done = threading.Event()

        def ask() -> None:
            try:
                answer.append(_getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM))
            except BaseException as e:  # handed to the request's thread, which raises it
                answer.append(e)
            done.set()

        threading.Thread(target=ask, name=f"resolve {host}", daemon=True).start()
        if not done.wait(max(0.0, self.deadline - time.monotonic())):
            raise _NameTimeout(host)
        if isinstance(answer[0], BaseException):
            raise answer[0]
        return answer[0]

    def cancel(self) -> None:
        self._timer.cancel()


_getaddrinfo = socket.getaddrinfo   # the resolver (the unit tests put a silent one here)


class _NameTimeout(urllib3.exceptions.ConnectTimeoutError):
    """The resolver did not answer before the request's deadline."""

    def __init__(self, host: str) -> None:
        super().__init__(f"the name {host} did not resolve in time")
        self.host = host


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watched(pool_cls: Any, dog: _Watchdog) -> Any:
    """`pool_cls` whose connections hand their raw socket to `dog` as soon as it is connected
    (before TLS, before the request is sent: every later read is then bounded)."""

    class Watched(pool_cls.ConnectionCls):  # type: ignore[misc]
        def _new_conn(self) -> socket.socket:
            sock = _connect(self, dog)
            dog.adopt(sock)
            return sock

    return type(pool_cls.__name__, (pool_cls,), {"ConnectionCls": Watched})


def _connect(conn: Any, dog: _Watchdog) -> socket.socket:
    """What urllib3's HTTPConnection._new_conn does, with the name resolved within the deadline
    (`_Watchdog.resolve`): urllib3's own create_connection to the first of its addresses that takes
    the connection, with what the resolver left of the deadline; the connection keeps the host name
    for TLS and the Host header. Errors are urllib3's own, so the HTTP client reports them as it would."""
    try:
        addresses = dog.resolve(conn._dns_host.strip("[]"), conn.port)
    except socket.gaierror as e:
        raise urllib3.exceptions.NameResolutionError(conn.host, conn, e) from e
    except UnicodeError:  # not a name IDNA can encode
        raise urllib3.exceptions.LocationParseError(f"'{conn.host}', label empty or too long") from None
    error: OSError | None = None
    for *_, address in addresses:
        timeout = max(0.001, min(conn.timeout, dog.deadline - time.monotonic()))  # fetch always gives one
        try:
            return create_connection(address[:2], timeout, source_address=conn.source_address,
                                     socket_options=conn.socket_options)
        except TimeoutError as e:
            raise urllib3.exceptions.ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})") from e
        except OSError as e:
            error = e
    raise urllib3.exceptions.NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


class _Adapter(HTTPAdapter):
    def __init__(self, dog: _Watchdog) -> None:
        self._dog = dog
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._watch(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        self._watch(manager)
        return manager

    def _watch(self, manager: Any) -> None:
        manager.pool_classes_by_scheme = {scheme: _watched(cls, self._dog)
                                          for scheme, cls in manager.pool_classes_by_scheme.items()}


_BROKEN = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
# Errors that mean "this host cannot reach that address" (as opposed to "nothing listens there").
UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EADDRNOTAVAIL})


def causes(e: BaseException | None) -> Iterator[BaseException]:
    """An exception and everything it was raised from or during."""
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def fetch(method: str, url: str, *, timeout: float, max_bytes: int, read_body: bool = True, direct: bool = False,
          **kwargs: Any) -> Reply:
    """One HTTP request (no retries) whose whole answer arrives within `timeout` seconds and holds
    at most `max_bytes` (read_body=False: the status and headers only). `kwargs` go to requests
    (headers, params, json, auth, allow_redirects). Proxies come from the environment, unless
    `direct` (an address on this host, e.g. a container probed by the health gate)."""
    dog = _Watchdog(timeout)
    session = requests.Session()
    session.trust_env = not direct
    adapter = _Adapter(dog)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    try:
        try:
            resp = session.request(method, url, timeout=(timeout, timeout), stream=True, **kwargs)
        except _BROKEN as e:
            unresolved = next((c.host for c in causes(e) if isinstance(c, _NameTimeout)), None)
            no_route = unresolved is None and (isinstance(e, requests.ConnectTimeout) or any(
                getattr(c, "errno", None) in UNREACHABLE_ERRNOS for c in causes(e)))
            if dog.passed() or isinstance(e, requests.Timeout):
                why = f" (the name {unresolved} did not resolve in time)" if unresolved else ""
                raise RemoteProblem(Failure.TIMEOUT, f"no answer within {timeout:g} s{why}",
                                    host_unreachable=no_route, unresolved=unresolved) from None
            raise RemoteProblem(Failure.UNREACHABLE, f"cannot reach it ({type(e).__name__})",
                                cause=type(e).__name__, host_unreachable=no_route) from None
        with resp:
            if dog.expired:  # the headers were cut off by the watchdog
                raise RemoteProblem(Failure.TIMEOUT, f"no answer within {timeout:g} s")
            # a HEAD, 204 or 304 answer has no body, whatever its Content-Length says (RFC 9110 6.4.1)
            has_body = method.upper() != "HEAD" and resp.status_code not in (204, 304) and resp.status_code >= 200
            body = _read(resp, dog, timeout, max_bytes) if read_body and has_body else b""
            return Reply(resp.url, resp.status_code, resp.headers, body)
    finally:
        dog.cancel()
        session.close()


def _read(resp: requests.Response, dog: _Watchdog, timeout: float, max_bytes: int) -> bytes:
    declared = resp.headers.get("Content-Length", "")
    length = int(declared) if declared.isascii() and declared.isdigit() and len(declared) < 20 else None
    if length is not None and length > max_bytes:
        raise RemoteProblem(Failure.TOO_LARGE, f"the answer is over {max_bytes} bytes ({length} announced)", True)
    body = bytearray()
    late = RemoteProblem(Failure.TIMEOUT, f"no complete answer within {timeout:g} s", True)
    try:
        for chunk in resp.iter_content(CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise RemoteProblem(Failure.TOO_LARGE, f"the answer is over {max_bytes} bytes", True)
            if dog.passed():
                raise late
    except _BROKEN as e:
        if dog.passed():
            raise late from None
        if length is not None and len(body) < length:
            raise _truncated(length) from None
        raise RemoteProblem(Failure.UNREACHABLE, f"the connection broke ({type(e).__name__})", True,
                            type(e).__name__) from None
    if dog.expired:  # a connection shut down by the watchdog looks like the end of a body without a length
        raise late
    if length is not None and len(body) < length and "Content-Encoding" not in resp.headers:
        raise _truncated(length)
    return bytes(body)


def _truncated(length: int) -> RemoteProblem:
    return RemoteProblem(Failure.TRUNCATED, f"the answer ended before the {length} bytes its Content-Length announced",
                         True)
