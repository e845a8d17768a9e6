"""The engine layer's typed errors, which of them are transient, and the bounded retry.

Pure (no SDK): the translation from the SDK's exceptions lives in bundlecore.engine.sdk, so these
rules are table-tested without an engine and a second engine maps its own errors onto them.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

# Seconds between the tries of an idempotent call the engine answered with a transient error:
# six tries over about 8 s, enough for a busy storage driver or a removal already in progress.
RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1, 2, 4)

# (HTTP status or None for a transport failure, text in the engine's message, the short reason said)
TRANSIENT: tuple[tuple[int | None, str, str], ...] = (
    (500, "directory not empty", "filesystem still busy"),
    (500, "device or resource busy", "device or resource busy"),
    (500, "unable to remove filesystem", "filesystem still busy"),
    (409, "is already in progress", "removal already in progress"),
    # Podman, removing (force) a container that exited a moment ago: its SIGKILL finds it stopped
    # before its own state says so ("... could not be stopped: ... container state improper")
    (500, "container state improper", "container still changing state"),
    # Docker, the same race: "Could not kill running container X, cannot remove - Container X is not running"
    (409, "cannot remove - container", "container still changing state"),
    (None, "reset by peer", "connection reset"),
    (None, "remote end closed connection", "connection reset"),
    # the SDK's unix-socket adapter keeps one pool per URL and closes the least recently used one,
    # even while another thread's request is on it (8 concurrent image inspects): a new try gets a new pool
    (None, "pool is closed", "connection pool recycled"),
)


class EngineError(Exception):
    """The engine refused or failed a call: its HTTP status (None: no answer) and its own message."""

    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status, self.message = status, message
        self.transient = transient_reason(status, message)

    @property
    def explanation(self) -> str:
        """The engine's message (the name the SDK's errors used, so `e.explanation or e` keeps working)."""
        return self.message


class EngineNotFound(EngineError):
    """404: no such container, image, volume, network or service."""


class EngineConflict(EngineError):
    """409: the object is in a state that forbids the call (name in use, removal in progress, ...)."""


def transient_reason(status: int | None, message: str) -> str | None:
    """A short reason when a second try a moment later may succeed; None for a permanent answer."""
    text = (message or "").lower()
    for code, needle, reason in TRANSIENT:
        if code == status and needle in text:
            return reason
    return None


def retrying(op: str, call: Callable[[], T], *, say: Callable[[str], None],
             sleep: Callable[[float], None] = time.sleep, delays: tuple[float, ...] = RETRY_DELAYS,
             gone_is_done: bool = False) -> T | None:
    """`call()`, tried again after each delay while the engine answers a transient error (each
    retry said in one line). `gone_is_done`: a removal whose retry finds the object gone has
    succeeded (the first try did the work). A persistent failure raises the last error."""
    for attempt, delay in enumerate((*delays, None)):
        try:
            return call()
        except EngineNotFound:
            if gone_is_done and attempt > 0:
                return None
            raise
        except EngineError as e:
            if delay is None or not e.transient:
                raise
            say(f"engine busy: {e.transient}; retrying {op} in {delay:g} s")
            sleep(delay)
    raise AssertionError("unreachable")
