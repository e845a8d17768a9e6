"""Three-way merge of an application's run settings on upgrade (pure: no engine, no disk), for a
container target and for each service of a compose project alike.

base   = the run settings the running version was installed with (recorded at install: the
         bundle's `[target.run]` with the site settings over it);
theirs = the new bundle's (with the site settings over it);
ours   = the running container, as the engine reports it, in the run-spec vocabulary.

Settings are compared one by one, each under a `Key` (`env GREETING`, `port 8080/tcp`, `volume
/data`, `cap_add SYS_ADMIN`, `label K`, `restart`, `command`, `network`):
- changed by the release only: the release's value is applied;
- changed on this host only: the host's value is kept;
- changed by both to the same value: that value;
- changed by both differently: a conflict, refused unless the operator prefers a side.
Absent is a value: a setting one side removed is a change like any other.

With no recorded base (a container adopted from outside, or installed before bases were
recorded), the running container is the base for every setting the release names, and a
setting it does not name is kept: a release cannot be said to remove what it never set. Mounts
are the exception: a mount no release set (the running one, with no base) that the release
would replace by another at the same container path is a conflict, since the app would come
back on other data.

The running container's mounts are read in every form the engine keeps them: `HostConfig.Binds`
(`-v`), `HostConfig.Mounts` (`--mount` of type bind, volume or tmpfs), `HostConfig.Tmpfs`
(`--tmpfs`) and anonymous volumes (`Config.Volumes`), each under `volume <container path>`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from enum import StrEnum

from bundlecore.runspec import VolumeKind, parse_port, parse_volume
from importer.masking import UNSET, shown_env

# Labels that mark this tool's own containers or the engine's tooling: never the admin's settings.
RESERVED_LABELS = ("io.bundle.", "com.docker.")


class Side(StrEnum):
    """Which side `--prefer` picks in a conflict."""

    BUNDLE = "bundle"
    LOCAL = "local"


class Kind(StrEnum):
    ENV = "env"
    LABEL = "label"
    PORT = "port"
    VOLUME = "volume"
    CAP_ADD = "cap_add"
    RESTART = "restart"
    COMMAND = "command"
    NETWORK = "network"


@dataclass(frozen=True, order=True)
class Key:
    kind: Kind
    name: str = ""  # the env/label key, the container port, the mount target, the capability

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if self.name else str(self.kind)


Settings = dict[Key, object]  # absent key = not set; values are str or tuples (hashable, comparable)


class Source(StrEnum):
    """Where a value the plan applies comes from: every plan line names it."""

    BUNDLE = "from the bundle"
    SITE = "from the site file"
    HOST = "set on this host"


class Applied(StrEnum):
    """Where a setting `bundle show` lists as applied came from (`source_of`)."""

    BUNDLE = "bundle"
    SITE = "site"
    HOST = "this host"


def source_of(key: "Key", value, recorded: dict, site_now: dict, site_env: frozenset[str]) -> Applied:
    """Where an applied setting came from (pure): the site file sets it to this value now, or it is an
    env key the site set when the running version was installed, unchanged since -> site; as
    recorded at install -> bundle; else it was changed on this host since -> this host."""
    if site_now.get(key) == value or (key.kind is Kind.ENV and key.name in site_env and recorded.get(key) == value):
        return Applied.SITE
    return Applied.BUNDLE if recorded.get(key) == value else Applied.HOST


class Origin(StrEnum):
    BUNDLE = "bundle"   # the release changed it and it is applied
    LOCAL = "local"     # this host changed it and it is kept
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Decision:
    """One setting whose value differs between the sides, and what the merge made of it."""

    key: Key
    base: object
    theirs: object
    ours: object
    origin: Origin
    result: object

    def line(self, masked: frozenset[str] = frozenset(), prefer: Side | None = None,
             site: frozenset[Key] = frozenset()) -> str:
        """The plan line: what happens to this setting and where the value comes from (`masked`: env
        keys marked secret; `site`: keys the site file sets now or set for the running version)."""
        show = lambda v: _show(self.key, v, masked)  # noqa: E731
        if self.origin is Origin.BUNDLE or (self.origin is Origin.CONFLICT and prefer is Side.BUNDLE):
            why = (Source.SITE if self.key in site else Source.BUNDLE) + (
                "; this host's change is overridden by --prefer bundle" if self.origin is Origin.CONFLICT else "")
            return f"{self.key}: {show(self.ours)} -> {show(self.theirs)} ({why})"
        why = Source.HOST + ("; the bundle's change is dropped by --prefer local"
                             if self.origin is Origin.CONFLICT else "")
        if self.ours is None:
            return f"{self.key} unset kept ({why})"
        return f"{_assigned(self.key, show(self.ours))} kept ({why})"

    def conflict(self, masked: frozenset[str] = frozenset()) -> str:
        show = lambda v: _show(self.key, v, masked)  # noqa: E731
        return (f"{self.key} was changed on this host ({show(self.base)} -> {show(self.ours)}) and by the bundle "
                f"({show(self.base)} -> {show(self.theirs)})")


@dataclass
class MergeResult:
    merged: Settings
    decisions: list[Decision] = field(default_factory=list)

    @property
    def conflicts(self) -> list[Decision]:
        return [d for d in self.decisions if d.origin is Origin.CONFLICT]

    def changes(self, ours: Settings) -> dict[Key, object]:
        """The settings the new container must get differently from the running one (None = remove)."""
        return {k: self.merged.get(k) for k in sorted(set(self.merged) | set(ours)) if self.merged.get(k) != ours.get(k)}


def merge(base: Settings | None, theirs: Settings, ours: Settings, prefer: Side | None = None) -> MergeResult:
    """The three-way merge of the module docstring; conflicts are decided by `prefer` when given."""
    if base is None:
        base = {k: v for k, v in ours.items() if k in theirs and k.kind is not Kind.VOLUME}
    out = MergeResult({})
    for key in sorted(set(base) | set(theirs) | set(ours)):
        b, t, o = base.get(key), theirs.get(key), ours.get(key)
        if o == b or t == o:
            result, origin = t, (Origin.BUNDLE if t != o else None)
        elif t == b:
            result, origin = o, Origin.LOCAL
        else:
            origin = Origin.CONFLICT
            result = t if prefer is Side.BUNDLE else o
        if result is not None:
            out.merged[key] = result
        if origin is not None:
            out.decisions.append(Decision(key, b, t, o, origin, result))
    return out


def run_with(run: dict, theirs: Settings, merged: Settings) -> dict:
    """The run-spec object `run` (whose settings are `theirs`) with what the merge decided otherwise
    (`merged`: a value this host kept) in its place. Every setting the merge left as the release
    has it keeps its place and spelling, so a merge that kept nothing returns `run` itself."""
    if merged == theirs:
        return run
    out = dict(run)
    changed = {k for k in set(theirs) | set(merged) if theirs.get(k) != merged.get(k)}
    for kind, field_ in ((Kind.ENV, "env"), (Kind.LABEL, "labels")):
        if any(k.kind is kind for k in changed):
            out[field_] = {k.name: v for k, v in sorted(merged.items()) if k.kind is kind}
    for kind, field_, key_of in ((Kind.PORT, "ports", lambda p: parse_port(p).key),
                                 (Kind.VOLUME, "volumes", lambda v: parse_volume(v).target)):
        if any(k.kind is kind for k in changed):
            kept = [x for x in run.get(field_) or [] if Key(kind, key_of(x)) not in changed]
            added = [str(v) for k in sorted(changed) if k.kind is kind and merged.get(k) is not None
                     for v in _values(merged[k])]
            out[field_] = kept + added
    if any(k.kind is Kind.CAP_ADD for k in changed):
        out["cap_add"] = [k.name for k in sorted(merged) if k.kind is Kind.CAP_ADD]
    for kind, field_ in ((Kind.RESTART, "restart"), (Kind.COMMAND, "command"), (Kind.NETWORK, "network")):
        if Key(kind) in changed:
            value = merged.get(Key(kind))
            out[field_] = list(value) if isinstance(value, tuple) else value
    return {k: v for k, v in out.items() if v not in (None, [], {})}


def _values(value: object) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def site_keys(signed: dict | None, run: dict | None) -> frozenset[Key]:
    """The settings a site file decides: those whose value differs between the signed run settings
    and the same with the site file over them (importer.site)."""
    a, b = settings_of_run(signed), settings_of_run(run)
    return frozenset(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def keys_from_json(items) -> frozenset[Key]:
    """Keys as a generation records them ([kind, name] pairs)."""
    return frozenset(Key(Kind(kind), name) for kind, name in items or ())


def keys_to_json(keys) -> list[list[str]]:
    return [[str(k.kind), k.name] for k in sorted(keys)]


# -- the run-spec vocabulary -------------------------------------------------------------

def port_text(ip: str, host: str, cport_key: str) -> str:
    """One published port in the run spec's syntax (`[ip:][hostport:]containerport[/proto]`)."""
    cport, proto = cport_key.split("/")
    text = f"{ip}:{host}:{cport}" if ip else (f"{host}:{cport}" if host else cport)
    return text + ("" if proto == "tcp" else f"/{proto}")


def volume_text(spec: str) -> str:
    """A volume spec in one form: `rw` (the default) dropped, an engine-named anonymous volume
    (64 hex digits, how a recreated container keeps its anonymous volumes) written as anonymous."""
    v = parse_volume(spec)
    mode = "" if v.mode == "rw" else v.mode
    if v.kind is VolumeKind.ANONYMOUS or _engine_named(v.source):
        return v.target + (f":{mode}" if mode else "")
    return f"{v.source}:{v.target}" + (f":{mode}" if mode else "")


def tmpfs_text(target: str) -> str:
    """A tmpfs mount (`--tmpfs`, `--mount type=tmpfs`): no run-spec volume reads like it."""
    return f"tmpfs {target}"


def mount_text(m: dict) -> str:
    """One `HostConfig.Mounts` entry (`--mount`) in the run-spec vocabulary, like a `-v` one."""
    kind, target = m.get("Type", "volume"), m["Target"]
    mode = ":ro" if m.get("ReadOnly") else ""
    if kind == "tmpfs":
        return tmpfs_text(target)
    if kind in ("bind", "volume"):
        return volume_text(f"{m['Source']}:{target}{mode}" if m.get("Source") else f"{target}{mode}")
    return f"{kind} {m.get('Source') or ''}:{target}"


def _engine_named(source: str | None) -> bool:
    return source is not None and len(source) == 64 and all(c in "0123456789abcdef" for c in source)


def _restart(value) -> str | None:
    return None if value in (None, "", "no") else str(value)


def _network(value) -> str | None:
    return None if value in (None, "", "default", "bridge") else str(value)


def settings_of_run(run: dict | None) -> Settings:
    """A run-spec object (`[target.run]`) as settings."""
    run = run or {}
    out: Settings = {}
    for k, v in (run.get("env") or {}).items():
        out[Key(Kind.ENV, k)] = str(v)
    for k, v in (run.get("labels") or {}).items():
        out[Key(Kind.LABEL, k)] = str(v)
    ports: dict[str, list[str]] = {}
    for p in map(parse_port, run.get("ports") or []):
        ports.setdefault(p.key, []).append(port_text(p.host_ip, p.host_port, p.key))
    for k, texts in ports.items():
        out[Key(Kind.PORT, k)] = tuple(sorted(texts))
    for spec in run.get("volumes") or []:
        out[Key(Kind.VOLUME, parse_volume(spec).target)] = volume_text(spec)
    for cap in run.get("cap_add") or []:
        out[Key(Kind.CAP_ADD, cap.upper().removeprefix("CAP_"))] = "added"
    if _restart(run.get("restart")):
        out[Key(Kind.RESTART)] = _restart(run["restart"])
    cmd = run.get("command")
    if cmd:
        out[Key(Kind.COMMAND)] = tuple(shlex.split(cmd) if isinstance(cmd, str) else cmd)
    if _network(run.get("network")):
        out[Key(Kind.NETWORK)] = _network(run["network"])
    return out


def settings_of_container(info: dict, image: dict, named: frozenset[Key] | set[Key] = frozenset()) -> Settings:
    """The running container (`docker inspect`) as settings. An env var or label equal to the
    image's default is the image's, not a setting, unless `named` (the base) sets it."""
    config, host = info.get("Config") or {}, info.get("HostConfig") or {}
    img = image.get("Config") or {}
    out: Settings = {}
    image_env = set(img.get("Env") or [])
    for entry in config.get("Env") or []:
        k, _, v = entry.partition("=")
        if entry not in image_env or Key(Kind.ENV, k) in named:
            out[Key(Kind.ENV, k)] = v
    image_labels = img.get("Labels") or {}
    for k, v in (config.get("Labels") or {}).items():
        if k.startswith(RESERVED_LABELS):
            continue
        if image_labels.get(k) != v or Key(Kind.LABEL, k) in named:
            out[Key(Kind.LABEL, k)] = v
    for key, bindings in (host.get("PortBindings") or {}).items():
        texts = [port_text(b.get("HostIp") or "", b.get("HostPort") or "", key) for b in bindings or [{}]]
        out[Key(Kind.PORT, key)] = tuple(sorted(texts))
    image_volumes = set(img.get("Volumes") or {})
    mounts = [(parse_volume(spec).target, volume_text(spec)) for spec in host.get("Binds") or []]
    mounts += [(m["Target"], mount_text(m)) for m in host.get("Mounts") or [] if m.get("Target")]
    mounts += [(target, tmpfs_text(target)) for target in host.get("Tmpfs") or {}]
    for target, text in mounts:
        if text.startswith("/") and target in image_volumes:
            continue  # the image's own VOLUME, carried over by a previous swap
        out[Key(Kind.VOLUME, target)] = text
    for target in config.get("Volumes") or {}:
        if target not in image_volumes and Key(Kind.VOLUME, target) not in out:
            out[Key(Kind.VOLUME, target)] = target
    for cap in host.get("CapAdd") or []:
        out[Key(Kind.CAP_ADD, cap.upper().removeprefix("CAP_"))] = "added"
    policy = host.get("RestartPolicy") or {}
    restart = _restart(policy.get("Name"))
    if restart:
        count = policy.get("MaximumRetryCount") or 0
        out[Key(Kind.RESTART)] = f"{restart}:{count}" if restart == "on-failure" and count else restart
    if config.get("Cmd") and (config.get("Cmd") != img.get("Cmd") or Key(Kind.COMMAND) in named):
        out[Key(Kind.COMMAND)] = tuple(config["Cmd"])
    if _network(host.get("NetworkMode")):
        out[Key(Kind.NETWORK)] = _network(host["NetworkMode"])
    return out


def shown(key: Key, value, masked: frozenset[str]) -> str:
    """A value as a plan line, a refusal or `bundle show` prints it: env values through importer.masking."""
    return _show(key, value, masked)


def _show(key: Key, value, masked: frozenset[str]) -> str:
    """A value as a plan line or a refusal prints it: env values through importer.masking."""
    if key.kind is Kind.ENV:
        return shown_env(key.name, None if value is None else str(value), masked)
    if value is None:
        return UNSET
    if isinstance(value, tuple):
        return shlex.join(value) if key.kind is Kind.COMMAND else ", ".join(value)
    return str(value)


def _assigned(key: Key, shown: str) -> str:
    """`env EXTRA=1` for keyed values, `restart always` for the others."""
    return f"{key}={shown}" if key.kind in (Kind.ENV, Kind.LABEL) else f"{key} {shown}"
