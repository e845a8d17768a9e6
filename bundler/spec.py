"""The build spec (bundle.toml): read, validate against schemas/spec.schema.json, normalize."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bundlecore import placeholders
from bundlecore.errors import UsageProblem
from bundlecore.release import PROMOTE, dependency_order
from bundlecore.schema import bounds, first_error
from bundlecore.text import first_unprintable
from bundlecore.timeutil import parse_duration
from bundler.compose import load_compose

DEFAULT_EXPIRES = "90d"
DEFAULT_HEALTH_TIMEOUT = 60
DEFAULT_HEALTH_ATTEMPTS = 3
# A bundle must live long enough to cross the air gap; an hour is the least that makes sense.
MIN_EXPIRES = 3600
# The health gate holds the swap (old version down) for timeout x attempts: keep that bounded.
MAX_HEALTH_TIMEOUT = 3600


@dataclass
class BuildSpec:
    name: str
    version: str
    sequence: int | None
    expires_seconds: int
    platform: str | None
    images: list[str]
    target: dict  # normalized as the manifest stores it
    upstream: Upstream | None = None


@dataclass(frozen=True)
class Upstream:
    """Where new releases come from (`[upstream]`): read by `bundle check` only."""

    github: str  # owner/repo
    image: str  # image template holding {version}
    prereleases: bool = False
    drafts: bool = False


def image_tag(ref: str) -> str | None:
    """The tag of an image reference ('repo:tag'), '@digest' counting as pinned; None if untagged."""
    if "@" in ref:
        return ref.split("@", 1)[1]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def split_ref(ref: str) -> tuple[str, str]:
    """(repository, tag) of an image reference; an untagged ref is 'latest'."""
    tag = image_tag(ref)
    if tag is None:
        return ref, "latest"
    if "@" in ref:
        return ref.split("@", 1)[0], tag
    return ref[: -len(tag) - 1], tag


def is_pinned(ref: str) -> bool:
    tag = image_tag(ref)
    return tag is not None and tag != "latest"


def service_stages(path, target: dict, stages: list[dict]) -> list[dict]:
    """`[[stage]]` of a service target as the manifest stores it: soak in seconds. A service is
    rolled whole in one stage; before it, canary steps (`replicas`) may run part of it, and a
    canary step's service must be rolled whole by a later stage (no canary is left behind)."""
    if target["kind"] != "service":
        raise UsageProblem(f"spec {path}: [[stage]] applies to target.kind = \"service\" only")
    whole: set[str] = set()
    canaried: dict[str, int] = {}
    out = []
    for i, stage in enumerate(stages, 1):
        for s in stage["services"]:
            if s in whole:
                raise UsageProblem(f"spec {path}: stage {i} names {s} again (a service is rolled whole in one stage)")
            if "replicas" in stage:
                canaried.setdefault(s, i)
            else:
                whole.add(s)
        out.append({"services": list(stage["services"]), "soak": parse_duration(stage.get("soak", 0)),
                    **{k: stage[k] for k in ("replicas", "parallel") if k in stage},
                    **stage_pause(path, i, len(stages), stage.get("pause"))})
    left = sorted(s for s in canaried if s not in whole)
    if left:
        raise UsageProblem(f"spec {path}: stage {canaried[left[0]]} rolls part of {left[0]} (replicas); "
                           f"a later stage must roll the rest")
    return out


def stage_pause(path, i: int, n: int, pause: str | None) -> dict:
    """`pause` of stage i as the manifest stores it: seconds, or "promote"; none after the last
    stage (nothing is left to wait for: the release is done there)."""
    if pause is None:
        return {}
    if i == n:
        raise UsageProblem(f"spec {path}: stage {i} is the last; a pause after it has nothing to wait for")
    seconds = PROMOTE if pause == PROMOTE else parse_duration(pause)
    if seconds == 0:
        raise UsageProblem(f"spec {path}: stage {i} pause must be at least 1s (or leave it out)")
    return {"pause": seconds}


def metrics_gate(path, prom: dict) -> dict:
    """`[target.health] prometheus` as the manifest stores it: window in seconds, max a finite number
    (TOML's nan passes a schema's bounds, which compare false)."""
    window = parse_duration(prom["window"])
    low, high = bounds("health_metrics_window_seconds")
    if not low <= window <= high:
        raise UsageProblem(f"spec {path}: target.health.prometheus.window must be between {low}s and {high}s")
    if not math.isfinite(prom["max"]):
        raise UsageProblem(f"spec {path}: target.health.prometheus.max must be a finite number")
    wrong = placeholders.problems(prom["query"])
    if wrong:
        raise UsageProblem(f"spec {path}: target.health.prometheus.query: {wrong[0]}")
    return {**prom, "window": window}


def health_settings(path, raw: dict, kind: str, where: str) -> dict:
    """`[target.health]` (or a compose service's `[target.health.NAME]`) as the manifest stores it:
    durations in seconds, bounded, attempts defaulted."""
    health = dict(raw)
    health["timeout"] = parse_duration(health.get("timeout", DEFAULT_HEALTH_TIMEOUT))
    if not 1 <= health["timeout"] <= MAX_HEALTH_TIMEOUT:
        raise UsageProblem(f"spec {path}: {where}.timeout must be between 1s and {MAX_HEALTH_TIMEOUT}s")
    health.setdefault("attempts", DEFAULT_HEALTH_ATTEMPTS)
    if "probation" in health:  # off unless set; then no restart is allowed unless max_restarts says so
        health["probation"] = parse_duration(health["probation"])
        low, high = bounds("health_probation_seconds")
        if not low <= health["probation"] <= high:
            raise UsageProblem(f"spec {path}: {where}.probation must be between {low}s and {high}s")
        if kind != "service":  # a service task's restarts are Swarm's business
            health.setdefault("max_restarts", 0)
    if "prometheus" in health:
        health["prometheus"] = metrics_gate(path, health["prometheus"])
    return health


def compose_target(path, target: dict, images: list[str]) -> dict:
    """`[target] kind = "compose"`: the project read from its compose file (bundler.compose), each
    `[target.health.SERVICE]` on its service; `name` is the project, `image` its first service's."""
    project = load_compose(Path(path), target, images)
    for service, svc in project["services"].items():
        if not is_pinned(svc["image"]):  # even with --allow-latest: a project is swapped by what it pins
            raise UsageProblem(f"spec {path}: services.{service}.image {svc['image']} is not pinned")
    for service, health in (target.get("health") or {}).items():
        if service not in project["services"]:
            raise UsageProblem(f"spec {path}: target.health.{service} names no service of the compose file")
        project["services"][service]["health"] = health_settings(path, health, "compose", f"target.health.{service}")
    first = dependency_order({n: s["depends_on"] for n, s in project["services"].items()})[0]
    return {"kind": "compose", "name": target["project"], "image": project["services"][first]["image"], "run": {},
            "compose": project}


def load_spec(path: Path, allow_latest: bool = False) -> BuildSpec:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageProblem(f"spec {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageProblem(f"spec {path} is not valid TOML: {e}") from None
    bad = first_unprintable(raw)
    if bad:
        raise UsageProblem(f"spec {path} at {bad}: control or non-printing characters are not allowed")
    problem = first_error("spec.schema.json", raw)
    if problem:
        raise UsageProblem(f"spec {path} {problem}")
    for ref in raw["images"]:
        if not is_pinned(ref) and not allow_latest:
            raise UsageProblem(f"image {ref} is not pinned (tag 'latest' or no tag); pin a version or pass --allow-latest")
    target = dict(raw["target"])
    if target["kind"] == "compose":
        target = compose_target(path, target, raw["images"])
    else:
        if target["image"] not in raw["images"]:
            raise UsageProblem(f"spec {path}: target.image {target['image']} is not one of images")
        target["run"] = dict(target.get("run", {}))
        if "secret_env" in target["run"]:  # the schema checked the names; signed in one order
            target["run"]["secret_env"] = sorted(target["run"]["secret_env"])
        if "health" in target:
            target["health"] = health_settings(path, target["health"], target["kind"], "target.health")
    if "stage" in raw:
        target["stages"] = service_stages(path, target, raw["stage"])
    upstream = None
    if "upstream" in raw:
        upstream = Upstream(**raw["upstream"])
        repo = split_ref(upstream.image)[0]
        if not any(split_ref(ref)[0] == repo for ref in raw["images"]):
            raise UsageProblem(f"spec {path}: upstream.image {upstream.image} names no repository of images")
    expires = parse_duration(raw.get("expires", DEFAULT_EXPIRES))
    if expires < MIN_EXPIRES:
        raise UsageProblem(f"spec {path}: expires {raw['expires']} is under an hour; the bundle would expire "
                           f"before it crossed")
    return BuildSpec(
        name=raw["name"],
        version=raw["version"],
        sequence=raw.get("sequence"),
        expires_seconds=expires,
        platform=raw.get("platform"),
        images=list(raw["images"]),
        target=target,
        upstream=upstream,
    )
