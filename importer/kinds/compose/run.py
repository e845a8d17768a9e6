"""Plan, apply and recover the swap of a Compose project (importer.kinds.compose.machine)."""

from __future__ import annotations

import uuid

from bundlecore.errors import EnvironmentProblem, InstallUndone, UpdateFailed, UsageProblem
from bundlecore.refusals import OwnershipRefused
from bundlecore.release import ComposeTarget, Result, target_from_json
from importer import ownership
from importer.backup import data
from importer.delivery import Delivery
from importer.kinds.compose.machine import (KIND, ProjectJournal, ProjectRecord, ProjectSwap, begin, forward_steps,
                                            probation_healths, probation_window, service_swap)
from importer.kinds.compose.project import (HASH_LABEL, PROJECT_LABEL, SERVICE_LABEL, Action, ProjectPlan, ServicePlan,
                                            config_hash, container_name, create_body, differences, merged_service,
                                            service_labels, shown_record)
from importer.kinds.compose.uninstall import KIND as UNINSTALL
from importer.kinds.compose.uninstall import recover as recover_uninstall
from importer.merge import Side, site_keys
from importer.state import StateDir
from importer.steps import Resume
from importer.versiontext import shown_version

Out = print


def plan_project(client, state: StateDir, target: ComposeTarget, new_image_id: str, *, new_version: str | None = None,
                 app: str | None = None, images: dict[str, str] | None = None, adopt: bool = False,
                 prefer: str | None = None, masked: frozenset[str] = frozenset(),
                 signed: ComposeTarget | None = None) -> ProjectPlan:
    """What the swap will do, per service (changes nothing). A container or volume of the project's
    names that this app did not make is refused (exit 3), unless `adopt` and it is the project's
    own as Compose labels it (started with `docker compose up`): its containers are then displaced
    like an installed version's (parked, their data backed up, put back on failure) and its
    volumes used as they are. Each running service's settings go through the three-way merge
    (project.merged_service): `signed` is the release's own target, before the site file (which
    settings the site file decides), `masked` the site file's env keys."""
    app = app or target.name
    project = target.project
    installed = state.installed(app)
    if installed and installed.get("kind") != KIND:
        raise UsageProblem(f"{app} is installed as a {installed.get('kind')} target, not a compose project")
    for vol in project.volumes:
        name = f"{project.project}_{vol}"
        if not client.volume_exists(name):
            continue
        labels = client.inspect_volume(name).get("Labels") or {}
        owner = labels.get(ownership.APP_LABEL)
        if owner not in (None, app):
            raise OwnershipRefused(f"volume {name} is {owner}'s: the project {project.project} cannot take it")
        if owner is None and not installed and not (adopt and labels.get(PROJECT_LABEL) == project.project):
            raise OwnershipRefused(f"volume {name} exists and is no app's: pass --adopt to take over the Compose "
                                   f"project {project.project} with its data")
    recorded = (installed or {}).get("services") or {}
    side = Side(prefer) if prefer else None
    masked = masked | frozenset((installed or {}).get("site_env") or ())
    ids = dict(images or {})
    ids.setdefault(target.image, new_image_id)
    services, binds = [], []
    for name in project.order():
        svc = project.services[name]
        cname = container_name(project.project, name)
        image_id = ids.get(svc.image)
        if image_id is None:
            raise UsageProblem(f"services.{name}.image {svc.image} is not one of the bundle's images")
        live = client.container_named(cname)
        labels = ((live or {}).get("Config") or {}).get("Labels") or {}
        ours = labels.get(ownership.APP_LABEL) == app or (live and live["Id"] == (recorded.get(name) or {}).get("container_id"))
        if live and not ours and not _adoptable(labels, project.project, name, adopt):
            hint = (" (pass --adopt to take over the Compose project it belongs to)"
                    if labels.get(PROJECT_LABEL) == project.project and ownership.APP_LABEL not in labels else "")
            raise OwnershipRefused(f"container {cname} exists and is not {app}'s: the project {project.project} "
                                   f"cannot take its name{hint}")
        decisions: list = []
        if live:
            svc, merged = merged_service(svc, recorded.get(name), live, client.image(live["Image"]) or {}, side,
                                         masked | frozenset(svc.run.secret_env or ()))
            decisions = merged.decisions
        binds += [(f"services.{name}.volumes.{i}", v) for i, v in enumerate(svc.run.volumes or ())]
        digest = config_hash(project.project, svc, image_id)
        sp = ServicePlan(name, Action.CREATE, cname, svc.image, image_id, digest, service=svc)
        if live:
            sp.old_id, sp.old_image_id = live["Id"], live["Image"]
            if labels.get("com.docker.compose.config-hash") == digest:
                sp.action = Action.KEEP
            else:
                sp.action, sp.decisions = Action.RECREATE, decisions
                sp.changes = differences(recorded.get(name), {"image_id": image_id, "image_ref": svc.image,
                                                              "settings": svc.to_json()})
        services.append(sp)
    # every service's binds together (one service's writable bind around another's is as nested as
    # two containers' are), and against every container outside the project (its own, parked ones
    # too, carry its label): one look at the engine's containers, not one per service
    ownership.refuse_nested_binds(client, binds, lambda _, other: other.get(PROJECT_LABEL) == project.project)
    for name, rec in sorted(recorded.items()):
        if name not in project.services:
            live = client.container_named(rec["container"])
            if live:
                services.append(ServicePlan(name, Action.RETIRE, rec["container"], old_id=live["Id"],
                                            old_image_id=live["Image"]))
    adopted = not installed and any(s.action == Action.RECREATE for s in services)
    by_site = ({n: site_keys(signed.project.services[n].run.as_mapping(), s.run.as_mapping())
                for n, s in project.services.items() if n in signed.project.services}
               if isinstance(signed, ComposeTarget) else {})
    return ProjectPlan(app, target, "upgrade" if installed or adopted else "install", services, new_version=new_version,
                       current=(installed or {}).get("version"), generation=next_generation(installed),
                       masked=masked | frozenset(k for s in project.services.values() for k in s.run.secret_env or ()),
                       prefer=side, site_keys=by_site, probation=project_probation(target))


def project_probation(target: ComposeTarget) -> float:
    """The project's probation window: the longest of its own and any service's (0: none)."""
    return probation_window(probation_healths(
        {n: s.health.to_json() if s.health else None for n, s in target.project.services.items()},
        target.health_json()))


def next_generation(installed: dict | None) -> int:
    """A new generation's number: above every one this project had (a rolled-back one is kept and
    may be put back, so a number is never given twice)."""
    rec = installed or {}
    seen = [rec.get("generation"), rec.get("highest_generation")] + [p.get("generation") for p in rec.get("previous") or []]
    return max(int(g or 0) for g in seen) + 1


def _adoptable(labels: dict, project: str, service: str, adopt: bool) -> bool:
    """A container `--adopt` takes over: the project's service as Compose labels it, no app's."""
    return (adopt and ownership.APP_LABEL not in labels and labels.get(PROJECT_LABEL) == project
            and labels.get(SERVICE_LABEL) == service)


def apply(client, state: StateDir, plan: ProjectPlan, delivery: Delivery, *, keep: int = 2, out=print) -> dict:
    """The project swapped behind every service's gate, or all of it put back (UpdateFailed, exit 4)."""
    for s in plan.services:
        loaded = delivery.images.get(s.image_ref) if s.image_ref else None
        if s.image_ref and loaded != s.image_id:
            raise EnvironmentProblem(f"service {s.name}: {s.image_ref} loaded as {loaded}, not the planned {s.image_id}")
    state.app_dir(plan.app).mkdir(parents=True, exist_ok=True)
    record = _record(client, state, plan, delivery, keep)
    if not any(s.action != Action.KEEP for s in plan.services):
        record.steps = [s for s in record.steps if not s.startswith(("networks",))]
    journal = ProjectJournal(state.app_dir(plan.app), record)
    begin(state, journal)
    return shown_record(ProjectSwap(client, state, journal, out=out).run_forward()) or {}


def _record(client, state: StateDir, plan: ProjectPlan, delivery: Delivery, keep: int) -> ProjectRecord:
    project, installed = plan.target.project, state.installed(plan.app)
    swap_id = uuid.uuid4().hex[:12]
    old_gen = (installed or {}).get("generation") or 0  # 0: a project --adopt takes over
    recorded = (installed or {}).get("services") or {}
    gates_exit = {d for s in project.services.values() for d, cond in s.depends_on.items()
                  if cond == "service_completed_successfully"}
    services = {}
    for sp in plan.services:
        svc = project.services.get(sp.name)
        kw: dict = {"image_ref": sp.image_ref, "image_id": sp.image_id, "config_hash": sp.config_hash,
                    "gate_exit": sp.name in gates_exit}
        if svc is not None and sp.action != Action.KEEP:
            labels = {**service_labels(project.project, sp.name, sp.config_hash or "", plan.app, plan.generation),
                      data.SWAP_LABEL: swap_id}
            kw["create"] = create_body(project.project, sp.service or svc, sp.image_id or "", labels)
        if sp.old_id and sp.action in (Action.RECREATE, Action.RETIRE):
            kw.update(_displaced(client, state, plan.app, sp, old_gen,
                                 ((recorded.get(sp.name) or {}).get("settings") or {}).get("health")))
        services[sp.name] = service_swap(sp.name, sp.action, sp.container, svc, **kw)
    order = project.order()
    watched = plan.probation > 0 and any(s.action != Action.KEEP for s in plan.services)
    return ProjectRecord(kind=plan.kind, app=plan.app, project=project.project, target=plan.target.to_json(), order=order,
                         services=services, steps=forward_steps(order, services, watched), generation=plan.generation,
                         keep=keep, bundle=delivery.journal_bundle(), version=plan.new_version,
                         sequence=delivery.release.sequence, installed_before=installed, swap_id=swap_id,
                         version_before=(installed or {}).get("version"), site_env=sorted(plan.masked),
                         probation=plan.target.health_json() or {})


def recover(client, state: StateDir, name: str, out=print) -> list[str]:
    """Finish (its gates had all passed: COMMIT started) or undo an interrupted project swap."""
    journal = ProjectJournal.load(state.app_dir(name))
    if journal is None:
        return []
    if journal.record.kind == UNINSTALL:
        return recover_uninstall(client, state, name, journal, out)
    swap = ProjectSwap(client, state, journal, out=out)
    swap.recovering = True
    with data.helpers_owned_by(swap.owner):
        data.remove_stale_helpers(client, swap.owner)
        if swap.runner.resume() == Resume.REPLAY:
            swap.commit_and_finish()
            return [f"{name}: the swap of {journal.record.project} to {journal.record.version} was finished"]
        try:
            swap.undo(f"the swap of {journal.record.project} was interrupted at step {journal.record.step}")
        except (UpdateFailed, InstallUndone):
            pass  # the expected end of an undo: the previous version is back (the journal says so)
    last = ProjectJournal.last(state.app_dir(name)) or {}
    return [f"{name}: {last.get('result')}: {last.get('message')}"]


def plan_rollback(client, state: StateDir, name: str, to: int | None = None) -> ProjectPlan:
    """Describe putting a kept generation of the project back (generation `to`, or the most recently
    replaced one): each service whose container differs is parked and backed up (the current
    generation is kept in turn), and that generation's parked container comes back with the data it
    had when it was replaced. Changes nothing."""
    client.ping()
    installed = state.installed(name) or {}
    prev = installed.get("previous") or []
    if not prev:
        raise UsageProblem(f"no previous generation of {name} is kept: nothing to roll back to")
    back = prev[0] if to is None else next((p for p in prev if p.get("generation") == to), None)
    if back is None:
        why = "it is the installed one" if to == installed.get("generation") else "it is not kept"
        raise UsageProblem(f"cannot roll {name} back to generation {to}: {why} "
                           f"(kept: {', '.join(str(p.get('generation')) for p in prev)})")
    rec = back.get("record") or _adopted(client, installed, back)
    target = target_from_json(rec["target"])
    assert isinstance(target, ComposeTarget)
    current = installed.get("services") or {}
    services = []
    for n in [*rec["order"], *sorted(set(current) - set(rec["order"]))]:
        cur, tgt = current.get(n), (rec.get("services") or {}).get(n)
        live = client.container_named(cur["container"]) if cur else None
        if cur and not live:
            raise EnvironmentProblem(f"the container {cur['container']} of service {n} is missing: `bundle import` "
                                     f"the installed release again to repair it first")
        if cur and tgt and cur.get("container_id") == tgt.get("container_id"):
            services.append(ServicePlan(n, Action.KEEP, cur["container"]))
            continue
        sp = ServicePlan(n, Action.RETIRE, (cur or tgt or {})["container"])
        if live:
            sp.old_id, sp.old_image_id = live["Id"], live["Image"]
        if tgt:
            kept = client.container(tgt["container_id"])
            if not kept or kept["Id"] != tgt["container_id"]:
                raise EnvironmentProblem(f"the container of service {n} of generation {back['generation']} "
                                         f"({tgt['container']}) is gone")
            sp.action = Action.RECREATE if cur else Action.CREATE
            sp.image_ref, sp.image_id, sp.config_hash = tgt.get("image_ref"), tgt.get("image_id"), tgt.get("config_hash")
            sp.target_parked = kept["Name"].lstrip("/")
            sp.target_backup = _backup_of(state, name, prev, n, sp.target_parked, kept)
        services.append(sp)
    return ProjectPlan(name, target, "rollback", services, new_version=rec.get("version"),
                       current=installed.get("version"), generation=int(back["generation"]), rollback_to=back,
                       current_generation=int(installed.get("generation") or 0),
                       probation=project_probation(target))  # as its import had it: the kept generation's own


def _adopted(client, installed: dict, back: dict) -> dict:
    """Generation 0 (the project --adopt took over) as a record: its parked containers, in the
    installed project's dependency order (what the rollback needs of it)."""
    services = {}
    for svc, parked in (back.get("parked") or {}).items():
        info = client.container(parked)
        if not info:
            raise EnvironmentProblem(f"the container of service {svc} of generation 0 ({parked}) is gone")
        services[svc] = {"container": container_name(installed["project"], svc), "container_id": info["Id"],
                         "image_id": info["Image"], "image_ref": info["Config"].get("Image"),
                         "config_hash": (info["Config"].get("Labels") or {}).get(HASH_LABEL)}
    order = [n for n in installed.get("order") or [] if n in services] + sorted(set(services) - set(installed.get("order") or []))
    return {"version": None, "order": order, "services": services, "target": installed["target"]}


def _backup_of(state: StateDir, app: str, prev: list[dict], service: str, parked: str, info: dict) -> str | None:
    """Where the data a parked container had when it was replaced is kept (None: it has no writable
    mount); a kept generation whose backup is missing cannot be put back (EnvironmentProblem)."""
    if not data.backed_up_mounts(info):
        return None
    for p in prev:
        if (p.get("parked") or {}).get(service) == parked:
            rel = f"{p['backup_dir']}/{service}"
            bdir = state.app_dir(app) / rel
            manifest = data.load_backup(bdir)
            if manifest is not None:
                data.verify_backup(bdir, manifest)
                return rel
    raise EnvironmentProblem(f"the data backup of service {service} ({parked}) is missing")


def rollback(client, state: StateDir, plan: ProjectPlan, *, out=print) -> dict:
    """Put the kept generation back (containers and data), on the swap's journal and undo: any
    service that fails its gate puts the current generation back with its data."""
    if plan.kind != "rollback" or plan.rollback_to is None:
        raise UsageProblem("not a rollback plan")
    installed = state.installed(plan.app) or {}
    rec, cur_gen = plan.rollback_to.get("record") or _adopted(client, installed, plan.rollback_to), \
        int(installed.get("generation") or 0)
    swap_id = uuid.uuid4().hex[:12]
    current = installed.get("services") or {}
    gates_exit = {d for s in plan.target.project.services.values() for d, cond in s.depends_on.items()
                  if cond == "service_completed_successfully"}
    services = {}
    for sp in plan.services:
        svc = plan.target.project.services.get(sp.name)
        kw: dict = {"image_ref": sp.image_ref, "image_id": sp.image_id, "config_hash": sp.config_hash,
                    "gate_exit": sp.name in gates_exit}
        if sp.action in (Action.CREATE, Action.RECREATE) and svc is not None:
            body = create_body(plan.project, svc, sp.image_id or "", {})
            policy = (plan.rollback_to.get("restart_policies") or {}).get(sp.name)  # as it had when it was parked
            kw.update(new_id=(rec["services"][sp.name])["container_id"], target_parked=sp.target_parked,
                      target_backup=sp.target_backup,
                      target_policy=policy or body["config"]["HostConfig"].get("RestartPolicy") or {"Name": "no"})
        if sp.old_id and sp.action in (Action.RECREATE, Action.RETIRE):
            kw.update(_displaced(client, state, plan.app, sp, cur_gen,
                                 ((current.get(sp.name) or {}).get("settings") or {}).get("health")))
        services[sp.name] = service_swap(sp.name, sp.action, sp.container, svc, **kw)
    bundle = {"sha256": rec.get("bundle_sha256"), "name": plan.app, "signers": rec.get("signers") or [],
              "images": rec.get("images") or {}}
    watched = plan.probation > 0 and any(s.action != Action.KEEP for s in plan.services)
    record = ProjectRecord(kind="rollback", app=plan.app, project=plan.project, target=rec["target"],
                           order=rec["order"], services=services,
                           steps=forward_steps(rec["order"], services, watched, rollback=True),
                           generation=plan.generation, keep=1_000_000, bundle=bundle, version=rec.get("version"),
                           sequence=rec.get("sequence"), installed_before=installed, swap_id=swap_id,
                           version_before=installed.get("version"), site_env=list(rec.get("site_env") or []),
                           probation=plan.target.health_json() or {})
    journal = ProjectJournal(state.app_dir(plan.app), record)
    begin(state, journal)
    out(f"rolling {plan.project} back to generation {plan.generation} ({shown_version(rec.get('version'))})")
    return shown_record(ProjectSwap(client, state, journal, out=out).run_forward()) or {}  # adds no generation: prunes none


def _displaced(client, state: StateDir, app: str, sp: ServicePlan, gen: int, health: dict | None) -> dict:
    """A running service's journal fields when it is displaced (parked as generation `gen`, its data backed up)."""
    info = client.inspect_container(sp.old_id)
    return dict(old_id=sp.old_id, old_image_id=sp.old_image_id, parked_name=f"{sp.container}.previous-{gen}",
                was_running=bool(info["State"].get("Running")),
                restart_policy=info["HostConfig"].get("RestartPolicy") or {"Name": "no"},
                mounts=ownership.without_foreign(client, state, app, data.backed_up_mounts(info)),
                backup_dir=f"generations/{gen}/{sp.name}", old_health=health)


__all__ = ["plan_project", "apply", "recover", "plan_rollback", "rollback", "Result"]
