"""Entry points of the container swap: run a plan, roll back to the previous generation, and
finish or undo an interrupted swap after a crash.

Unlike Watchtower (which removes the old container before creating the new one, and has no
health gate and no rollback) the old container is only stopped and parked; its writable mounts
are archived while it is stopped (importer.backup.data), the new container gets a faithful copy of
its settings (importer.kinds.container.config), and a health gate decides (importer.health). A
failure restores every mount to exactly the backup and puts the old container back.

Recovery acts on a journal only where the engine matches it (`check_journal_matches_engine`):
the containers it names must exist by ID with the names the journal gives them, a container it
would remove must carry this state dir's and this swap's labels, and the data it would restore
must be the mounts those containers really have. Anything else is refused (exit 5) untouched.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from bundlecore import interrupts
from bundlecore.engine import container_name
from bundlecore.errors import InstallUndone, OperatorNeeded, UpdateFailed, UsageProblem
from bundlecore.runspec import named_volumes
from bundlecore.release import ContainerTarget
from importer import ownership, units
from importer.audit import AuditEvent, BundleRef, EventKind, Result, now, write_event
from importer.delivery import Delivery, LoadedImages
from importer.state import StateDir, highest_sequence_after
from importer.backup import data
from importer.kinds.container.config import recreate_config, run_config
from importer.kinds.container.generations import Generations, parked_name
from importer.versiontext import shown_version
from importer.health import HealthGate
from importer.merge import keys_to_json
from importer.kinds.container.journal import (FORWARD_STEPS, DisplacedContainer, IncomingContainer, JournalRecord,
                                   PreexistingData, Step, SwapJournal, SwapKind)
from importer.kinds.container.machine import AttemptFailed, ContainerSwap, begin
from importer.kinds.container.plan import PlanKind, SwapPlan, check_host, image_ref_for, preflight
from importer.steps import crash_hook


def _own_health(state: StateDir, gens: Generations, info: dict) -> dict | None:
    """The health settings of the bundle that installed this container (None if bundle did not:
    an adopted container is judged by its image's HEALTHCHECK or by still running)."""
    cur = gens.current
    if cur and cur.get("container_id") == info["Id"] and "health" in cur:
        return cur["health"]
    rec = state.installed(container_name(info)) or {}
    return rec.get("health") if rec.get("container_id") == info["Id"] else None


def _displaced(client, state: StateDir, plan: SwapPlan, info: dict, gen: int, health: dict | None,
               bundle: dict | None = None) -> DisplacedContainer:
    return DisplacedContainer(
        id=info["Id"], generation=gen, parked_name=parked_name(plan.name, gen),
        image_id=info["Image"], image_ref=info["Config"].get("Image"),
        version=plan.old.version, sequence=plan.old.sequence, was_running=bool(info["State"].get("Running")),
        restart_policy=info["HostConfig"].get("RestartPolicy") or {"Name": "no"},
        mounts=ownership.without_foreign(client, state, plan.key, data.backed_up_mounts(info)),
        backup_dir=f"generations/{gen}", bundle=bundle, health=health,
    )


def _owner(state: StateDir, swap_id: str) -> data.HelperOwner:
    return data.HelperOwner(state=state.identity, swap=swap_id)


def _begin(state: StateDir, plan: SwapPlan, kind: SwapKind, gens: Generations, *, swap_id: str, bundle: dict,
           keep: int, helper: str | None, new: IncomingContainer, old: DisplacedContainer | None,
           preexisting: PreexistingData | None = None, created_volumes: list[str] | None = None) -> SwapJournal:
    """Write the journal's first step; from here on a crash is recovered from the journal."""
    app_dir = state.ensure_app_dir(plan.key)
    if new.create is not None:  # the container this swap creates says so: recovery removes only that one
        new.create["config"].setdefault("Labels", {}).update(_owner(state, swap_id).labels())
    record = JournalRecord(
        kind=kind, name=plan.name, steps=FORWARD_STEPS[kind], keep=keep, health=plan.gate,
        bundle=bundle, helper_image=helper, t0=time.time(), installed_before=state.installed(plan.key),
        generations_before=gens.data, new=new, old=old, preexisting=preexisting, created_volumes=created_volumes,
        swap_id=swap_id, app=plan.app, unit={"path": plan.unit} if plan.unit else None)
    j = SwapJournal.start(app_dir, record)
    gens.save()  # the allocated generation numbers are never reused
    begin(state, j)
    return j


def run_swap(client, state: StateDir, plan: SwapPlan, delivery: Delivery, *, keep: int = 2, out=print) -> dict:
    """Execute the plan; returns the installed record. Raises UpdateFailed (old version back),
    OperatorNeeded (could not put it back; nothing deleted) or EnvironmentProblem (nothing changed)."""
    if plan.kind == PlanKind.ROLLBACK:
        raise UsageProblem("use rollback() for a rollback plan")
    if plan.kind == PlanKind.UNCHANGED:
        return _record_unchanged(state, plan, delivery)
    if plan.nothing_to_do:
        return state.installed(plan.key) or {}
    if plan.unit_only:
        return _write_unit_of_installed(client, state, plan, out)
    swap_id = uuid.uuid4().hex
    with data.helpers_owned_by(_owner(state, swap_id)):
        return _run_swap(client, state, plan, delivery, swap_id, keep, out)


# kill -9 point of the unit-only import: a rerun writes the unit again (idempotent) and records it
UNIT_WRITTEN = "unit_written"


def _write_unit_of_installed(client, state: StateDir, plan: SwapPlan, out) -> dict:
    """--systemd-unit for the release already installed and running as recorded: its unit written (as
    the swap's commit writes one, importer.units) and recorded; the container is not touched. An
    interrupt meanwhile lets both finish (exit 0, the lines say what was written): stopped between
    them, the import would say "nothing changed" with a unit written."""
    rec = state.installed(plan.key) or {}
    unit = units.UnitWrite(Path(plan.unit or ""), units.mark_for(plan.key, rec.get("version"), rec.get("image"),
                                                                 rec["image_id"], rec["container_id"]))
    with interrupts.shielded("the unit is written and recorded first"):
        units.install(client, unit, plan.name, rec["container_id"], rec.get("version"), out)
        crash_hook(UNIT_WRITTEN, "after")  # kill -9 tests: the unit written, the record not yet naming it
        rec = {**rec, "systemd_unit": str(unit.path)}
        state.record_installed(plan.key, rec)
    return rec


def _run_swap(client, state: StateDir, plan: SwapPlan, delivery: Delivery, swap_id: str, keep: int, out) -> dict:
    helper = preflight(client, state, plan, [plan.old.image_id, plan.new_image_id] if plan.old else [plan.new_image_id])
    plan.new_image_ref = image_ref_for(client, plan.target.image, plan.new_image_id)
    gens = Generations(state.app_dir(plan.key))
    release, run = delivery.release, plan.target.run.as_mapping()
    bundle = delivery.journal_bundle()
    if plan.repair:  # the images the release's own load created stay recorded with it (pruning reads them)
        bundle |= LoadedImages.from_json(plan.repair.bundle).merged(delivery.loaded).to_json()
    # a missing container of the installed generation is recreated as that generation was recorded
    recorded = plan.repair.bundle if plan.repair and plan.old is None else {}
    new = IncomingContainer(
        id=None, image_id=plan.new_image_id, image_ref=plan.new_image_ref,
        generation=plan.repair.generation if recorded and plan.repair and plan.repair.generation else gens.allocate(),
        version=release.version, sequence=release.sequence,
        bundle=bundle | {"run": run, "site_env": recorded.get("site_env", sorted(plan.masked)),
                         "site_keys": recorded.get("site_keys", keys_to_json(plan.site_keys))})
    if plan.old is None:  # a first install, or the repair of a missing container
        new.create = run_config(run, plan.new_image_ref)
        check_host(client, new.create, replaced=None)
        vols = named_volumes(run.get("volumes") or [])
        j = _begin(state, plan, SwapKind.INSTALL, gens, swap_id=swap_id, bundle=bundle, keep=keep, helper=helper, new=new,
                   old=None,
                   preexisting=PreexistingData(named_volumes=vols, mounts=[],
                                               backup_dir=f"generations/{new.generation}-before-install"),
                   created_volumes=[v for v in vols if not client.volume_exists(v)])
    else:
        old_info = client.inspect_container(plan.old.id)
        old_img = client.image(old_info["Image"]) or {"Config": {}}
        new_img = client.inspect_image(plan.new_image_id)
        mode = old_info["HostConfig"].get("NetworkMode") or ""
        joined = {}
        if mode.startswith("container:"):
            other = client.container(mode[len("container:"):])
            if other:
                joined[mode[len("container:"):]] = container_name(other)
        new.create = recreate_config(old_info, old_img, new_img, plan.new_image_ref, joined, plan.setting_changes)
        check_host(client, new.create, replaced=old_info["Id"])  # before anything is stopped
        cur = gens.current
        if cur and cur.get("container_id") == old_info["Id"]:
            old_gen = cur["generation"]
        else:  # a container bundle did not install (or recreated by hand): adopt it as a generation
            old_gen = new.generation
            new.generation = gens.allocate()
        j = _begin(state, plan, SwapKind.UPGRADE, gens, swap_id=swap_id, bundle=bundle, keep=keep, helper=helper, new=new,
                   old=_displaced(client, state, plan, old_info, old_gen, _own_health(state, gens, old_info)))
    out(f"swapping {plan.name} (journal {j.app_dir / SwapJournal.FILE})")
    return ContainerSwap(client, state, j, out=out).run_forward()


def _record_unchanged(state: StateDir, plan: SwapPlan, delivery: Delivery) -> dict:
    r = delivery.release
    rec = state.installed(plan.key) or {}
    rec.update({"kind": ContainerTarget.KIND, "name": plan.name, "app": plan.key, "container": plan.name,
                "version": r.version, "sequence": r.sequence, "highest_sequence": highest_sequence_after(rec, r.sequence),
                "image_id": plan.new_image_id, "image": plan.new_image_ref, "container_id": plan.old.id,
                "images": dict(delivery.images) or rec.get("images"), "bundle_sha256": delivery.sha256,
                "signers": r.fingerprints})
    state.record_installed(plan.key, rec)
    state.raise_sequence(r.app, r.sequence)
    write_event(state, AuditEvent(
        EventKind.UPGRADE, Result.UNCHANGED, 0, app=plan.key, started=now(),
        bundle=BundleRef(delivery.sha256, r.app, r.version, r.sequence),
        signers=r.signers, version_from=plan.old.version, version_to=r.version, details={"container": plan.name}))
    return rec


def rollback(client, state: StateDir, plan: SwapPlan, *, health: dict | None = None, keep: int | None = None,
             out=print) -> dict:
    """Put the previous generation back (container + the data it had); same journal and undo as a swap."""
    if plan.kind != PlanKind.ROLLBACK:
        raise UsageProblem("not a rollback plan")
    swap_id = uuid.uuid4().hex
    with data.helpers_owned_by(_owner(state, swap_id)):
        return _rollback(client, state, plan, swap_id, health, keep, out)


def _rollback(client, state: StateDir, plan: SwapPlan, swap_id: str, health: dict | None, keep: int | None,
              out) -> dict:
    target_item = plan.rollback_to
    helper = preflight(client, state, plan, [plan.old.image_id, target_item["image_id"]])
    bdir = state.app_dir(plan.key) / target_item["backup_dir"]
    data.verify_backup(bdir, data.load_backup(bdir))
    if helper is None:
        helper = data.find_helper_image(client, [plan.old.image_id, target_item["image_id"]])
    if health is not None:
        plan.gate = health
    gens = Generations(state.app_dir(plan.key))
    cur_info = client.inspect_container(plan.old.id)
    cur = gens.current
    old_gen = cur["generation"] if cur and cur.get("container_id") == cur_info["Id"] else gens.allocate()
    new = IncomingContainer(
        id=target_item["container_id"], generation=target_item["generation"], image_id=target_item["image_id"],
        image_ref=target_item.get("image_ref"), version=target_item.get("version"),
        sequence=target_item.get("sequence"), bundle=target_item.get("bundle"),
        parked_name=target_item["parked_name"], backup_dir=target_item["backup_dir"],
        restart_policy=target_item.get("restart_policy") or {"Name": "no"})
    # A rollback adds no generation, so it prunes nothing unless asked to.
    j = _begin(state, plan, SwapKind.ROLLBACK, gens, swap_id=swap_id, bundle=target_item.get("bundle") or {},
               keep=keep or 1_000_000, helper=helper, new=new,
               old=_displaced(client, state, plan, cur_info, old_gen, _own_health(state, gens, cur_info),
                              bundle=(cur or {}).get("bundle")))
    out(f"rolling {plan.name} back to generation {target_item['generation']} "
        f"({shown_version(target_item.get('version'), target_item.get('image_ref'))})")
    return ContainerSwap(client, state, j, out=out).run_forward()


def recover(client, state: StateDir, name: str, out=print) -> list[str]:
    """Finish or undo the interrupted swap of app `name`; returns the line(s) to report.

    Before the probation step, the swap is undone (old version back with its data restored if the
    new side may have run); after it, an unfinished probation window is resumed and the swap
    finished (the new version passed its gate), unless the
    new version is not healthy any more, in which case it is undone too."""
    j = SwapJournal.load(state.app_dir(name))
    if j is None:
        return []
    client.ping()
    if j.record.kind == SwapKind.UNINSTALL:
        # the package's `uninstall` is the verb, not the module
        from importer.kinds.container.uninstall import recover as recover_uninstall
        return recover_uninstall(client, state, name, j, out)
    check_journal_matches_engine(client, state, name, j.record)
    with data.helpers_owned_by(_owner(state, j.record.swap_id)):
        return _recover(client, state, name, j, out)


def _recover(client, state: StateDir, name: str, j: SwapJournal, out) -> list[str]:
    data.remove_stale_helpers(client, _owner(state, j.record.swap_id))
    r = j.record
    m = ContainerSwap(client, state, j, out=out)
    m.recovering = True
    where = f"{r.step}:{r.phase}"
    out(f"recovering the interrupted {r.kind} of {name} (stopped at {where})")
    if m.resumes_forward():
        # The gate had passed: check it again, resume an unfinished probation window, then commit.
        info = client.container(r.new.id)
        gate = HealthGate(r.health, (info or {}).get("Config", {}).get("Healthcheck"))
        ok, why = (gate.wait_healthy(client, r.new.id, out=out) if info else (False, "the new container is gone"))
        if ok and not j.reached(Step.PROBATION, "done"):
            try:
                m.step(Step.PROBATION)
            except AttemptFailed as e:
                ok, why = False, str(e)
        if ok:
            m.commit_and_finish()
            return [f"{name}: finished the interrupted {r.kind}; {r.new.version} is running"]
        reason = f"{name} {r.new.version} is not healthy after the interruption: {why}"
    else:
        reason = f"the {r.kind} of {name} was interrupted at {where}"
    try:
        m.undo(reason)
    except (UpdateFailed, InstallUndone) as e:
        return [f"{name}: undid the interrupted {r.kind}: {e}"]
    return []


def check_journal_matches_engine(client, state: StateDir, name: str, r: JournalRecord) -> None:
    """Refuse (OperatorNeeded, nothing touched) a journal whose containers are not the ones it made
    or parked: a journal is data anyone with write access to the state dir could have written."""
    def refuse(why: str):
        raise OperatorNeeded(f"the swap journal of {name} does not match the engine: {why}; nothing was changed")

    if r.key != name:
        refuse(f"it is the journal of {r.key!r}")
    name = r.name  # from here on: the container
    if not r.swap_id:
        refuse("it carries no swap id (written by an older bundle); finish the swap by hand")
    owner = _owner(state, r.swap_id).labels()
    if r.old is not None:
        old = r.old
        if old.parked_name != parked_name(name, old.generation):
            refuse(f"parked name {old.parked_name!r} is not {parked_name(name, old.generation)!r}")
        info = _exactly(client, old.id) or refuse(f"the previous container {old.id[:12]} does not exist")
        if container_name(info) not in (name, old.parked_name):
            refuse(f"container {old.id[:12]} is {container_name(info)!r}, not {name!r} or {old.parked_name!r}")
        _mounts_are_real(old.mounts, info, refuse)
    new = r.new
    if r.kind == SwapKind.ROLLBACK:
        info = _exactly(client, new.id) or refuse(f"the generation {new.id[:12]} to put back does not exist")
        if container_name(info) not in (name, new.parked_name) or info["Image"] != new.image_id:
            refuse(f"container {new.id[:12]} is not generation {new.generation} of {name}")
        return
    new_side = [i for i in (_exactly(client, new.id) if new.id else None, client.container_named(name))
                if i and i["Id"] != (r.old.id if r.old else None)]
    for info in new_side:
        labels = info["Config"].get("Labels") or {}
        if any(labels.get(k) != v for k, v in owner.items()):
            refuse(f"container {info['Id'][:12]} ({container_name(info)}) was not created by this swap")
    if r.preexisting is not None and new_side:
        _mounts_are_real(r.preexisting.mounts, new_side[0], refuse)
    ours = {i["Id"] for i in new_side}
    for vol in r.created_volumes or []:
        users = {c["Id"] for c in client.containers(all=True, filters={"volume": vol})}
        if users - ours:
            refuse(f"volume {vol} is used by container(s) this swap did not create")


def _exactly(client, cid: str | None) -> dict | None:
    """The container with exactly this full ID (not a name, not an ID prefix)."""
    info = client.container(cid) if cid else None
    return info if info and info["Id"] == cid else None


def _mounts_are_real(journal_mounts: list[dict], info: dict, refuse) -> None:
    def key(m):
        return (m["type"], m.get("name"), m.get("source"), m["destination"])
    real = {key(m) for m in data.backed_up_mounts(info)}
    for m in journal_mounts or []:
        if key(m) not in real:
            refuse(f"mount {m['destination']} is not a mount of container {info['Id'][:12]}")
