"""`bundle status`, `list` and `--json` of a Compose project: the project and each service."""

from __future__ import annotations

from typing import Any

from bundlecore.errors import AppState
from importer.kinds.compose.machine import ProjectJournal
from importer.kinds.compose.project import shown_record
from importer.state import StateDir
from importer.steps import live_run, unfinished_line
from importer.versiontext import previous_line, shown_version

HEALTHY = (None, "healthy")


def service_live(client, container: str) -> dict | None:
    info = client.container_named(container)
    if not info:
        return None
    st = info["State"]
    return {"id": info["Id"][:12], "image_id": info["Image"], "status": st.get("Status"),
            "health": (st.get("Health") or {}).get("Status"), "restarting": bool(st.get("Restarting")),
            "exit_code": st.get("ExitCode")}


def app_status(client, state: StateDir, name: str) -> dict:
    """The installed project, each service live (client None: the engine does not answer)."""
    app_dir = state.app_dir(name)
    installed = state.installed(name)
    last = ProjectJournal.last(app_dir)
    services: dict[str, Any] = {}
    for svc, rec in ((installed or {}).get("services") or {}).items():
        services[svc] = {"container": rec["container"], "image_ref": rec.get("image_ref"), "image_id": rec.get("image_id"),
                         "live": service_live(client, rec["container"]) if client is not None else None}
    result: dict[str, Any] = {
        "name": name, "kind": "compose", "project": (installed or {}).get("project"),
        "container_name": f"{len(services)} services of compose project {(installed or {}).get('project')}",
        "installed": shown_record(installed), "services": services,
        "previous": [{k: v for k, v in p.items() if k != "record"} for p in (installed or {}).get("previous") or []],
        "pending_swap": (app_dir / ProjectJournal.FILE).exists(), "operation": live_run(state, app_dir),
        "last_swap": ({k: last.get(k) for k in ("kind", "result", "message", "started_at", "finished_at")}
                      if last else None)}
    verdict = app_state(result, engine_answers=client is not None)
    result["container"] = {"status": "running" if verdict == AppState.ACTIVE else "not all running",
                           "health": "healthy" if verdict == AppState.ACTIVE else None}
    result["state"], result["exit_code"] = verdict.label, int(verdict)
    return result


def service_ok(svc: dict) -> bool:
    """A service runs its installed image, healthy (or exited 0: a one-shot a dependent waited for)."""
    live = svc.get("live")
    if not live or live.get("image_id") != svc.get("image_id"):
        return False
    if live.get("status") == "exited":
        return live.get("exit_code") == 0
    return live.get("status") == "running" and not live.get("restarting") and live.get("health") in HEALTHY


def app_state(st: dict, *, engine_answers: bool) -> AppState:
    """The one verdict on a project: active only when every service is (pure)."""
    if not st.get("installed"):
        return AppState.NOT_INSTALLED
    if not engine_answers:
        return AppState.ENGINE_UNREACHABLE
    return AppState.ACTIVE if all(service_ok(s) for s in st["services"].values()) else AppState.INACTIVE


def status_lines(st: dict) -> list[str]:
    rec = st.get("installed") or {}
    out = [f"{st['name']}: " + (f"compose project {rec.get('project')} {shown_version(rec.get('version'))} (sequence "
                                f"{rec.get('sequence')}, generation {rec.get('generation')}, installed "
                                f"{rec.get('installed_at')})" if rec else "not installed") + f" [{st.get('state')}]"]
    for name, svc in (st.get("services") or {}).items():
        live = svc.get("live")
        if live:
            health = f", health {live['health']}" if live.get("health") else ""
            mismatch = "" if live["image_id"] == svc.get("image_id") else " (NOT the installed image)"
            out.append(f"  service {name}: container {svc['container']} {live['id']}: {live['status']}{health}{mismatch}")
        else:
            out.append(f"  service {name}: container {svc['container']}: missing")
    for p in st.get("previous") or []:
        out.append(previous_line(p))
    last = st.get("last_swap")
    if last:
        out.append(f"  last {last['kind']}: {last['result']} at {last.get('finished_at')}: {last.get('message')}")
    if st.get("pending_swap"):
        out.append(unfinished_line(st, "project swap"))
    return out
