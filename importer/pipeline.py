"""What `bundle verify` and `bundle import` do, end to end, over the gate, the loader and the swap.

import: lock -> finish any interrupted swap -> gate rules 1-7 and the host policy (head) ->
ownership and tag moves (importer.ownership) -> plan + confirmation ->
free space -> gate rule 8 (payload) into staging, each verified member streaming on into
`docker load` -> docker archive and image checks -> swap. No byte reaches Docker before the
member it belongs to has matched the signed SHA256SUMS; a refusal midway cuts the upload, and
`docker load` (which reads the whole archive before loading) loads nothing. Every member is
hashed, but layers the engine already has are neither staged nor sent (docker load skips them),
so an upgrade moves only what changed. Staging is removed after.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from bundlecore import format as fmt
from bundlecore.engine import connect
from bundlecore.errors import BundleError, EnvironmentProblem, ExitCode, UsageProblem
from bundlecore.progress import Progress
from bundlecore.schema import bounds
from bundlecore.timeutil import parse_duration
from bundlecore.refusals import Check
from bundlecore.trust import TrustStore
from bundlecore.verify import VerifiedHead
from importer import hostpolicy, ownership
from importer.audit import AuditEvent, BundleRef, EventKind, PhaseTimer, Result, now, signers_of, write_event
from importer.gate import TrustGate
from importer.load import (StagingSink, VerifiedFeed, check_free_space, diff_ids_in_engine,
                           docker_archive_members, layers_in_engine, patched_layers, stage_and_load)
from importer.registry import check_access, check_registry_address, push_verified
from importer.site import SiteSettings
from importer.state import StateDir

# every check `bundle verify` runs, in the order they run: all but those of the engine's own state
IMPORT_ONLY_CHECKS = {Check.OWNERSHIP, Check.TAGS, Check.SETTINGS, Check.LOADED_IMAGES, Check.REGISTRY_DIGEST}
CHECKS = [c.value for c in Check if c not in IMPORT_ONLY_CHECKS]


@dataclass
class Verified:
    """The result of the whole gate, for reports."""

    path: Path
    head: VerifiedHead
    host_access: list[hostpolicy.HostAccess]

    def report(self) -> dict:
        m = self.head.manifest
        return {
            "trusted": True,
            "bundle": str(self.path),
            "name": m["name"], "version": m["version"], "sequence": m["sequence"],
            "created": m["created"], "expires": m["expires"], "platform": m["platform"],
            "signers": [{"fingerprint": s.fingerprint, "roles": s.roles} for s in self.head.signers],
            "images": [{"ref": i["ref"], "id": i["id"]} for i in m["images"]],
            "payload_bytes": self.head.payload_bytes,
            "checks": CHECKS,
            "notes": self.head.notes,
            "host_access": hostpolicy.plan_lines(self.host_access),
        }


def _check_head(path: Path, store: TrustStore, state: StateDir, platform: str | None,
                allow_downgrade: bool, client=None) -> tuple[TrustGate, VerifiedHead]:
    gate = TrustGate(store, engine_platform=platform, installed_sequence=state.highest_sequence,
                     container_sequence=lambda name: _container_mark(state, name),
                     host_policy=hostpolicy.HostPolicy.load(store.directory), allow_downgrade=allow_downgrade,
                     engine_layers=(lambda head: layers_in_engine(client, head)) if client else None,
                     engine_diff_ids=(lambda: diff_ids_in_engine(client)) if client else None)
    return gate, gate.check_head(path)


def _container_mark(state: StateDir, container: str) -> int | None:
    """The highest sequence installed in `container`, by whichever app installed it."""
    app = state.app_of_container(container)
    return (state.installed(app) or {}).get("highest_sequence") if app else None


def verify_bundle(path: Path, store: TrustStore, state: StateDir, *, allow_downgrade: bool = False,
                  show_progress: bool | None = None) -> Verified:
    """Every check, no side effects: payload is hashed and thrown away."""
    path = _existing(path)
    try:
        client = connect(timeout=10)
        platform = client.platform()
    except EnvironmentProblem:
        client = platform = None
    gate, head = _check_head(path, store, state, platform, allow_downgrade, client)
    progress = Progress("verify", head.payload_bytes, enabled=show_progress)
    gate.check_payload(path, head, None, progress)  # the verifier checks the archive manifest itself
    progress.close()
    return Verified(path, head, gate.host_access)


def _existing(path: Path) -> Path:
    path = Path(path)
    if not fmt.BundleFiles.exists(path):  # one file, or its parts OUT.part001, ... (bundlecore.format)
        raise UsageProblem(f"bundle {path} not found")
    return path


def probation_seconds(text: str | None) -> int | None:
    """`--probation DURATION` in seconds (a usage error when it is not a duration from 1 s to a day)."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise UsageProblem(f"--probation: {e}") from None
    low, high = bounds("health_probation_seconds")
    if not low <= seconds <= high:
        raise UsageProblem(f"--probation: {text} is not between {low}s and {high}s")
    return seconds


def with_probation(target: dict, probation: int | None) -> dict:
    """The signed target with this import's probation window (and the bundle's max_restarts, if any)."""
    if probation is None:
        return target
    return {**target, "health": {**(target.get("health") or {}), "probation": probation}}


def plan_options(kind, **options) -> dict:
    """The import options a target kind's plan takes (PLAN_OPTIONS); one it cannot honour is a usage error."""
    accepted = getattr(kind, "PLAN_OPTIONS", ())
    if options.get("resume") and "resume" not in accepted:
        raise UsageProblem("--resume continues a staged release of a service target; this target has no stages")
    return {k: v for k, v in options.items() if k in accepted}


def import_bundle(path: Path, store: TrustStore, state: StateDir, *, dry_run: bool = False,
                  allow_downgrade: bool = False, adopt: bool = False, keep: int = 2,
                  site: Path | None = None, prefer: str | None = None, registry: str | None = None,
                  resume: bool = False, probation: int | None = None,
                  confirm: Callable[[], None] = lambda: None,
                  out: Callable[[str], None] = print, show_progress: bool | None = None) -> dict:
    """Gate, load and swap one bundle. `confirm()` runs after the plan is shown (not on a dry
    run) and raises to stop. `registry` (else the target's own) receives every verified image
    after the load (importer.registry); `resume` continues a release stopped between stages.
    Returns a summary; raises BundleError subclasses."""
    from importer.swap import kinds  # the swap is the last stage; imported here to keep verify light

    path = _existing(path)
    if registry:
        check_registry_address(registry)
    client = connect()
    platform = client.platform()
    state.ensure()
    timer = PhaseTimer()
    audit = AuditEvent(EventKind.IMPORT, Result.FAILED, 1, started=now(), details={"bundle": str(path)})
    try:
        with state.lock():
            for line in kinds.recover_all(client, state, out=out):
                out(f"recovered: {line}")
            with timer.phase("verify"):
                gate, head = _check_head(path, store, state, platform, allow_downgrade, client)
            m = head.manifest
            audit.app, audit.signers = m["name"], signers_of(head.signers)
            audit.bundle = BundleRef(None, m["name"], m["version"], m["sequence"])
            audit.version_to = m["version"]
            audit.version_from = (state.installed(m["name"]) or {}).get("version")
            out(f"verified signature of {', '.join(s.fingerprint for s in head.signers)} on {m['name']} {m['version']} "
                f"(sequence {m['sequence']})")
            taken = ownership.review(client, state, m, adopt=adopt)
            if taken.plan_lines():
                audit.details["takes_over"] = taken.plan_lines()
            # the site settings over the signed ones; the host policy decides on what reaches the host
            settings = SiteSettings.load(m["name"], site)
            target = with_probation({**m["target"], "run": settings.over(m["target"].get("run")),
                                     **settings.over_health(m["target"].get("health"))}, probation)
            host_access = gate.host_policy.check(m["name"], target["run"], target.get("health"), url_required=True)
            new_id = next(i["id"] for i in m["images"] if i["ref"] == target["image"])
            kind = kinds.for_target(target)
            registry = registry or target.get("registry")
            plan = kind.plan(client, state, target, new_id, new_version=m["version"],
                             **plan_options(kind, registry=registry, resume=resume, prefer=prefer, app=m["name"],
                                            masked=settings.masked))
            for line in (plan.lines() + settings.plan_lines() + hostpolicy.plan_lines(host_access)
                         + taken.plan_lines()):
                out(line)
            login = check_access(registry) if registry else None  # before anything is loaded
            if not dry_run:
                confirm()
            # a dry run stages only the archive manifest (to check it); an import what docker load needs
            in_engine = set() if dry_run else layers_in_engine(client, head)
            to_stage = {fmt.DOCKER_ARCHIVE_MANIFEST} if dry_run else docker_archive_members(head) - in_engine
            with state.staging() as staging:
                sizes = {p["path"]: p["size"] for p in m["payload"]}
                rebuilt = sum(p["size"] for member, p in patched_layers(head).items() if member in to_stage)
                check_free_space(staging, sum(sizes[p] for p in to_stage) + rebuilt, "staging the payload")
                sink = StagingSink(staging, to_stage)
                progress = Progress("verify+load", head.payload_bytes, enabled=show_progress)

                def check(on_verified):
                    return gate.check_payload(path, head, sink, progress, on_verified)

                if dry_run:
                    with timer.phase("verify"):
                        audit.bundle.sha256 = check(VerifiedFeed(sink, head).member_verified)
                    progress.close()
                    out(f"verified {len(m['payload'])} payload files ({head.payload_bytes} bytes); "
                        "dry run: nothing loaded or changed")
                    audit.result, audit.exit_code = Result.DRY_RUN, ExitCode.DONE
                    return {"result": "dry-run", **_summary(audit)}
                with timer.phase("load"):  # the payload is verified as it streams into docker load
                    audit.bundle.sha256, images = stage_and_load(client, VerifiedFeed(sink, head, client), check)
                progress.close()
            out(f"verified {len(m['payload'])} payload files ({head.payload_bytes} bytes) and loaded "
                f"{', '.join(images)} (image IDs checked)"
                + (f"; {len(in_engine)} layer(s) the engine already had were verified, not sent" if in_engine else ""))
            bundle = {"name": m["name"], "version": m["version"], "sequence": m["sequence"],
                      "sha256": audit.bundle.sha256, "signers": [s.fingerprint for s in head.signers],
                      "signed_by": [asdict(s) for s in audit.signers], "images": images}
            if registry:
                with timer.phase("push"):
                    pushed = push_verified(client, registry, [i["ref"] for i in m["images"]], out=out, login=login)
                audit.details["pushed"] = bundle["pushed_report"] = [p.report() for p in pushed]
                bundle["pushed"] = {p.ref: p.by_digest for p in pushed}
                bundle["registry_auth"] = login.auth_config  # in memory only: Swarm gives it to the nodes
            record = kind.apply(client, state, plan, bundle, keep=keep, out=out)
            if "stopped_after_stage" in record:
                audit.details["stopped_after_stage"] = record["stopped_after_stage"]
            audit.result, audit.exit_code = Result.DONE, ExitCode.DONE
            result = f"stage {record['stopped_after_stage']} done" if "stopped_after_stage" in record else "installed"
            return {"result": result, "installed": record, **_summary(audit)}
    except BundleError as e:
        audit = replace(AuditEvent.of_error(EventKind.IMPORT, e), **{
            k: getattr(audit, k) for k in ("app", "bundle", "signers", "version_from", "version_to", "started",
                                           "details")})
        if audit.app:  # the failure document names the app, the failed version and what runs now
            e.partial = {"name": audit.app, "version": audit.bundle.version, "sequence": audit.bundle.sequence,
                         "running_version": (state.installed(audit.app) or {}).get("version")}
        raise
    finally:
        audit.phases = timer.seconds
        audit.finished = now()
        if audit.result != Result.FAILED or audit.message:  # not after a bug's traceback, as before
            try:
                write_event(state, audit)
            except OSError:
                pass


def _summary(audit: AuditEvent) -> dict:
    """The import's result document (--json): what the audit event says of the bundle, flat."""
    return {"event": "import", "user": audit.operator.user, "started": audit.started, "bundle": audit.details["bundle"],
            "name": audit.bundle.name, "version": audit.bundle.version, "sequence": audit.bundle.sequence,
            "signers": [asdict(s) for s in audit.signers], "sha256": audit.bundle.sha256,
            **{k: audit.details[k] for k in ("takes_over", "pushed") if k in audit.details}}
