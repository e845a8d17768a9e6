"""`bundle status`: what is installed, which generations are kept, how the last swap ended, and
what the engine says now (when it answers)."""

from __future__ import annotations

from importer.state import StateDir
from importer.swap import engine
from importer.swap.generations import Generations, summary
from importer.swap.journal import SwapJournal


def app_status(client, state: StateDir, name: str) -> dict:
    """Installed version, kept generations, last swap result and the live container (client may be None)."""
    app_dir = state.app_dir(name)
    last = SwapJournal.last(app_dir)
    live = None
    if client is not None:
        info = engine.inspect_named(client, name)
        if info:
            st = info["State"]
            live = {"id": info["Id"][:12], "image_id": info["Image"], "status": st.get("Status"),
                    "health": (st.get("Health") or {}).get("Status")}
    return {
        "name": name,
        "installed": state.installed(name),
        "container": live,
        "previous": [summary(i) for i in Generations(app_dir).previous()],
        "pending_swap": (app_dir / SwapJournal.FILE).exists(),
        "last_swap": ({k: last.get(k) for k in ("kind", "result", "message", "started_at", "finished_at")}
                      if last else None),
    }


def known_apps(state: StateDir) -> list[str]:
    names = set()
    d = state.root / "installed"
    if d.exists():
        names |= {p.stem for p in d.glob("*.json")}
    if state.apps_root.exists():
        names |= {p.name for p in state.apps_root.iterdir() if p.is_dir()}
    return sorted(names)


def status_lines(st: dict) -> list[str]:
    """Human lines for one application's status (see app_status)."""
    rec = st.get("installed") or {}
    out = [f"{st['name']}: " + (f"{rec.get('version')} (sequence {rec.get('sequence')}, generation "
                                f"{rec.get('generation')}, installed {rec.get('installed_at')})" if rec else "not installed")]
    live = st.get("container")
    if live:
        health = f", health {live['health']}" if live.get("health") else ""
        mismatch = "" if not rec or live["image_id"] == rec.get("image_id") else " (NOT the installed image)"
        out.append(f"  container {live['id']}: {live['status']}{health}{mismatch}")
    elif rec:
        out.append("  container: missing")
    if rec.get("highest_sequence") is not None:
        out.append(f"  highest sequence ever installed: {rec['highest_sequence']}")
    for p in st.get("previous") or []:
        out.append(f"  previous: generation {p['generation']} {p.get('version')} as {p['parked_name']}, "
                   f"data backup {p.get('backup_dir')} (replaced {p.get('displaced_at')})")
    last = st.get("last_swap")
    if last:
        out.append(f"  last {last['kind']}: {last['result']} at {last.get('finished_at')}: {last.get('message')}")
    if st.get("pending_swap"):
        out.append("  an interrupted swap is pending: run `bundle recover`")
    return out
