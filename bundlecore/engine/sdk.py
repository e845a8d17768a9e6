"""The Docker engine over the Docker SDK: every call the product makes, grouped by object.

Each method translates the SDK's exceptions into bundlecore.engine.errors (callers never see
`docker.errors`); the idempotent ones (inspect, stop, remove, rename, restart policy, ...) are
retried while the engine answers a transient error. Quirks of this engine's API are kept here:
the full-EndpointConfig network connect, the platform strings, the `docker save` endpoint.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from contextlib import contextmanager
from typing import Any, Callable, Iterator, cast

import docker
import docker.auth
import requests

from bundlecore import progress
from bundlecore.engine.dialects import EngineKind, describe, engine_kind, signed_ref_of, unreachable_line
from bundlecore.engine.errors import EngineConflict, EngineError, EngineNotFound, retrying
from bundlecore.errors import EnvironmentProblem

DEFAULT_STOP_TIMEOUT = 10  # the engine's own default

Json = dict[str, Any]  # an engine answer (inspect records, events) as the SDK decodes it


def engine_address() -> str:
    """Where the Docker SDK looks for the engine (as `docker` does: $DOCKER_HOST or the socket)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _unreachable() -> EnvironmentProblem:
    """The one engine-down line of every command: the same words whatever the SDK raised
    (the exception's own text varies by transport and says nothing an admin can act on)."""
    return EnvironmentProblem(unreachable_line(engine_address()))


def translate(e: BaseException) -> EngineError:
    """The engine layer's error for an exception the SDK (or its HTTP transport) raised."""
    if isinstance(e, docker.errors.APIError):
        status = e.status_code
        message = e.explanation or str(e)
        if isinstance(message, bytes):
            message = message.decode(errors="replace")
        cls = EngineNotFound if status == 404 or isinstance(e, docker.errors.NotFound) else \
            EngineConflict if status == 409 else EngineError
        return cls(status, str(message))
    return EngineError(None, str(e) or type(e).__name__)


_SDK_ERRORS = (docker.errors.DockerException, requests.RequestException)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except _SDK_ERRORS as e:
        raise translate(e) from None


def _stream(events: Any) -> Iterator[Any]:
    """Iterate an SDK stream with its errors translated (streams are never retried)."""
    with _translated():
        yield from events


def container_name(info: Json) -> str:
    return info["Name"].lstrip("/")


def stop_timeout(info: Json) -> int:
    """The container's own StopTimeout (0 is a valid value), else the engine's default."""
    t = info["Config"].get("StopTimeout")
    return DEFAULT_STOP_TIMEOUT if t is None else int(t)


def seconds_up(info: Json, now: float | None = None) -> float | None:
    """How long the container has been running since its last start (None if not running or the
    engine's StartedAt, nanoseconds and all, cannot be read)."""
    st = info.get("State") or {}
    text = st.get("StartedAt") or ""
    if not st.get("Running") or not text.endswith("Z"):
        return None
    whole, _, frac = text[:-1].partition(".")
    try:
        started = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
    started += float(f"0.{frac}") if frac.isdigit() else 0.0
    return max(0.0, (time.time() if now is None else now) - started)


def image_platform(attrs: Json) -> str:
    """os/arch[/variant] of an image's inspect record."""
    plat = f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', 'amd64')}"
    return plat + (f"/{attrs['Variant']}" if attrs.get("Variant") else "")


class Engine:
    """One connection to a Docker engine. `say` prints the retry lines (default: a progress
    line); `sleep` waits between retries (injectable, so tests of the retry do not wait).
    A sibling engine (bundlecore.engine.podman) subclasses it and overrides what differs."""

    kind = EngineKind.DOCKER
    implicit_registries: tuple[str, ...] = ()  # what the engine puts before a registry-less name
    runs_swarm = True                           # Swarm services (the `service` target kind)
    restarts_after_reboot = True                # a daemon starts containers by their restart policy at boot

    def __init__(self, client: docker.DockerClient, *, say: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        # the SDK's low-level client: its private helpers (not in its stubs) serve the calls it lacks
        self._client, self._api = client, cast(Any, client.api)
        self._say, self._sleep = say or progress.note, sleep

    def describe(self) -> str:
        """'Docker 20.10.24, API 1.41': the engine as the plan and `doctor` name it."""
        return describe(self.kind, self.version())

    def signed_ref_of(self, name: str, signed: list[str] | set[str] | dict[str, str]) -> str | None:
        """The signed ref a name this engine gave a loaded image stands for (None: none). The name
        only: whoever asks checks the image's ID against the signed one (importer.load)."""
        return signed_ref_of(name, signed, self.implicit_registries)

    # -- plumbing ---------------------------------------------------------------------------
    def _once(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        with _translated():
            return fn(*args, **kw)

    def _idem(self, op: str, fn: Callable[..., Any], *args: Any, gone_is_done: bool = False, **kw: Any) -> Any:
        """An idempotent call: retried while the engine answers a transient error."""
        return retrying(op, lambda: self._once(fn, *args, **kw), say=self._say, sleep=self._sleep,
                        gone_is_done=gone_is_done)

    # -- the engine -------------------------------------------------------------------------
    def ping(self) -> None:
        """Check that the engine still answers (the same one line as connect when it does not)."""
        try:
            self._client.ping()
        except _SDK_ERRORS:
            raise _unreachable() from None

    def version(self) -> Json:
        return self._idem("version", self._client.version)

    def info(self) -> Json:
        return self._idem("info", self._client.info)

    def skips_known_layers(self) -> bool:
        """`docker load` skips a layer this engine has (same chain below it) without opening its
        file: the classic layer store's rule (the containerd image store reads every layer)."""
        info = self.info()
        return not (info.get("Driver") == "overlayfs" or "containerd" in json.dumps(info.get("DriverStatus") or []))

    def detect_kind(self) -> EngineKind:
        """Which engine serves this API (Docker, or Podman through its Docker-compatible socket)."""
        return engine_kind(self.version())

    def platform(self) -> str:
        """os/arch of the engine, in the form image_platform gives an image's."""
        v = self.version()
        return f"{v.get('Os', 'linux')}/{v.get('Arch', 'amd64')}"

    @property
    def is_local(self) -> bool:
        """The engine is on this host (reached over a unix socket)."""
        return self._api.base_url == "http+docker://localhost"

    def disk_usage(self) -> Json:
        return self._idem("disk usage", self._api.df)

    # -- containers -------------------------------------------------------------------------
    def inspect_container(self, ref: str) -> Json:
        return self._idem(f"inspect of container {ref[:12]}", self._api.inspect_container, ref)

    def container(self, ref: str) -> Json | None:
        """The container's inspect record, None when there is none."""
        try:
            return self.inspect_container(ref)
        except EngineNotFound:
            return None

    def container_named(self, name: str) -> Json | None:
        """The container called exactly `name` (not one whose ID merely starts with it)."""
        info = self.container(name)
        return info if info and container_name(info) == name else None

    def containers(self, all: bool = False, filters: Json | None = None) -> list[Json]:
        return self._idem("container list", self._api.containers, all=all, filters=filters)

    def create_container(self, config: Json, name: str | None = None) -> str:
        return self._once(self._api.create_container_from_config, config, name=name)["Id"]

    def start(self, cid: str) -> None:
        self._once(self._api.start, cid)

    def stop(self, cid: str) -> None:
        """Stop it if it runs, with its own stop timeout."""
        info = self.container(cid)
        if info and (info["State"].get("Running") or info["State"].get("Restarting")):
            self._idem(f"stop of {cid[:12]}", self._api.stop, cid, timeout=stop_timeout(info))

    def restart(self, cid: str) -> None:
        self._once(self._api.restart, cid, timeout=stop_timeout(self.inspect_container(cid)))

    def wait(self, cid: str, timeout: int) -> int:
        """The container's exit code once it stops."""
        return self._once(self._api.wait, cid, timeout=timeout)["StatusCode"]

    def remove_container(self, cid: str, *, force: bool = True, volumes: bool = False) -> None:
        """`volumes`: its anonymous volumes too (named ones are never removed with a container)."""
        self._idem(f"removal of container {cid[:12]}", self._api.remove_container, cid, force=force, v=volumes,
                   gone_is_done=True)

    def rename(self, cid: str, name: str) -> None:
        info = self.container(cid)
        if info and container_name(info) != name:
            self._idem(f"rename of {cid[:12]}", self._api.rename, cid, name)

    def set_restart_policy(self, cid: str, policy: Json) -> None:
        """Parked containers get policy "no", so an engine restart cannot start them next to the new one."""
        self._idem(f"restart policy of {cid[:12]}", self._api.update_container, cid,
                   restart_policy={"Name": policy.get("Name") or "no",
                                   "MaximumRetryCount": policy.get("MaximumRetryCount", 0)})

    def systemd_unit(self, name: str, restart: str) -> str:
        """A systemd unit that starts the container NAME at boot: only for an engine with no daemon
        to do it (`restarts_after_reboot` False); callers ask that first."""
        raise EngineError(None, f"{self.describe()} restarts containers itself after a reboot")

    def connect_network(self, cid: str, network: str, endpoint: Json) -> None:
        """Attach with the full EndpointConfig (the SDK's connect_container_to_network drops some fields)."""
        def post() -> None:
            url = self._api._url("/networks/{0}/connect", network)
            self._api._raise_for_status(self._api._post_json(url, data={"Container": cid, "EndpointConfig": endpoint}))
        self._once(post)

    def logs(self, cid: str, *, stdout: bool = True, stderr: bool = True, tail: int | str = "all") -> bytes:
        return self._idem(f"logs of {cid[:12]}", self._api.logs, cid, stdout=stdout, stderr=stderr, tail=tail)

    def follow_logs(self, cid: str, *, tail: int | str = "all") -> Iterator[bytes]:
        """The container's output as it comes (`docker logs -f`), until it stops."""
        with _translated():
            stream = self._api.logs(cid, stdout=True, stderr=True, tail=tail, stream=True, follow=True)
        return _stream(stream)

    def exec(self, cid: str, argv: list[str]) -> tuple[int | None, bytes]:
        """Run argv in the running container: (exit code, stdout and stderr)."""
        with _translated():
            res = self._api.exec_create(cid, argv, stdout=True, stderr=True)
            output = self._api.exec_start(res["Id"])
            return self._api.exec_inspect(res["Id"]).get("ExitCode"), output

    def get_archive(self, cid: str, path: str, chunk_size: int = 1 << 20) -> tuple[Iterator[bytes], Json]:
        """(tar stream, stat) of `path` in the container; the stream's errors are translated too."""
        stream, stat = self._once(self._api.get_archive, cid, path, chunk_size=chunk_size)
        return _stream(stream), stat

    def put_archive(self, cid: str, path: str, data: Any) -> None:
        self._once(self._api.put_archive, cid, path, data)

    # -- images -----------------------------------------------------------------------------
    def inspect_image(self, ref: str) -> Json:
        return self._idem(f"inspect of image {ref[:40]}", self._api.inspect_image, ref)

    def image(self, ref: str) -> Json | None:
        """The image's inspect record, None when the engine has none by that name."""
        try:
            return self.inspect_image(ref)
        except EngineNotFound:
            return None

    def images(self, all: bool = False) -> list[Json]:
        return self._idem("image list", self._api.images, all=all)

    def remove_image(self, image: str) -> None:
        self._idem(f"removal of image {image[:19]}", self._api.remove_image, image, gone_is_done=True)

    def tag(self, ref: str, repository: str, tag: str) -> None:
        self._idem(f"tag of {ref}", self._api.tag, ref, repository, tag)

    def pull(self, repository: str, tag: str | None, platform: str) -> Iterator[Json]:
        """`docker pull`'s progress events; an error event raises EngineError."""
        for ev in _stream(self._once(self._api.pull, repository, tag=tag, platform=platform, stream=True,
                                     decode=True)):
            if ev.get("error"):
                raise EngineError(None, ev["error"])
            yield ev

    def push(self, repository: str, tag: str, auth_config: Json | None) -> Iterator[Json]:
        """`docker push`'s events (error events are the caller's to read)."""
        return _stream(self._once(self._api.push, repository, tag=tag, stream=True, decode=True,
                                  auth_config=auth_config))

    def save(self, refs: list[str]) -> requests.Response:
        """The raw `docker save` tar of `refs` as an open streamed response (shared layers once)."""
        def get() -> requests.Response:  # no timeout: the engine exports every layer before it sends the first byte
            resp = self._api.get(self._api._url("/images/get"), params={"names": refs}, stream=True)
            self._api._raise_for_status(resp)
            resp.raw.decode_content = True
            return resp
        return self._once(get)

    def load(self, stream: Any) -> Iterator[Json]:
        """`docker load` of a tar stream: the engine's events."""
        return _stream(self._once(self._api.load_image, stream))

    # -- volumes and networks ---------------------------------------------------------------
    def inspect_volume(self, name: str) -> Json:
        return self._idem(f"inspect of volume {name}", self._api.inspect_volume, name)

    def create_volume(self, name: str, labels: dict[str, str]) -> Json:
        """A local volume carrying `labels` (the engine hands back an existing one of that name as it is)."""
        return self._idem(f"creation of volume {name}", self._api.create_volume, name=name, labels=labels)

    def volume_exists(self, name: str) -> bool:
        return self._exists(self.inspect_volume, name)

    def remove_volume(self, name: str) -> None:
        self._idem(f"removal of volume {name}", self._api.remove_volume, name, gone_is_done=True)

    def inspect_network(self, name: str) -> Json:
        return self._idem(f"inspect of network {name}", self._api.inspect_network, name)

    def network_exists(self, name: str) -> bool:
        return self._exists(self.inspect_network, name)

    def create_network(self, name: str, labels: dict[str, str]) -> None:
        """A bridge network carrying `labels` (not retried: the engine would make a second one of
        the same name; the caller checks `network_exists` first)."""
        self._once(self._api.create_network, name, driver="bridge", labels=labels)

    def remove_network(self, name: str) -> None:
        self._idem(f"removal of network {name}", self._api.remove_network, name, gone_is_done=True)

    @staticmethod
    def _exists(inspect: Callable[[str], Json], name: str) -> bool:
        try:
            inspect(name)
            return True
        except EngineNotFound:
            return False

    # -- Swarm services ---------------------------------------------------------------------
    def inspect_service(self, name: str) -> Json:
        return self._idem(f"inspect of service {name}", self._api.inspect_service, name)

    def post_service(self, path: str, spec: Json, params: Json | None = None, auth: Json | None = None) -> None:
        """POST a service spec (create or update); `auth`: the registry credentials Swarm hands to
        every node that pulls the image."""
        headers = {"X-Registry-Auth": docker.auth.encode_header(auth)} if auth else {}
        self._once(lambda: self._api._raise_for_status(
            self._api._post_json(self._api._url(path), data=spec, params=params or {}, headers=headers)))

    def tasks(self, service: str) -> list[Json]:
        return self._idem(f"tasks of {service}", self._api.tasks, filters={"service": service})

    def remove_service(self, name: str) -> None:
        self._idem(f"removal of service {name}", self._api.remove_service, name, gone_is_done=True)


def engine_for(client: docker.DockerClient, **kw: Any) -> Engine:
    """The Engine class for the engine behind `client`, told apart by its /version (dialects.engine_kind)."""
    engine = Engine(client, **kw)
    engine.ping()
    if engine.detect_kind() is EngineKind.PODMAN:
        from bundlecore.engine.podman import PodmanEngine  # the sibling subclasses this module's Engine
        return PodmanEngine(client, **kw)
    return engine


def connect(timeout: int = 600) -> Engine:
    """The project's one way to reach the engine; EnvironmentProblem (one line) when it is away."""
    try:
        client = docker.from_env(timeout=timeout)
    except _SDK_ERRORS:
        raise _unreachable() from None
    return engine_for(client)


def connect_or_none(timeout: int = 600) -> Engine | None:
    """For read-only reports that still have something to say without the engine."""
    try:
        return connect(timeout)
    except EnvironmentProblem:
        return None
