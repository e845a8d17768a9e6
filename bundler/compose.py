"""A Compose project for a `compose` target: the compose file read (PyYAML's safe loader), the
subset of the Compose Specification a bundle carries applied key by key, and every other key
refused with one line naming it (never silently dropped: a setting the admin wrote must either
take effect on the intranet or stop the build).

The result is the normalized project the manifest signs (schemas/manifest.schema.json `compose`):
per service its image (one of the bundle's pinned images), its run settings in the container
target's vocabulary (`[target.run]`, bundlecore.runspec), and what only Compose has (depends_on
conditions, the healthcheck, networks with aliases, tmpfs, ulimits). Environment files are read
here, at build time, into the signed settings; a value Compose would take from the builder's shell
(`KEY` with no value) is refused, since the intranet host would not have it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from bundlecore.errors import UsageProblem
from bundlecore.release import dependency_order
from bundlecore.runspec import parse_port, parse_volume

SERVICE_KEYS = frozenset({
    "image", "command", "entrypoint", "environment", "env_file", "ports", "volumes", "networks", "depends_on",
    "healthcheck", "restart", "user", "working_dir", "labels", "cap_add", "extra_hosts", "tmpfs", "ulimits",
    "stop_grace_period"})
TOP_KEYS = frozenset({"services", "volumes", "networks", "name", "version"})
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
RESTARTS = re.compile(r"^(no|always|unless-stopped|on-failure(:[0-9]+)?)$")
SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_FILE = 1 << 20


def duration(value: Any, where: str) -> float:
    """A Compose duration ("1m30s", "500ms", "10s") in seconds."""
    text = str(value).strip()
    if not text or _DURATION.sub("", text):
        raise UsageProblem(f"{where}: {value!r} is not a duration (e.g. 10s, 1m30s, 500ms)")
    return round(sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text)), 6)


class ComposeFile:
    """One compose file normalized for the manifest; every refusal names the file and the key."""

    def __init__(self, path: Path, project: str, images: list[str]):
        self.path, self.project, self.images = Path(path), project, images

    def fail(self, where: str, why: str) -> UsageProblem:
        return UsageProblem(f"compose file {self.path}: {where}: {why}")

    def load(self) -> dict:
        try:
            text = self.path.read_bytes()[:MAX_FILE + 1]
        except FileNotFoundError:
            raise UsageProblem(f"compose file {self.path} not found") from None
        if len(text) > MAX_FILE:
            raise UsageProblem(f"compose file {self.path} is over {MAX_FILE} bytes")
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UsageProblem(f"compose file {self.path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict) or not raw["services"]:
            raise UsageProblem(f"compose file {self.path} has no services")
        if raw.get("name") not in (None, self.project):
            raise self.fail("name", f"{raw['name']!r} is not the target's project {self.project!r}")
        return self.normalize(self._literal(raw, ""))

    def _literal(self, v: Any, where: str) -> Any:
        """Every string as Compose would use it: `$$` is a `$`; an interpolation (`$VAR`, `${VAR}`)
        is refused, since its value would come from the shell running the build, not the bundle."""
        if isinstance(v, dict):
            return {k: self._literal(x, f"{where}.{k}" if where else str(k)) for k, x in v.items()}
        if isinstance(v, list):
            return [self._literal(x, f"{where}.{i}") for i, x in enumerate(v)]
        if isinstance(v, str) and "$" in v:
            if "$" in v.replace("$$", ""):
                raise self.fail(where, "variable interpolation ($VAR) is not supported: write the value (or $$ for a $)")
            return v.replace("$$", "$")
        return v

    # -- the project ----------------------------------------------------------------------------
    def normalize(self, raw: dict) -> dict:
        self._refuse_unknown(raw, TOP_KEYS, "the top level")
        volumes = self._top("volumes", raw.get("volumes"))
        networks = self._top("networks", raw.get("networks"))
        services = {}
        for name, svc in raw["services"].items():
            if not isinstance(name, str) or not SERVICE_NAME.match(name):
                raise self.fail(f"services.{name}", "a service name is letters, digits, '.', '_', '-'")
            if not isinstance(svc, dict):
                raise self.fail(f"services.{name}", "must be a mapping")
            services[name] = self.service(name, svc, volumes, networks)
        for name, svc in services.items():
            for dep in svc["depends_on"]:
                if dep not in services:
                    raise self.fail(f"services.{name}.depends_on", f"names no service of the project: {dep}")
        try:
            dependency_order({n: s["depends_on"] for n, s in services.items()})
        except ValueError as e:
            raise self.fail("depends_on", str(e)) from None
        used = {n for s in services.values() for n in s["networks"]}
        return {"project": self.project, "services": services, "volumes": volumes,
                "networks": {n: {} for n in sorted(used | set(networks))}}

    def _refuse_unknown(self, d: dict, known: frozenset[str], where: str) -> None:
        """Every key not in `known` refused; `x-` extension fields are Compose's own comments (it
        ignores them itself: they hold the anchors other keys reuse)."""
        unknown = sorted(str(k) for k in d if k not in known and not str(k).startswith("x-"))
        if unknown:
            raise self.fail(where, f"key {unknown[0]!r} is not supported (supported: {', '.join(sorted(known))})")

    def _top(self, what: str, d: Any) -> dict:
        """Top-level volumes or networks: each a name with the engine's defaults (no driver options)."""
        if d is None:
            return {}
        if not isinstance(d, dict):
            raise self.fail(what, "must be a mapping")
        for name, v in d.items():
            if not SERVICE_NAME.match(str(name)):
                raise self.fail(f"{what}.{name}", "a name is letters, digits, '.', '_', '-'")
            if v not in (None, {}):
                key = sorted(v)[0] if isinstance(v, dict) and v else str(v)
                raise self.fail(f"{what}.{name}", f"key {key!r} is not supported (only the engine's defaults)")
        return {str(n): {} for n in d}

    # -- one service ----------------------------------------------------------------------------
    def service(self, name: str, s: dict, volumes: dict, networks: dict) -> dict:
        at = f"services.{name}"
        self._refuse_unknown(s, SERVICE_KEYS | {"build"}, at)
        if "build" in s:
            raise self.fail(f"{at}.build", "is not supported: a bundle carries pinned images only (build it, "
                            "pin it, list it in images)")
        image = s.get("image")
        if not isinstance(image, str):
            raise self.fail(at, "has no image")
        if image not in self.images:
            raise self.fail(f"{at}.image", f"{image} is not one of the bundle's pinned images")
        run: dict[str, Any] = {}
        env = self._env(at, s)
        if env:
            run["env"] = env
        for key in ("command", "entrypoint"):
            if key in s and s[key] is not None:
                v = s[key]
                if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
                    raise self.fail(f"{at}.{key}", "must be a string or a list of strings")
                run[key] = shlex.split(v) if isinstance(v, str) else v  # Compose splits a string like a shell
        if "ports" in s:
            run["ports"] = [self._port(f"{at}.ports.{i}", p) for i, p in enumerate(self._list(at, s, "ports"))]
        tmpfs = [str(t) for t in ([s["tmpfs"]] if isinstance(s.get("tmpfs"), str) else self._list(at, s, "tmpfs"))]
        if "volumes" in s:
            vols = []
            for i, v in enumerate(self._list(at, s, "volumes")):
                spec = self._volume(f"{at}.volumes.{i}", v, volumes)
                if spec.startswith("tmpfs:"):
                    tmpfs.append(spec.removeprefix("tmpfs:"))
                else:
                    vols.append(spec)
            run["volumes"] = vols
        if "restart" in s:
            if not RESTARTS.match(str(s["restart"])):
                raise self.fail(f"{at}.restart", f"{s['restart']!r} is not no, always, unless-stopped or on-failure[:N]")
            run["restart"] = str(s["restart"])
        for key, name in (("user", "user"), ("working_dir", "workdir")):
            if key in s:
                run[name] = str(s[key])
        if "labels" in s:
            run["labels"] = self._mapping(f"{at}.labels", s["labels"])
        if "cap_add" in s:
            run["cap_add"] = [str(c) for c in self._list(at, s, "cap_add")]
        if "extra_hosts" in s:
            hosts = s["extra_hosts"]
            run["extra_hosts"] = ([f"{k}:{v}" for k, v in hosts.items()] if isinstance(hosts, dict)
                                  else [str(h).replace("=", ":", 1) for h in self._list(at, s, "extra_hosts")])
        if "stop_grace_period" in s:
            run["stop_timeout"] = int(duration(s["stop_grace_period"], f"{at}.stop_grace_period"))
        out: dict[str, Any] = {"image": image, "run": run, "depends_on": self._depends(at, s.get("depends_on")),
                               "networks": self._networks(at, s.get("networks"), networks)}
        if "healthcheck" in s:
            out["healthcheck"] = self._healthcheck(f"{at}.healthcheck", s["healthcheck"])
        if tmpfs:
            out["tmpfs"] = tmpfs
        if "ulimits" in s:
            out["ulimits"] = self._ulimits(f"{at}.ulimits", s["ulimits"])
        return out

    def _list(self, at: str, s: dict, key: str) -> list:
        v = s.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.fail(f"{at}.{key}", "must be a list")
        return v

    def _mapping(self, where: str, v: Any) -> dict[str, str]:
        """A Compose mapping or list of KEY=VALUE, as strings (a null value is refused: it would come
        from the builder's environment)."""
        if isinstance(v, list):
            pairs = []
            for item in v:
                key, sep, value = str(item).partition("=")
                if not sep:
                    raise self.fail(where, f"{key} has no value (Compose would take it from the shell running it)")
                pairs.append((key, value))
        elif isinstance(v, dict):
            pairs = list(v.items())
        else:
            raise self.fail(where, "must be a mapping or a list of KEY=VALUE")
        out = {}
        for key, value in pairs:
            if value is None:
                raise self.fail(where, f"{key} has no value (Compose would take it from the shell running it)")
            if isinstance(value, (bool, dict, list)):
                raise self.fail(f"{where}.{key}", "must be a string or a number")
            out[str(key)] = str(value)
        return out

    def _env(self, at: str, s: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        files = s.get("env_file")
        for i, f in enumerate([files] if isinstance(files, str) else (files or [])):
            path = f.get("path") if isinstance(f, dict) else f
            if not isinstance(path, str):
                raise self.fail(f"{at}.env_file.{i}", "must be a path")
            env.update(self._env_file(f"{at}.env_file.{i}", self.path.parent / path))
        if "environment" in s and s["environment"] is not None:
            env.update(self._mapping(f"{at}.environment", s["environment"]))
        return env

    def _env_file(self, where: str, path: Path) -> dict[str, str]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise self.fail(where, f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        out = {}
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.removeprefix("export ").partition("=")
            if not sep:
                raise self.fail(where, f"{path} line {n}: {key} has no value")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[key.strip()] = value
        return out

    def _port(self, where: str, p: Any) -> str:
        if isinstance(p, dict):
            self._refuse_unknown(p, frozenset({"target", "published", "host_ip", "protocol", "mode"}), where)
            if p.get("mode", "ingress") not in ("ingress", "host"):
                raise self.fail(f"{where}.mode", f"{p['mode']!r} is not supported")
            spec = str(p["target"]) if "target" in p else ""
            if p.get("published") is not None:
                spec = f"{p['published']}:{spec}"
                if p.get("host_ip"):
                    spec = f"{p['host_ip']}:{spec}"
            if p.get("protocol"):
                spec += f"/{p['protocol']}"
        else:
            spec = str(p)
        try:
            parse_port(spec)
        except ValueError as e:
            raise self.fail(where, f"{spec!r}: {e}") from None
        return spec

    def _volume(self, where: str, v: Any, declared: dict) -> str:
        """A volume in docker run's -v syntax (a named one scoped to the project, as Compose names
        it); a tmpfs mount as "tmpfs:TARGET"."""
        if isinstance(v, dict):
            self._refuse_unknown(v, frozenset({"type", "source", "target", "read_only"}), where)
            kind, source, target = v.get("type", "volume"), v.get("source"), v.get("target")
            if not isinstance(target, str):
                raise self.fail(where, "has no target")
            if kind == "tmpfs":
                return f"tmpfs:{target}"
            if kind not in ("volume", "bind"):
                raise self.fail(f"{where}.type", f"{kind!r} is not supported (volume, bind, tmpfs)")
            spec = f"{source}:{target}" if source else target
            if v.get("read_only"):
                spec += ":ro"
        else:
            spec = str(v)
        source, sep, rest = spec.partition(":")
        if sep and source.startswith((".", "~")):
            raise self.fail(where, f"{source} is relative to the build host; give an absolute path")
        try:
            parsed = parse_volume(spec)
        except ValueError as e:
            raise self.fail(where, f"{spec!r}: {e}") from None
        if parsed.kind.value == "named":
            if source not in declared:
                raise self.fail(where, f"volume {source} is not declared in the top-level volumes")
            return f"{self.project}_{source}:{rest}"
        return spec

    def _depends(self, at: str, d: Any) -> dict[str, str]:
        if d is None:
            return {}
        if isinstance(d, list):
            return {str(n): "service_started" for n in d}
        if not isinstance(d, dict):
            raise self.fail(f"{at}.depends_on", "must be a list or a mapping")
        out = {}
        for name, v in d.items():
            v = v or {}
            self._refuse_unknown(v, frozenset({"condition"}), f"{at}.depends_on.{name}")
            cond = v.get("condition", "service_started")
            if cond not in CONDITIONS:
                raise self.fail(f"{at}.depends_on.{name}.condition", f"{cond!r} is not one of {', '.join(CONDITIONS)}")
            out[str(name)] = cond
        return out

    def _networks(self, at: str, n: Any, declared: dict) -> dict[str, dict]:
        if n is None:
            return {"default": {}}
        names = {str(x): None for x in n} if isinstance(n, list) else n if isinstance(n, dict) else None
        if names is None:
            raise self.fail(f"{at}.networks", "must be a list or a mapping")
        out = {}
        for name, v in names.items():
            if name != "default" and name not in declared:
                raise self.fail(f"{at}.networks.{name}", "is not declared in the top-level networks")
            v = v or {}
            self._refuse_unknown(v, frozenset({"aliases"}), f"{at}.networks.{name}")
            out[name] = {"aliases": [str(a) for a in v["aliases"]]} if v.get("aliases") else {}
        return out

    def _healthcheck(self, where: str, h: Any) -> dict:
        if not isinstance(h, dict):
            raise self.fail(where, "must be a mapping")
        self._refuse_unknown(h, frozenset({"test", "interval", "timeout", "retries", "start_period", "disable"}), where)
        if h.get("disable"):
            return {"test": ["NONE"]}
        test = h.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        if not (isinstance(test, list) and test and all(isinstance(t, str) for t in test)
                and test[0] in ("CMD", "CMD-SHELL", "NONE")):
            raise self.fail(f"{where}.test", "must be a string or a list starting with CMD, CMD-SHELL or NONE")
        out: dict[str, Any] = {"test": test}
        for key in ("interval", "timeout", "start_period"):
            if key in h:
                out[key] = duration(h[key], f"{where}.{key}")
        if "retries" in h:
            if not isinstance(h["retries"], int) or h["retries"] < 0:
                raise self.fail(f"{where}.retries", "must be a whole number")
            out["retries"] = h["retries"]
        return out

    def _ulimits(self, where: str, u: Any) -> dict[str, dict[str, int]]:
        if not isinstance(u, dict):
            raise self.fail(where, "must be a mapping")
        out = {}
        for name, v in u.items():
            if isinstance(v, int):
                out[str(name)] = {"soft": v, "hard": v}
            elif isinstance(v, dict) and set(v) == {"soft", "hard"} and all(isinstance(x, int) for x in v.values()):
                out[str(name)] = {"soft": v["soft"], "hard": v["hard"]}
            else:
                raise self.fail(f"{where}.{name}", "must be a number or {soft, hard}")
        return out


def load_compose(spec_path: Path, target: dict, images: list[str]) -> dict:
    """`[target] kind = "compose"`: the project as the manifest signs it, from `file` (relative to bundle.toml)."""
    path = Path(spec_path).parent / target["file"]
    return ComposeFile(path, target["project"], images).load()
