"""The everyday verbs on an installed container app: `logs`, `start`, `stop`, `restart`, `show`
(the run settings as applied, and where each came from) and `restore --from-uninstall`.

Rules: only the container the installed record names, with the ID it records, is acted on (one
replaced by hand is refused, like `uninstall`); nothing runs while a swap is pending (`recover`
first); start/stop/restart hold the state dir's lock and are audited. `stop` writes its marker
(apps/<app>/stopped-by-admin.json, the container's ID, who and when) before it stops anything, so
`status` says "stopped by admin" instead of reporting a failure; `start` and `restart` remove it.
A stop changes no restart policy (a swap copies it into the next version): the engine keeps an
`unless-stopped` container stopped across its restarts; an `always` one comes back, and status
then reports it as it runs. `restore --from-uninstall` puts the named volumes of an uninstall's
final backup back, only while the app is not installed and only into volumes that do not exist
(nothing is ever overwritten); host directories were never removed and are left as they are.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Iterator

from bundlecore.engine import EngineError
from bundlecore.errors import AppState, EnvironmentProblem, UsageProblem
from bundlecore.fsutil import atomic_write_json
from bundlecore.refusals import OwnershipRefused
from bundlecore.release import ContainerTarget, Result, installed_kind
from importer.audit import AuditEvent, EventKind, now, operator, write_event
from importer import ownership
from importer.backup import data
from importer.masking import is_secret
from importer.merge import source_of
from importer.state import StateDir, container_of
from importer.steps import crash_hook
from importer.kinds.container.generations import Generations
from importer.kinds.container.journal import SwapJournal
from importer.kinds.container.status import ADMIN_STOP, AdminStop, app_status
from importer.kinds.container.uninstall import FINAL_BACKUP


def _clear_admin_stop(state: StateDir, app: str) -> None:
    (state.app_dir(app) / ADMIN_STOP).unlink(missing_ok=True)


def installed_container(client, state: StateDir, app: str, verb: str) -> tuple[dict, dict]:
    """The installed record and live container of `app`, refusing what is not bundle's own."""
    client.ping()
    rec = state.installed(app)
    if not rec:
        raise UsageProblem(f"{app} is not installed (see `bundle list`)")
    kind = installed_kind(rec)
    if kind != ContainerTarget.KIND:
        raise UsageProblem(f"{app} is a {kind} target: `bundle {verb}` acts on container apps only")
    name = container_of(app, rec)
    info = client.container_named(name)
    if info is None:
        raise EnvironmentProblem(f"container {name} of {app} is missing (see `bundle status {app}`)")
    if info["Id"] != rec.get("container_id"):
        raise OwnershipRefused(f"container {name} ({info['Id'][:12]}) is not the one bundle installed for {app} "
                               f"({str(rec.get('container_id'))[:12]}); `bundle {verb}` leaves it alone")
    return rec, info


# -- logs ------------------------------------------------------------------------------------------

def logs(client, state: StateDir, app: str, *, tail: int | None, follow: bool) -> Iterator[bytes]:
    """The container's output (stdout and stderr, as the engine keeps them), as chunks."""
    _, info = installed_container(client, state, app, "logs")
    want = "all" if tail is None else tail
    if follow:
        yield from client.follow_logs(info["Id"], tail=want)
    else:
        yield client.logs(info["Id"], tail=want)


def saved_logs_path(state: StateDir, app: str, rel: str) -> Path:
    """Where a failed container's saved log is now: the app's dir, or (after `uninstall`) the dir it
    was moved to."""
    here = state.app_dir(app) / rel
    if here.exists():
        return here
    moved = sorted((state.root / "removed").glob(f"{app}-*/{rel}"))
    return moved[-1] if moved else here


def failed_release_log(state: StateDir, app: str) -> Path:
    """The log saved from the last release of `app` that failed its health gate."""
    from importer.audit import events_of
    saved = [ev.details["logs"] for ev in events_of(state, app, state.container_of(app)) if ev.details.get("logs")]
    if not saved:
        raise UsageProblem(f"no failed release of {app} left a log (see `bundle history {app}`)")
    path = saved_logs_path(state, app, saved[-1])
    if not path.is_file():
        raise EnvironmentProblem(f"the saved log of {app}'s failed release is gone: {path}")
    return path


# -- start, stop, restart --------------------------------------------------------------------------

class Action(StrEnum):
    """What `bundle start|stop|restart` asks; each is its audit event (importer.audit.EventKind)."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"


def _no_pending_swap(state: StateDir, app: str) -> None:
    if SwapJournal.load(state.app_dir(app)):
        raise EnvironmentProblem(f"an interrupted swap of {app} is pending: run `bundle recover` first")


def control(client, state: StateDir, app: str, action: Action, *, wait: float = 30.0, out=print) -> dict:
    """Start, stop or restart `app`'s container under the lock; returns its status afterwards
    (start and restart wait up to `wait` seconds for it to run its installed image healthy)."""
    event = EventKind(action.value)
    started = now()
    installed_container(client, state, app, action)  # refused before the lock: nothing is created
    with state.lock():
        rec, info = installed_container(client, state, app, action)
        _no_pending_swap(state, app)
        cid, running, name = info["Id"], bool(info["State"].get("Running")), container_of(app, rec)
        try:
            if action == Action.STOP:
                atomic_write_json(state.ensure_app_dir(app) / ADMIN_STOP,
                                  asdict(AdminStop(cid, now(), operator().user)))  # before the stop: status is true
                out(f"stopping {name} ({cid[:12]})" if running else f"{app} is already stopped")
                client.stop(cid)
            else:
                out(f"{'starting' if action == Action.START else 'restarting'} {name} ({cid[:12]})")
                if action == Action.RESTART and running:
                    client.restart(cid)
                elif not running:
                    client.start(cid)
                _clear_admin_stop(state, app)
        except EngineError as e:  # e.g. its host port taken meanwhile: the engine's reason, in one line
            raise EnvironmentProblem(f"the engine refused the {action} of {name}: {e.explanation or e}") from None
        st = app_status(client, state, app)
        deadline = time.monotonic() + wait
        while action != Action.STOP and st["exit_code"] != AppState.ACTIVE and time.monotonic() < deadline:
            time.sleep(0.5)
            st = app_status(client, state, app)
        write_event(state, AuditEvent(
            event, Result.DONE, 0, app=app, started=started, version_from=rec.get("version"),
            message=f"{app} {action}: {st['state']}", details={"container": name, "state": st["state"]}))
    return st


# -- show ------------------------------------------------------------------------------------------

def show(client, state: StateDir, app: str) -> dict:
    """The run settings the container runs with, each with where it came from: `site` (set by the
    site file), `bundle` (as the bundle set it when installed) or `this host` (changed on this host
    after, by hand or in an adopted container); secrets masked (importer.masking)."""
    from importer.merge import Kind, settings_of_container, settings_of_run, shown
    from importer.site import SiteSettings
    rec, info = installed_container(client, state, app, "show")
    installed_with = (Generations(state.app_dir(app)).current or {}).get("bundle") or {}
    recorded = settings_of_run(installed_with.get("run"))
    site = SiteSettings.load(app)
    site_now = settings_of_run(site.run)
    site_env = frozenset(installed_with.get("site_env") or ()) | site.masked
    applied = settings_of_container(info, client.image(info["Image"]) or {}, named=set(recorded))
    rows = []
    for key in sorted(applied):
        value = applied[key]
        source = source_of(key, value, recorded, site_now, site_env)
        secret = key.kind is Kind.ENV and is_secret(key.name, site_env)
        rows.append({"setting": str(key), "kind": str(key.kind), "key": key.name, "value": shown(key, value, site_env),
                     "secret": secret, "source": str(source)})
    return {"name": app, "version": rec.get("version"), "generation": rec.get("generation"),
            "container": container_of(app, rec), "site_file": str(site.path) if site.path else None,
            "settings": rows}


def show_lines(doc: dict) -> list[str]:
    out = [f"{doc['name']} {doc['version']} (generation {doc['generation']}), container {doc['container']}: "
           f"run settings as applied" + (f" (site file {doc['site_file']})" if doc["site_file"] else "")]
    width = max((len(r["setting"]) for r in doc["settings"]), default=0)
    out += [f"  {r['setting']:<{width}}  {r['value']}  [{r['source']}]" for r in doc["settings"]]
    return out


# -- restore --from-uninstall ----------------------------------------------------------------------

@dataclass
class RestorePlan:
    """What `bundle restore --from-uninstall` will put back; `lines()` is what the operator confirms."""

    app: str
    backup_dir: Path
    manifest: dict
    volumes: list[dict]   # the backup's named-volume mounts, restored
    binds: list[str]      # host directories: never removed by uninstall, left as they are
    anonymous: list[str]  # mount targets of anonymous volumes: a new container gets fresh ones
    # where each volume is read from: (backup, its manifest, its volumes); one backup for a container,
    # one per service for a project (a volume several services mount: from the first that has it)
    parts: list[tuple[Path, dict, list[dict]]] = field(default_factory=list)
    # volumes an interrupted restore of this backup created (its journal): filled again, not refused
    resumed: frozenset[str] = frozenset()

    def lines(self) -> list[str]:
        out = [f"restore the data of {self.app} from its final backup {self.backup_dir} "
               f"(taken {self.manifest.get('taken_at')})"]
        out += [f"  volume {m['name']} (was {m['destination']}): "
                + ("made by an interrupted restore: filled again from the backup" if m["name"] in self.resumed
                   else "created and filled from the backup")
                for m in self.volumes]
        out += [f"  host directory {b}: never removed, left as it is" for b in self.binds]
        out += [f"  anonymous volume of {d}: not restored (a new container gets a fresh one; its data stays in "
                f"the backup)" for d in self.anonymous]
        out.append(f"  then `bundle import` of {self.app}'s bundle runs it on this data (the anti-rollback mark "
                   f"stayed: a bundle installed before needs --allow-downgrade)")
        return out


def final_backup_parts(backup_dir: Path) -> list[Path]:
    """The backups a final backup holds: itself (a container's), or one per service (a compose
    project's: final-backup/SERVICE/)."""
    if (backup_dir / "backup.json").is_file():
        return [backup_dir]
    return sorted(p for p in backup_dir.glob("*/") if (p / "backup.json").is_file()) if backup_dir.is_dir() else []


def latest_final_backup(state: StateDir, app: str) -> Path:
    """The final backup of `app`'s last uninstall (removed/<app>-<time>/final-backup)."""
    found = sorted(p for p in (state.root / "removed").glob(f"{app}-*/{FINAL_BACKUP}") if final_backup_parts(p))
    if not found:
        raise UsageProblem(f"no final backup of {app} in {state.root / 'removed'} (see `bundle history {app}`)")
    return found[-1]


def plan_restore(client, state: StateDir, app: str) -> RestorePlan:
    """Describe the restore; changes nothing. Refused while `app` is installed, or when a volume it
    would fill exists (its data was kept, or something else uses the name)."""
    client.ping()
    if state.installed(app):
        raise UsageProblem(f"{app} is installed: restore puts back the data of an uninstalled app only "
                           f"(`bundle rollback {app}` for a kept generation)")
    backup_dir = latest_final_backup(state, app)
    named = _named_volumes(backup_dir.parent)
    parts: list[tuple[Path, dict, list[dict]]] = []
    anonymous: list[str] = []
    binds: list[str] = []
    seen: set[str] = set()
    for part in final_backup_parts(backup_dir):
        manifest = data.load_backup(part) or {"mounts": []}
        kept = [m for m in manifest["mounts"] if m["type"] == "volume" and m.get("name")
                and (named is None or m["name"] in named)]
        mine = [m for m in kept if m["name"] not in seen]
        seen.update(m["name"] for m in mine)
        anonymous += [m["destination"] for m in manifest["mounts"] if m["type"] == "volume" and m not in kept]
        binds += [m["source"] for m in manifest["mounts"] if m["type"] == "bind" and m["source"] not in binds]
        parts.append((part, manifest, mine))
    volumes = [m for _, _, mine in parts for m in mine]
    resumed = _interrupted_restore(client, state, backup_dir, app)
    taken = [m["name"] for m in volumes if m["name"] not in resumed and client.volume_exists(m["name"])]
    if taken:
        raise EnvironmentProblem(f"volume(s) {', '.join(taken)} exist: restore never overwrites data "
                                 f"(remove or rename them first); nothing restored")
    if not volumes:
        raise UsageProblem(f"the final backup {backup_dir} holds no named volume to restore")
    return RestorePlan(app, backup_dir, parts[0][1], volumes, binds, anonymous, [p for p in parts if p[2]],
                       frozenset(resumed))


# The restore's journal, beside the final backup it reads (removed/<app>-<time>/): the volumes it is
# about to create, written before the first one is. A restore killed after that leaves volumes
# empty or half filled; run again, it fills exactly those again (restore_mounts makes a mount hold
# exactly its backup) instead of refusing them as data it must not overwrite.
RESTORE_JOURNAL = "restore-journal.json"
RESTORE_CRASH_POINT = "restore_volumes_made"  # importer.steps.crash_hook: the volumes made, not filled


def _interrupted_restore(client, state: StateDir, backup_dir: Path, app: str) -> set[str]:
    """The volumes an interrupted restore of this backup created: named by its journal, existing,
    and still labelled as the app's (what the restore made them)."""
    try:
        journal = state.read_json(backup_dir.parent / RESTORE_JOURNAL) or {}
    except (OSError, ValueError):
        return set()
    made = set()
    for name in journal.get("volumes") or []:
        try:
            labels = client.inspect_volume(name).get("Labels") or {}
        except EngineError:
            continue
        if labels.get(ownership.APP_LABEL) == app:
            made.add(name)
    return made


def restore(client, state: StateDir, plan: RestorePlan, *, out=print) -> dict:
    """Create the plan's volumes and fill them from the backup (through importer.backup); audited."""
    started = now()
    with state.lock():
        if state.installed(plan.app):
            raise UsageProblem(f"{plan.app} was installed since the plan was made; nothing restored")
        resumed = _interrupted_restore(client, state, plan.backup_dir, plan.app)
        taken = [m["name"] for m in plan.volumes if m["name"] not in resumed and client.volume_exists(m["name"])]
        if taken:
            raise EnvironmentProblem(f"volume(s) {', '.join(taken)} were created since the plan was made; nothing restored")
        journal = _journal_of(state, plan.backup_dir.parent)
        image = ((journal.get("old") or {}).get("image_id")) if journal else None
        helper = data.find_helper_image(client, [image] if image else [])
        out(f"restoring {len(plan.volumes)} volume(s) of {plan.app} from {plan.backup_dir}")
        restore_journal = plan.backup_dir.parent / RESTORE_JOURNAL
        atomic_write_json(restore_journal, {"app": plan.app, "started": started,
                                            "volumes": [m["name"] for m in plan.volumes]})
        for m in plan.volumes:  # the app's again (importer.ownership): a reinstall needs no --adopt
            if m["name"] not in resumed:
                client.create_volume(m["name"], {ownership.APP_LABEL: plan.app})
        crash_hook(RESTORE_CRASH_POINT, "after")  # kill -9 tests: the volumes made, still empty
        for part, manifest, mounts in plan.parts:
            data.restore_mounts(client, part, {**manifest, "mounts": mounts}, helper)
        write_event(state, AuditEvent(
            EventKind.RESTORE, Result.DONE, 0, app=plan.app, started=started,
            message=f"the data of {plan.app} was restored from {plan.backup_dir}",
            details={"backup": str(plan.backup_dir), "volumes": [m["name"] for m in plan.volumes]}))
        restore_journal.unlink()
    return {"name": plan.app, "backup": str(plan.backup_dir), "volumes": [m["name"] for m in plan.volumes]}


def _named_volumes(removed_dir: Path) -> set[str] | None:
    """The volumes the app's run settings name (as recorded with its last generation), None if not
    recorded (then every volume of the backup is restored)."""
    from bundlecore.runspec import VolumeKind, parse_volume
    run = ((Generations(removed_dir).current or {}).get("bundle") or {}).get("run")
    if run is None:
        return None
    return {v.source for v in map(parse_volume, run.get("volumes") or []) if v.kind is VolumeKind.NAMED and v.source}


def _journal_of(state: StateDir, removed_dir: Path) -> dict | None:
    """The uninstall's journal kept with its backup (for the image it ran: a helper that has sh)."""
    for name in (SwapJournal.LAST, SwapJournal.FILE):
        try:
            found = state.read_json(removed_dir / name)
        except (OSError, ValueError):
            continue
        if found:
            return found
    return None
