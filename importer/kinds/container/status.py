"""`bundle status` and `bundle list`: what is installed, which generations are kept, how the last
swap ended, what the engine says now (when it answers), and the one verdict monitoring reads
(bundlecore.errors.AppState: running its installed image, healthy, else why not)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bundlecore.engine import container_name, seconds_up
from bundlecore.errors import AppState
from importer.state import StateDir, container_of
from importer.kinds.container.generations import Generations, summary
from importer.versiontext import previous_line
from importer.kinds.container.journal import SwapJournal
from importer.steps import live_run, unfinished_line

HEALTHY = (None, "healthy")  # Docker's health status of a container without HEALTHCHECK is None
ADMIN_STOP = "stopped-by-admin.json"  # apps/<app>/: written by `bundle stop` (importer.kinds.container.control)
# After a container was put back running, how long until it is looked at once more before "running
# again" (or "as it was") is said: a stop or a crash the engine was still carrying out shows by then.
SETTLE_SECONDS = 3.0
# A container its restart policy restarted is only settled once it has run this long again: Docker's
# own rule (its restart back-off is reset after 10 s of running). Before that, one look at it may
# catch a crash loop between two crashes, so status does not call it active.
FLAP_WINDOW = 10.0


def unsettled(client, container_id: str, name: str, out=print) -> str | None:
    """Look at a container put back running once more, SETTLE_SECONDS later: why it is not running
    healthy under `name` then, or None. A restart in between counts (a restart policy can show a
    crash-looping container running at any one look). A verdict about it is said only on None."""
    def seen():
        info = client.container(container_id) or {}
        return info, (info.get("State") or {}).get("StartedAt"), info.get("RestartCount", 0)

    _, started, restarts = seen()
    out(f"  checking {name} again in {SETTLE_SECONDS:g} s")
    time.sleep(SETTLE_SECONDS)
    info, started_now, restarts_now = seen()
    st = info.get("State") or {}
    health = (st.get("Health") or {}).get("Status")
    if not info:
        return "it is gone"
    if container_name(info) != name:
        return f"it is named {container_name(info)}"
    if not st.get("Running") or st.get("Restarting"):
        return f"it is {st.get('Status')} (exit code {st.get('ExitCode')})"
    if (started_now, restarts_now) != (started, restarts):
        return f"it has exited and been restarted {restarts_now - restarts or 'once'} time(s) since"
    if health not in HEALTHY:
        return f"it is {health}"
    return None


@dataclass(frozen=True)
class AdminStop:
    """`bundle stop` was run on this container: who and when."""

    container_id: str
    at: str
    by: str


def admin_stop(state: StateDir, app: str) -> AdminStop | None:
    """The marker `bundle stop` left, if any (a damaged one is none)."""
    try:
        d = state.read_json(state.app_dir(app) / ADMIN_STOP)
        return AdminStop(**d) if d else None
    except (ValueError, TypeError):
        return None


def app_status(client, state: StateDir, name: str) -> dict:
    """Installed version, kept generations, last swap result and the live container (client may be None)."""
    app_dir = state.app_dir(name)
    last = SwapJournal.last(app_dir)
    installed = state.installed(name)
    container = container_of(name, installed)
    live, info = None, None
    if client is not None:
        info = client.container_named(container)
        if info:
            st = info["State"]
            live = {"id": info["Id"][:12], "image_id": info["Image"], "status": st.get("Status"),
                    "health": (st.get("Health") or {}).get("Status"), "restarting": bool(st.get("Restarting")),
                    "restart_count": info.get("RestartCount", 0), "up_seconds": seconds_up(info)}
    result: dict[str, Any] = {
        "name": name,
        "container_name": container,
        "installed": installed,
        "container": live,
        "previous": [summary(i) for i in Generations(app_dir).previous()],
        "pending_swap": (app_dir / SwapJournal.FILE).exists(),
        "operation": live_run(state, app_dir),
        "last_swap": ({k: last.get(k) for k in ("kind", "result", "message", "started_at", "finished_at")}
                      if last else None),
    }
    stop = admin_stop(state, name)
    if live and live["status"] != "running" and stop and info and stop.container_id == info["Id"]:
        result["stopped_by_admin"] = {"at": stop.at, "by": stop.by}  # inactive, but on purpose
    verdict = app_state(result, engine_answers=client is not None)
    result["state"], result["exit_code"] = verdict.label, int(verdict)
    return result


def app_state(st: dict, *, engine_answers: bool) -> AppState:
    """The one verdict on an app_status report (pure: table-tested)."""
    rec = st.get("installed")
    if not rec:
        return AppState.NOT_INSTALLED
    if not engine_answers:
        return AppState.ENGINE_UNREACHABLE
    live = st.get("container")
    if (not live or live.get("status") != "running" or live.get("restarting") or flapping(live)
            or live.get("health") not in HEALTHY or live.get("image_id") != rec.get("image_id")):
        return AppState.INACTIVE
    return AppState.ACTIVE


def flapping(live: dict) -> bool:
    """Restarted by its restart policy and not yet up FLAP_WINDOW seconds since (see FLAP_WINDOW)."""
    up = live.get("up_seconds")
    return bool(live.get("restart_count")) and up is not None and up < FLAP_WINDOW


def overall(states: list[AppState]) -> AppState:
    """The exit code of several apps: the engine being down first, then the worst app."""
    if not states:
        return AppState.NOT_INSTALLED
    order = (AppState.ENGINE_UNREACHABLE, AppState.NOT_INSTALLED, AppState.INACTIVE)
    return next((s for s in order if s in states), AppState.ACTIVE)


def known_apps(state: StateDir) -> list[str]:
    names = set(state.installed_apps())
    if state.apps_root.exists():
        names |= {p.name for p in state.apps_root.iterdir() if p.is_dir()}
    return sorted(names)


def status_lines(st: dict) -> list[str]:
    """Human lines for one application's status (see app_status)."""
    rec = st.get("installed") or {}
    out = [f"{st['name']}: " + (f"{rec.get('version')} (sequence {rec.get('sequence')}, generation "
                                f"{rec.get('generation')}, installed {rec.get('installed_at')})" if rec else "not installed")
           + f" [{st.get('state')}]"]
    live = st.get("container")
    cname = st.get("container_name") or st["name"]
    if live:
        health = f", health {live['health']}" if live.get("health") else ""
        mismatch = "" if not rec or live["image_id"] == rec.get("image_id") else " (NOT the installed image)"
        stopped = st.get("stopped_by_admin")
        why = f" (stopped by admin: `bundle stop` by {stopped['by']} at {stopped['at']})" if stopped else ""
        flaps = (f", restarted {live['restart_count']} time(s) by its restart policy, up {live['up_seconds']:.0f} s"
                 if flapping(live) else "")
        out.append(f"  container {cname} {live['id']}: {live['status']}{health}{flaps}{mismatch}{why}")
    elif rec and st.get("state") != AppState.ENGINE_UNREACHABLE.label:
        out.append(f"  container {cname}: missing")
    if rec.get("highest_sequence") is not None:
        out.append(f"  highest sequence ever installed: {rec['highest_sequence']}")
    for p in st.get("previous") or []:
        out.append(previous_line(p))
    last = st.get("last_swap")
    if last:
        out.append(f"  last {last['kind']}: {last['result']} at {last.get('finished_at')}: {last.get('message')}")
    if st.get("pending_swap"):
        out.append(unfinished_line(st, "swap"))
    return out


def list_row(st: dict) -> dict:
    """One app of `bundle list` (from an app_status report)."""
    rec, live = st.get("installed") or {}, st.get("container") or {}
    return {"name": st["name"], "version": rec.get("version"), "sequence": rec.get("sequence"),
            "generation": rec.get("generation"), "container": st.get("container_name"),
            "status": live.get("status"), "health": live.get("health"), "state": st.get("state"),
            "previous": [p["generation"] for p in st.get("previous") or []]}
