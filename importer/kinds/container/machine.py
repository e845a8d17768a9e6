"""The container swap as a state machine whose states are the journal's steps.

Each step is recorded "started" before it runs and "done" after by the one step runner
(importer.steps), which reads `_RULES` (per step: action, undo step, resume rule); each step is
idempotent against the engine's actual state, so recovery can replay or undo from any point.
The old container is only ever stopped and renamed (`NAME.previous-G`), never removed here;
`prune` removes generations beyond `keep` once a later version is committed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bundlecore import interrupts, placeholders
from bundlecore.engine import EngineError, stop_timeout
from bundlecore.errors import EnvironmentProblem, ExitCode, InstallUndone, OperatorNeeded, UpdateFailed, reason
from bundlecore.progress import human
from bundlecore.release import ContainerTarget, Result, signers_of
from importer import ownership, units
from importer.audit import AuditEvent, BundleRef, EventKind, PhaseTimer, now
from importer.state import StateDir, highest_sequence_after
from importer.steps import COMMIT_RUNS_ON, Resume, Rule, StepRunner
from importer.backup import data
from importer.kinds.container.generations import Generations, summary
from importer.health import HealthGate
from importer.kinds.container.journal import UNDO_STEPS, Direction, Step, SwapJournal, SwapKind
from importer.delivery import LoadedImages
from importer.logtail import save_tail
from importer.kinds.container.status import SETTLE_SECONDS, unsettled


# Steps run outside the forward loop (BEGIN by whoever starts the journal, COMMIT/PRUNE by
# commit_and_finish).
_NOT_IN_FORWARD_LOOP = (Step.BEGIN, Step.COMMIT, Step.PRUNE)


class AttemptFailed(Exception):
    """The new version did not pass its health gate (carries the one-line reason)."""


class ContainerSwap:
    """Runs one swap (install, upgrade or rollback) through the journal's steps, forward or undo."""

    def __init__(self, client, state: StateDir, journal: SwapJournal, out=print):
        self.client = client
        self.state = state
        self.j = journal
        self.r = journal.record
        self.out = out
        self.app_dir = journal.app_dir
        self.timer = PhaseTimer()
        self.recovering = False  # set by importer.kinds.container.run.recover: the event is then a "recover"
        self.runner = StepRunner(state, journal, _RULES, self, label=self.r.name, timer=self.timer, out=out)

    # -- driving -----------------------------------------------------------------------
    def step(self, step: Step) -> None:
        self.runner.step(step)

    def run_forward(self) -> dict:
        """All forward steps; on a failed gate (or any error before commit), undo and raise."""
        try:
            interrupts.check()  # one that came while the journal was being started
            self.runner.forward(s for s in self.r.steps if s not in _NOT_IN_FORWARD_LOOP)
        except AttemptFailed as e:
            self.undo(str(e))  # raises UpdateFailed or OperatorNeeded
        except interrupts.Interrupted as e:
            if not self.runner.undo_steps(UNDO_STEPS):  # no step that changes anything had started
                self.finish(Result.INTERRUPTED, f"{e} before {self.r.name} was changed")
                e.unfinished = None
                raise
            self.undo(f"{e} during step {self.r.step}")
        except (Exception, KeyboardInterrupt) as e:
            self.undo(f"the swap stopped on an error at step {self.r.step}: {reason(e)}")
        return self.commit_and_finish()

    def commit_and_finish(self) -> dict:
        """Past the gate: commit and prune run to their end whatever interrupt arrives."""
        with interrupts.shielded(COMMIT_RUNS_ON):
            self.step(Step.COMMIT)
            self.step(Step.PRUNE)
            record = self.state.installed(self.r.key)
            self.finish(Result.DONE, f"{self.r.name} {self.r.new.version} is running")
            return record

    def finish(self, result: Result, message: str) -> None:
        self.runner.finish(result, message, lambda: self._event(result, message))

    def _audit(self, result: Result, message: str) -> None:
        self.runner.audit(lambda: self._event(result, message))

    def resumes_forward(self) -> bool:
        """Recovery finishes this swap (its gate had passed) instead of undoing it."""
        return self.runner.resume() == Resume.REPLAY

    def _event(self, result: Result, message: str) -> AuditEvent:
        r, b = self.r, self.r.bundle or {}
        kind = EventKind.RECOVER if self.recovering else EventKind(str(r.kind))
        # `bundle recover` exits 0 once it has put the previous version back
        undone = self.recovering and result in (Result.ROLLED_BACK, Result.INSTALL_UNDONE)
        return AuditEvent(
            event=kind, result=result, exit_code=ExitCode.DONE if undone else result.exit_code, app=r.key, message=message,
            bundle=BundleRef(b.get("sha256"), b.get("name"), r.new.version, r.new.sequence),
            signers=signers_of(b.get("signers")),
            version_from=r.old.version if r.old else None, version_to=r.new.version,
            phases=self.timer.seconds, started=r.started_at,
            details={"swap": str(r.kind), "container": r.name, "logs": r.failed_logs,
                     "sequence_from": r.old.sequence if r.old else None,
                     "steps": [h["step"] + ":" + h["phase"] for h in r.history][-40:]})

    # -- forward steps -----------------------------------------------------------------
    def stop_old(self):
        stop_saying(self.client, self.r.old.id, f"{self.r.name} {self.r.old.version or ''}", self.out)
        self.client.set_restart_policy(self.r.old.id, {"Name": "no"})

    def rename_old(self):
        self.client.rename(self.r.old.id, self.r.old.parked_name)

    def backup(self):
        side = self.r.data_side
        if self.r.kind == SwapKind.INSTALL:
            # Back up through the created (not yet started) container: only mounts holding data that
            # existed before (bind mounts, named volumes this install did not create).
            info = self.client.container(self.r.new.id)
            created = set(self.r.created_volumes or [])
            named = set(side.named_volumes)
            side.mounts = ownership.without_foreign(
                self.client, self.state, self.r.key,
                [m for m in data.backed_up_mounts(info)
                 if m["type"] == "bind" or (m["name"] in named and m["name"] not in created)], self.out)
            side.container_id = info["Id"]
            self.j.save()
        bdir = self.app_dir / side.backup_dir
        # Nothing to back up: no helper to find (nor a restore-space probe to run).
        helper = self._helper() if side.mounts else None
        manifest = data.backup_mounts(self.client, side.backup_source, side.mounts, bdir, helper)
        total = sum(m["size"] for m in manifest["mounts"])
        self.out(f"  backed up {len(manifest['mounts'])} mount(s) of {self.r.name} ({human(total)} compressed)")
        # A backup that could not be restored is no backup: refuse now, while nothing needs restoring.
        if helper:
            data.check_restore_space(self.client, bdir, manifest, helper)

    def create_new(self):
        body = self.r.new.create
        for vol in self.r.created_volumes or []:  # the install's own volumes carry its app (importer.ownership)
            self.client.create_volume(vol, {ownership.APP_LABEL: self.r.key})
        self.r.new.id = self.client.create_container(body["config"], name=self.r.name)
        self.j.save()
        for net, ep in body.get("extra_networks", {}).items():
            self.client.connect_network(self.r.new.id, net, ep)

    def restore_target(self):
        """Rollback: the generation put back gets the data it had when it was displaced."""
        bdir = self.app_dir / self.r.new.backup_dir
        data.restore_mounts(self.client, bdir, self._owned(data.load_backup(bdir)), self._helper())

    def rename_target(self):
        new = self.r.new
        self.client.rename(new.id, self.r.name)
        self.client.set_restart_policy(new.id, new.restart_policy or {"Name": "no"})

    def start_new(self):
        new = self.r.new
        info = self.client.container(new.id)
        gate = HealthGate(self.r.health, info["Config"].get("Healthcheck"))
        self.out(f"  starting {self.r.name} {new.version or ''}; health check: {gate.describe()}")
        ok, why = gate.wait_healthy(self.client, new.id, out=self.out)
        if not ok:
            raise AttemptFailed(f"{self.r.name} {new.version or ''} did not become healthy "
                                f"after {gate.attempts} attempt(s): {why}")

    def probation(self):
        """Watch the new version for its probation window, the old one still parked (off unless set).

        The window's end and the RestartCount it counts from are journaled before watching, so a
        recovery after a crash resumes the same window instead of starting a fresh one."""
        new = self.r.new
        info = self.client.container(new.id)
        gate = HealthGate(self.r.health, (info or {}).get("Config", {}).get("Healthcheck"))
        if gate.metrics:  # the query's placeholders name this release
            gate.metrics = gate.metrics.bound(placeholders.values_of(self.r.app or self.r.name, new.version))
        if not gate.probation:
            return
        if self.r.probation_until is None:
            self.r.probation_until = time.time() + gate.probation
            self.r.probation_base_restarts = (info or {}).get("RestartCount", 0)
            self.j.save()
        left = max(0.0, self.r.probation_until - time.time())
        self.out(f"  probation: watching {self.r.name} {new.version or ''} for {left:.0f} s "
                 f"(at most {gate.max_restarts} restart(s)); the previous version stays parked")
        if gate.metrics:
            self.out(f"  metrics gate: {gate.metrics.describe()}")
        ok, why = gate.watch_probation(self.client, new.id, self.r.probation_until,
                                       self.r.probation_base_restarts or 0, out=self.out)
        if not ok:
            raise AttemptFailed(f"{self.r.name} {new.version or ''} failed its probation: {why}")

    def commit(self):
        """Point of no return: the new version passed its gate; record it as installed."""
        name, new, old = self.r.name, self.r.new, self.r.old
        gens = Generations(self.app_dir)
        t = now()
        if old:
            gens.record_displaced(old, t)
        gens.record_current(name, new, t, self.r.health)
        gens.save()
        b = new.bundle or {}
        record = {
            "kind": ContainerTarget.KIND, "name": name, "app": self.r.key, "container": name,
            "version": new.version, "sequence": new.sequence,
            "highest_sequence": highest_sequence_after(self.r.installed_before, new.sequence),
            "image": new.image_ref, "image_id": new.image_id,
            "images": b.get("images") or {new.image_ref: new.image_id},
            "bundle_sha256": b.get("sha256"), "signers": [s.fingerprint for s in signers_of(b.get("signers"))],
            "container_id": new.id, "generation": new.generation, "installed_at": t,
            "previous": [summary(i) for i in gens.previous()], "health": self.r.health,
        }
        if self.r.unit is not None:
            record["systemd_unit"] = self._write_unit()
        self.state.record_installed(self.r.key, record)
        app = (self.r.bundle or {}).get("name")
        if app and isinstance(new.sequence, int):  # the gate's anti-rollback mark, keyed by app name
            self.state.raise_sequence(app, new.sequence)

    def _write_unit(self) -> str:
        """The systemd unit that starts the committed container at boot (importer.units), the one it
        replaces kept as `.previous`; journaled first, so an undo after the commit puts that back."""
        new = self.r.new
        unit = units.UnitWrite(Path(self.r.unit["path"]), units.mark_for(
            self.r.key, new.version, new.image_ref, new.image_id, new.id))
        self.r.unit["mark"] = unit.mark
        self.j.save()
        units.install(self.client, unit, self.r.name, new.id, new.version, self.out)
        return str(unit.path)

    def prune(self):
        """Drop generations beyond `keep` (container, backup, the images its load created), and backups
        nobody refers to. `keep` counts generations: images and tags the tool did not create are never
        counted or removed."""
        gens = Generations(self.app_dir)
        keep = max(1, int(self.r.keep or 2))
        for item in gens.previous()[keep - 1:]:
            item["pruned"] = True
        gens.save()
        in_use = {gens.current["image_id"]} if gens.current else set()
        in_use |= {i["image_id"] for i in gens.previous()}
        for k, item in list(gens.data["items"].items()):
            if not item.get("pruned"):
                continue
            if self.client.container(item["container_id"]):
                try:
                    self.client.remove_container(item["container_id"])
                except EngineError as e:
                    self.out(f"  could not remove {item['parked_name']}: {e.explanation or e}")
                    continue
            self._remove_loaded(LoadedImages.from_json(item.get("bundle")), in_use)
            del gens.data["items"][k]
            gens.save()
        referenced = {i.get("backup_dir") for i in gens.data["items"].values()}
        gdir = self.app_dir / "generations"
        if gdir.exists():
            for d in gdir.iterdir():
                if f"generations/{d.name}" not in referenced:
                    shutil.rmtree(d, ignore_errors=True)
        if self.r.old or self.r.kind == SwapKind.ROLLBACK:
            rec = self.state.installed(self.r.key)
            if rec:
                rec["previous"] = [summary(i) for i in gens.previous()]
                self.state.record_installed(self.r.key, rec)

    def _remove_loaded(self, loaded: LoadedImages, in_use: set[str]) -> None:
        """Remove what a pruned generation's load created and no kept generation uses: its tags while
        they still name the image it loaded, then the image if it came with that load and no tag is
        left. A tag or an image that was there before, or that someone set since, is left alone."""
        for ref, image_id in sorted(loaded.tags.items()):
            if image_id not in in_use and (self.client.image(ref) or {}).get("Id") == image_id:
                try:
                    self.client.remove_image(ref)  # untags; the engine deletes the image with its last tag
                except EngineError:
                    pass  # used by another container: not ours to force
        for image_id in sorted(loaded.image_ids - in_use):
            img = self.client.image(image_id)
            if img is not None and not img.get("RepoTags"):
                try:
                    self.client.remove_image(image_id)
                except EngineError:
                    pass

    # -- undo --------------------------------------------------------------------------
    def undo(self, why: str):
        """Put the old version back exactly as it was; raise UpdateFailed (InstallUndone for a first
        install), or OperatorNeeded if we cannot.

        An undo resumes after its last completed step (a later `recover` after an exit 5 does not
        start over): a completed restore is never run again, whatever was written since. It runs
        to its end whatever interrupt arrives meanwhile (shielded)."""
        with interrupts.shielded():
            self._undo(why)

    def _undo(self, why: str):
        if self.r.direction != Direction.UNDO:
            self.r.failure = why
        self.r.direction = Direction.UNDO
        self.j.save()
        self.out(f"  {why}")
        self.out("  rolling back")
        old = self.r.old
        try:
            self.runner.undo(UNDO_STEPS, already_done=self._already_undone)
            if old and old.was_running:
                self._confirm_running_again()
        except Exception as e:
            detail = str(e) if isinstance(e, OperatorNeeded) else reason(e)
            self.r.operator_needed = detail
            try:
                self.j.save()  # the journal stays: `bundle recover` retries once the cause is fixed
            except OSError:
                pass  # the journal on disk still says where the undo stopped
            msg = f"{why}; putting the previous version back failed at step {self.r.step}: {detail}"
            if not isinstance(e, data.RestoreError):
                msg += f"; {self._data_state()}"
            msg += f". No container or backup was deleted; see {self.app_dir / SwapJournal.FILE}"
            self._audit(Result.OPERATOR_NEEDED, msg)
            raise OperatorNeeded(msg) from e
        if not old:
            msg = f"{why}; nothing was installed"
        elif old.was_running:
            msg = f"{why}; the previous version {old.version or old.image_ref} is running again"
        else:
            msg = f"{why}; the previous version {old.version or old.image_ref} is back (stopped, as it was)"
        try:
            self.finish(Result.ROLLED_BACK if old else Result.INSTALL_UNDONE, msg)
        except OSError as e:  # the old version is back: that is what the exit code says
            msg += f" (the journal could not be closed: {e.strerror or e}; `bundle recover` will close it)"
        raise UpdateFailed(msg) if old else InstallUndone(msg)

    def _confirm_running_again(self) -> None:
        """The previous version passed its health gate again; raise OperatorNeeded unless it is still
        running healthy a few seconds later (status.unsettled): "running again" must stay true."""
        old = self.r.old
        problem = unsettled(self.client, old.id, self.r.name, self.out)
        if problem:
            raise OperatorNeeded(
                f"the previous version {old.version or old.image_ref} of {self.r.name} passed its health gate, "
                f"but {SETTLE_SECONDS:g} s later {problem}; start it (`docker start {self.r.name}`), "
                "then `bundle recover`")

    def _data_state(self) -> str:
        """What the mounts hold after an undo stopped (restore_data's own errors say it themselves)."""
        bdir = self.app_dir / self.r.data_side.backup_dir if self.r.data_side else None
        if self.r.data_restored:
            return f"the data was restored from the backup in {bdir} (once: no later command restores it again)"
        if self.j.reached(Step.RESTORE_DATA, "started") and self.r.data_restored is None:
            return f"the data may be partially restored; the backup is in {bdir}"
        if self.r.data_restored is False:
            return "the data needed no restore and was not touched"
        return f"the data was not restored yet (as the new version left it); the backup is in {bdir}"

    def _new_containers(self) -> list[str]:
        """Containers that are the new side: the journaled ID, and anything else now called NAME."""
        ids = []
        new_id = self.r.new.id
        if new_id and self.client.container(new_id):
            ids.append(new_id)
        cur = self.client.container_named(self.r.name)
        old_id = self.r.old.id if self.r.old else None
        if cur and cur["Id"] != old_id and cur["Id"] not in ids:
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
        if self.j.reached(Step.COMMIT, "started"):
            self._uncommit()
        if self.r.kind == SwapKind.ROLLBACK:
            # The generation we tried to put back returns to its parking place, untouched otherwise.
            new = self.r.new
            self.client.stop(new.id)
            self.client.set_restart_policy(new.id, {"Name": "no"})
            self.client.rename(new.id, new.parked_name)
            return
        for cid in self._new_containers():
            self._save_logs(cid)
            self.client.remove_container(cid, volumes=True)
        if self.r.kind == SwapKind.INSTALL:
            for vol in self.r.created_volumes or []:
                data.remove_unless_refused(self.client.remove_volume, vol, "volume", self.out)
        backup = self._backup_to_restore()
        if backup:  # what the data is now: a restore must find it so, or someone wrote since
            self.r.fingerprint_stopped = data.fingerprint_mounts(self.client, backup[1]["mounts"], self._helper())

    def _save_logs(self, cid: str) -> None:
        """Keep the failed container's last log lines (shown by `bundle history`); never blocks the undo."""
        rel = save_tail(self.client, self.app_dir, cid,
                        f"generation-{self.r.new.generation}-{(self.r.swap_id or 'swap')[:12]}", self.out)
        if rel:
            self.r.failed_logs = rel
            self.j.save()

    def _uncommit(self):
        """Recovery found a committed swap whose new version is not healthy: restore the records."""
        if self.r.generations_before is not None:
            g = Generations(self.app_dir)
            g.data = self.r.generations_before
            g.save()
        if self.r.unit and self.r.unit.get("mark"):
            units.put_back(units.UnitWrite(Path(self.r.unit["path"]), self.r.unit["mark"]))
        before = self.r.installed_before
        if before:
            self.state.record_installed(self.r.key, before)
        else:
            try:
                os.unlink(self.state.installed_path(self.r.key))
            except FileNotFoundError:
                pass

    def _backup_to_restore(self) -> tuple | None:
        """(backup dir, manifest) when the new side may have run (and so written); None when a
        stopped old container changed nothing."""
        # Creating a container may already copy image files into an empty volume: count it as touching.
        touched = any(self.j.reached(s) for s in (Step.CREATE_NEW, Step.START_NEW, Step.PROBATION, Step.RESTORE_TARGET))
        if not touched or not self.j.reached(Step.BACKUP, "done"):
            return None
        bdir = self.app_dir / self.r.data_side.backup_dir
        manifest = data.load_backup(bdir)
        if manifest is None:
            raise OperatorNeeded(f"the backup of {self.r.name} in {bdir} is incomplete")
        return bdir, self._owned(manifest)

    def _owned(self, manifest: dict) -> dict:
        """A backup's manifest less the volumes another app owns now: never restored by this app."""
        return {**manifest, "mounts": ownership.without_foreign(self.client, self.state, self.r.key,
                                                                manifest["mounts"], self.out)}

    def restore_data(self):
        """Put the backup back, unless someone wrote to the data since the new version was stopped."""
        backup = self._backup_to_restore()
        if backup is None:
            self.r.data_restored = False
            return
        bdir, manifest = backup
        helper = self._helper()
        if self.r.fingerprint_stopped is not None:
            now_fp = data.fingerprint_mounts(self.client, manifest["mounts"], helper)
            changed = data.changed_mounts(self.r.fingerprint_stopped, now_fp, manifest["mounts"])
            if changed:
                raise data.DataChangedSince(f"{', '.join(changed)} changed since the update was stopped",
                                            f"nothing was overwritten; the backup is in {bdir}")
        data.restore_mounts(self.client, bdir, manifest, helper)
        self.out(f"  restored {len(manifest['mounts'])} mount(s) from the backup taken {manifest['taken_at']}")
        self.r.fingerprint_restored = data.fingerprint_mounts(self.client, manifest["mounts"], helper)
        self.r.data_restored = True

    def _already_undone(self, step: Step) -> None:
        if step == Step.RESTORE_DATA and self.r.data_restored:
            self._say_not_restored_again()

    def _say_not_restored_again(self):
        """A resumed undo: the restore completed before; what was written since stays."""
        bdir, manifest = self._backup_to_restore()
        line = f"  the data was restored from {bdir} before; it is not restored again"
        try:
            now_fp = data.fingerprint_mounts(self.client, manifest["mounts"], self._helper())
        except (EngineError, EnvironmentProblem):
            now_fp = None
        changed = data.changed_mounts(self.r.fingerprint_restored, now_fp, manifest["mounts"]) if now_fp else []
        if changed:
            line += f" ({', '.join(changed)} changed since: kept as it is)"
        self.out(line)

    def rename_back(self):
        old = self.r.old
        if not self.client.container(old.id):
            raise OperatorNeeded(f"the previous container {old.id[:12]} of {self.r.name} is gone")
        self.client.rename(old.id, self.r.name)
        self.client.set_restart_policy(old.id, old.restart_policy or {"Name": "no"})

    def start_old(self):
        old = self.r.old
        if not old.was_running:
            return
        info = self.client.container(old.id)
        gate = HealthGate(old.health, info["Config"].get("Healthcheck"))  # its own settings, not the new one's
        self.out(f"  starting the previous version again; health check: {gate.describe()}")
        ok, why = gate.wait_healthy(self.client, old.id, out=self.out)
        if not ok:
            raise OperatorNeeded(f"the previous version of {self.r.name} does not come up healthy either: {why}")

    def _helper(self) -> str:
        cands = [c for c in (self.r.helper_image, self.r.old.image_id if self.r.old else None, self.r.new.image_id)
                 if c]
        return data.find_helper_image(self.client, cands)


# The one table of the container swap's steps: action, the undo step that reverses it, and what
# recovery does after a crash in it. Before PROBATION a crash is undone (the old version back with
# its data); from PROBATION on the new version had passed its gate: recovery checks it again,
# resumes an unfinished window and commits. An undo runs the undo steps of every step that started,
# in UNDO_STEPS order. BEGIN is recorded by `begin`, once the journal is started.
_RULES = {
    Step.BEGIN: Rule(lambda m: None),
    Step.STOP_OLD: Rule(ContainerSwap.stop_old, undo=Step.START_OLD),
    Step.RENAME_OLD: Rule(ContainerSwap.rename_old, undo=Step.RENAME_BACK),
    Step.BACKUP: Rule(ContainerSwap.backup, undo=Step.RESTORE_DATA),
    Step.CREATE_NEW: Rule(ContainerSwap.create_new, undo=Step.REMOVE_NEW),
    Step.RESTORE_TARGET: Rule(ContainerSwap.restore_target, undo=Step.RESTORE_DATA),
    Step.RENAME_TARGET: Rule(ContainerSwap.rename_target, undo=Step.REMOVE_NEW),
    Step.START_NEW: Rule(ContainerSwap.start_new, undo=Step.REMOVE_NEW),
    Step.PROBATION: Rule(ContainerSwap.probation, undo=Step.REMOVE_NEW, started=Resume.REPLAY),
    Step.COMMIT: Rule(ContainerSwap.commit, undo=Step.REMOVE_NEW, started=Resume.REPLAY),
    Step.PRUNE: Rule(ContainerSwap.prune, started=Resume.REPLAY),
    Step.REMOVE_NEW: Rule(ContainerSwap.remove_new),
    Step.RESTORE_DATA: Rule(ContainerSwap.restore_data),
    Step.RENAME_BACK: Rule(ContainerSwap.rename_back),
    Step.START_OLD: Rule(ContainerSwap.start_old),
}


def stop_saying(client, cid: str, what: str, out) -> None:
    """Stop a container, saying first how long it may take (its own stop timeout): a stop is the
    longest silent engine call of a swap."""
    info = client.container(cid)
    if info and (info["State"].get("Running") or info["State"].get("Restarting")):
        out(f"  stopping {what.strip()} (up to {stop_timeout(info)} s)")
    client.stop(cid)


def begin(state: StateDir, journal: SwapJournal) -> None:
    """Record BEGIN: from here on a crash is recovered from the journal."""
    StepRunner(state, journal, _RULES, None).step(Step.BEGIN)
