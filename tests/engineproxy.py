"""A proxy on a unix socket in front of the engine's socket that answers some container removals
with the engine's own transient 500, to prove the product retries them, or runs a test's action
when a request arrives, before forwarding it (point to it with DOCKER_HOST=unix://<path>).

One request per connection: each forwarded request gets `Connection: close`, so every request
arrives on a fresh connection and its head can be read here; upgraded connections (exec, attach)
are forwarded untouched. Everything else passes through byte for byte."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

ENGINE_SOCKET = "/var/run/docker.sock"
_DELETE = re.compile(rb"^DELETE /v[\d.]+/containers/([^/?\s]+)[?\s]")


class EngineProxy:
    """`fail(cid) -> bool` chooses the removals to fail; the first `times` chosen ones are answered
    `500 unable to remove filesystem ... directory not empty` (what dockerd says when a busy
    storage driver keeps a file open), the later ones are forwarded."""

    def __init__(self, path: Path, fail, times: int = 2, upstream: str = ENGINE_SOCKET, before=None):
        self.path, self.fail, self.left, self.upstream = str(path), fail, times, upstream
        self.before = before  # before(request head): called, then the request is forwarded (a race made on cue)
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True, name="engine-proxy")

    def __enter__(self) -> "EngineProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.close()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            m = _DELETE.match(head)
            if m and self._take(m.group(1).decode()):
                cid = m.group(1).decode()
                body = (f'{{"message":"unable to remove filesystem for {cid}: unlinkat '
                        f'/var/lib/docker/containers/{cid}/mounts/shm: directory not empty"}}').encode()
                client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                               b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                return
            if self.before is not None:
                self.before(head)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
                up.connect(self.upstream)
                up.sendall(_one_request(head))
                back = threading.Thread(target=_pump, args=(up, client), daemon=True)
                back.start()
                _pump(client, up)
                back.join()

    def _take(self, cid: str) -> bool:
        with self._lock:
            if self.left <= 0 or not self.fail(cid):
                return False
            self.left -= 1
            self.failed.append(cid)
            return True


def _one_request(data: bytes) -> bytes:
    """The request with `Connection: close` (unless it asks for an upgrade: then untouched)."""
    end = data.index(b"\r\n\r\n")
    lines = data[:end].split(b"\r\n")
    if any(ln.lower().startswith(b"upgrade:") for ln in lines[1:]):
        return data
    lines = [lines[0]] + [ln for ln in lines[1:] if not ln.lower().startswith(b"connection:")] + [b"Connection: close"]
    return b"\r\n".join(lines) + data[end:]


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            chunk = src.recv(65536)
            if not chunk:
                break
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
