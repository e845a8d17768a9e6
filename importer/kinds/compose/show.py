"""`bundle show` of a compose project: the effective compose file as applied, and each service's
run settings with where each came from (the bundle, the site file, this host), as `bundle show`
lists a container's.

The file is the signed project as installed (the site file's `[services.NAME.run]` over it) with
each service's run settings as its running container has them (a change made on this host since
shows), its image the image ID the import loaded (`x-bundle-image` names the signed ref), and every
secret env value masked (importer.masking). Compose's `$` is escaped (`$$`), so the text is a
compose file `docker compose -p PROJECT -f - config` reads.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import yaml

from bundlecore.errors import UsageProblem
from bundlecore.release import ComposeService, ComposeTarget, RunSettings, installed_kind, target_from_json
from importer.kinds.compose.project import compared_settings, container_name
from importer.masking import is_secret, shown_env
from importer.merge import Kind, run_with, settings_of_container, settings_of_run, shown, source_of
from importer.site import SiteSettings
from importer.state import StateDir


def applied_service(svc: ComposeService, live: dict | None, live_image: dict) -> ComposeService:
    """The service as its running container has it (its recorded settings when it is missing)."""
    if live is None:
        return svc
    recorded = svc.run.as_mapping()
    theirs = compared_settings(settings_of_run(recorded), svc)
    ours = compared_settings(settings_of_container(live, live_image, named=set(theirs)), svc)
    run = run_with(recorded, theirs, ours)
    return svc if run is recorded else replace(svc, run=RunSettings.from_json(run))


def _seconds(value: Any) -> str:
    return f"{float(value):g}s"


def _escaped(value: Any) -> Any:
    """Every string with Compose's `$` escape (`$$`): the file says what runs, not what a shell would expand."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    return value


def compose_service(project: str, svc: ComposeService, image_id: str | None, marked: frozenset[str]) -> dict:
    """One service in the Compose Specification's terms (pure): the inverse of the build's normalization."""
    run = svc.run.as_mapping()
    out: dict[str, Any] = {"image": image_id or svc.image, "x-bundle-image": svc.image}
    keys = marked | frozenset(run.get("secret_env") or ())
    for key, name in (("command", "command"), ("entrypoint", "entrypoint"), ("ports", "ports"),
                      ("restart", "restart"), ("user", "user"), ("workdir", "working_dir"), ("labels", "labels"),
                      ("cap_add", "cap_add"), ("cap_drop", "cap_drop"), ("extra_hosts", "extra_hosts"),
                      ("dns", "dns"), ("hostname", "hostname"), ("stop_signal", "stop_signal")):
        if run.get(key) not in (None, [], {}):
            out[name] = list(run[key]) if isinstance(run[key], (list, tuple)) else run[key]
    if run.get("env"):
        out["environment"] = {k: shown_env(k, v, keys) for k, v in run["env"].items()}
    if run.get("volumes"):
        prefix = f"{project}_"
        out["volumes"] = [v.removeprefix(prefix) if v.startswith(prefix) else v for v in run["volumes"]]
    if run.get("stop_timeout") is not None:
        out["stop_grace_period"] = _seconds(run["stop_timeout"])
    if svc.depends_on:
        out["depends_on"] = {d: {"condition": c} for d, c in svc.depends_on.items()}
    out["networks"] = {n: ({"aliases": list(ep["aliases"])} if (ep or {}).get("aliases") else None)
                       for n, ep in svc.networks.items()}
    if svc.healthcheck:
        h = svc.healthcheck
        out["healthcheck"] = {"test": list(h["test"]), **{k: _seconds(h[k]) for k in ("interval", "timeout",
                                                                                      "start_period") if k in h},
                              **({"retries": h["retries"]} if "retries" in h else {})}
    if svc.tmpfs:
        out["tmpfs"] = list(svc.tmpfs)
    if svc.ulimits:
        out["ulimits"] = {n: dict(u) for n, u in svc.ulimits.items()}
    return _escaped(out)


def show(client, state: StateDir, app: str) -> dict:
    """The project as applied (`compose`: the file's content) and each service's settings with their
    source (`settings`, as a container's `bundle show` rows, each named `services.NAME ...`)."""
    client.ping()
    rec = state.installed(app)
    if not rec:
        raise UsageProblem(f"{app} is not installed (see `bundle list`)")
    if installed_kind(rec) != ComposeTarget.KIND:
        raise UsageProblem(f"{app} is not a compose project")
    target = target_from_json(rec["target"])
    assert isinstance(target, ComposeTarget)
    project = target.project
    site = SiteSettings.load(app)
    marked = frozenset(rec.get("site_env") or ()) | site.masked
    services, rows, containers = {}, [], {}
    for name in rec.get("order") or list(project.services):
        svc, recorded = project.services[name], (rec.get("services") or {}).get(name) or {}
        cname = recorded.get("container") or container_name(project.project, name)
        live = client.container_named(cname)
        applied = applied_service(svc, live, (client.image(live["Image"]) or {}) if live else {})
        services[name] = compose_service(project.project, applied, recorded.get("image_id"), marked)
        containers[name] = {"container": cname, "image_ref": svc.image, "image_id": recorded.get("image_id"),
                            "live": live is not None}
        before = settings_of_run(svc.run.as_mapping())  # as installed: the site file's over the bundle's
        site_now = settings_of_run(site.services.get(name))
        for key, value in sorted(compared_settings(settings_of_run(applied.run.as_mapping()), svc).items()):
            source = source_of(key, value, before, site_now, marked)
            rows.append({"setting": f"services.{name} {key}", "kind": str(key.kind), "key": key.name,
                         "value": shown(key, value, marked | frozenset(svc.run.secret_env or ())),
                         "secret": key.kind is Kind.ENV and is_secret(key.name, marked), "source": str(source)})
    doc = {"name": project.project, "services": services,
           "volumes": {v: {} for v in project.volumes}, "networks": {n: {} for n in project.networks}}
    return {"name": app, "kind": "compose", "version": rec.get("version"), "generation": rec.get("generation"),
            "container": f"{len(services)} services of compose project {project.project}",
            "site_file": str(site.path) if site.path else None, "settings": rows, "services": containers,
            "compose": doc}


def show_lines(doc: dict) -> list[str]:
    """The compose file as applied, its header a YAML comment."""
    head = (f"# {doc['name']} {doc['version']} (generation {doc['generation']}): compose project "
            f"{doc['compose']['name']} as applied (images: the loaded IDs; settings: the site file's and this "
            f"host's merged; secrets masked)" + (f"; site file {doc['site_file']}" if doc["site_file"] else ""))
    return [head] + yaml.safe_dump(doc["compose"], sort_keys=False, default_flow_style=False).splitlines()
