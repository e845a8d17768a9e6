"""The systemd unit that brings a container back after a reboot where no daemon does (Podman).

Podman has no daemon to start containers by their restart policy at boot: systemd does, through a
unit per container. `bundle import --systemd-unit` writes one, and every later swap of that app
keeps it current (a unit bundle wrote is found by its first line, `MARK`). The text is Podman's own
`podman generate systemd --name NAME` (bundlecore.engine `systemd_unit`): it starts and stops the
existing container by name. Not `--new`, whose unit recreates the container at every boot under a
new ID: the state dir records the installed container's ID, its parked generations and backups,
and a container recreated behind the swap's back would be none of them.

One file per container: `UNIT_DIR/container-NAME.service` (default /etc/systemd/system,
`$BUNDLE_SYSTEMD_DIR` moves it), the name `podman generate systemd --files` gives and `bundle
doctor`'s reboot row looks for. Written under a temp name, then renamed; the unit it replaces is
renamed to `container-NAME.service.previous` (a name systemd does not read), which an undone swap
renames back; `bundle uninstall` renames the unit to `container-NAME.service.removed`. Nothing is
deleted. `systemctl daemon-reload` and `enable` (`disable` before a rename) run only where systemd
runs (/run/systemd/system) and the unit is in /etc/systemd/system; elsewhere the unit is written and
the output says why it is not enabled and what to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bundlecore.fsutil import atomic_write_bytes, read_capped

UNIT_DIR = Path("/etc/systemd/system")
MARK = "# written by bundle:"
PREVIOUS, REMOVED, UNDONE = ".previous", ".removed", ".undone"


def unit_dir() -> Path:
    return Path(os.environ.get("BUNDLE_SYSTEMD_DIR") or UNIT_DIR)


def unit_name(container: str) -> str:
    return f"container-{container}.service"


def unit_path(container: str) -> Path:
    return unit_dir() / unit_name(container)


def systemd_running() -> bool:
    """systemd is PID 1 here (sd_booted(3)'s test): only then do systemctl's reload and enable work."""
    return Path("/run/systemd/system").is_dir()


def _read(path: Path) -> str | None:
    try:
        return read_capped(path, 1 << 20).decode(errors="replace")
    except FileNotFoundError:
        return None


def header(path: Path) -> str | None:
    """The unit's MARK line, when bundle wrote it (None: no unit, or someone else's)."""
    text = _read(path)
    first = (text or "").partition("\n")[0]
    return first if first.startswith(MARK) else None


def ours(container: str) -> bool:
    return header(unit_path(container)) is not None


@dataclass(frozen=True)
class UnitWrite:
    """One swap's unit: where, and the MARK line naming what it starts (mark_for)."""

    path: Path
    mark: str


def mark_for(app: str, version: str | None, image_ref: str | None, image_id: str, container_id: str) -> str:
    """The unit's first line: bundle wrote it, for which app, version, image and container."""
    return f"{MARK} app {app} {version or '-'} image {image_ref or '-'} ({image_id[:19]}) container {container_id[:12]}"


# The container's restart policy as the unit's Restart= (Docker's `unless-stopped`: systemd restarts
# it after a failure, not after a stop someone asked for; `no`: started at boot, never restarted).
_RESTART = {"always": "always", "unless-stopped": "on-failure", "on-failure": "on-failure"}


def systemd_restart(policy: str | None) -> str:
    return _RESTART.get(policy or "no", "no")


def write(unit: UnitWrite, text: str) -> bool:
    """Put `text` (headed by the MARK line) at the unit's path; the unit it replaces becomes
    `.previous`. Idempotent (a replayed commit): a unit already marked so is left as it is.
    True when a unit was replaced."""
    if header(unit.path) == unit.mark:
        return Path(f"{unit.path}{PREVIOUS}").exists()
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    replaced = unit.path.exists()
    if replaced:
        os.replace(unit.path, f"{unit.path}{PREVIOUS}")
    atomic_write_bytes(unit.path, f"{unit.mark}\n{text.rstrip()}\n".encode(), 0o644)
    return replaced


def put_back(unit: UnitWrite) -> None:
    """Undo `write`: the previous unit renamed back, or (there was none) this one renamed `.undone`."""
    if header(unit.path) != unit.mark:
        return  # never written, or already put back
    prev = Path(f"{unit.path}{PREVIOUS}")
    if prev.exists():
        os.replace(prev, unit.path)
    else:
        systemctl("disable", unit.path.name, path=unit.path)
        os.replace(unit.path, f"{unit.path}{UNDONE}")
    systemctl("daemon-reload", path=unit.path)


def retire(path: Path) -> Path | None:
    """Uninstall: the unit bundle wrote renamed `.removed` (disabled first where systemd runs)."""
    if header(path) is None:
        return None
    systemctl("disable", path.name, path=path)
    to = Path(f"{path}{REMOVED}")
    os.replace(path, to)
    systemctl("daemon-reload", path=path)
    return to


def install(client, unit: UnitWrite, name: str, container_id: str, version: str | None,
            out: Callable[[str], None]) -> None:
    """The unit of container `name` as the engine writes it (its restart policy as systemd's),
    written (`write`), said, and activated where systemd runs."""
    policy = (client.inspect_container(container_id)["HostConfig"].get("RestartPolicy") or {}).get("Name")
    write(unit, client.systemd_unit(name, systemd_restart(policy)))
    out(f"  systemd unit {unit.path} starts {name} {version or ''} at boot")
    activate(unit.path, out)


def activate(path: Path, out: Callable[[str], None]) -> None:
    """Make systemd read the unit and start it at boot; where it cannot, say why and what to run."""
    why = _unmanaged(path)
    if why:
        out(f"  {path} written, not enabled: {why}; then `systemctl daemon-reload && systemctl enable {path.name}`")
    elif not (systemctl("daemon-reload", path=path) and systemctl("enable", path.name, path=path)):
        out(f"  {path} written; `systemctl enable {path.name}` failed: run it yourself")


def _unmanaged(path: Path) -> str | None:
    """Why systemctl is not run for the unit at `path` (None: it is)."""
    if not systemd_running():
        return "systemd is not running here"
    if path.parent != UNIT_DIR:
        return f"{path.parent} is not {UNIT_DIR} (BUNDLE_SYSTEMD_DIR; a rootless user's: `systemctl --user`)"
    if shutil.which("systemctl") is None:
        return "no systemctl on PATH"
    return None


def systemctl(*args: str, path: Path) -> bool:
    """Run systemctl for the unit at `path` where systemd reads it; False (nothing run) elsewhere."""
    if _unmanaged(path):
        return False
    return subprocess.run(["systemctl", *args], capture_output=True, timeout=60).returncode == 0
