"""The engine layer: the only code that talks to a container engine (and the only importer of the
Docker SDK). Both sides use it: the bundler pulls, inspects and saves images; the importer loads,
swaps, backs up, probes and rolls out through it.

`connect()` gives an `Engine` whose methods are grouped by object (engine, containers, images,
volumes and networks, Swarm services; load/save and archive streams). Callers see only this
package's errors (`EngineError` with the engine's status and message, `EngineNotFound`,
`EngineConflict`) and the one "Docker engine unreachable at ...; is dockerd running?" line.
Idempotent calls are retried while the engine answers a transient error (`errors.TRANSIENT`),
each retry said in one progress line; a persistent failure raises.

A second engine is a module next to `sdk.py` with a subclass of `Engine` that overrides what
differs (`podman.py`: Podman through its Docker-compatible socket), the pure rules of the
difference in `dialects.py` (which engine answers, image naming, errors, the engine-down line);
`connect()` (`engine_for`) chooses the class from the engine's /version and `Engine.kind` names
it. Nothing outside this package changes.
"""

from bundlecore.engine.dialects import EngineKind
from bundlecore.engine.errors import EngineConflict, EngineError, EngineNotFound
from bundlecore.engine.sdk import (Engine, connect, connect_or_none, container_name, engine_address, engine_for,
                                   image_platform, seconds_up, stop_timeout)

__all__ = ["Engine", "EngineConflict", "EngineError", "EngineKind", "EngineNotFound", "connect", "connect_or_none",
           "container_name", "engine_address", "engine_for", "image_platform", "seconds_up", "stop_timeout"]
