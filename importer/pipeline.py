"""What `bundle verify` and `bundle import` do, end to end, over the gate, the loader and the swap.

import: lock -> finish any interrupted swap -> gate rules 1-7 and the host policy (head) ->
ownership and tag moves (importer.ownership) -> registry grant, scope and pushes
(importer.pushes) -> plan + confirmation -> gate rule 8 (payload), each member streaming into
`docker load` while it is hashed (only a patched layer is rebuilt in staging) -> docker archive
and image checks -> swap. No member reaches Docker whole before it has matched the signed
SHA256SUMS, nor the archive's end before all did; a refusal midway cuts the upload, and
`docker load` (which reads the whole archive before loading) loads nothing. Every member is
hashed, but layers the engine already has are not sent (docker load skips them), so an upgrade
moves only what changed. A staging dir exists only while a patched layer needs it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bundlecore import format as fmt
from bundlecore import interrupts
from bundlecore.engine import Engine, connect, engine_address
from bundlecore.errors import BundleError, EnvironmentProblem, ExitCode, UsageProblem
from bundlecore.progress import Progress
from bundlecore.schema import bounds
from bundlecore.timeutil import parse_duration
from bundlecore.refusals import Check
from bundlecore.release import ContainerTarget, InstalledRecord, Release, installed_kind
from bundlecore.trust import TrustStore
from bundlecore.verify import VerifiedHead
from importer import hostpolicy, ownership, pushes
from importer.audit import AuditEvent, BundleRef, EventKind, PhaseTimer, Result, now, write_event
from importer.delivery import Delivery, LoadedImages
from importer.gate import TrustGate
from importer.load import (VerifiedFeed, check_free_space, diff_ids_in_engine,
                           docker_archive_members, layers_in_engine, patched_layers, stage_and_load)
from importer.registry import PushedImage, RegistryLogin, check_access, check_registry_address, push_verified
from importer.site import SiteSettings
from importer.state import JOURNAL, StateDir
from importer.steps import pending

if TYPE_CHECKING:  # the kinds are imported when an import runs (verify stays light)
    from importer.kinds import Plan, TargetKind

# every check `bundle verify` runs, in the order they run: all but those of the engine's own state
IMPORT_ONLY_CHECKS = {Check.ENGINE, Check.OWNERSHIP, Check.TAGS, Check.SETTINGS, Check.LOADED_IMAGES, Check.REGISTRY_DIGEST}
CHECKS = [c.value for c in Check if c not in IMPORT_ONLY_CHECKS]


@dataclass
class Verified:
    """The result of the whole gate, for reports."""

    path: Path
    head: VerifiedHead
    release: Release
    host_access: list[hostpolicy.HostAccess]

    def report(self) -> dict:
        r = self.release
        return {
            "trusted": True,
            "bundle": str(self.path),
            "name": r.app, "version": r.version, "sequence": r.sequence,
            "created": r.created, "expires": r.expires, "platform": r.platform,
            "signers": [{"fingerprint": s.fingerprint, "roles": list(s.roles)} for s in r.signers],
            "images": [{"ref": i.ref, "id": i.id} for i in r.images],
            "payload_bytes": self.head.payload_bytes,
            "checks": CHECKS,
            "notes": self.head.notes,
            "host_access": hostpolicy.plan_lines(self.host_access),
        }


def _check_head(path: Path, store: TrustStore, state: StateDir, platform: str | None,
                allow_downgrade: bool, client=None) -> tuple[TrustGate, VerifiedHead]:
    gate = _trust_gate(store, state, platform, allow_downgrade, client)
    return gate, gate.check_head(path)


def _trust_gate(store: TrustStore, state: StateDir, platform: str | None, allow_downgrade: bool,
                client=None) -> TrustGate:
    return TrustGate(store, engine_platform=platform, installed_sequence=state.highest_sequence,
                     container_sequence=lambda name: _container_mark(state, name),
                     host_policy=hostpolicy.HostPolicy.load(store.directory), allow_downgrade=allow_downgrade,
                     engine_layers=(lambda release: layers_in_engine(client, release)) if client else None,
                     engine_diff_ids=(lambda: diff_ids_in_engine(client)) if client else None,
                     is_installed=lambda manifest: _is_installed(state, manifest))


def _is_installed(state: StateDir, manifest: dict) -> bool:
    """Whether the manifest is the release this host runs now (a container target): same app, target
    container, sequence, version and image as the installed record. Importing it again is then no
    replay but "already installed", or a repair (importer.kinds.container.plan)."""
    target = manifest["target"]
    if target.get("kind", ContainerTarget.KIND) != ContainerTarget.KIND:
        return False
    rec = state.installed(manifest["name"])
    if rec is None or installed_kind(rec) != ContainerTarget.KIND:
        return False
    image_id = next((i["id"] for i in manifest["images"] if i["ref"] == target["image"]), "")
    return state.container_of(manifest["name"]) == target["name"] and InstalledRecord.from_json(rec).is_release(
        manifest["sequence"], manifest["version"], image_id)


def _container_mark(state: StateDir, container: str) -> int | None:
    """The highest sequence installed in `container`, by whichever app installed it."""
    app = state.app_of_container(container)
    rec = state.installed(app) if app else None
    return InstalledRecord.from_json(rec).highest_sequence if rec else None


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
    return Verified(path, head, gate.release, gate.host_access)


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


def plan_options(kind, **options) -> dict:
    """The import options a target kind's plan takes (PLAN_OPTIONS); one it cannot honour is a usage error."""
    accepted = getattr(kind, "PLAN_OPTIONS", ())
    if options.get("resume") and "resume" not in accepted:
        raise UsageProblem("--resume continues a staged release of a service target; this target has no stages")
    if options.get("systemd_unit") and "systemd_unit" not in accepted:
        raise UsageProblem("--systemd-unit writes the unit of a container target; this target is not one")
    return {k: v for k, v in options.items() if k in accepted}


@dataclass
class ImportOptions:
    """What the operator asked of this import (cmd_import's flags)."""

    dry_run: bool = False
    allow_downgrade: bool = False
    adopt: bool = False
    keep: int = 2
    site: Path | None = None
    prefer: str | None = None
    registry: str | None = None
    resume: bool = False
    probation: int | None = None
    systemd_unit: bool = False


@dataclass
class ImportContext:
    """One import as it goes: each stage reads what the stages before it filled in."""

    path: Path
    store: TrustStore
    state: StateDir
    options: ImportOptions
    client: Engine
    platform: str
    confirm: Callable[[], None]
    out: Callable[[str], None]
    show_progress: bool | None
    audit: AuditEvent
    timer: PhaseTimer = field(default_factory=PhaseTimer)
    gate: TrustGate | None = None
    head: VerifiedHead | None = None
    release: Release | None = None         # the verified manifest, typed (from the gate on)
    kind: TargetKind | None = None
    plan: Plan | None = None               # what the kind will do, as the operator confirmed it
    plan_lines: list[str] = field(default_factory=list)  # every line of the plan shown (the kind's and the import's)
    registry: str | None = None            # where the images go (--registry, else the target's)
    login: RegistryLogin | None = None
    push_plan: pushes.PushPlan | None = None  # every push, as the operator confirmed it
    in_engine: set[str] = field(default_factory=set)
    images: dict[str, str] = field(default_factory=dict)  # ref -> loaded image ID
    loaded: LoadedImages = field(default_factory=LoadedImages.nothing)  # what the load created in the engine
    pushed: tuple[PushedImage, ...] = ()


def import_bundle(path: Path, store: TrustStore, state: StateDir, *, dry_run: bool = False,
                  allow_downgrade: bool = False, adopt: bool = False, keep: int = 2,
                  site: Path | None = None, prefer: str | None = None, registry: str | None = None,
                  resume: bool = False, probation: int | None = None, systemd_unit: bool = False,
                  confirm: Callable[[], None] = lambda: None,
                  out: Callable[[str], None] = print, show_progress: bool | None = None) -> dict:
    """Gate, load and swap one bundle. `confirm()` runs after the plan is shown (not on a dry
    run) and raises to stop. `registry` (else the target's own) receives every verified image
    after the load (importer.registry); `resume` continues a release stopped between stages.
    Returns a summary; raises BundleError subclasses.

    The stages run in this order, each reading what the one before it established, under the
    audit event (`_audited`: one line whatever happens) and the state dir's lock."""
    path = _existing(path)
    if registry:
        check_registry_address(registry)
    client = connect()
    ctx = ImportContext(path, store, state, ImportOptions(dry_run, allow_downgrade, adopt, keep, site, prefer,
                                                          registry, resume, probation, systemd_unit),
                        client, client.platform(), confirm, out, show_progress,
                        AuditEvent(EventKind.IMPORT, Result.FAILED, 1, started=now(),
                                   details={"bundle": str(path), **({"dry_run": True} if dry_run else {})}))
    state.ensure()
    with _audited(ctx), state.lock():
        _recover_interrupted(ctx)
        _gate(ctx)
        _plan(ctx)
        if getattr(ctx.plan, "nothing_to_do", False):  # a kind's plan may say so (the container kind's does)
            return _already_installed(ctx)
        if dry_run:
            return _verify_only(ctx)
        confirm()
        _load(ctx)
        _push(ctx)
        return _apply(ctx)


@contextlib.contextmanager
def _audited(ctx: ImportContext):
    """The import's one audit line, written whatever happens (but not after a bug's traceback): a
    refusal with its check, a failure with what was known of the bundle by then."""
    try:
        yield
    except BundleError as e:
        audit = ctx.audit
        ctx.audit = replace(AuditEvent.of_error(EventKind.IMPORT, e), **{
            k: getattr(audit, k) for k in ("app", "bundle", "signers", "version_from", "version_to", "started",
                                           "details")})
        if audit.app:  # the failure document names the app, the failed version and what runs now
            e.partial = {"name": audit.app, "version": audit.bundle.version, "sequence": audit.bundle.sequence,
                         "running_version": _installed_version(ctx.state, audit.app)}
        raise
    except interrupts.Interrupted as e:
        if not e.unfinished and ctx.audit.app in pending(ctx.state):  # e.g. between a kind's steps
            e.unfinished = str(ctx.state.app_dir(ctx.audit.app) / JOURNAL)
        unfinished = f"; a run is unfinished: {e.unfinished}" if e.unfinished else "; nothing changed"
        ctx.audit.result = Result.OPERATOR_NEEDED if e.unfinished else Result.INTERRUPTED
        ctx.audit.exit_code, ctx.audit.message = ctx.audit.result.exit_code, f"{e}{unfinished}"
        raise
    finally:
        ctx.audit.phases = ctx.timer.seconds
        ctx.audit.finished = now()
        if ctx.audit.result != Result.FAILED or ctx.audit.message:
            try:
                write_event(ctx.state, ctx.audit)
            except OSError:
                pass


def _installed_version(state: StateDir, app: str) -> str | None:
    """The version the app runs: its record, or (a service release, recorded per service, each
    naming its app) the versions of its services, "1.0.0, 2.0.0" when they differ."""
    rec = state.installed(app)
    if rec:
        return InstalledRecord.from_json(rec).version
    versions = set()
    for name in state.installed_apps():
        r = state.installed(name) or {}
        if r.get("app") == app and r.get("kind") == "service" and r.get("version"):
            versions.add(str(r["version"]))
    return ", ".join(sorted(versions)) or None


def _recover_interrupted(ctx: ImportContext) -> None:
    """First, finish or undo any swap a crash interrupted: the gate's history and the plan must read
    a state dir that says what really runs."""
    from importer import kinds  # the swap is the last stage; imported here to keep verify light
    for line in kinds.recover_all(ctx.client, ctx.state, out=ctx.out):
        ctx.out(f"recovered: {line}")


def _gate(ctx: ImportContext) -> None:
    """Verify the head (signatures, manifest, freshness, history, host policy, delta base) and parse
    the manifest once into the typed release; from here on the audit event names the bundle."""
    ctx.gate = _trust_gate(ctx.store, ctx.state, ctx.platform, ctx.options.allow_downgrade, ctx.client)
    try:
        with ctx.timer.phase("verify"):
            ctx.head = ctx.gate.check_head(ctx.path)
    finally:  # a refusal after the manifest was trusted (host policy, delta base) names the app too
        if ctx.gate.release is not None:
            _name_release(ctx, ctx.gate.release)
    r = ctx.release = ctx.gate.release
    ctx.out(f"verified signature of {', '.join(r.fingerprints)} on {r.app} {r.version} (sequence {r.sequence})")
    for note in ctx.head.notes:  # what the gate accepted and why (a downgrade allowed, the installed release)
        ctx.out(f"note: {note}")


def _name_release(ctx: ImportContext, r: Release) -> None:
    audit = ctx.audit
    audit.app, audit.signers = r.app, r.signers
    audit.bundle = BundleRef(None, r.app, r.version, r.sequence)
    audit.version_to = r.version
    audit.version_from = _installed_version(ctx.state, r.app)


def _plan(ctx: ImportContext) -> None:
    """What the import will do, before any payload byte moves: what it takes over (ownership), the
    site settings over the signed ones, what the host policy grants the result (the registry too,
    and the signers' scope on what lands in it), the kind's plan, whose volumes, networks and
    services the result names (ownership: another app's only when the host policy shares it, no
    app's only with --adopt); then the registry's access, so a wrong login fails before the load,
    and every push with the tag it overwrites (importer.pushes)."""
    from importer import kinds
    r, o = ctx.release, ctx.options
    taken = ownership.review(ctx.client, ctx.state, r, adopt=o.adopt)
    if taken.plan_lines():
        ctx.audit.details["takes_over"] = taken.plan_lines()
    settings = SiteSettings.load(r.app, o.site)
    target = settings.over_target(r.target).with_probation(o.probation)
    host_access = ctx.gate.host_policy.check_target(r.app, target, url_required=True)
    ctx.registry = o.registry or target.registry
    if ctx.registry:
        host_access.append(pushes.check_grants(ctx.gate.host_policy, ctx.store, r, ctx.registry,
                                               "--registry" if o.registry else "target.registry"))
    ctx.kind = kinds.for_target(target)
    ctx.plan = ctx.kind.plan(ctx.client, ctx.state, target, r.target_image_id, new_version=r.version,
                             **plan_options(ctx.kind, registry=ctx.registry, resume=o.resume, prefer=o.prefer,
                                            app=r.app, masked=settings.masked, sequence=r.sequence,
                                            signed=r.target, images={i.ref: i.id for i in r.images}, adopt=o.adopt,
                                            systemd_unit=o.systemd_unit))
    claims = [line for c in ownership.review_resources(ctx.client, ctx.state, ctx.gate.host_policy, r.app, target,
                                                        adopt=o.adopt) if (line := c.line())]
    if claims:
        ctx.audit.details["takes_over"] = ctx.audit.details.get("takes_over", []) + claims
    ctx.plan_lines = (ctx.plan.lines() + settings.plan_lines() + hostpolicy.plan_lines(host_access)
                      + taken.plan_lines() + claims + [f"engine: {ctx.client.describe()} at {engine_address()}"])
    for line in ctx.plan_lines:
        ctx.out(line)
    ctx.login = check_access(ctx.registry) if ctx.registry else None
    if ctx.login:
        ctx.push_plan = pushes.review(ctx.client, ctx.state, r, ctx.login, adopt=o.adopt)
        ctx.audit.details["pushes"] = [p.report() for p in ctx.push_plan.pushes]
        ctx.plan_lines += ctx.push_plan.plan_lines()
        for line in ctx.push_plan.plan_lines():
            ctx.out(line)


def _verify_only(ctx: ImportContext) -> dict:
    """A dry run: the whole payload verified (the archive manifest checked as it passes), nothing
    staged, loaded or changed."""
    progress = Progress("verify", ctx.head.payload_bytes, enabled=ctx.show_progress)
    with ctx.timer.phase("verify"):
        ctx.audit.bundle.sha256 = ctx.gate.check_payload(ctx.path, ctx.head, None, progress)
    progress.close()
    ctx.out(f"verified {len(ctx.release.payload)} payload files ({ctx.head.payload_bytes} bytes); "
            f"dry run: nothing loaded or changed")
    ctx.audit.result, ctx.audit.exit_code = Result.DRY_RUN, ExitCode.DONE
    from importer import kinds
    return {"result": "dry-run", **_summary(ctx.audit), "plan": kinds.plan_json(ctx.plan, ctx.plan_lines)}


def _already_installed(ctx: ImportContext) -> dict:
    """The installed release imported again, running as recorded: nothing is loaded or changed, exit 0
    (like `apt install` of the installed version, `docker compose up -d` of what runs)."""
    r = ctx.release
    ctx.out(f"{r.app} {r.version} (sequence {r.sequence}) is already installed: nothing loaded or changed")
    ctx.audit.result, ctx.audit.exit_code = Result.UNCHANGED, ExitCode.DONE
    ctx.audit.details["already_installed"] = True
    from importer import kinds
    return {"result": "already installed", "installed": ctx.state.installed(r.app), **_summary(ctx.audit),
            **({"plan": kinds.plan_json(ctx.plan, ctx.plan_lines)} if ctx.options.dry_run else {})}


def _load(ctx: ImportContext) -> None:
    """The payload through the gate into `docker load`: each member streams on only once its hash
    matched; layers the engine already has are verified, not sent; image IDs checked after."""
    ctx.in_engine = layers_in_engine(ctx.client, ctx.release)
    before = LoadedImages.before(ctx.client, ctx.release)
    try:
        _stream_load(ctx)
    except EnvironmentProblem:
        # a layer the engine had when the load began is gone (an image removed or pruned meanwhile):
        # `docker load` then wanted the file it was not sent; nothing is swapped yet, so load again
        # with what the engine has now (a second failure is the import's)
        gone = ctx.in_engine - layers_in_engine(ctx.client, ctx.release)
        if not gone:
            raise
        missing = sorted(gone - set(ctx.release.payload_sizes()))
        if missing:  # a delta bundle's base layer: this bundle cannot send it
            raise EnvironmentProblem(f"layer {missing[0]}, which this delta bundle leaves to the engine, was removed "
                                     f"during the load (an image prune?): import the full bundle") from None
        ctx.out(f"{len(gone)} layer(s) the engine had were removed during the load (an image prune?): "
                f"loading again with them")
        ctx.in_engine -= gone
        _stream_load(ctx)
    ctx.loaded = before.made_since(ctx.images)
    ctx.out(f"verified {len(ctx.release.payload)} payload files ({ctx.head.payload_bytes} bytes) and loaded "
            f"{', '.join(ctx.images)} (image IDs checked)"
            + (f"; {len(ctx.in_engine)} layer(s) the engine already had were verified, not sent"
               if ctx.in_engine else ""))


def _stream_load(ctx: ImportContext) -> None:
    with _feed(ctx, docker_archive_members(ctx.release) - ctx.in_engine) as (feed, check):
        with ctx.timer.phase("load"):
            ctx.audit.bundle.sha256, ctx.images = stage_and_load(ctx.client, feed, check)


@contextlib.contextmanager
def _feed(ctx: ImportContext, to_load: set[str]):
    """The feed of the members `docker load` gets, and the gate's payload check into it. Members
    stream into the load; only patch members and the layers rebuilt from them need a staging dir
    (removed afterwards whatever happens, and made only for them), so only they need room there."""
    sizes = ctx.release.payload_sizes()
    patches = {member: p for member, p in patched_layers(ctx.release).items() if member in to_load}
    with ctx.state.staging() if patches else contextlib.nullcontext() as staging:
        if staging is not None:
            check_free_space(staging, sum(sizes[m] + p.size for m, p in patches.items()), "staging the payload")
        feed = VerifiedFeed(ctx.release, to_load, staging, ctx.client)
        progress = Progress("verify+load", ctx.head.payload_bytes, enabled=ctx.show_progress)
        yield feed, lambda on_verified: ctx.gate.check_payload(ctx.path, ctx.head, feed, progress, on_verified)
        progress.close()


def _push(ctx: ImportContext) -> None:
    """Every verified image to the registry (when there is one), its digest confirmed, before the
    kind needs it there (a service's nodes pull by digest)."""
    if ctx.push_plan is None:
        return
    with ctx.timer.phase("push"):
        pushes.claim(ctx.state, ctx.release.app, ctx.push_plan)
        ctx.pushed = tuple(push_verified(ctx.client, [p.dest for p in ctx.push_plan.pushes], out=ctx.out,
                                         login=ctx.login))
        pushes.record(ctx.state, ctx.release.app, ctx.push_plan, ctx.pushed)
    ctx.audit.details["pushed"] = [p.report() for p in ctx.pushed]


def _apply(ctx: ImportContext) -> dict:
    """The kind puts the release in place behind its health gate (undoing itself on failure), and the
    import records how it ended."""
    delivery = Delivery(ctx.release, ctx.audit.bundle.sha256, ctx.images, ctx.loaded, ctx.pushed,
                        ctx.login.auth_config if ctx.login else None)
    record = ctx.kind.apply(ctx.client, ctx.state, ctx.plan, delivery, keep=ctx.options.keep, out=ctx.out)
    stopped, paused = record.get("stopped_after_stage"), record.get("paused_after_stage")
    for key, value in (("stopped_after_stage", stopped), ("paused_after_stage", paused)):
        if value is not None:
            ctx.audit.details[key] = value
    if record.get("services"):  # a service release: the version each of its services runs now
        ctx.audit.details["services"] = record["services"]
    ctx.audit.result = (Result.PAUSED if paused is not None else Result.PARTIAL if stopped is not None
                        else Result.DONE)
    ctx.audit.exit_code = ctx.audit.result.exit_code
    if stopped is None and paused is None:  # the last line says how it ended (a staged release says its stage itself)
        gen = record.get("generation")
        ctx.out(f"installed {ctx.release.app} {ctx.release.version}" + (f" (generation {gen})" if gen else "")
                + ", healthy")
    result = (f"paused after stage {paused}" if paused is not None else f"stage {stopped} done" if stopped is not None
              else "installed")
    return {"result": result, "installed": record, "exit_code": int(ctx.audit.exit_code), **_summary(ctx.audit)}


def _summary(audit: AuditEvent) -> dict:
    """The import's result document (--json): what the audit event says of the bundle, flat."""
    return {"event": "import", "user": audit.operator.user, "started": audit.started, "bundle": audit.details["bundle"],
            "name": audit.bundle.name, "version": audit.bundle.version, "sequence": audit.bundle.sequence,
            "signers": [s.to_json() for s in audit.signers],
            **({"sha256": audit.bundle.sha256} if audit.bundle.sha256 else {}),  # none: already installed, not read
            **{k: audit.details[k] for k in ("takes_over", "pushes", "pushed") if k in audit.details}}
