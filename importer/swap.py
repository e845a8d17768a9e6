"""The swap: replace the running container by the new version without losing a byte of its data,
and put the old version back by itself when the new one does not come up healthy.

Unlike Watchtower (which removes the old container before creating the new one, and has no
health gate and no rollback) the old container is only ever STOPPED and RENAMED
(`NAME.previous-G`) during an update; it is deleted only when a later update prunes its
generation. Its writable mounts are archived (zstd, sha256) through the Docker API while it is
stopped, the new container gets a faithful copy of its settings (importer.swap_config), and a
health gate decides. A failure restores every mount to exactly the backup, renames the old
container back and starts it.

`ContainerSwap` is a small state machine whose states are the journal's steps
(importer.swap_journal): each step is durably recorded before and after it runs, so after a
crash `recover()` knows whether to finish the swap (the new version passed its gate and was
committed) or undo it. Every step is idempotent against the engine's actual state.

Generations: every version installed by a swap is a generation (1, 2, ...) of the application,
recorded in apps/<name>/generations.json with its container, image and (once displaced) the
backup of its data taken when it was displaced. `keep` counts generations kept including the
installed one (default 2: the installed one and the one `bundle rollback` returns to).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from bundlecore.errors import EnvironmentProblem, OperatorNeeded, UpdateFailed, UsageProblem
from bundlecore.fsutil import atomic_write_json
from bundlecore.progress import human
from importer import swap_data
from importer.state import StateDir
from importer.swap_config import describe_mount, recreate_config, run_config
from importer.swap_health import HealthGate
from importer.swap_journal import SwapJournal, now

BACKUP_MARGIN = 1.1
BACKUP_MIN_FREE = 64 << 20


class _AttemptFailed(Exception):
    """The new version did not pass its health gate (carries the one-line reason)."""


# -- small engine helpers -----------------------------------------------------------------

def _inspect(client, ref: str) -> dict | None:
    try:
        return client.api.inspect_container(ref)
    except docker.errors.NotFound:
        return None


def _container_name(info: dict) -> str:
    return info["Name"].lstrip("/")


def _image_or_none(client, ref: str) -> dict | None:
    try:
        return client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.NotFound:
        return None


def _ping(client) -> None:
    try:
        client.ping()
    except Exception as e:  # the SDK raises several types when the engine is away
        raise EnvironmentProblem(f"the Docker engine does not answer: {e}") from None


def _stop(client, cid: str) -> None:
    info = _inspect(client, cid)
    if info and (info["State"].get("Running") or info["State"].get("Restarting")):
        client.api.stop(cid, timeout=_stop_timeout(info))


def _stop_timeout(info: dict) -> int:
    """The container's own StopTimeout (0 is a valid value), else the engine's default of 10 s."""
    t = info["Config"].get("StopTimeout")
    return 10 if t is None else int(t)


def _set_restart_policy(client, cid: str, policy: dict) -> None:
    """Parked containers get policy "no", so an engine restart cannot start them next to the new one."""
    client.api.update_container(cid, restart_policy={"Name": policy.get("Name") or "no",
                                                     "MaximumRetryCount": policy.get("MaximumRetryCount", 0)})


def _rename(client, cid: str, name: str) -> None:
    info = _inspect(client, cid)
    if info and _container_name(info) != name:
        client.api.rename(cid, name)


def _connect(client, cid: str, network: str, endpoint: dict) -> None:
    url = client.api._url("/networks/{0}/connect", network)
    res = client.api._post_json(url, data={"Container": cid, "EndpointConfig": endpoint})
    client.api._raise_for_status(res)


def _who() -> str:
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return str(os.getuid())


# -- generations --------------------------------------------------------------------------

class Generations:
    """apps/<name>/generations.json: every kept version of the application and where it is."""

    def __init__(self, app_dir: Path):
        self.path = Path(app_dir) / "generations.json"
        try:
            self.data = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.data = {"next": 1, "current": None, "items": {}}

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def item(self, gen) -> dict | None:
        return self.data["items"].get(str(gen)) if gen is not None else None

    @property
    def current(self) -> dict | None:
        return self.item(self.data.get("current"))

    def allocate(self) -> int:
        g = self.data["next"]
        self.data["next"] = g + 1
        return g

    def previous(self) -> list[dict]:
        """Displaced generations, most recently displaced first."""
        items = [i for k, i in self.data["items"].items() if int(k) != self.data.get("current") and not i.get("pruned")]
        return sorted(items, key=lambda i: (i.get("displaced_at") or "", i["generation"]), reverse=True)


def _parked_name(name: str, gen: int) -> str:
    return f"{name}.previous-{gen}"


# -- the plan -----------------------------------------------------------------------------

@dataclass
class SwapPlan:
    """What a swap will do; `lines()` is what the operator confirms. Reading it changed nothing."""

    kind: str                       # install | upgrade | unchanged | rollback
    name: str
    target: dict
    new_image_id: str
    new_image_ref: str
    new_version: str | None = None
    old: dict | None = None         # {"id","image_id","image_ref","version","sequence","running"}
    mounts: list[dict] = field(default_factory=list)   # backed-up mounts with "size"
    backup_estimate: int = 0
    unknown_sizes: int = 0
    health: str = ""
    warnings: list[str] = field(default_factory=list)
    rollback_to: dict | None = None  # for kind "rollback": the generation item put back

    def lines(self) -> list[str]:
        out = []
        if self.kind == "install":
            out.append(f"install {self.name}: new container from {self.new_image_ref} ({self.new_image_id[:19]})")
            run = self.target.get("run") or {}
            for p in run.get("ports") or []:
                out.append(f"  publish port {p}")
            for v in run.get("volumes") or []:
                out.append(f"  mount {v}")
            if any(len(v.split(":")) >= 2 for v in run.get("volumes") or []):
                out.append("  data already in those volumes/directories is backed up before the first start")
        elif self.kind == "unchanged":
            out.append(f"{self.name} already runs {self.new_image_ref} ({self.new_image_id[:19]}): nothing to swap")
        else:
            old = self.old or {}
            verb = "roll back" if self.kind == "rollback" else "update"
            new_v = self.new_version or self.new_image_ref.rsplit("/", 1)[-1]
            out.append(f"{verb} {self.name}: {old.get('version') or 'unknown version'} -> {new_v}")
            out.append(f"  container {self.name} ({old.get('id', '')[:12]}): image {old.get('image_ref')} "
                       f"({(old.get('image_id') or '')[:19]}) -> {self.new_image_ref} ({self.new_image_id[:19]})")
            out.append(f"  stop it{' (it is not running)' if not old.get('running') else ''}, keep it (stopped) as "
                       f"{self.name}.previous-<generation>, back up its writable mounts:")
            for m in self.mounts:
                size = "size unknown" if m.get("size") is None else _human(m["size"])
                out.append(f"    {describe_mount(m['mount'])} [{size}]")
            if not self.mounts:
                out.append("    (no writable mounts)")
            out.append(f"  backup needs about {_human(self.backup_estimate)} in the state dir"
                       + (f" (+{self.unknown_sizes} mount(s) of unknown size)" if self.unknown_sizes else ""))
            if self.kind == "rollback":
                out.append(f"  then put generation {self.rollback_to['generation']} back with the data it had "
                           f"when it was replaced ({self.rollback_to.get('displaced_at')})")
            else:
                out.append("  then create the new container with the same settings, networks and mounts")
        if self.kind != "unchanged":
            out.append(f"  health check: {self.health}")
            if self.kind == "upgrade":
                out.append("  if it fails: remove the new container, restore the data exactly, restart the old one")
            elif self.kind == "rollback":
                out.append("  if it fails: park it again, restore the current data exactly, restart the current one")
        for w in self.warnings:
            out.append(f"  warning: {w}")
        return out


def _human(n: int | None) -> str:
    return "?" if n is None else human(n)


def _image_ref_for(client, target_ref: str, image_id: str) -> str:
    """The tag when it names exactly this image (nicer in `docker ps`), else the ID."""
    img = _image_or_none(client, target_ref) if target_ref else None
    return target_ref if img and img["Id"] == image_id else image_id


def _old_summary(state: StateDir, info: dict, gens: Generations) -> dict:
    cur = gens.current
    rec = state.installed(_container_name(info)) or {}
    mine = cur if cur and cur.get("container_id") == info["Id"] else None
    return {
        "id": info["Id"], "image_id": info["Image"], "image_ref": info["Config"].get("Image"),
        "version": (mine or {}).get("version") or (rec.get("version") if rec.get("container_id") == info["Id"] else None),
        "sequence": (mine or {}).get("sequence"),
        "generation": (mine or {}).get("generation"), "running": bool(info["State"].get("Running")),
    }


def plan_swap(client, state: StateDir, target: dict, new_image_id: str, *, new_version: str | None = None) -> SwapPlan:
    """Read the current container (if any) and describe the swap; changes nothing."""
    if target.get("kind", "container") != "container":
        raise UsageProblem(f"target kind {target.get('kind')!r} is not handled by the container swap")
    name = target["name"]
    _ping(client)
    # The plan is shown (and confirmed) before the bundle's images are loaded: the new image may
    # not be in the engine yet; run_swap resolves it again.
    new_img = _image_or_none(client, new_image_id) or {"Id": new_image_id, "Config": {}}
    ref = _image_ref_for(client, target.get("image", ""), new_img["Id"]) if "RepoTags" in new_img \
        else (target.get("image") or new_image_id)
    old = _inspect(client, name)
    if old and _container_name(old) != name:
        old = None  # `name` matched an ID prefix, not a container called `name`
    gens = Generations(state.root / "apps" / name) if (state.root / "apps" / name).exists() else Generations(Path("/nonexistent"))
    loaded = "RepoTags" in new_img
    if not old:
        hc = (new_img.get("Config") or {}).get("Healthcheck")
        return SwapPlan("install", name, target, new_img["Id"], ref, new_version,
                        health=_describe_health(target, hc, loaded))
    summary = _old_summary(state, old, gens)
    kind = "unchanged" if (old["Image"] == new_img["Id"] and old["State"].get("Running")) else "upgrade"
    plan = SwapPlan(kind, name, target, new_img["Id"], ref, new_version, old=summary)
    _fill_mounts(client, plan, old)
    hc = (new_img.get("Config") or {}).get("Healthcheck")
    old_img = _image_or_none(client, old["Image"]) or {}
    if (old.get("Config") or {}).get("Healthcheck") != (old_img.get("Config") or {}).get("Healthcheck"):
        hc = old["Config"].get("Healthcheck")  # the user's override is carried over
    plan.health = _describe_health(target, hc, loaded or bool(hc))
    _warnings(plan, old)
    return plan


def _describe_health(target: dict, image_hc: dict | None, image_known: bool) -> str:
    gate = HealthGate(target.get("health"), image_hc)
    if not image_known and not gate._probe_kind():
        return "the image's HEALTHCHECK if it has one, else still running after 10 s"
    return gate.describe()


def _fill_mounts(client, plan: SwapPlan, old: dict) -> None:
    mounts = swap_data.backed_up_mounts(old)
    sizes = swap_data.estimate_sizes(client, mounts)
    by_dest = {m["Destination"]: m for m in old.get("Mounts") or []}
    plan.mounts = [{"mount": by_dest[m["destination"]], "size": s} for m, s in zip(mounts, sizes)]
    plan.backup_estimate = sum(s for s in sizes if s is not None)
    plan.unknown_sizes = sum(1 for s in sizes if s is None)


def _warnings(plan: SwapPlan, old: dict) -> None:
    labels = old["Config"].get("Labels") or {}
    if old["HostConfig"].get("AutoRemove"):
        plan.warnings.append("the container was started with --rm: stopping it would delete it; refusing to swap")
    if "com.docker.compose.project" in labels:
        plan.warnings.append("the container belongs to a Compose project: `docker compose up` may recreate it "
                             "from the compose file's image later")
    if "com.docker.swarm.service.id" in labels:
        plan.warnings.append("the container is a Swarm task: update the service instead")


# -- preflight ------------------------------------------------------------------------------

def _preflight(client, state: StateDir, plan: SwapPlan, helper_candidates: list[str]) -> str | None:
    """Checks made before anything is stopped; returns the image used to restore data."""
    _ping(client)
    app_dir = state.app_dir(plan.name)
    if SwapJournal.load(app_dir):
        raise EnvironmentProblem(f"an interrupted swap of {plan.name} is pending: run `bundle recover` first")
    if any("--rm" in w for w in plan.warnings):
        raise EnvironmentProblem(f"container {plan.name} was started with --rm: stopping it would delete it")
    if any("Swarm task" in w for w in plan.warnings):
        raise EnvironmentProblem(f"container {plan.name} is a Swarm task: update its service instead")
    if not _image_or_none(client, plan.new_image_id):
        raise EnvironmentProblem(f"image {plan.new_image_id} is not in the engine")
    current = _inspect(client, plan.name)
    if plan.kind == "install":
        if current:
            raise EnvironmentProblem(f"a container named {plan.name} appeared since the plan was made; plan again")
        run = plan.target.get("run") or {}
        if not any(len(v.split(":")) >= 2 for v in run.get("volumes") or []):
            return None  # nothing that existed before can be touched
        return swap_data.find_helper_image(client, helper_candidates)
    if not current or current["Id"] != plan.old["id"]:
        raise EnvironmentProblem(f"container {plan.name} changed since the plan was made; plan again")
    need = int(plan.backup_estimate * BACKUP_MARGIN) + BACKUP_MIN_FREE
    free = shutil.disk_usage(state.root).free
    if free < need:
        raise EnvironmentProblem(f"not enough space in {state.root} for the data backup: "
                                 f"{_human(free)} free, about {_human(need)} needed")
    if not plan.mounts:
        return None
    return swap_data.find_helper_image(client, helper_candidates)


# -- the state machine ----------------------------------------------------------------------

class ContainerSwap:
    """Runs one swap (install, upgrade or rollback) through the journal's steps, forward or undo."""

    def __init__(self, client, state: StateDir, journal: SwapJournal, out=print):
        self.client = client
        self.state = state
        self.j = journal
        self.d = journal.data
        self.out = out
        self.app_dir = journal.app_dir

    # -- driving -----------------------------------------------------------------------
    def step(self, name: str, fn) -> None:
        self.j.mark(name, "started")
        facts = fn() or {}
        self.j.mark(name, "done", **facts)

    def run_forward(self) -> dict:
        """All forward steps; on a failed gate (or any error before commit), undo and raise."""
        steps = {
            "stop_old": self.stop_old, "rename_old": self.rename_old, "backup": self.backup,
            "create_new": self.create_new, "restore_target": self.restore_target,
            "rename_target": self.rename_target, "start_new": self.start_new,
        }
        try:
            for s in self.d["steps"]:
                if s in ("begin", "commit", "prune"):
                    continue
                self.step(s, steps[s])
        except _AttemptFailed as e:
            self.undo(str(e))  # raises UpdateFailed or OperatorNeeded
        except (Exception, KeyboardInterrupt) as e:
            why = e.line() if hasattr(e, "line") else f"{type(e).__name__}: {e}"
            self.undo(f"the swap stopped on an error at step {self.d.get('step')}: {why}")
        return self.commit_and_finish()

    def commit_and_finish(self) -> dict:
        self.step("commit", self.commit)
        self.step("prune", self.prune)
        record = self.state.installed(self.d["name"])
        self.finish("installed", f"{self.d['name']} {self.d['new'].get('version')} is running")
        return record

    def finish(self, result: str, message: str) -> None:
        self.j.finish(result, message)
        self._audit(result, message)

    def _audit(self, result: str, message: str) -> None:
        b = self.d.get("bundle") or {}
        started = self.d.get("t0")
        self.state.audit({
            "event": self.d["kind"], "name": self.d["name"], "result": result, "message": message,
            "user": _who(), "uid": os.getuid(), "at": now(), "started_at": self.d.get("started_at"),
            "duration_s": round(time.time() - started, 3) if started else None,
            "bundle_sha256": b.get("sha256"), "signers": b.get("signers"),
            "old_version": (self.d.get("old") or {}).get("version"), "new_version": self.d["new"].get("version"),
            "old_sequence": (self.d.get("old") or {}).get("sequence"), "new_sequence": self.d["new"].get("sequence"),
            "steps": [h["step"] + ":" + h["phase"] for h in self.d.get("history", [])][-40:],
        })

    # -- forward steps -----------------------------------------------------------------
    def stop_old(self):
        old = self.d["old"]
        _stop(self.client, old["id"])
        _set_restart_policy(self.client, old["id"], {"Name": "no"})

    def rename_old(self):
        _rename(self.client, self.d["old"]["id"], self.d["old"]["parked_name"])

    def _data_side(self) -> dict:
        """Whose data a failure must restore: the old container's, or (first install) the data that
        was already in the volumes and bind mounts before the new container was created."""
        return self.d["old"] if self.d.get("old") else self.d["preexisting"]

    def backup(self):
        side = self._data_side()
        if self.d["kind"] == "install":
            # Back up through the created (not yet started) container: only mounts holding data that
            # existed before (bind mounts, named volumes this install did not create).
            info = _inspect(self.client, self.d["new"]["id"])
            created = set(self.d.get("created_volumes") or [])
            named = set(side["named_volumes"])
            side["mounts"] = [m for m in swap_data.backed_up_mounts(info)
                              if m["type"] == "bind" or (m["name"] in named and m["name"] not in created)]
            side["container_id"] = info["Id"]
            self.j.save()
        manifest = swap_data.backup_mounts(self.client, side.get("container_id") or side["id"], side["mounts"],
                                           self.app_dir / side["backup_dir"])
        total = sum(m["size"] for m in manifest["mounts"])
        self.out(f"  backed up {len(manifest['mounts'])} mount(s) of {self.d['name']} ({_human(total)} compressed)")

    def create_new(self):
        new = self.d["new"]
        body = new["create"]
        res = self.client.api.create_container_from_config(body["config"], name=self.d["name"])
        cid = res["Id"]
        self.d["new"]["id"] = cid
        self.j.save()
        for net, ep in body.get("extra_networks", {}).items():
            _connect(self.client, cid, net, ep)
        return {"new": dict(new, id=cid)}

    def restore_target(self):
        """Rollback: the generation put back gets the data it had when it was displaced."""
        new = self.d["new"]
        bdir = self.app_dir / new["backup_dir"]
        swap_data.restore_mounts(self.client, bdir, swap_data.load_backup(bdir), self._helper())

    def rename_target(self):
        new = self.d["new"]
        _rename(self.client, new["id"], self.d["name"])
        _set_restart_policy(self.client, new["id"], new.get("restart_policy") or {"Name": "no"})

    def start_new(self):
        new = self.d["new"]
        info = _inspect(self.client, new["id"])
        gate = HealthGate(self.d.get("health"), info["Config"].get("Healthcheck"))
        self.out(f"  starting {self.d['name']} {new.get('version') or ''}; health check: {gate.describe()}")
        ok, why = gate.wait_healthy(self.client, new["id"], out=self.out)
        if not ok:
            raise _AttemptFailed(f"{self.d['name']} {new.get('version') or ''} did not become healthy "
                                 f"after {gate.attempts} attempt(s): {why}")

    def commit(self):
        """Point of no return: the new version passed its gate; record it as installed."""
        name, new, old = self.d["name"], self.d["new"], self.d.get("old")
        gens = Generations(self.app_dir)
        t = now()
        if old:
            item = gens.item(old["generation"]) or {}
            item.update({
                "generation": old["generation"], "container_id": old["id"], "parked_name": old["parked_name"],
                "image_id": old["image_id"], "image_ref": old.get("image_ref"), "version": old.get("version"),
                "sequence": old.get("sequence"), "displaced_at": t, "backup_dir": old["backup_dir"],
                "restart_policy": old["restart_policy"], "bundle": item.get("bundle") or old.get("bundle"),
            })
            item.setdefault("installed_at", None)
            gens.data["items"][str(old["generation"])] = item
        item = gens.item(new["generation"]) or {}
        item.update({
            "generation": new["generation"], "container_id": new["id"], "parked_name": _parked_name(name, new["generation"]),
            "image_id": new["image_id"], "image_ref": new.get("image_ref"), "version": new.get("version"),
            "sequence": new.get("sequence"), "installed_at": t, "displaced_at": None, "backup_dir": None,
            "bundle": new.get("bundle") or item.get("bundle"),
        })
        gens.data["items"][str(new["generation"])] = item
        gens.data["current"] = new["generation"]
        gens.data["next"] = max(gens.data["next"], new["generation"] + 1)
        gens.save()
        before = self.d.get("installed_before") or {}
        highest = max([s for s in (before.get("highest_sequence"), before.get("sequence"), new.get("sequence"))
                       if isinstance(s, int)], default=None)
        b = new.get("bundle") or {}
        record = {
            "name": name, "version": new.get("version"), "sequence": new.get("sequence"),
            "highest_sequence": highest, "image": new.get("image_ref"), "image_id": new["image_id"],
            "images": b.get("images") or {new.get("image_ref"): new["image_id"]},
            "bundle_sha256": b.get("sha256"), "signers": b.get("signers"),
            "container_id": new["id"], "generation": new["generation"], "installed_at": t,
            "previous": [_prev_summary(i) for i in gens.previous()], "health": self.d.get("health"),
        }
        self.state.record_installed(name, record)
        app = (self.d.get("bundle") or {}).get("name")
        if app and isinstance(new.get("sequence"), int):  # the gate's anti-rollback mark, keyed by app name
            self.state.raise_sequence(app, new["sequence"])

    def prune(self):
        """Drop generations beyond `keep` (container, backup, image), and backups nobody refers to."""
        gens = Generations(self.app_dir)
        keep = max(1, int(self.d.get("keep") or 2))
        for item in gens.previous()[keep - 1:]:
            item["pruned"] = True
        gens.save()
        in_use = {gens.current["image_id"]} if gens.current else set()
        in_use |= {i["image_id"] for i in gens.previous()}
        for k, item in list(gens.data["items"].items()):
            if not item.get("pruned"):
                continue
            if _inspect(self.client, item["container_id"]):
                try:
                    self.client.api.remove_container(item["container_id"], force=True)
                except docker.errors.APIError as e:
                    self.out(f"  could not remove {item['parked_name']}: {e.explanation or e}")
                    continue
            if item["image_id"] not in in_use:
                try:
                    self.client.api.remove_image(item["image_id"])
                except docker.errors.APIError:
                    pass  # still tagged elsewhere or used by another container: not ours to force
            del gens.data["items"][k]
            gens.save()
        referenced = {i.get("backup_dir") for i in gens.data["items"].values()}
        gdir = self.app_dir / "generations"
        if gdir.exists():
            for d in gdir.iterdir():
                if f"generations/{d.name}" not in referenced:
                    shutil.rmtree(d, ignore_errors=True)
        if self.d.get("old") or self.d["kind"] == "rollback":
            rec = self.state.installed(self.d["name"])
            if rec:
                rec["previous"] = [_prev_summary(i) for i in gens.previous()]
                self.state.record_installed(self.d["name"], rec)

    # -- undo --------------------------------------------------------------------------
    def undo(self, why: str):
        """Put the old version back exactly as it was; raise UpdateFailed, or OperatorNeeded if we cannot."""
        self.d["direction"] = "undo"
        self.d["failure"] = why
        self.j.save()
        self.out(f"  {why}")
        self.out("  rolling back")
        old = self.d.get("old")
        try:
            self.step("remove_new", self.remove_new)
            self.step("restore_data", self.restore_data)
            if old:
                self.step("rename_back", self.rename_back)
                self.step("start_old", self.start_old)
        except Exception as e:
            detail = str(e) if isinstance(e, OperatorNeeded) else (
                e.line() if hasattr(e, "line") else f"{type(e).__name__}: {e}")
            self.d["operator_needed"] = detail
            self.j.save()  # the journal stays: `bundle recover` retries once the cause is fixed
            msg = (f"{why}; putting the previous version back failed at step {self.d.get('step')}: {detail}. "
                   f"Nothing was deleted; see {self.app_dir / SwapJournal.FILE}")
            self._audit("operator needed", msg)
            raise OperatorNeeded(msg) from e
        if not old:
            msg = f"{why}; nothing was installed"
        elif old.get("was_running"):
            msg = f"{why}; the previous version {old.get('version') or old.get('image_ref')} is running again"
        else:
            msg = f"{why}; the previous version {old.get('version') or old.get('image_ref')} is back (stopped, as it was)"
        self.finish("rolled back", msg)
        raise UpdateFailed(msg)

    def _new_containers(self) -> list[str]:
        """Containers that are the new side: the journaled ID, and anything else now called NAME."""
        ids = []
        new_id = self.d["new"].get("id")
        if new_id and _inspect(self.client, new_id):
            ids.append(new_id)
        cur = _inspect(self.client, self.d["name"])
        old_id = (self.d.get("old") or {}).get("id")
        if cur and _container_name(cur) == self.d["name"] and cur["Id"] != old_id and cur["Id"] not in ids:
            ids.append(cur["Id"])
        return ids

    def remove_new(self):
        """Get the new side out of the way.

        Upgrade: remove the new container (and only the anonymous volumes it made itself; the old
        container's volumes are bound by name, so the engine keeps them). Rollback: park the
        generation we tried to put back again. First install: remove the container and the named
        volumes this install created (they held nothing before it); volumes and bind mounts that
        existed before are kept, and `restore_data` puts back what they held before the install.
        """
        if self.j.reached("commit", "started"):
            self._uncommit()
        if self.d["kind"] == "rollback":
            # The generation we tried to put back returns to its parking place, untouched otherwise.
            new = self.d["new"]
            _stop(self.client, new["id"])
            _set_restart_policy(self.client, new["id"], {"Name": "no"})
            _rename(self.client, new["id"], new["parked_name"])
            return
        for cid in self._new_containers():
            self.client.api.remove_container(cid, force=True, v=True)
        if self.d["kind"] == "install":
            for vol in self.d.get("created_volumes") or []:
                try:
                    self.client.api.remove_volume(vol)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as e:
                    self.out(f"  kept volume {vol}: {e.explanation or e}")

    def _uncommit(self):
        """Recovery found a committed swap whose new version is not healthy: restore the records."""
        gens_before = self.d.get("generations_before")
        if gens_before is not None:
            g = Generations(self.app_dir)
            g.data = gens_before
            g.save()
        before = self.d.get("installed_before")
        if before:
            self.state.record_installed(self.d["name"], before)
        else:
            try:
                os.unlink(self.state.installed_path(self.d["name"]))
            except FileNotFoundError:
                pass

    def restore_data(self):
        """Only when the new side may have run (and so written); a stopped old container changed nothing."""
        # Creating a container may already copy image files into an empty volume: count it as touching.
        touched = any(self.j.reached(s) for s in ("create_new", "start_new", "restore_target"))
        if not touched or not self.j.reached("backup", "done"):
            return {"data_restored": False}
        bdir = self.app_dir / self._data_side()["backup_dir"]
        manifest = swap_data.load_backup(bdir)
        if manifest is None:
            raise OperatorNeeded(f"the backup of {self.d['name']} in {bdir} is incomplete")
        swap_data.restore_mounts(self.client, bdir, manifest, self._helper())
        self.out(f"  restored {len(manifest['mounts'])} mount(s) from the backup taken {manifest['taken_at']}")
        return {"data_restored": True}

    def rename_back(self):
        old = self.d["old"]
        if not _inspect(self.client, old["id"]):
            raise OperatorNeeded(f"the previous container {old['id'][:12]} of {self.d['name']} is gone")
        _rename(self.client, old["id"], self.d["name"])
        _set_restart_policy(self.client, old["id"], old.get("restart_policy") or {"Name": "no"})

    def start_old(self):
        old = self.d["old"]
        if not old.get("was_running"):
            return
        info = _inspect(self.client, old["id"])
        gate = HealthGate(self.d.get("health"), info["Config"].get("Healthcheck"))
        ok, why = gate.wait_healthy(self.client, old["id"], out=self.out)
        if not ok:
            raise OperatorNeeded(f"the previous version of {self.d['name']} does not come up healthy either: {why}; "
                                 f"its data was restored from {self.app_dir / old['backup_dir']}")

    def _helper(self) -> str:
        h = self.d.get("helper_image")
        cands = [c for c in (h, (self.d.get("old") or {}).get("image_id"), self.d["new"].get("image_id")) if c]
        img = swap_data.find_helper_image(self.client, cands)
        return img


def _prev_summary(item: dict) -> dict:
    return {k: item.get(k) for k in ("generation", "version", "sequence", "image_id", "image_ref",
                                     "parked_name", "displaced_at", "backup_dir")}


# -- entry points -------------------------------------------------------------------------

def _displaced(plan: SwapPlan, info: dict, gen: int) -> dict:
    """The journal's record of the container being replaced: enough to park, back up and restore it."""
    return {
        "id": info["Id"], "generation": gen, "parked_name": _parked_name(plan.name, gen),
        "image_id": info["Image"], "image_ref": info["Config"].get("Image"),
        "version": plan.old.get("version"), "sequence": plan.old.get("sequence"),
        "was_running": bool(info["State"].get("Running")),
        "restart_policy": info["HostConfig"].get("RestartPolicy") or {"Name": "no"},
        "mounts": swap_data.backed_up_mounts(info), "backup_dir": f"generations/{gen}",
    }


def _begin_journal(state: StateDir, plan: SwapPlan, bundle: dict, keep: int, helper: str | None,
                   kind: str) -> SwapJournal:
    from importer.swap_journal import FORWARD_STEPS
    app_dir = state.app_dir(plan.name)
    gens = Generations(app_dir)
    data = {
        "kind": kind, "name": plan.name, "steps": FORWARD_STEPS[kind], "keep": keep,
        "health": plan.target.get("health"), "bundle": bundle, "helper_image": helper, "t0": time.time(),
        "installed_before": state.installed(plan.name), "generations_before": gens.data,
    }
    return SwapJournal.start(app_dir, data), gens


def run_swap(client, state: StateDir, plan: SwapPlan, bundle: dict, *, keep: int = 2, out=print) -> dict:
    """Execute the plan; returns the installed record. Raises UpdateFailed (old version back),
    OperatorNeeded (could not put it back; nothing deleted) or EnvironmentProblem (nothing changed)."""
    bundle = dict(bundle or {})
    if plan.kind == "rollback":
        raise UsageProblem("use rollback() for a rollback plan")
    if plan.kind == "unchanged":
        return _record_unchanged(client, state, plan, bundle)
    helper = _preflight(client, state, plan, [plan.old["image_id"], plan.new_image_id] if plan.old else [plan.new_image_id])
    plan.new_image_ref = _image_ref_for(client, plan.target.get("image", ""), plan.new_image_id)
    kind = plan.kind
    j, gens = _begin_journal(state, plan, bundle, keep, helper, kind)
    d = j.data
    new_gen = gens.allocate()
    new = {"image_id": plan.new_image_id, "image_ref": plan.new_image_ref, "generation": new_gen,
           "version": bundle.get("version") or plan.new_version, "sequence": bundle.get("sequence"),
           "bundle": {k: bundle.get(k) for k in ("sha256", "signers", "images")}, "id": None}
    if kind == "install":
        new["create"] = run_config(plan.target, plan.new_image_ref)
        d["created_volumes"] = _volumes_to_create(client, plan.target)
        d["old"] = None
        d["preexisting"] = {"named_volumes": _named_volumes(plan.target), "mounts": [],
                            "backup_dir": f"generations/{new_gen}-before-install"}
    else:
        old_info = client.api.inspect_container(plan.old["id"])
        old_img = _image_or_none(client, old_info["Image"]) or {"Config": {}}
        new_img = client.api.inspect_image(plan.new_image_id)
        mode = old_info["HostConfig"].get("NetworkMode") or ""
        joined = {}
        if mode.startswith("container:"):
            other = _inspect(client, mode[len("container:"):])
            if other:
                joined[mode[len("container:"):]] = _container_name(other)
        new["create"] = recreate_config(old_info, old_img, new_img, plan.new_image_ref, joined)
        cur = gens.current
        if cur and cur.get("container_id") == old_info["Id"]:
            old_gen = cur["generation"]
        else:  # a container bundle did not install (or recreated by hand): adopt it as a generation
            old_gen = new_gen
            new_gen = gens.allocate()
            new["generation"] = new_gen
        d["old"] = _displaced(plan, old_info, old_gen)
    d["new"] = new
    gens.save()  # the allocated generation numbers are never reused
    j.mark("begin", "started")
    j.mark("begin", "done")
    out(f"swapping {plan.name} (journal {j.app_dir / SwapJournal.FILE})")
    return ContainerSwap(client, state, j, out=out).run_forward()


def _named_volumes(target: dict) -> list[str]:
    out = []
    for v in (target.get("run") or {}).get("volumes") or []:
        parts = v.split(":")
        if len(parts) >= 2 and not parts[0].startswith("/"):
            out.append(parts[0])
    return out


def _volumes_to_create(client, target: dict) -> list[str]:
    """Named volumes the first install will create (so a failed install removes only those)."""
    out = []
    for v in (target.get("run") or {}).get("volumes") or []:
        parts = v.split(":")
        if len(parts) >= 2 and not parts[0].startswith("/"):
            try:
                client.api.inspect_volume(parts[0])
            except docker.errors.NotFound:
                out.append(parts[0])
    return out


def _record_unchanged(client, state: StateDir, plan: SwapPlan, bundle: dict) -> dict:
    rec = state.installed(plan.name) or {}
    seqs = [s for s in (rec.get("highest_sequence"), rec.get("sequence"), bundle.get("sequence")) if isinstance(s, int)]
    rec.update({"name": plan.name, "version": bundle.get("version") or rec.get("version"),
                "sequence": bundle.get("sequence", rec.get("sequence")), "highest_sequence": max(seqs, default=None),
                "image_id": plan.new_image_id, "image": plan.new_image_ref, "container_id": plan.old["id"],
                "images": bundle.get("images") or rec.get("images"), "bundle_sha256": bundle.get("sha256"),
                "signers": bundle.get("signers")})
    state.record_installed(plan.name, rec)
    if bundle.get("name") and isinstance(bundle.get("sequence"), int):
        state.raise_sequence(bundle["name"], bundle["sequence"])
    state.audit({"event": "upgrade", "name": plan.name, "result": "unchanged", "user": _who(), "uid": os.getuid(),
                 "at": now(), "bundle_sha256": bundle.get("sha256"), "signers": bundle.get("signers"),
                 "old_version": plan.old.get("version"), "new_version": bundle.get("version"), "duration_s": 0})
    return rec


# -- manual rollback --------------------------------------------------------------------------

def plan_rollback(client, state: StateDir, name: str) -> SwapPlan:
    """Describe putting the previous generation of `name` back (its container and its data)."""
    _ping(client)
    app_dir = state.root / "apps" / name
    gens = Generations(app_dir) if app_dir.exists() else None
    prev = gens.previous() if gens else []
    if not prev:
        raise UsageProblem(f"no previous generation of {name} is kept: nothing to roll back to")
    target_item = prev[0]
    if not _inspect(client, target_item["container_id"]):
        raise EnvironmentProblem(f"the previous container of {name} ({target_item['parked_name']}) is gone")
    bdir = app_dir / (target_item.get("backup_dir") or "-")
    manifest = swap_data.load_backup(bdir) if target_item.get("backup_dir") else None
    if manifest is None:
        raise EnvironmentProblem(f"the data backup of generation {target_item['generation']} of {name} is missing")
    cur = _inspect(client, name)
    if not cur or _container_name(cur) != name:
        raise EnvironmentProblem(f"no container named {name} is installed")
    health = (state.installed(name) or {}).get("health")
    plan = SwapPlan("rollback", name, {"name": name, "health": health}, target_item["image_id"],
                    target_item.get("image_ref") or target_item["image_id"], target_item.get("version"),
                    old=_old_summary(state, cur, gens), rollback_to=target_item)
    _fill_mounts(client, plan, cur)
    info = _inspect(client, target_item["container_id"])
    plan.health = HealthGate(health, info["Config"].get("Healthcheck")).describe()
    _warnings(plan, cur)
    return plan


def rollback(client, state: StateDir, plan: SwapPlan, *, health: dict | None = None, keep: int | None = None,
             out=print) -> dict:
    """Put the previous generation back (container + the data it had); same journal and undo as a swap."""
    if plan.kind != "rollback":
        raise UsageProblem("not a rollback plan")
    target_item = plan.rollback_to
    helper = _preflight(client, state, plan, [plan.old["image_id"], target_item["image_id"]])
    bdir = state.app_dir(plan.name) / target_item["backup_dir"]
    swap_data.verify_backup(bdir, swap_data.load_backup(bdir))
    if helper is None:
        helper = swap_data.find_helper_image(client, [plan.old["image_id"], target_item["image_id"]])
    if health is not None:
        plan.target["health"] = health
    # A rollback adds no generation, so it prunes nothing unless asked to.
    j, gens = _begin_journal(state, plan, target_item.get("bundle") or {}, keep or 1_000_000, helper, "rollback")
    d = j.data
    cur_info = client.api.inspect_container(plan.old["id"])
    cur = gens.current
    old_gen = cur["generation"] if cur and cur.get("container_id") == cur_info["Id"] else gens.allocate()
    d["old"] = dict(_displaced(plan, cur_info, old_gen), bundle=(cur or {}).get("bundle"))
    d["new"] = {
        "id": target_item["container_id"], "generation": target_item["generation"],
        "parked_name": target_item["parked_name"], "image_id": target_item["image_id"],
        "image_ref": target_item.get("image_ref"), "version": target_item.get("version"),
        "sequence": target_item.get("sequence"), "backup_dir": target_item["backup_dir"],
        "restart_policy": target_item.get("restart_policy") or {"Name": "no"}, "bundle": target_item.get("bundle"),
    }
    gens.save()
    j.mark("begin", "started")
    j.mark("begin", "done")
    out(f"rolling {plan.name} back to generation {target_item['generation']} ({target_item.get('version')})")
    return ContainerSwap(client, state, j, out=out).run_forward()


# -- recovery ---------------------------------------------------------------------------------

def pending(state: StateDir) -> list[str]:
    """Names of applications with an unfinished swap journal."""
    apps = state.root / "apps"
    if not apps.exists():
        return []
    return sorted(d.name for d in apps.iterdir() if (d / SwapJournal.FILE).exists())


def recover(client, state: StateDir, out=print) -> list[str]:
    """Finish or undo every interrupted swap; returns one line per application handled.

    Before the commit step, the swap is undone (old version back with its data restored if the
    new side may have run); after it, it is finished (the new version passed its gate), unless the
    new version is not healthy any more, in which case it is undone too."""
    done = []
    names = pending(state)
    if not names:
        return done
    _ping(client)
    swap_data.remove_stale_helpers(client)
    for name in names:
        j = SwapJournal.load(state.root / "apps" / name)
        if j is None:
            continue
        m = ContainerSwap(client, state, j, out=out)
        where = f"{j.data.get('step')}:{j.data.get('phase')}"
        out(f"recovering the interrupted {j.kind} of {name} (stopped at {where})")
        if j.direction == "forward" and j.reached("commit", "started"):
            new = j.data["new"]
            info = _inspect(client, new["id"])
            gate = HealthGate(j.data.get("health"), (info or {}).get("Config", {}).get("Healthcheck"))
            ok, why = (gate.wait_healthy(client, new["id"], out=out) if info else (False, "the new container is gone"))
            if ok:
                m.commit_and_finish()
                done.append(f"{name}: finished the interrupted {j.kind}; {new.get('version')} is running")
                continue
            reason = f"{name} {new.get('version')} is not healthy after the interruption: {why}"
        else:
            reason = f"the {j.kind} of {name} was interrupted at {where}"
        try:
            m.undo(reason)
        except UpdateFailed as e:
            done.append(f"{name}: undid the interrupted {j.kind}: {e}")
    return done


# -- status -----------------------------------------------------------------------------------

def app_status(client, state: StateDir, name: str) -> dict:
    """Installed version, kept generations, last swap result and what the engine says now."""
    app_dir = state.root / "apps" / name
    gens = Generations(app_dir) if app_dir.exists() else None
    rec = state.installed(name)
    last = SwapJournal.last(app_dir) if app_dir.exists() else None
    live = None
    if client is not None:
        info = _inspect(client, name)
        if info and _container_name(info) == name:
            st = info["State"]
            live = {"id": info["Id"][:12], "image_id": info["Image"], "status": st.get("Status"),
                    "health": (st.get("Health") or {}).get("Status")}
    return {
        "name": name,
        "installed": rec,
        "container": live,
        "previous": [_prev_summary(i) for i in gens.previous()] if gens else [],
        "pending_swap": (app_dir / SwapJournal.FILE).exists(),
        "last_swap": ({k: last.get(k) for k in ("kind", "result", "message", "started_at", "finished_at")}
                      if last else None),
    }


def known_apps(state: StateDir) -> list[str]:
    names = set()
    for sub in ("installed",):
        d = state.root / sub
        if d.exists():
            names |= {p.stem for p in d.glob("*.json")}
    apps = state.root / "apps"
    if apps.exists():
        names |= {p.name for p in apps.iterdir() if p.is_dir()}
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


def engine():
    """A Docker client, or EnvironmentProblem when the engine does not answer."""
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as e:
        raise EnvironmentProblem(f"the Docker engine does not answer: {e}") from None
    return client


def engine_or_none():
    try:
        return engine()
    except EnvironmentProblem:
        return None
