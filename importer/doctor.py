"""`bundle doctor`: is this host ready for a first import? One row per thing an import needs.

Each row is a `Finding` of one `Check`, with a `Verdict`: FAIL when that alone would stop an
import (exit 1), WARN when an import can run but something deserves a look, OK otherwise. The
checks only look: nothing is created, no key is imported anywhere but a throwaway keyring, and a
write test leaves no file behind.

Rows, in the order an import meets them:
- engine: reachable (the one engine-down line of bundlecore.engine), which engine (Docker or Podman,
  bundlecore.engine `EngineKind`) and its API version
- storage: the engine's storage driver (information; `docker load` needs a working one)
- gpg: on PATH and its version (every signature check runs it)
- state dir: writable (the nearest existing parent if it does not exist yet) and free space of at
  least importer.load.SPACE_MARGIN
- trust store: non-empty and valid, its keys and roles, and what host-policy.toml grants
- clock: within trust.MAX_CLOCK_SKEW of the engine's clock (a signature dated in the future is
  refused, expiry is judged by this clock)
- reboot (Podman only): every installed container with a restart policy has a systemd unit, or is
  `restart=always` with podman-restart.service enabled (Podman has no daemon to restart it)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path

from bundlecore.errors import EnvironmentProblem
from bundlecore.progress import human
from bundlecore.trust import MAX_CLOCK_SKEW, TrustStore
from importer import units
from importer.load import SPACE_MARGIN
from importer.state import StateDir


class Check(StrEnum):
    ENGINE = "engine"
    STORAGE = "storage"
    GPG = "gpg"
    STATE_DIR = "state dir"
    TRUST_STORE = "trust store"
    CLOCK = "clock"
    REBOOT = "reboot"  # Podman only: what brings the installed containers back after a reboot


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass
class Finding:
    check: Check
    verdict: Verdict
    detail: str


@dataclass
class Report:
    findings: list[Finding]

    @property
    def ready(self) -> bool:
        return all(f.verdict != Verdict.FAIL for f in self.findings)

    def lines(self) -> list[str]:
        width = max(len(c.value) for c in Check)
        return [f"{f.check.value:<{width}}  {f.verdict.value:<4}  {f.detail}" for f in self.findings] + [
            "ready for an import" if self.ready else "NOT ready: fix the FAIL rows first"]

    def document(self) -> dict:
        return {"ready": self.ready, "checks": [asdict(f) for f in self.findings]}


def examine(keys_dir: Path | str | None, state_dir: Path | str | None) -> Report:
    from bundlecore.engine import EngineKind, connect
    findings: list[Finding] = []
    try:
        client = connect(timeout=10)
    except EnvironmentProblem as e:
        client = None
        findings.append(Finding(Check.ENGINE, Verdict.FAIL, str(e)))
    info = {}
    if client is not None:
        info = client.info()
        findings.append(Finding(Check.ENGINE, Verdict.OK, client.describe()))
        findings.append(Finding(Check.STORAGE, Verdict.OK if info.get("Driver") else Verdict.WARN,
                                f"driver {info.get('Driver') or 'unknown'}"))
    else:
        findings.append(Finding(Check.STORAGE, Verdict.WARN, "not checked: no engine"))
    findings.append(gpg_finding())
    findings.append(state_dir_finding(state_dir))
    findings.append(trust_store_finding(keys_dir))
    findings.append(clock_finding(info.get("SystemTime"), datetime.now(timezone.utc)))
    if client is not None and client.kind is EngineKind.PODMAN:
        findings.append(reboot_finding(_restart_policies(client, state_dir), _units_present(), _restart_service_on()))
    return Report(findings)


# Where systemd units that bring a Podman container back live: `podman generate systemd --files`
# (container-NAME.service, copied to /etc/systemd/system) and Quadlet (NAME.container).
UNIT_DIRS = (Path("/etc/systemd/system"), Path("/etc/containers/systemd"))
RESTART_SERVICE = Path("/etc/systemd/system/default.target.wants/podman-restart.service")


def _restart_policies(client, state_dir) -> dict[str, str]:
    """{container: restart policy} of every installed app's container this engine has."""
    try:
        state = StateDir(state_dir)
        names = [state.container_of(app) for app in state.installed_apps()]
    except (EnvironmentProblem, OSError):
        return {}
    policies = {}
    for name in names:
        if info := client.container_named(name):
            policies[name] = (info["HostConfig"].get("RestartPolicy") or {}).get("Name") or "no"
    return policies


def _units_present() -> set[str]:
    """Unit file names in systemd's directories and the one the import writes to (importer.units)."""
    return {p.name for d in {units.unit_dir(), *UNIT_DIRS} if d.is_dir() for p in d.iterdir()}


def _restart_service_on() -> bool:
    return RESTART_SERVICE.exists()


def reboot_finding(policies: dict[str, str], units: set[str], restart_service: bool) -> Finding:
    """On Podman no daemon restarts a container after a reboot: systemd does, through a unit of the
    container (`container-NAME.service`, Quadlet's `NAME.container`) or, for `restart=always` ones,
    podman-restart.service. WARN naming each installed container with a policy and neither."""
    bare = sorted(name for name, policy in policies.items() if policy not in ("", "no")
                  and not {f"container-{name}.service", f"{name}.service", f"{name}.container"} & units
                  and not (policy == "always" and restart_service))
    if bare:
        return Finding(Check.REBOOT, Verdict.WARN,
                       f"Podman restarts nothing after a reboot and {len(bare)} container(s) with a restart policy "
                       f"have no systemd unit: {', '.join(bare)} (`bundle import --systemd-unit` writes one, as does "
                       f"`podman generate systemd --files --name NAME` into /etc/systemd/system; or restart=always "
                       f"with podman-restart.service enabled)")
    return Finding(Check.REBOOT, Verdict.OK, f"{len(policies)} installed container(s); systemd brings back each one "
                   f"with a restart policy" if policies else "no installed container")


def gpg_finding() -> Finding:
    exe = shutil.which("gpg")
    if not exe:
        return Finding(Check.GPG, Verdict.FAIL, "gpg not found on PATH (install gnupg)")
    try:
        first = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        return Finding(Check.GPG, Verdict.FAIL, f"{exe} does not run: {e}")
    return Finding(Check.GPG, Verdict.OK, f"{first[0] if first else 'unknown version'} ({exe})")


def state_dir_finding(state_dir: Path | str | None) -> Finding:
    """Safe (owner and mode of it and every directory above: importer.state), writable and roomy
    enough; a dir not created yet is judged by its nearest existing parent."""
    try:
        root = StateDir(state_dir).root
    except EnvironmentProblem as e:  # unsafe owner or mode: every import would refuse it
        return Finding(Check.STATE_DIR, Verdict.FAIL, str(e))
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    where = str(root) + ("" if probe == root else f" (not yet created; {probe} decides)")
    try:
        fd, name = tempfile.mkstemp(prefix=".doctor-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return Finding(Check.STATE_DIR, Verdict.FAIL, f"{where} is not writable: {e.strerror}")
    free = shutil.disk_usage(probe).free
    if free < SPACE_MARGIN:
        return Finding(Check.STATE_DIR, Verdict.FAIL, f"{where}: only {human(free)} free, an import needs "
                       f"at least {human(SPACE_MARGIN)} beyond the payload")
    return Finding(Check.STATE_DIR, Verdict.OK, f"{where} writable, {human(free)} free")


def trust_store_finding(keys_dir: Path | str | None) -> Finding:
    from importer.hostpolicy import HostPolicy
    try:
        store = TrustStore.load(keys_dir)
        policy = HostPolicy.load(store.directory)
    except EnvironmentProblem as e:
        return Finding(Check.TRUST_STORE, Verdict.FAIL, str(e))
    roles = "; ".join(f"{r.name}: {len(r.keys)} key(s), threshold {r.threshold}" for r in store.roles) \
        or "no policy.toml: any one key is enough"
    grants = _grant_summary(policy)
    return Finding(Check.TRUST_STORE, Verdict.OK,
                   f"{store.directory}: {len(store.fingerprints)} key(s) {', '.join(sorted(store.fingerprints))}; "
                   f"roles: {roles}; host policy: {grants}")


def _grant_summary(policy) -> str:
    def one(g) -> list[str]:
        return [*(f"bind {p}" for p in g.bind_prefixes), *(f"cap {c}" for c in sorted(g.cap_add)),
                *(f"network {n}" for n in sorted(g.network_modes)), *(["engine socket"] if g.engine_socket else []),
                *(f"registry {r}" for r in sorted(g.registries))]
    parts = [f"host: {', '.join(one(policy.host))}"] if one(policy.host) else []
    parts += [f"{name}: {', '.join(one(g)) or 'nothing'}" for name, g in sorted(policy.apps.items())]
    return "; ".join(parts) or "grants nothing beyond the container"


def clock_finding(engine_time: str | None, now: datetime) -> Finding:
    """This host's clock against the engine's (both judge signatures and expiry)."""
    if now.year < 2024:
        return Finding(Check.CLOCK, Verdict.FAIL, f"this host's clock says {now:%Y-%m-%d}: set the time")
    if not engine_time:
        return Finding(Check.CLOCK, Verdict.WARN, f"{now:%Y-%m-%dT%H:%M:%SZ}; engine clock not available")
    theirs = _parse_engine_time(engine_time)
    if theirs is None:
        return Finding(Check.CLOCK, Verdict.WARN, f"engine time {engine_time!r} not understood")
    skew = abs((now - theirs).total_seconds())
    if skew > MAX_CLOCK_SKEW.total_seconds():
        return Finding(Check.CLOCK, Verdict.FAIL, f"this host and the engine differ by {skew:.0f} s "
                       f"(more than {MAX_CLOCK_SKEW.total_seconds():.0f} s)")
    return Finding(Check.CLOCK, Verdict.OK, f"{now:%Y-%m-%dT%H:%M:%SZ}, engine within {skew:.0f} s")


def _parse_engine_time(text: str) -> datetime | None:
    """Docker's SystemTime (RFC 3339 with nanoseconds and an offset) as an aware datetime."""
    s = text.strip().replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        s = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
