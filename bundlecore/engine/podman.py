"""Podman through its Docker-compatible socket (`podman system service`, API 1.41): the Docker
engine's calls, with what Podman does differently translated here (bundlecore.engine.dialects
holds the pure rules), so nothing above the engine layer changes.

- Image names: `podman load` tags a registry-less `demo/app:1.0.0` as `localhost/demo/app:1.0.0`
  (`docker.io/...` when written as Docker Hub's): `signed_ref_of` maps it back; the loader still
  checks the image ID (importer.load).
- Errors: a name in use, a missing container or image come as 500; mapped onto EngineConflict and
  EngineNotFound.
- Stop timeout: a container created through this API without StopTimeout gets 0 (SIGKILL at once);
  it gets Docker's default (10 s) instead.
- Restart policy: Podman 4.3 cannot change a container's policy after creation (no update endpoint).
  A parked container keeps its policy; Podman restarts no stopped container by itself (no daemon:
  only podman-restart.service at boot, for `always` containers), so parking is its stop.
- Layers: `podman load` reads every layer the archive names, even one it has: every layer is sent
  (`skips_known_layers`), so a delta bundle, which leaves out layers, cannot be loaded on Podman.
- No Swarm (`runs_swarm`): the `service` target kind is refused before anything changes.
"""

from __future__ import annotations

from typing import Any, Callable

from bundlecore.engine.dialects import PODMAN_IMPLICIT_REGISTRIES, EngineKind, podman_error
from bundlecore.engine.errors import EngineError, EngineNotFound
from bundlecore.engine.sdk import DEFAULT_STOP_TIMEOUT, Engine, Json


class PodmanEngine(Engine):
    kind = EngineKind.PODMAN
    implicit_registries = PODMAN_IMPLICIT_REGISTRIES
    runs_swarm = False

    def _once(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return super()._once(fn, *args, **kw)
        except EngineError as e:
            raise podman_error(e) from None

    def create_container(self, config: Json, name: str | None = None) -> str:
        if config.get("StopTimeout") is None:
            config = {**config, "StopTimeout": DEFAULT_STOP_TIMEOUT}
        return super().create_container(config, name)

    def set_restart_policy(self, cid: str, policy: Json) -> None:
        try:
            super().set_restart_policy(cid, policy)
        except EngineNotFound as e:
            if "no such container" in e.message.lower():
                raise
            # the update endpoint itself is missing (Podman before 5): the policy stays (see above)

    def skips_known_layers(self) -> bool:
        return False
