"""`bundle status` and `bundle rollback` of a Swarm service."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from bundlecore.errors import AppState, UsageProblem
from bundlecore.release import canary_name
from importer.kinds.service import canary, rollout, volumes
from importer.kinds.service.mark import Phase, next_action, pending_release, phase_of, release_of_app
from importer.kinds.service.release import roll_back_service
from importer.state import StateDir
from importer.steps import live_run, unfinished_line


@dataclass
class ServiceRollbackPlan:
    name: str
    current: str
    previous: str
    data_backup: str | None = None  # the volumes get this backup (of before the update) back

    def lines(self) -> list[str]:
        if self.data_backup:
            return [f"roll service {self.name} back: {self.current} -> {self.previous}; its tasks are stopped, "
                    f"its volumes backed up and restored from {self.data_backup}, then {self.previous} starts"]
        return [f"roll service {self.name} back with Swarm's rollback: {self.current} -> {self.previous}"]


def plan_rollback(client, state: StateDir, name: str, to: int | None = None) -> ServiceRollbackPlan:
    """Swarm keeps one previous spec: `--to` a generation has no meaning for a service."""
    if to is not None:
        raise UsageProblem(f"service {name}: Swarm keeps only the previous version; rollback --to is for containers")
    rollout.require_swarm(client)
    info = rollout.inspect(client, name)
    if info is None:
        raise UsageProblem(f"service {name} does not exist")
    if not info.get("PreviousSpec"):
        raise UsageProblem(f"service {name} has no previous version to roll back to")
    backup = (state.installed(name) or {}).get("data_backup") if volumes.local_volumes(info["Spec"]) else None
    plan = ServiceRollbackPlan(name, rollout.image_of(info), rollout.image_of({"Spec": info["PreviousSpec"]}), backup)
    if plan.previous == plan.current:  # e.g. the volumes were restored after Swarm rolled an update back
        raise UsageProblem(f"service {name} already runs its previous version {plan.current}")
    return plan


def plan_uninstall(client, state: StateDir, name: str, *, keep_data: bool = False):
    """Not for services yet: their tasks' data lives on every node, which this host cannot back up."""
    raise UsageProblem(f"service {name}: bundle uninstall handles containers; remove a service with "
                       f"`docker service rm {name}` after backing up its volumes on every node")


def uninstall(client, state: StateDir, plan, *, out=print) -> str:
    raise UsageProblem("bundle uninstall handles containers only")


def rollback(client, state: StateDir, plan: ServiceRollbackPlan, *, out=print) -> dict:
    out(f"rolling service {plan.name} back to {plan.previous}")
    return roll_back_service(client, state, plan.name, out=out)


def app_services(state: StateDir, app: str) -> list[str]:
    """The services whose installed record names `app` (a service bundle records each service it rolled)."""
    return [n for n in state.installed_apps()
            if n != app and (rec := state.installed(n) or {}).get("app") == app and rec.get("kind") == rollout.KIND]


def _release_of_app(state: StateDir, app: str) -> dict | None:
    """The app's release between its first stage and its last (its mark, under the target's name)."""
    found = release_of_app(state, app)
    return release_view(asdict(found[1])) if found else None


def release_view(mark: dict | None) -> dict | None:
    """A release mark as status shows it: where it stands (`phase`) and what to run next."""
    if mark is None:
        return None
    return {k: v for k, v in mark.items() if k not in ("target", "record")} | {
        "phase": str(phase_of(mark)), "next_action": next_action(mark)}


def app_status(client, state: StateDir, app: str) -> dict:
    """`bundle status APP` of a service bundle's app: each stage, each service's version and task
    counts (desired / running the installed image / running another), the release in progress.
    Active only when every service is active on one version and no release is under way."""
    release = _release_of_app(state, app)
    services = app_services(state, app)
    stages = [list(s) for s in release["services"]] if release and release.get("services") else [[s] for s in services]
    canary_steps = (release or {}).get("replicas") or []
    rows, verdicts, versions = [], [], set()
    for k, names in enumerate(stages, 1):
        for name in names:
            if release and k <= len(canary_steps) and canary_steps[k - 1] is not None:
                rows.append(_canary_row(client, k, name, release))
                continue
            st = status(client, state, name)
            rec, live = st.get("installed") or {}, st.get("service") or {}
            on_new = sum(1 for t in live.get("tasks") or [] if t["state"] == "running" and t["image"] == rec.get("image"))
            rows.append({"stage": k, "service": name, "version": rec.get("version"), "image": rec.get("image"),
                         "desired": live.get("replicas"), "running_installed": on_new,
                         "running_other": (live.get("running") or 0) - on_new, "state": st["state"]})
            verdicts.append(AppState(st["exit_code"]))
            versions.add(rec.get("version"))
    verdict = max(verdicts, default=AppState.NOT_INSTALLED)
    canaries = client is not None and any(canary.running(client, r["service"]) for r in rows if not r.get("canary_of"))
    if verdict == AppState.ACTIVE and (len(versions) > 1 or release or canaries):
        verdict = AppState.INACTIVE  # services on different versions of one release: never "active"
    seqs = [(state.installed(r["service"]) or {}).get("sequence") for r in rows if not r.get("canary_of")]
    installed = {"app": app, "version": ", ".join(sorted(v for v in versions if v)) or None,
                 "sequence": max((q for q in seqs if q is not None), default=None)} if services else None
    return {"name": app, "kind": rollout.KIND, "app_of_services": True, "installed": installed, "services": rows,
            "release": release, "pending_swap": any(rollout.RolloutJournal.path(state, r["service"]).exists()
                                                    for r in rows),
            "state": verdict.label, "exit_code": int(verdict)}


def _canary_row(client, k: int, service: str, release: dict) -> dict:
    """A canary step's row: the canary's tasks on the release's image (the stable service has its own row)."""
    running = canary.running(client, service) if client is not None else {}
    on_new = running.get(release.get("image") or "", 0)
    info = rollout.inspect(client, canary_name(service)) if client is not None else None
    return {"stage": k, "service": canary_name(service), "canary_of": service, "version": release.get("version"),
            "image": release.get("image"), "desired": rollout.replicas_of(info) if info else 0,
            "running_installed": on_new, "running_other": sum(running.values()) - on_new,
            "state": "canary" if info else "no canary"}


def _service_count(st: dict) -> int:
    """The app's services (a canary step's row is not one of them)."""
    return len({r["service"] for r in st["services"] if not r.get("canary_of")})


def app_status_lines(st: dict) -> list[str]:
    rec = st.get("installed") or {}
    out = [f"{st['name']} (app of {_service_count(st)} service(s)): {rec.get('version') or 'not installed'} "
           f"[{st['state']}]"]
    for r in st["services"]:
        out.append(f"  stage {r['stage']}: {r['service']} {r['version']}: {r['running_installed']}/{r['desired']} "
                   f"running it, {r['running_other']} running another image [{r['state']}]")
    rel = st.get("release")
    if rel and rel["phase"] in (Phase.SOAKING, Phase.STOPPED):
        out.append(f"  partial: release {rel['version']} stopped after stage {rel['done']} of {rel['stages']}; "
                   f"continue with `bundle import --resume` after {rel['resume_after']}")
    elif rel:
        out.append(f"  {rel['phase']}: {rel['next_action']}")
    if st.get("pending_swap"):
        out.append("  an interrupted rollout is pending: run `bundle recover`")
    return out


def status(client, state: StateDir, name: str) -> dict:
    """Installed record, replicas, the image of each task, the last update's state (client may be None);
    for the app name of a service bundle, the whole release (app_status)."""
    if state.installed(name) is None and app_services(state, name):
        return app_status(client, state, name)
    live = None
    if client is not None:
        info = rollout.inspect(client, name)
        if info:
            upd = info.get("UpdateStatus") or {}
            live = {"replicas": rollout.replicas_of(info),
                    "running": sum(rollout.running_images(client, name).values()),
                    "image": rollout.image_of(info),
                    "tasks": [{"id": t["ID"][:12], "image": t["Spec"]["ContainerSpec"]["Image"],
                               "state": t["Status"].get("State"), "desired": t.get("DesiredState"),
                               "error": t["Status"].get("Err")}
                              for t in rollout.tasks(client, name) if t.get("DesiredState") == "running"],
                    "update": {"state": upd.get("State"), "message": upd.get("Message")} if upd else None}
    try:
        last = json.loads((state.app_dir(name) / rollout.LAST).read_text())
    except FileNotFoundError:
        last = None
    result = {"name": name, "kind": rollout.KIND, "installed": state.installed(name), "service": live,
              "last_rollout": last, "release": release_view(pending_release(state, name)),
              "pending_swap": rollout.RolloutJournal.path(state, name).exists(),
              "operation": live_run(state, state.app_dir(name))}
    verdict = service_state(result, engine_answers=client is not None)
    result["state"], result["exit_code"] = verdict.label, int(verdict)
    return result


def service_state(st: dict, *, engine_answers: bool) -> AppState:
    """`bundle status`'s verdict for a service: active only when every replica runs the installed image."""
    rec = st.get("installed")
    if not rec:
        return AppState.NOT_INSTALLED
    if not engine_answers:
        return AppState.ENGINE_UNREACHABLE
    live = st.get("service")
    if not live or live["running"] < live["replicas"] or any(
            t["state"] != "running" or t["image"] != rec.get("image") for t in live["tasks"]):
        return AppState.INACTIVE
    return AppState.ACTIVE


def status_lines(st: dict) -> list[str]:
    if st.get("app_of_services"):
        return app_status_lines(st)
    rec = st.get("installed") or {}
    out = [f"{st['name']} (service): " + (f"{rec.get('version')} (sequence {rec.get('sequence')}) {rec.get('image')}"
                                          if rec else "not installed")]
    live = st.get("service")
    if live:
        out.append(f"  replicas {live['running']}/{live['replicas']} running; spec image {live['image']}")
        for t in live["tasks"]:
            out.append(f"  task {t['id']}: {t['state']} {t['image']}" + (f" ({t['error']})" if t.get("error") else ""))
        if live.get("update"):
            out.append(f"  last update: {live['update']['state']}: {live['update'].get('message')}")
    elif rec:
        out.append("  service: missing")
    for p in (rec.get("pushed") or []):
        out.append(f"  pushed {p['ref']} -> {p['by_digest']}")
    last = st.get("last_rollout")
    if last:
        out.append(f"  last {last['kind']}: {last['result']} at {last.get('finished_at')}: {last.get('message')}")
    rel = st.get("release")
    if rel and rel["phase"] in (Phase.SOAKING, Phase.STOPPED):
        out.append(f"  release {rel['version']} stopped after stage {rel['done']} of {rel['stages']}; "
                   f"continue with --resume after {rel['resume_after']}")
    elif rel:
        out.append(f"  {rel['phase']}: {rel['next_action']}")
    if st.get("pending_swap"):
        out.append(unfinished_line(st, "rollout"))
    return out


def apps_of_services(state: StateDir) -> list[str]:
    """The app names of the service bundles installed here (not themselves a record's name)."""
    names = set(state.installed_apps())
    return sorted({a for n in names if (rec := state.installed(n) or {}).get("kind") == rollout.KIND
                   and (a := rec.get("app")) and a not in names})


def list_line(st: dict) -> str:
    """One line of `bundle list` for a service, or for the app of a service bundle."""
    rec = st.get("installed") or {}
    if st.get("app_of_services"):
        stages = {r["stage"] for r in st["services"]}
        rel = st.get("release")
        partial = "" if not rel else " (partial release)" if rel["phase"] in (Phase.SOAKING, Phase.STOPPED) else \
            f" ({rel['phase']} release)"
        return (f"{st['name']} {rec.get('version')} app of {_service_count(st)} service(s) in {len(stages)} "
                f"stage(s){partial}: [{st['state']}]")
    live = st.get("service") or {}
    running = f"{live['running']}/{live['replicas']} running" if live else "service missing"
    return f"{st['name']} {rec.get('version')} service: {running} [{st['state']}]"
