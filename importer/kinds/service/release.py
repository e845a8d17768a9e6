"""The `service` target kind: a release of one verified image to Swarm services, stage by stage.

A release is the target's `[[stage]]` list (without stages: one stage, the target service).
Stage k starts only when stage k-1 finished its update and stayed healthy for its soak (at least
`[target.health] probation` seconds, or this import's --probation, when set), and passed its
analysis: `[target.health] prometheus` (importer.analysis, the one metrics gate of every kind) is
evaluated for its window after each stage's services rolled. A failed update or soak rolls the
failing stage's services back (Swarm's own rollback) and stops: later stages are not touched. A
failed analysis rolls back every service the release touched, in reverse stage order, with their
data (the failing stage's and every earlier one's): a release the metrics call bad goes nowhere.
A stage with `replicas` is a canary step (importer.kinds.service.canary: a `<service>-canary`
beside the untouched stable service; rolled back by removing it; removed once a later stage
rolled the service whole and passed its watch); `parallel = true` asks Swarm for every service
of the stage first, then waits for them together (`_roll_whole`). The analysis query's
placeholders are filled in per stage (bundlecore.placeholders).
A soak up to INLINE_SOAK seconds is watched inside this process; a longer one
(a week of a test team using it) ends the import with exit 0 and the release recorded in
`apps/<target>/release.json`; `bundle import BUNDLE --resume` continues it once the soak is over.

The anti-rollback mark of the app is raised only when the whole release is done, so a resumed
import of the same bundle passes the gate, and a stopped release cannot be replayed by another.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from bundlecore import placeholders
from bundlecore.errors import EnvironmentProblem, OperatorNeeded, UpdateFailed, UsageProblem
from bundlecore.interrupts import Interrupted
from bundlecore.progress import Countdown
from bundlecore.refusals import EngineRefused
from bundlecore.release import PROMOTE, ServiceTarget, canary_name
from bundlecore.text import printable
from bundlecore.timeutil import format_ts, parse_ts, plus, utc_now
from importer.analysis import Analysis, MetricsGate
from importer import ownership
from importer.delivery import Delivery
from importer.kinds.service import canary, rollout, volumes
from importer.kinds.service.mark import (ReleaseMark, forget_release, installed_versions, next_action, pause_over,
                                         pending_release)
from importer.state import StateDir, highest_sequence_after
from importer.steps import crash_hook

INLINE_SOAK = 30  # seconds of soak watched in-process; longer soaks end the import (resume later)
INLINE_SOAK_ENV = "BUNDLE_INLINE_SOAK"  # test-only: the suite lowers it to prove --resume without a 30 s wait


def inline_soak() -> float:
    """INLINE_SOAK, or $BUNDLE_INLINE_SOAK if it is a number >= 0 (set by the operator's environment,
    never by a bundle; lowering it only ends an import earlier, for a --resume later)."""
    try:
        return max(0.0, float(os.environ[INLINE_SOAK_ENV]))
    except (KeyError, ValueError):
        return INLINE_SOAK


@dataclass
class ServicePlan:
    """What the import will do to which services (nothing asked of Swarm yet)."""

    name: str
    target: ServiceTarget
    new_image_id: str
    new_version: str | None
    registry: str
    current: dict[str, str | None]              # service -> image it runs now (None: to be created)
    resume_from: int = 0                        # first stage to run (a resumed release)
    replicas: dict[str, int] = field(default_factory=dict)   # service -> its replicas now
    canary: dict[tuple[int, str], int] = field(default_factory=dict)  # (stage, service) -> canary tasks
    kind: str = field(default="service")

    def lines(self) -> list[str]:
        stages = self.target.services()
        out = [f"release {self.new_version} of {self.name} via registry {self.registry}: {len(stages)} stage(s)"]
        for i, services in enumerate(stages):
            done = " (done)" if i < self.resume_from else ""
            soak, stage = stage_soak(self.target, i), self.target.stage(i)
            if stage.canary:
                what = ", ".join(f"canary {canary_name(s)}: {self.canary.get((i, s))} task(s) beside {s}'s "
                                 f"{self.replicas.get(s)} ({s} untouched)" for s in services)
            else:
                what = ", ".join(
                    f"{s} ({'create' if self.current.get(s) is None else 'update from ' + printable(self.current[s])})"
                    for s in services) + ("; in parallel" if stage.parallel and len(services) > 1 else "")
            out.append(f"  stage {i + 1}{done}: {what}" + (f"; soak {soak}s" if soak else ""))
        gate = MetricsGate.from_health(self.target.health_json())
        if gate:
            out.append(f"  analysis after each stage: {gate.describe()}")
        if self.resume_from:
            out.append(f"  resuming at stage {self.resume_from + 1}")
        return out


def stage_soak(target: ServiceTarget, index: int) -> int:
    """Seconds stage `index` is watched after its update: its soak, at least the probation
    (`[target.health] probation` or --probation) when one is set."""
    return max(target.soak(index), (target.health.probation if target.health else None) or 0)


def plan(client, state: StateDir, target: ServiceTarget, new_image_id: str, *, new_version: str | None = None,
         registry: str | None = None, resume: bool = False) -> ServicePlan:
    registry = registry or target.registry
    name = target.name
    if not registry:
        raise UsageProblem(f"service {name}: a service target needs a registry every node can pull "
                           f"from (--registry HOST:PORT or [target] registry)")
    if not client.runs_swarm:
        raise EngineRefused(f"service {name}: {client.describe()} runs no Swarm services; "
                            f"import it on a Docker Swarm manager")
    rollout.require_swarm(client)
    pending = pending_release(state, name)
    resume_from = 0
    if pending:
        if pending.get("running") or pending.get("aborting"):
            raise OperatorNeeded(next_action(pending))
        same = pending["image_id"] == new_image_id and pending["version"] == new_version
        if not same:
            raise UsageProblem(f"another release is under way: {next_action(pending)} first")
        if not resume:
            raise UsageProblem(f"release {new_version} of {name} is stopped after stage {pending['done']}; "
                               f"continue it with --resume (after {pending['resume_after']})")
        if pending.get("pause") == PROMOTE:
            raise UsageProblem(next_action(pending) + " (nothing changed)")
        if utc_now() < parse_ts(pending["resume_after"]):
            waits = "is paused" if pending.get("pause") else "soaks"
            raise EnvironmentProblem(f"stage {pending['done']} of {name} {waits} until "
                                     f"{pending['resume_after']}; resume after that (nothing changed)")
        resume_from = pending["done"]
    elif resume:
        raise UsageProblem(f"no stopped release of {name} to resume")
    current: dict[str, str | None] = {}
    replicas: dict[str, int] = {}
    canaries: dict[tuple[int, str], int] = {}
    for i, services in enumerate(target.services()):
        for s in services:
            info = rollout.inspect(client, s)
            if info and s not in current:
                current[s], replicas[s] = rollout.image_of(info), rollout.replicas_of(info)
            current.setdefault(s, None)
            if target.stage(i).canary:
                canaries[(i, s)] = _canary_planned(s, info, target.stage(i).replicas)
    # a task of another service, or any other container, on this node: the app's own services' tasks
    # (and their canaries') are not others
    own = set(current) | {canary_name(s) for s in current}
    ownership.refuse_nested_binds(client, [(f"target.run.volumes.{i}", v) for i, v in enumerate(target.run.volumes or ())],
                                  lambda _, labels: labels.get(rollout.SERVICE_NAME_LABEL) in own)
    return ServicePlan(name, target, new_image_id, new_version, registry, current, resume_from, replicas, canaries)


def _canary_planned(service: str, info: dict | None, replicas) -> int:
    """The canary tasks of a canary step; refused where a canary cannot be undone apart from its service."""
    if info is None:
        raise UsageProblem(f"service {service} does not exist: a canary step (replicas) needs the stable service "
                           f"running (install it with a release that rolls it whole)")
    if volumes.local_volumes(info["Spec"]):
        raise UsageProblem(f"service {service} has local volumes: a canary step (replicas) would run two versions "
                           f"on its data; roll it whole")
    return canary.count(replicas, rollout.replicas_of(info))


def apply(client, state: StateDir, plan: ServicePlan, delivery: Delivery, *, keep: int = 2, out=print) -> dict:
    """Run the release's stages from plan.resume_from; the installed record of the target name."""
    r = delivery.release
    image = delivery.by_digest(plan.target.image)
    record = {"version": r.version, "sequence": r.sequence, "image_id": plan.new_image_id,
              "bundle_sha256": delivery.sha256, "signers": r.fingerprints, "app": r.app, "registry": plan.registry,
              "pushed": delivery.pushed_report()}
    stages = plan.target.services()
    gate = MetricsGate.from_health(plan.target.health_json())
    mark = ReleaseMark.load(state, plan.name) or ReleaseMark(
        plan.new_image_id, r.version, 0, len(stages), app=r.app, image=image, services=stages, before=plan.current,
        watch=[_watch_of(plan.target, gate, i)[1] for i in range(len(stages))], target=plan.target.to_json(),
        record=record, replicas=[plan.target.stage(i).replicas for i in range(len(stages))])
    if mark.pause and plan.resume_from:
        out(pause_over(mark))
    return run_stages(client, state, plan, mark, image, record, delivery.registry_auth, out)


def run_stages(client, state: StateDir, plan: ServicePlan, mark: ReleaseMark, image: str, record: dict,
               auth: dict | None, out) -> dict:
    """The release's stages from plan.resume_from (an import, `--resume`, `bundle promote`); the
    installed record, with `stopped_after_stage` or `paused_after_stage` when it stops before the end."""
    stages = plan.target.services()
    journaled = plan.target.to_json()  # the rollout journal keeps the target as the manifest spells it
    gate = MetricsGate.from_health(plan.target.health_json())
    for i in range(plan.resume_from, len(stages)):
        if i > 0:  # the stage before stayed healthy (also after a resume days later)
            try:
                _check_still_healthy(client, state, mark, i - 1, image, out)
            except UpdateFailed:  # that stage is rolled back: stopped after the ones before it
                mark.stop(state, plan.name, i - 1)
                raise
        mark.done, mark.running, mark.resume_after, mark.pause = i, i + 1, None, None
        mark.save(state, plan.name)  # journal before acting: recover knows the stage in progress
        crash_hook(f"release_stage_{i + 1}", "before")
        try:
            stopped = _run_stage(client, state, plan, stages, i, image, journaled, record, gate, mark, auth, out)
        except (UpdateFailed, OperatorNeeded):  # the stage rolled back, or Swarm paused: an operator decides
            if pending_release(state, plan.name):  # a failed analysis already rolled everything back
                mark.stop(state, plan.name, i)
            raise
        stopped = _pause_after(state, plan, stages, i, mark, stopped, out) or stopped
        if stopped:
            return stopped
    return _finish_release(state, plan, record["app"], record["sequence"], stages)


def _pause_after(state: StateDir, plan: ServicePlan, stages: list[list[str]], i: int, mark: ReleaseMark,
                 stopped: dict | None, out) -> dict | None:
    """Stage i's `pause` (after its soak): journaled before the release waits, so that it survives
    this process and the host. A timed pause up to the inline soak is waited here (a kill -9 during
    it leaves the release paused: --resume or promote continues it, and SIGINT/SIGTERM end the import
    as paused); a longer one, or one until `bundle promote`, ends the import (exit 11,
    ExitCode.PAUSED). None: the release goes on."""
    pause = plan.target.pause(i)
    if pause is None or i + 1 >= len(stages):
        return None
    crash_hook(f"release_pause_{i + 1}", "before")
    seconds = mark.enter_pause(state, plan.name, i + 1, pause, parse_ts(stopped["resume_after"]) if stopped else None)
    crash_hook(f"release_pause_{i + 1}", "after")
    if pause != PROMOTE and not stopped and seconds <= inline_soak():
        countdown = Countdown(f"stage {i + 1} of {len(stages)}: paused", seconds)
        end = time.monotonic() + seconds
        out(f"stage {i + 1} of {len(stages)}: paused for {seconds}s")
        try:
            while time.monotonic() < end:
                countdown.tick()
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        except Interrupted as e:  # the pause is journaled: it outlives this process, as a long one does
            countdown.close()
            out(f"{e.signame} during the pause of stage {i + 1}: the release stays paused")
        else:
            countdown.close()
            out(pause_over(mark))
            return None
    out(next_action(asdict(mark)))
    return {**(state.installed(stages[i][0]) or {}), "paused_after_stage": i + 1, "pause": mark.pause,
            "resume_after": mark.resume_after, "services": installed_versions(state, stages)}


def _run_stage(client, state: StateDir, plan: ServicePlan, stages: list[list[str]], i: int, image: str,
               journaled: dict, record: dict, gate: MetricsGate | None, mark: ReleaseMark, auth: dict | None,
               out) -> dict | None:
    """Stage i: its canaries run, or its services rolled (one after the other, or in parallel),
    then watched (soak, analysis); the installed record when the release stops after it for a
    long soak, else None."""
    stage, n = plan.target.stage(i), len(stages)
    try:
        if stage.canary:
            _run_canaries(client, stages[i], stage.replicas, image, journaled, record.get("app"), i, auth, out)
        else:
            _roll_whole(client, state, stages[i], bool(stage.parallel), image, journaled, record, i, auth, out)
    except UpdateFailed as e:
        raise UpdateFailed(f"stage {i + 1} of {n}: {e}" + ("; later stage(s) not started" if i + 1 < n else "")) from None
    stop, watch = _watch_of(plan.target, gate, i)
    after = format_ts(plus(utc_now(), stage_soak(plan.target, i)))
    if watch:
        _watch(client, state, plan, mark, i, image, watch, gate, out)
    crash_hook(f"release_watched_{i + 1}", "before")
    if not stage.canary:  # each service is whole on the new version: a canary a step ran beside it goes
        for s in set(stages[i]) & {s for k, st in enumerate(stages[:i]) if mark.canary_replicas(k) is not None for s in st}:
            canary.remove(client, s, out=out)
    if stop:
        mark.done, mark.running, mark.resume_after = i + 1, None, after
        mark.save(state, plan.name)
        if plan.target.pause(i) is None:  # else its pause says what comes next
            out(f"stage {i + 1} of {n} done; continue with --resume after {after}")
        return {**(state.installed(stages[i][0]) or {}), "stopped_after_stage": i + 1, "resume_after": after,
                "services": installed_versions(state, stages)}
    out(f"stage {i + 1} of {n} done: {', '.join(_units(stages[i], mark.canary_replicas(i)))} on {image}")
    return None


def _run_canaries(client, services: list[str], replicas, image: str, target: dict, app: str | None, i: int,
                  auth: dict | None, out) -> None:
    """A canary step: each service's canary created (or scaled) and healthy; a canary that is not
    is removed with every other canary of the step (UpdateFailed), the stable services untouched."""
    counts = {}
    try:
        for s in services:
            counts[s] = canary.run(client, s, image, replicas, target, app, auth=auth, out=out)
        crash_hook(f"release_canary_{i + 1}", "before")
        for s in services:
            canary.wait(client, s, image, counts[s], target)
    except UpdateFailed:
        for s in services:
            canary.remove(client, s, out=out)
        raise


def _roll_whole(client, state: StateDir, services: list[str], parallel: bool, image: str, target: dict,
                record: dict, i: int, auth: dict | None, out) -> None:
    """The stage's services rolled by Swarm, one after the other or (parallel) all asked first, then
    waited on together; any failing rolls back every one of them that completed (UpdateFailed)."""
    def begin(s):
        return rollout.begin(client, state, s, target, image, record, out=out, auth=auth)

    runs = {s: begin(s) for s in services} if parallel else {}
    if parallel:
        crash_hook(f"release_parallel_{i + 1}", "before")
        out(f"stage {i + 1}: {len(services)} service(s) rolling in parallel")
    done: list[str] = []
    failed: list[UpdateFailed | OperatorNeeded] = []
    for s in services:
        try:
            run = runs[s] if parallel else begin(s)
            if run:
                run.settle()
            done.append(s)
        except (UpdateFailed, OperatorNeeded) as e:
            failed.append(e)
            if not parallel:
                break
    if failed:
        _roll_back_stage(client, state, done, out)
        first = next((e for e in failed if isinstance(e, OperatorNeeded)), failed[0])
        if isinstance(first, OperatorNeeded):
            raise first
        raise UpdateFailed(f"{first}" + (f"; rolled back with it: {', '.join(done)}" if done and parallel else ""))


def _watch_of(target: ServiceTarget, gate: MetricsGate | None, i: int) -> tuple[bool, float]:
    """(whether the release stops after stage i for a long soak, seconds stage i is watched inline)."""
    soak, window = stage_soak(target, i), (gate.window if gate else 0)
    stop = i + 1 < len(target.services()) and soak > inline_soak()  # resumed by a later import
    return stop, (window if stop else max(soak, window))


def _units(services: list[str], replicas) -> list[str]:
    """The Swarm services a stage puts the new version on: its services, or (a canary step) their canaries."""
    return [canary_name(s) for s in services] if replicas is not None else list(services)


def _watch(client, state, plan: ServicePlan, mark: ReleaseMark, i: int, image: str, seconds: float,
           gate: MetricsGate | None, out) -> None:
    """Stage i's soak and analysis: what it put on `image` must stay healthy and the metrics gate
    must pass (evaluated about once a second, and once at the end). A failed analysis rolls back
    every stage i..1, in that order (a canary step: its canary removed)."""
    n = len(mark.services)
    crash_hook(f"release_watch_{i + 1}", "before")
    if gate:  # the query's placeholders name this release and this stage (bundlecore.placeholders)
        gate = gate.bound(placeholders.values_of(
            mark.app, mark.version, [s for st in mark.services for s in st], _units(mark.services[i], mark.canary_replicas(i))))
    out(f"stage {i + 1} of {n}: soaking {seconds:g}s" + (f"; analysis: {gate.describe()}" if gate else ""))
    analysis = Analysis(gate) if gate else None
    end = time.monotonic() + seconds
    countdown = Countdown(f"stage {i + 1} of {n}: " + ("analysis" if gate else "soak"), seconds)
    while True:
        final = time.monotonic() >= end
        _check_still_healthy(client, state, mark, i, image, out)
        why = analysis.step(final) if analysis else None
        countdown.tick(f"{analysis.failures} failed evaluation(s), {analysis.gate.failure_limit} tolerated"
                       if analysis else "")
        if why or final:
            countdown.close()
        if why:
            out(f"stage {i + 1} of {n}: analysis failed: {why}")
            for k in range(i, -1, -1):
                _roll_back(client, state, mark, k, out)
            forget_release(state, plan.name)
            raise UpdateFailed(f"stage {i + 1} of {n}: analysis failed: {why}; every service of stage(s) "
                               f"{', '.join(str(k + 1) for k in range(i, -1, -1))} rolled back"
                               + ("; later stage(s) not started" if i + 1 < n else ""))
        if final:
            return
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))


def _check_still_healthy(client, state, mark: ReleaseMark, i: int, image: str, out) -> None:
    units = _units(mark.services[i], mark.canary_replicas(i))
    sick = [s for s in units if not rollout.settled_on(client, s, image)]
    if sick:
        _roll_back(client, state, mark, i, out)
        raise UpdateFailed(f"stage {i + 1}: {', '.join(sick)} not healthy on {image} during its soak; "
                           f"stage rolled back, later stage(s) not started")


def _roll_back(client, state: StateDir, mark: ReleaseMark, k: int, out) -> None:
    """Stage k undone: its canaries removed (the stable services were never touched), or its
    services rolled back by Swarm."""
    if mark.canary_replicas(k) is not None:
        for s in mark.services[k]:
            canary.remove(client, s, out=out)
    else:
        _roll_back_stage(client, state, mark.services[k], out)


def _roll_back_stage(client, state: StateDir, services: list[str], out) -> None:
    for s in services:
        rec = state.installed(s) or {}
        if rec.get("previous_image"):
            out(f"rolling service {s} back to {rec['previous_image']}")
            roll_back_service(client, state, s, out=out)


def roll_back_service(client, state: StateDir, name: str, out=print) -> dict:
    """Swarm's own rollback to the previous spec, waited on; the installed record afterwards."""
    info = rollout.inspect(client, name)
    if info is None or not info.get("PreviousSpec"):
        raise UsageProblem(f"service {name} has no previous version to roll back to")
    with_data = rollout.roll_back_with_data(client, state, name, info, out=out)
    if with_data is not None:
        return with_data
    since = (info.get("UpdateStatus") or {}).get("StartedAt")
    previous = rollout.image_of({"Spec": info["PreviousSpec"]})
    rollout.swarm_rollback(client, name)
    result = rollout.wait_update(client, name, since, rollout.deadline_for({}, rollout.replicas_of(info)))
    if result != rollout.Outcome.ROLLED_BACK or not rollout.settled_on(client, name, previous):
        raise OperatorNeeded(f"service {name}: Swarm's rollback ended {result}; see `docker service ps {name}`")
    rec = state.installed(name) or {}
    rec.update(rollout.rolled_back(rec, previous))
    state.record_installed(name, rec)
    return rec


def _finish_release(state: StateDir, plan: ServicePlan, app: str, seq: int, stages: list[list[str]]) -> dict:
    for services in stages:
        for s in services:
            rec = state.installed(s) or {}
            rec["highest_sequence"] = highest_sequence_after(rec, seq)
            state.record_installed(s, rec)
    state.raise_sequence(app, seq)
    forget_release(state, plan.name)
    return {**(state.installed(stages[-1][-1]) or {}), "services": installed_versions(state, stages)}


def unfinished_runs(state: StateDir) -> list[str]:
    """Target names whose release was interrupted inside a stage (its mark still `running`) or
    inside `bundle abort` (`aborting`)."""
    root = state.apps_root
    if not root.exists():
        return []
    return sorted(d.name for d in root.iterdir()
                  if (m := pending_release(state, d.name) or {}).get("running") or m.get("aborting"))


def recover_release(client, state: StateDir, name: str, out=print) -> list[str]:
    """A release killed inside stage k: every interrupted rollout of the stage finished or undone
    first (one version per service, importer.kinds.service.rollout). A stage nothing watches (no
    soak, no analysis) whose services all completed is done (a canary beside them goes). Otherwise
    its verdict was never given: the stage is rolled back (what it had moved to the new image goes
    back, with data; a canary step's canaries are removed), so the release is stopped after stage
    k-1 and `--resume` continues it; killed in stage 1, nothing of it is left and the mark is dropped."""
    mark = ReleaseMark.load(state, name)
    if mark is None or not mark.running:
        return []
    k = mark.running - 1
    lines = []
    if mark.canary_replicas(k) is not None:
        for s in mark.services[k]:
            if canary.remove(client, s, out=out):
                lines.append(f"{canary_name(s)}: the canary of stage {k + 1} of release {mark.version} removed; "
                             f"{s} untouched")
        return lines + _stopped_by_recover(state, name, mark, k)
    for s in mark.services[k]:
        lines += rollout.recover(client, state, s, out=out)
    on_new = [s for s in mark.services[k] if (info := rollout.inspect(client, s)) and rollout.image_of(info) == mark.image]
    if len(on_new) == len(mark.services[k]) and not (mark.watch[k] if k < len(mark.watch) else 0):
        # a stage nothing watches is done once every service of it completed: the release goes on,
        # after the stage's pause if it has one (killed before it was journaled: a person's word still counts)
        for s in mark.services[k]:
            canary.remove(client, s, out=out)
        pause = ServiceTarget.from_json(mark.target).pause(k) if mark.target else None
        if k + 1 < mark.stages and pause is not None:
            mark.enter_pause(state, name, k + 1, pause)
            lines.append(f"{name}: stage {k + 1} of release {mark.version} completed; "
                         + next_action(asdict(mark)))
            return lines
        if k + 1 < mark.stages:
            mark.stop(state, name, k + 1)
        else:
            forget_release(state, name)
        lines.append(f"{name}: stage {k + 1} of release {mark.version} completed" + (
            f"; it is stopped after stage {k + 1} of {mark.stages}: continue with `bundle import --resume`"
            if k + 1 < mark.stages else ""))
        return lines
    for s in on_new:
        if mark.before.get(s) not in (None, mark.image):
            out(f"rolling service {s} back to {mark.before[s]} (release {mark.version} interrupted in stage {k + 1})")
            roll_back_service(client, state, s, out=out)
            lines.append(f"{s}: stage {k + 1} of release {mark.version} rolled back; {mark.before[s]} runs again")
    return lines + _stopped_by_recover(state, name, mark, k)


def _stopped_by_recover(state: StateDir, name: str, mark: ReleaseMark, k: int) -> list[str]:
    mark.stop(state, name, k)
    if k == 0:
        return [f"{name}: release {mark.version} was interrupted in stage 1 and rolled back; nothing of it runs"]
    return [f"{name}: release {mark.version} was interrupted in stage {k + 1}, which was rolled back; "
            f"it is stopped after stage {k} of {mark.stages}: continue with `bundle import --resume`"]

