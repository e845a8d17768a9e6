"""`bundle promote` and `bundle abort` of a staged service release (a person's word between stages).

A release paused after a stage (`pause = "promote"` or a duration, importer.kinds.service.release)
is journaled in its mark, apps/<target>/release.json, which carries everything the later stages
need (the target as journaled, the installed record, the pinned image): `promote` continues it from
a fresh process, days or a reboot later, without the bundle file. The images are in the registry
already; the registry's login is this host's (importer.registry.RegistryLogin), as for the import.
Each stage after it is rolled, soaked and analysed exactly as in the import (release.run_stages):
a failed analysis rolls every service of the release back (exit 4), a later pause stops it again
(exit 11).

`abort` rolls the whole release back: every service the release moved, stage by stage in reverse
order, each with Swarm's rollback and its data (release.roll_back_service). The mark says
`aborting` before the first service moves, so a kill -9 in the middle leaves a release `recover`
finishes aborting, never a silent half. A service the release created (nothing ran before) has no
previous version: it is left running and the line says so.

Both write one audit event (`promote`, `abort`: result `aborted`), which `bundle history APP` shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bundlecore.errors import BundleError, UsageProblem
from bundlecore.release import Result, ServiceTarget, signers_of
from importer.audit import AuditEvent, BundleRef, EventKind, now, write_event
from importer.kinds.service import canary, rollout
from importer.kinds.service.mark import (Phase, ReleaseMark, forget_release, installed_versions, next_action,
                                         pause_over, pending_release, phase_of, release_of_app)
from importer.kinds.service.release import ServicePlan, recover_release, roll_back_service, run_stages
from importer.state import StateDir
from importer.steps import crash_hook


@dataclass
class ReleaseStepPlan:
    """What promote or abort will do (made under the lock, after recover; nothing asked of Swarm)."""

    kind: str                    # "promote" | "abort"
    name: str                    # the target name the mark is kept under
    app: str
    mark: ReleaseMark
    moves: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [next_action(asdict(self.mark)), *self.moves]


def plan_promote(client, state: StateDir, app: str) -> ReleaseStepPlan:
    """Refused (one line, nothing changed) unless a release of `app` waits between its stages."""
    found = release_of_app(state, app)
    if found is None:
        raise UsageProblem(f"nothing of {app} is paused: no staged release of it is under way")
    name, mark = found
    phase = phase_of(asdict(mark))
    if phase is Phase.SOAKING:
        raise UsageProblem(f"release {mark.version} of {app} is not paused: stage {mark.done} soaks until "
                           f"{mark.resume_after} (its health is still being proven); nothing changed")
    if not mark.target or not mark.record:
        raise UsageProblem(f"release {mark.version} of {app} was stopped by an older bundle that did not journal its "
                           f"target; continue it with `bundle import BUNDLE --resume`")
    moves = [f"stage {k + 1} of {mark.stages}: " + ", ".join(mark.services[k]) + f" to {mark.image}"
             for k in range(mark.done, mark.stages)]
    return ReleaseStepPlan("promote", name, mark.app or app, mark, moves)


def promote(client, state: StateDir, plan: ReleaseStepPlan, *, out=print) -> dict:
    """The paused release's later stages, as the import runs them; the installed record of the last."""
    from importer.registry import RegistryLogin
    mark, started = plan.mark, now()
    target = ServiceTarget.from_json(mark.target)
    registry = mark.record.get("registry") or target.registry or ""
    sp = ServicePlan(plan.name, target, mark.image_id, mark.version, registry, dict(mark.before), mark.done)
    out(pause_over(mark))
    crash_hook(f"release_promote_{mark.done + 1}", "before")
    try:
        rec = run_stages(client, state, sp, mark, mark.image or "", mark.record,
                         RegistryLogin.of(registry).auth_config if registry else None, out)
    except BundleError as e:
        write_event(state, AuditEvent.of_error(EventKind.PROMOTE, e, **_event_of(state, plan, started)))
        raise
    result = (Result.PAUSED if rec.get("paused_after_stage") else
              Result.PARTIAL if rec.get("stopped_after_stage") else Result.DONE)
    message = (next_action(pending_release(state, plan.name) or {}) if result is not Result.DONE
               else f"release {mark.version} of {plan.app} completed: every stage done")
    write_event(state, AuditEvent(EventKind.PROMOTE, result, int(result.exit_code), message=message,
                                  **_event_of(state, plan, started)))
    if result is Result.DONE:
        out(message)
    return rec


def plan_abort(client, state: StateDir, app: str) -> ReleaseStepPlan:
    found = release_of_app(state, app)
    if found is None:
        raise UsageProblem(f"nothing of {app} to abort: no staged release of it is under way")
    name, mark = found
    return ReleaseStepPlan("abort", name, mark.app or app, mark, [
        f"roll back stage {k + 1}: " + ", ".join(f"{s} to {mark.before.get(s) or '(created by it: left running)'}"
                                                 for s in mark.services[k])
        for k in range(_touched(mark) - 1, -1, -1)])


def abort(client, state: StateDir, plan: ReleaseStepPlan, *, out=print) -> dict:
    """Every service the release moved back on its version before, in reverse stage order."""
    mark = plan.mark
    mark.aborting = True
    mark.save(state, plan.name)  # journal before acting: recover finishes an interrupted abort
    return finish_abort(client, state, plan.name, mark, out=out, started=now())


def finish_abort(client, state: StateDir, name: str, mark: ReleaseMark, *, out=print, started: str | None = None) -> dict:
    """The abort's rollbacks (again after a crash: a service already back is skipped), then the
    mark goes and the audit event says `aborted`."""
    plan = ReleaseStepPlan("abort", name, mark.app or name, mark)
    left = []
    try:
        for k in range(_touched(mark) - 1, -1, -1):
            for s in mark.services[k]:
                if mark.canary_replicas(k) is not None:  # a canary step: its canary goes, the stable service was not moved
                    canary.remove(client, s, out=out)
                    continue
                info = rollout.inspect(client, s)
                if not info or rollout.image_of(info) != mark.image:
                    continue
                if mark.before.get(s) in (None, mark.image):
                    left.append(s)
                    continue
                out(f"rolling service {s} back to {mark.before[s]} (release {mark.version} aborted)")
                roll_back_service(client, state, s, out=out)
            crash_hook(f"release_abort_{k + 1}", "after")
    except BundleError as e:
        write_event(state, AuditEvent.of_error(EventKind.ABORT, e, **_event_of(state, plan, started)))
        raise
    forget_release(state, name)
    message = (f"release {mark.version} of {plan.app} aborted: every service it moved runs its version from before"
               + (f"; {', '.join(left)} created by it, left running" if left else ""))
    write_event(state, AuditEvent(EventKind.ABORT, Result.ABORTED, int(Result.ABORTED.exit_code), message=message,
                                  **_event_of(state, plan, started)))
    out(message)
    return {"name": plan.app, "version": mark.version, "services": installed_versions(state, mark.services)}


def _touched(mark: ReleaseMark) -> int:
    """How many stages the release may have moved (the one it was killed in included)."""
    return max(mark.done, mark.running or 0)


def _event_of(state: StateDir, plan: ReleaseStepPlan, started: str | None) -> dict:
    mark = plan.mark
    rec = mark.record
    return {"app": plan.app, "version_from": _version_before(state, mark), "version_to": mark.version,
            "bundle": BundleRef(rec.get("bundle_sha256"), plan.app, mark.version, rec.get("sequence")),
            "signers": signers_of(rec.get("signers")), "started": started,
            "details": {"services": installed_versions(state, mark.services), "target": plan.name, "stages": mark.stages,
                        "stage": mark.done}}


def _version_before(state: StateDir, mark: ReleaseMark) -> str | None:
    """The version the release replaces: what a service not on it runs, or what a moved one ran."""
    for services in mark.services:
        for s in services:
            rec = state.installed(s) or {}
            v = rec.get("version") if rec.get("version") != mark.version else rec.get("previous_version")
            if v:
                return v
    return None


def recover(client, state: StateDir, name: str, out=print) -> list[str]:
    """`bundle recover` of `name`: its interrupted rollout (a journal), then its interrupted release:
    an interrupted abort is finished, a stage killed midway completed or rolled back (recover_release)."""
    lines = rollout.recover(client, state, name, out=out)
    mark = ReleaseMark.load(state, name)
    if mark is not None and mark.aborting:
        done = finish_abort(client, state, name, mark, out=out)
        return lines + [f"{name}: the interrupted abort of release {mark.version} was finished: "
                        + ", ".join(f"{s} {v}" for s, v in done["services"].items())]
    return lines + recover_release(client, state, name, out=out)
