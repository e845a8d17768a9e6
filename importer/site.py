"""Site settings: what an application needs on this host that must not be inside a signed bundle
(secrets, host names, a host file holding an app's keys), kept by the intranet admin in
`/etc/bundle/apps/NAME.toml` (or the file given with `--site`; `$BUNDLE_SITE_DIR` moves the
directory; the file must not be writable by group or others). It holds one `[run]` table in the
bundle's run vocabulary (schemas/site.schema.json), merged over the bundle's `[target.run]` on
first installs and upgrades alike:

- env and labels: per key, the site's value wins;
- ports (per container port) and volumes (per mount target): the site's replaces the bundle's;
- cap_add, cap_drop, dns, extra_hosts, secret_env: added to the bundle's;
- every other setting (restart, command, network, user...): the site's replaces the bundle's.

What reaches the host is then decided once, by the host policy, on the merged settings: the site
file is the admin's, but one rule for what a container may ask of this host is simpler to audit
than two. Every env value from the site file is a secret (importer.masking): masked in the plan
and every other output, also once the site file changed or removed it (the keys are recorded with
the installed version).

A compose project (importer.kinds.compose) has one `[services.SERVICE.run]` table per service
instead, in the same vocabulary and merged the same way over that service's signed settings. One
line refuses (exit 1, as every site-file refusal) a table naming a service the project does not
have, a `[run]` table for a project (which service would it mean?), a `[health]` probe, timeout or
attempts for one (each service's gate is signed), and `[services]` for a target of another kind;
`[health.prometheus] url` goes into every service's metrics gate.

`[health.prometheus] url` sets (or replaces) the Prometheus the bundle's metrics gate queries
(importer.analysis): where this host's Prometheus is, is the intranet's knowledge; the host
policy's `prometheus_urls` must still allow it. `[health]` `http`, `tcp` or `cmd` replaces the signed
probe (whichever kind it was), and `timeout`, `attempts` the signed ones: how this host reaches the app
is the intranet's knowledge too (a signed probe at a port the site file moves follows it by itself,
importer.health `follow_published`). Probation and the metrics query stay signed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from bundlecore.errors import EnvironmentProblem
from bundlecore.fsutil import read_toml
from bundlecore.release import ComposeTarget, HealthSettings, RunSettings, Target
from bundlecore.runspec import parse_port, parse_volume
from bundlecore.schema import first_error
from importer.masking import shown_env

SITE_DIR = Path("/etc/bundle/apps")
PROBES = ("http", "tcp", "cmd")
HEALTH_KEYS = (*PROBES, "timeout", "attempts")  # what `[health]` may set over the signed health check
_ADDED = ("cap_add", "cap_drop", "dns", "extra_hosts", "secret_env")


def site_dir() -> Path:
    return Path(os.environ.get("BUNDLE_SITE_DIR") or SITE_DIR)


@dataclass(frozen=True)
class SiteSettings:
    path: Path | None
    run: dict = field(default_factory=dict)
    prometheus_url: str | None = None
    health: dict = field(default_factory=dict)  # HEALTH_KEYS set by the file
    services: dict = field(default_factory=dict)  # a compose project's: service -> its [services.NAME.run]

    @classmethod
    def load(cls, app: str, path: Path | None = None) -> "SiteSettings":
        """The given file, else the app's file in the site directory if there is one."""
        if path is None:
            path = site_dir() / f"{app}.toml"
            if not path.is_file():
                return cls(None)
        try:
            if Path(path).stat().st_mode & 0o022:
                raise EnvironmentProblem(f"site settings {path} is writable by group or others: "
                                         f"anyone who can write it decides what this app runs with (chmod go-w)")
            raw = read_toml(Path(path))
        except FileNotFoundError:
            raise EnvironmentProblem(f"site settings {path} not found") from None
        except (OSError, ValueError) as e:
            raise EnvironmentProblem(f"site settings {path} cannot be read: {e}") from None
        err = first_error("site.schema.json", raw)
        if err:
            raise EnvironmentProblem(f"site settings {path}: {err}")
        health = raw.get("health") or {}
        return cls(Path(path), raw.get("run") or {}, (health.get("prometheus") or {}).get("url"),
                   {k: v for k, v in health.items() if k in HEALTH_KEYS},
                   {n: t.get("run") or {} for n, t in (raw.get("services") or {}).items()})

    @property
    def masked(self) -> frozenset[str]:
        """The env keys this file sets: their values are secrets (importer.masking)."""
        return frozenset(self.run.get("env") or {}).union(*(t.get("env") or {} for t in self.services.values()))

    def over(self, run: dict | None, site: dict | None = None) -> dict:
        """The bundle's run settings with this site's (`site`: a service's table, else `[run]`) over
        them (see the module docstring)."""
        out = dict(run or {})
        for key, value in (self.run if site is None else site).items():
            if key in ("env", "labels"):
                out[key] = {**(out.get(key) or {}), **value}
            elif key == "ports":
                keys = {parse_port(p).key for p in value}
                out[key] = [p for p in out.get(key) or [] if parse_port(p).key not in keys] + value
            elif key == "volumes":
                targets = {parse_volume(v).target for v in value}
                out[key] = [v for v in out.get(key) or [] if parse_volume(v).target not in targets] + value
            elif key in _ADDED:
                out[key] = list(dict.fromkeys([*(out.get(key) or []), *value]))
            else:
                out[key] = value
        return out

    def over_health(self, health: dict | None) -> dict:
        """{"health": ...} with this site's probe, timeout and attempts over the signed ones and its
        Prometheus URL in a signed metrics gate; {} when nothing changes."""
        out = {k: v for k, v in (health or {}).items() if not (k in PROBES and any(p in self.health for p in PROBES))}
        out.update(self.health)
        prom = out.get("prometheus")
        if prom and self.prometheus_url:
            out["prometheus"] = {**prom, "url": self.prometheus_url}
        return {"health": out} if out != (health or {}) else {}

    def over_target(self, target: Target) -> Target:
        """The signed target with this site's run settings and Prometheus URL over it (a compose
        project's: each `[services.NAME.run]` over that service's)."""
        if isinstance(target, ComposeTarget):
            target = self._over_services(target)
        elif self.services:
            raise EnvironmentProblem(f"site settings {self.path}: [services] tables are for a compose project; "
                                     f"{target.name} is a {target.kind} target ([run] sets its settings)")
        health = self.over_health(target.health_json()).get("health")
        return replace(target, run=RunSettings.from_json(self.over(target.run.as_mapping())),
                       health=HealthSettings.from_json({"timeout": None, "attempts": None, **health})
                       if health else target.health)

    def _over_services(self, target: ComposeTarget) -> ComposeTarget:
        project = target.project
        if self.run:
            raise EnvironmentProblem(f"site settings {self.path}: [run] is not applied to a compose project: "
                                     f"set each service's in [services.SERVICE.run]")
        unknown = sorted(set(self.services) - set(project.services))
        if unknown:
            raise EnvironmentProblem(f"site settings {self.path}: services.{unknown[0]} names no service of the "
                                     f"compose project {project.project} ({', '.join(project.services)})")
        if self.health:
            raise EnvironmentProblem(f"site settings {self.path}: [health] {', '.join(self.health)} is not applied to a "
                                     f"compose project: each service's gate is its signed [target.health.SERVICE] or "
                                     f"healthcheck")
        services = {}
        for n, s in project.services.items():
            health = self.over_health(s.health.to_json() if s.health else None).get("health")  # the Prometheus URL
            services[n] = replace(s, run=RunSettings.from_json(self.over(s.run.as_mapping(), self.services.get(n) or {})),
                                  health=HealthSettings.from_json(health) if health else s.health)
        return replace(target, compose=replace(project, services=MappingProxyType(services)))

    def plan_lines(self) -> list[str]:
        """What the operator confirms of the site file, env values masked."""
        if self.path is None:
            return []
        out = [f"site settings {self.path} (over the bundle's):"] + self._run_lines("  ", self.run)
        for name, table in self.services.items():
            out += self._run_lines(f"  services.{name} ", table)
        out += [f"  health.{k} {v}" for k, v in self.health.items()]
        if self.prometheus_url:
            out.append(f"  health.prometheus.url {self.prometheus_url}")
        return out

    def _run_lines(self, prefix: str, run: dict) -> list[str]:
        out = []
        for key, value in run.items():
            if key == "env":
                out += [f"{prefix}env {k}={shown_env(k, v, self.masked)}" for k, v in value.items()]
            elif key == "labels":
                out += [f"{prefix}label {k}={v}" for k, v in value.items()]
            elif isinstance(value, list) and key not in ("command", "entrypoint"):
                out += [f"{prefix}{key} {v}" for v in value]
            else:
                out.append(f"{prefix}{key} {value}")
        return out
