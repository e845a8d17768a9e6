"""The `service` target kind: a release of one verified image to Swarm services, stage by stage.

A release is the target's `[[stage]]` list (without stages: one stage, the target service).
Stage k starts only when stage k-1 finished its update and stayed healthy for its soak. A
failure rolls the failing stage's services back (Swarm's own rollback) and stops: later stages
are not touched. A soak up to INLINE_SOAK seconds is watched inside this process; a longer one
(a week of a test team using it) ends the import with exit 0 and the release recorded in
`apps/<target>/release.json`; `bundle import BUNDLE --resume` continues it once the soak is over.

The anti-rollback mark of the app is raised only when the whole release is done, so a resumed
import of the same bundle passes the gate, and a stopped release cannot be replayed by another.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from bundlecore.errors import EnvironmentProblem, OperatorNeeded, UpdateFailed, UsageProblem
from bundlecore.fsutil import atomic_write_json
from bundlecore.release import ServiceTarget
from bundlecore.text import printable
from bundlecore.timeutil import format_ts, parse_ts, plus, utc_now
from importer.delivery import Delivery
from importer.kinds.service import rollout
from importer.state import StateDir, highest_sequence_after

INLINE_SOAK = 30  # seconds of soak watched in-process; longer soaks end the import (resume later)
RELEASE = "release.json"
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
    kind: str = field(default="service")

    def lines(self) -> list[str]:
        stages = self.target.services()
        out = [f"release {self.new_version} of {self.name} via registry {self.registry}: {len(stages)} stage(s)"]
        for i, services in enumerate(stages):
            done = " (done)" if i < self.resume_from else ""
            soak = self.target.soak(i)
            out.append(f"  stage {i + 1}{done}: " + ", ".join(
                f"{s} ({'create' if self.current.get(s) is None else 'update from ' + printable(self.current[s])})"
                for s in services) + (f"; soak {soak}s" if soak else ""))
        if self.resume_from:
            out.append(f"  resuming at stage {self.resume_from + 1}")
        return out


def _release_path(state: StateDir, name: str):
    return state.app_dir(name) / RELEASE


def pending_release(state: StateDir, name: str) -> dict | None:
    try:
        return json.loads(_release_path(state, name).read_text())
    except FileNotFoundError:
        return None


def plan(client, state: StateDir, target: ServiceTarget, new_image_id: str, *, new_version: str | None = None,
         registry: str | None = None, resume: bool = False) -> ServicePlan:
    registry = registry or target.registry
    name = target.name
    if not registry:
        raise UsageProblem(f"service {name}: a service target needs a registry every node can pull "
                           f"from (--registry HOST:PORT or [target] registry)")
    rollout.require_swarm(client)
    pending = pending_release(state, name)
    resume_from = 0
    if pending:
        same = pending["image_id"] == new_image_id and pending["version"] == new_version
        if not same:
            raise UsageProblem(f"release {pending['version']} of {name} is stopped after stage "
                               f"{pending['done']}; finish it with `bundle import --resume` first")
        if not resume:
            raise UsageProblem(f"release {new_version} of {name} is stopped after stage {pending['done']}; "
                               f"continue it with --resume (after {pending['resume_after']})")
        if utc_now() < parse_ts(pending["resume_after"]):
            raise EnvironmentProblem(f"stage {pending['done']} of {name} soaks until "
                                     f"{pending['resume_after']}; resume after that (nothing changed)")
        resume_from = pending["done"]
    elif resume:
        raise UsageProblem(f"no stopped release of {name} to resume")
    current = {}
    for services in target.services():
        for s in services:
            info = rollout.inspect(client, s)
            current[s] = rollout.image_of(info) if info else None
    return ServicePlan(name, target, new_image_id, new_version, registry, current, resume_from)


def apply(client, state: StateDir, plan: ServicePlan, delivery: Delivery, *, keep: int = 2, out=print) -> dict:
    """Run the release's stages from plan.resume_from; the installed record of the target name."""
    r = delivery.release
    image = delivery.by_digest(plan.target.image)
    record = {"version": r.version, "sequence": r.sequence, "image_id": plan.new_image_id,
              "bundle_sha256": delivery.sha256, "signers": r.fingerprints, "app": r.app, "registry": plan.registry,
              "pushed": delivery.pushed_report()}
    stages = plan.target.services()
    journaled = plan.target.to_json()  # the rollout journal keeps the target as the manifest spells it
    for i in range(plan.resume_from, len(stages)):
        if i > 0:  # the stage before stayed healthy (also after a resume days later)
            _check_still_healthy(client, state, stages[i - 1], image, i, out)
        done: list[str] = []
        for service in stages[i]:
            try:
                rollout.roll_out(client, state, service, journaled, image, record, out=out,
                                 auth=delivery.registry_auth)
            except UpdateFailed as e:
                _roll_back_stage(client, state, done, out)
                _forget_release(state, plan.name)
                raise UpdateFailed(f"stage {i + 1} of {len(stages)}: {e}"
                                   + ("; later stage(s) not started" if i + 1 < len(stages) else "")) from None
            done.append(service)
        soak = plan.target.soak(i)
        if i + 1 < len(stages) and soak > inline_soak():
            after = format_ts(plus(utc_now(), soak))
            atomic_write_json(_release_path(state, plan.name), {
                "image_id": plan.new_image_id, "version": record["version"], "done": i + 1, "resume_after": after,
                "stages": len(stages)})
            out(f"stage {i + 1} of {len(stages)} done; continue with --resume after {after}")
            return {**(state.installed(stages[i][0]) or {}), "stopped_after_stage": i + 1, "resume_after": after}
        if soak:
            _soak(client, state, stages[i], image, soak, i, len(stages), out)
        out(f"stage {i + 1} of {len(stages)} done: {', '.join(stages[i])} on {image}")
    return _finish_release(state, plan, r.app, r.sequence, stages)


def _soak(client, state, services, image, seconds, i, n, out) -> None:
    out(f"stage {i + 1} of {n}: soaking {seconds}s")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _check_still_healthy(client, state, services, image, i + 1, out)
        time.sleep(1)


def _check_still_healthy(client, state, services, image, stage_no, out) -> None:
    sick = [s for s in services if not rollout.settled_on(client, s, image)]
    if sick:
        _roll_back_stage(client, state, services, out)
        raise UpdateFailed(f"stage {stage_no}: {', '.join(sick)} not healthy on {image} during its soak; "
                           f"stage rolled back, later stage(s) not started")


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


def _forget_release(state: StateDir, name: str) -> None:
    try:
        os.unlink(_release_path(state, name))
    except FileNotFoundError:
        pass


def _finish_release(state: StateDir, plan: ServicePlan, app: str, seq: int, stages: list[list[str]]) -> dict:
    for services in stages:
        for s in services:
            rec = state.installed(s) or {}
            rec["highest_sequence"] = highest_sequence_after(rec, seq)
            state.record_installed(s, rec)
    state.raise_sequence(app, seq)
    _forget_release(state, plan.name)
    return state.installed(stages[-1][-1]) or {}
