"""A service's named volumes on THIS node: which are backed up, and where their backups live.

A Swarm service's task writes to a volume of the node it runs on. What this importer can back up
and restore exactly (through importer.backup.data, the one backup/restore) is a volume of the local
driver that exists on this node: writable `volume` mounts of the service spec with a source name.
Not covered (docs/scale.md): the same-named volumes of tasks on other nodes, anonymous volumes
(one per task), bind mounts (a path on whatever node a task lands), tmpfs, and volumes of another
driver (shared storage: one copy for every node, which the storage's own snapshots protect).

Backups are directories `apps/<service>/data/<stamp>` (each a backup.json with its archives); the
installed record's `data_backup` names the one holding the data as it was before the last change
of version, which is what `bundle rollback` puts back.
"""

from __future__ import annotations

import time
from pathlib import Path

from importer.state import StateDir

BACKUPS = "data"


def local_volumes(spec: dict) -> list[dict]:
    """The spec's mounts a backup covers, as importer.backup.data mount records, sorted by destination."""
    out = []
    for m in (spec.get("TaskTemplate") or {}).get("ContainerSpec", {}).get("Mounts") or []:
        driver = ((m.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name") or "local"
        if m.get("Type") == "volume" and m.get("Source") and not m.get("ReadOnly") and driver == "local":
            out.append({"type": "volume", "name": m["Source"], "source": None, "destination": m["Target"]})
    return sorted(out, key=lambda m: m["destination"])


def new_backup_dir(what: str) -> str:
    """A fresh backup directory name, relative to the service's app dir (what the journal records)."""
    return f"{BACKUPS}/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{what}-{time.monotonic_ns() % 10**6:06d}"


def backup_path(state: StateDir, service: str, name: str) -> Path:
    return state.app_dir(service) / name
