"""Podman through its Docker-compatible socket (`podman system service`, API 1.41): the Docker
engine's calls, with what Podman does differently translated here (bundlecore.engine.dialects
holds the pure rules), so nothing above the engine layer changes.

- Image names: `podman load` tags a registry-less `demo/app:1.0.0` as `localhost/demo/app:1.0.0`
  (`docker.io/...` when written as Docker Hub's): `signed_ref_of` maps it back; the loader still
  checks the image ID (importer.load).
- Errors: a name in use, a missing container or image come as 500; mapped onto EngineConflict and
  EngineNotFound.
- Inspect: HostConfig.Ulimits named `RLIMIT_NOFILE`, which its own create refuses: named `nofile`;
  a State.Health of empty status on a container without a health check: dropped (Docker has none).
- Archives: of a stopped container's mount Podman names the members "", "/file" instead of
  "data", "data/file" (the backup of every swap reads one): renamed as Docker names them.
- Stop timeout: a container created through this API without StopTimeout gets 0 (SIGKILL at once);
  it gets Docker's default (10 s) instead.
- Restart policy: Podman 4.3 cannot change a container's policy after creation (no update endpoint).
  A parked container keeps its policy; Podman restarts no stopped container by itself (no daemon:
  only podman-restart.service at boot, for `always` containers), so parking is its stop.
- Start: a container whose process exits at once (a broken release) can make the start answer
  `read /proc/PID/cgroup: no such process`; it did start and exit, and is left to the health gate
  to judge like Docker's, rather than failing the swap on an engine error.
- Layers: `podman load` reads every layer the archive names, even one it has: every layer is sent
  (`skips_known_layers`), so a delta bundle, which leaves out layers, cannot be loaded on Podman.
- No Swarm (`runs_swarm`): the `service` target kind is refused before anything changes.
- No daemon restarts a container after a reboot (`restarts_after_reboot`): systemd does, through a
  unit Podman itself writes (`systemd_unit`: its libpod `generate systemd` endpoint, the text of
  `podman generate systemd --name NAME`), which starts and stops the existing container by name.
"""

from __future__ import annotations

import io
import posixpath
import queue
import tarfile
import threading
from typing import IO, Any, Callable, Iterator, cast
from urllib.parse import quote

from bundlecore.engine.dialects import (PODMAN_IMPLICIT_REGISTRIES, EngineKind, archive_member_name, describe,
                                        podman_container, podman_error, podman_rootless,
                                        podman_start_outran)
from bundlecore.engine.errors import EngineError, EngineNotFound
from bundlecore.engine.sdk import DEFAULT_STOP_TIMEOUT, Engine, Json


class PodmanEngine(Engine):
    kind = EngineKind.PODMAN
    implicit_registries = PODMAN_IMPLICIT_REGISTRIES
    runs_swarm = False
    restarts_after_reboot = False

    def _once(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return super()._once(fn, *args, **kw)
        except EngineError as e:
            raise podman_error(e) from None

    def describe(self) -> str:
        """'Podman 4.3.1, API 1.41' and ', rootless' for a user's own service (its storage, its socket)."""
        return describe(self.kind, self.version(), self.rootless())

    def rootless(self) -> bool:
        """From Podman's own /libpod/info (its Docker-compatible /info does not say); False where that
        answers nothing readable: the engine's name is display, never a decision."""
        def get() -> Json:
            return cast(Json, self._api._result(self._api._get(f"{self._api.base_url}/v4.0.0/libpod/info"), json=True))
        try:
            return podman_rootless(self._idem("libpod info", get))
        except EngineError:
            return False

    def inspect_container(self, ref: str) -> Json:
        return podman_container(super().inspect_container(ref))

    def get_archive(self, cid: str, path: str, chunk_size: int = 1 << 20) -> tuple[Iterator[bytes], Json]:
        stream, stat = super().get_archive(cid, path, chunk_size)
        top = stat.get("name") or posixpath.basename(path.rstrip("/")) or "."
        return renamed_tar(stream, lambda name: archive_member_name(name, top), path), stat

    def create_container(self, config: Json, name: str | None = None) -> str:
        if config.get("StopTimeout") is None:
            config = {**config, "StopTimeout": DEFAULT_STOP_TIMEOUT}
        return super().create_container(config, name)

    def start(self, cid: str) -> None:
        try:
            super().start(cid)
        except EngineError as e:
            state = (self.container(cid) or {}).get("State") or {}
            if not (podman_start_outran(e) and state.get("Status") in ("exited", "stopped")):
                raise
            # it ran and exited before Podman read its cgroup: started, as Docker would say (see above)

    def set_restart_policy(self, cid: str, policy: Json) -> None:
        try:
            super().set_restart_policy(cid, policy)
        except EngineNotFound as e:
            if "no such container" in e.message.lower():
                raise
            # the update endpoint itself is missing (Podman before 5): the policy stays (see above)

    def systemd_unit(self, name: str, restart: str) -> str:
        """`podman generate systemd --name NAME --restart-policy RESTART` (not `--new`: the unit starts
        the container the swap made, whose ID and backups the state dir records), from Podman's own
        generator over its libpod API, so the unit is what this Podman version writes."""
        def get() -> str:
            url = f"{self._api.base_url}/v4.0.0/libpod/generate/{quote(name, safe='')}/systemd"
            res = self._api._get(url, params={"useName": "true", "new": "false", "restartPolicy": restart})
            units = self._api._result(res, json=True)
            return str(next(iter(units.values())))
        return cast(str, self._idem(f"systemd unit of {name}", get))

    def skips_known_layers(self) -> bool:
        return False


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (tarfile reads the engine's stream through it)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def renamed_tar(chunks: Iterator[bytes], rename: Callable[[str], str], what: str) -> Iterator[bytes]:
    """The tar stream `chunks` with each member (and hard link target) renamed, contents and
    metadata as they are; streamed (a worker thread and a short queue: memory stays flat)."""
    out: queue.Queue[object] = queue.Queue(maxsize=8)
    end, cancelled, failure = object(), threading.Event(), list[BaseException]()

    class _Writer:
        def write(self, data: bytes) -> int:
            while not cancelled.is_set():
                try:
                    out.put(bytes(data), timeout=0.1)
                    return len(data)
                except queue.Full:
                    continue
            raise _Cancelled()

    def work() -> None:
        try:
            with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks), 1 << 20), mode="r|") as src, \
                    tarfile.open(fileobj=cast(IO[bytes], _Writer()), mode="w|", format=tarfile.PAX_FORMAT) as dst:
                for m in src:
                    m.name = rename(m.name)
                    m.pax_headers = {k: v for k, v in m.pax_headers.items()  # else the old names, kept
                                     if k not in ("path", "linkpath")}       # there, would win
                    if m.islnk():
                        m.linkname = rename(m.linkname)
                    dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        except _Cancelled:
            pass
        except tarfile.TarError as e:
            failure.append(EngineError(None, f"the engine's archive of {what} does not read as tar: {e}"))
        except BaseException as e:  # the engine's stream failed: raised to the reader
            failure.append(e)
        finally:
            while not cancelled.is_set():
                try:
                    out.put(end, timeout=0.1)
                    break
                except queue.Full:
                    continue

    worker = threading.Thread(target=work, name="podman-archive", daemon=True)
    worker.start()
    try:
        while (item := out.get()) is not end:
            yield cast(bytes, item)
        if failure:
            raise failure[0]
    finally:
        cancelled.set()
        worker.join()


class _Cancelled(Exception):
    """The reader of a renamed archive stopped reading."""
