"""Shared by the unit tests: `serve`, a raw loopback socket server answering as a hostile server
would (see `drip` and `answer` for the usual answers)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """serve(handler) -> URL of a loopback server calling handler(conn) per connection."""
    listeners: list[socket.socket] = []

    def start(handler: Callable[[socket.socket], None]) -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        listeners.append(s)

        def run() -> None:
            while True:
                try:
                    conn, _ = s.accept()
                except OSError:
                    return
                threading.Thread(target=_quietly, args=(handler, conn), daemon=True).start()

        threading.Thread(target=run, daemon=True).start()
        return f"http://127.0.0.1:{s.getsockname()[1]}/x"

    yield start
    for s in listeners:
        s.close()


def _quietly(handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
    try:
        conn.recv(65536)
        handler(conn)
    except OSError:  # the client gave up: that is the point
        pass
    finally:
        conn.close()


def drip(conn: socket.socket, head: bytes, byte: bytes, every: float, count: int = 200) -> None:
    conn.sendall(head)
    for _ in range(count):
        conn.sendall(byte)
        time.sleep(every)


def answer(body: bytes, length: int | None = None) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body)
    return handler
