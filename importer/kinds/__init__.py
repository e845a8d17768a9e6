"""Target kinds: what the importer swaps. The manifest's `target.kind` picks one; the pipeline and
the rollback, recover and status commands reach a kind only through this table, so a new kind
(a multi-container app, a Kubernetes Deployment) is a new package next to `container/` and
`service/`, registered here, not a branch inside another kind. A kind's journaled changes run on
the one step runner (importer.steps); mount backup and restore is importer.backup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from bundlecore.errors import UsageProblem
from bundlecore.release import Target, installed_kind
from importer.delivery import Delivery
from importer.state import StateDir
from importer.steps import StepJournal, pending

Out = Callable[[str], None]


class Plan(Protocol):
    def lines(self) -> list[str]:
        """What the operator confirms; making the plan changed nothing."""


PlanT = TypeVar("PlanT", bound=Plan)
TargetT = TypeVar("TargetT", bound=Target, contravariant=True)


class TargetKind(Protocol[PlanT, TargetT]):
    """What a target kind provides. Every mutation is journaled so that `recover` can finish or
    undo it after a crash, and `apply`/`rollback` undo by themselves when the health gate fails
    (UpdateFailed) or say that they could not (OperatorNeeded).

    A kind is a module; `make check` (mypy) checks each module of KINDS against this protocol,
    with the kind's own plan type for PlanT and its own target type (bundlecore.release) for TargetT."""

    @property
    def PLAN_OPTIONS(self) -> tuple[str, ...]:  # a module constant: read-only
        """Which import options its plan takes (e.g. the container's `prefer`, bundle|local, which
        decides run-setting conflicts, and `masked` env keys never shown; a service's `registry` and
        `resume`); the pipeline passes only those (importer.pipeline.plan_options)."""

    def plan(self, client, state: StateDir, target: TargetT, new_image_id: str, *,
             new_version: str | None = None) -> PlanT:
        """Describe the change; makes none. A kind's plan also takes its PLAN_OPTIONS, as keywords."""

    def apply(self, client, state: StateDir, plan: PlanT, delivery: Delivery, *, keep: int = 2,
              out: Out = print) -> dict:
        """Put the new version in place behind its health gate; returns the installed record."""

    def plan_rollback(self, client, state: StateDir, name: str, to: int | None = None) -> PlanT: ...

    def rollback(self, client, state: StateDir, plan: PlanT, *, out: Out = print) -> dict: ...

    def recover(self, client, state: StateDir, name: str, out: Out = print) -> list[str]:
        """Finish or undo the interrupted swap of `name`; lines to report."""

    def unfinished_runs(self, state: StateDir) -> list[str]:
        """Names with a run of this kind interrupted above its journals (a staged service release
        killed between or inside its stages), which `recover` also brings to one honest state."""

    def status(self, client, state: StateDir, name: str) -> dict:
        """A JSON-able report (client is None when the engine does not answer)."""

    def status_lines(self, status: dict) -> list[str]: ...

    def plan_uninstall(self, client, state: StateDir, name: str, *, keep_data: bool = False) -> PlanT: ...

    def uninstall(self, client, state: StateDir, plan: PlanT, *, out: Out = print) -> str:
        """Remove the application (journaled); returns where its state and final backup were kept."""


CONTAINER = "container"
SERVICE = "service"
COMPOSE = "compose"
# kind -> the package that provides it, imported when first asked for (a module of one kind, e.g.
# the container's merge rules read by importer.site, does not load every kind)
KINDS: dict[str, str] = {CONTAINER: "importer.kinds.container", SERVICE: "importer.kinds.service",
                         COMPOSE: "importer.kinds.compose"}

if TYPE_CHECKING:
    # `make check` (mypy) checks each kind's package against TargetKind here: "incompatible type Module"
    # means a kind lacks a member or differs in a signature.
    from importer.kinds import compose, container, service
    _CHECKED: dict[str, TargetKind[Any, Any]] = {CONTAINER: container, SERVICE: service, COMPOSE: compose}


def get(kind: str) -> TargetKind[Any, Any]:
    module: TargetKind[Any, Any] = importlib.import_module(KINDS[kind])  # type: ignore[assignment]
    return module


def for_target(target: Target) -> TargetKind[Any, Any]:
    if target.kind not in KINDS:
        raise UsageProblem(f"target kind {target.kind!r} is not handled (known: {', '.join(sorted(KINDS))})")
    return get(target.kind)


def for_app(state: StateDir, name: str) -> TargetKind[Any, Any]:
    """The kind of an installed application: its record (bundlecore.release.installed_kind), else
    its unfinished journal (a first install has no record yet)."""
    named = installed_kind(state.installed(name))
    if named is None:
        try:
            named = (StepJournal.read(state.app_dir(name)) or {}).get("target_kind")
        except ValueError:
            pass
    if named is None:  # the app of a release recorded per target it made (a service bundle's services)
        named = next((installed_kind(rec) for n in state.installed_apps()
                      if (rec := state.installed(n)) and rec.get("app") == name), None)
    return get(named if named in KINDS else CONTAINER)


def plan_json(plan: Plan, lines: list[str] | None = None) -> dict[str, Any]:
    """A plan as `--json` carries it (schemas/cli/common.schema.json `plan`): the action, the app,
    the versions from and to, and the lines the operator confirms (`lines`: all of them, when the
    caller printed more than the kind's; secrets masked as there). Changes nothing."""
    old = getattr(plan, "old", None)
    back = getattr(plan, "rollback_to", None) or {}
    frm = getattr(old, "version", None) if old is not None else getattr(plan, "current", None)
    return {"action": str(getattr(plan, "kind", "") or type(plan).__name__),
            "app": getattr(plan, "key", None) or getattr(plan, "name", None),
            "version_from": frm if isinstance(frm, str) else None,
            "version_to": getattr(plan, "new_version", None) or back.get("version") or getattr(plan, "previous", None),
            "generation_to": back.get("generation"),
            "warnings": list(getattr(plan, "warnings", None) or []),
            "lines": list(plan.lines() if lines is None else lines)}


def interrupted(state: StateDir) -> list[str]:
    """Names with an unfinished run: a journal of any kind, or a kind's run above its journals."""
    return sorted(set(pending(state)).union(*(get(kind).unfinished_runs(state) for kind in KINDS)))


def recover_all(client, state: StateDir, out: Out = print) -> list[str]:
    """Finish or undo every interrupted swap, then every interrupted run above the journals; one
    line per application handled."""
    lines = []
    for name in pending(state):
        lines += for_app(state, name).recover(client, state, name, out=out)
    for kind in KINDS:
        module = get(kind)
        for name in module.unfinished_runs(state):
            lines += module.recover(client, state, name, out=out)
    return lines
