"""What an import will push to the intranet registry, decided before anything is loaded.

The registry is shared by every app, so a push is judged like a tag move (importer.ownership):

- the registry must be granted by the host policy (`registries`, importer.hostpolicy), whoever
  named it (`[target] registry` or `--registry`);
- the signers' repository scope (bundlecore.trust) is checked on the destination each image is
  really pushed to (bundlecore.registrypath: the host stripped), not on the ref as written;
- a destination tag that the registry serves for another image (its config digest is not the
  image's ID), or that the engine's local tag of that name gives to another image, may be
  overwritten only by the app that pushed it: `registry-tags.json` in the state dir records, per
  `HOST:PORT/path:tag`, the app that pushed it (claimed before the push, its digest added after).
  A tag another app pushed is refused (check `tags`, naming the app); a tag no app of this state
  dir pushed (pushed by hand, or from another host) is refused unless the operator passes
  --adopt, and then it becomes this app's;
- every push is in the confirmed plan and in `--json`'s `pushes`: source image, destination
  repository, tag, and what it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from bundlecore.fsutil import atomic_write_json
from bundlecore.refusals import TagMoveRefused
from bundlecore.registrypath import PushDestination, push_destination
from bundlecore.release import Release
from bundlecore.trust import Signer, TrustStore
from importer.hostpolicy import HostAccess, HostPolicy
from importer.registry import PushedImage, RegistryLogin, registry_manifest
from importer.state import StateDir

RECORD = "registry-tags.json"


@dataclass(frozen=True)
class PlannedPush:
    """One push as the operator confirms it."""

    dest: PushDestination
    image_id: str
    exists: bool = False          # the registry or the engine already has the destination tag
    replaces: str | None = None   # what it overwrites: the manifest digest served (else the local tag's image ID)
    owner: str | None = None      # the app that pushed the tag before (this state dir's record)
    takes: bool = True            # the tag is this app's after the push

    def line(self) -> str:
        if self.replaces is not None:
            how = f"over {self.replaces[:19]}…, " + (f"pushed by app {self.owner}" if self.owner else "adopted")
        else:
            how = "already this image" if self.exists else "new tag"
        return f"push {self.dest.source} ({self.image_id[:19]}…) to {self.dest.repository} tag {self.dest.tag} ({how})"

    def report(self) -> dict:
        return {"source": self.dest.source, "image_id": self.image_id, "repository": self.dest.repository,
                "tag": self.dest.tag, "replaces": self.replaces, "owner": self.owner}


@dataclass(frozen=True)
class PushPlan:
    registry: str
    pushes: tuple[PlannedPush, ...]

    def plan_lines(self) -> list[str]:
        return [p.line() for p in self.pushes]


def destinations(registry: str, release: Release) -> list[PushDestination]:
    return [push_destination(registry, i.ref) for i in release.images]


def check_grants(policy: HostPolicy, store: TrustStore, release: Release, registry: str, where: str) -> HostAccess:
    """The host policy's grant of `registry`, then the signers' scope on what lands there (exit 3)."""
    access = policy.check_registry(release.app, registry, where)
    store.check_scope([Signer(s.fingerprint, list(s.roles)) for s in release.signers], release.app,
                      [i.ref for i in release.images], destinations(registry, release))
    return access


def review(client, state: StateDir, release: Release, login: RegistryLogin, *, adopt: bool = False) -> PushPlan:
    """Every push of the release, refusing (exit 3) an overwrite of a tag this app does not own."""
    owners = tagged_by(state)
    pushes = []
    for image, dest in zip(release.images, destinations(login.registry, release), strict=True):
        served = registry_manifest(login, dest.path, dest.tag)
        local = client.image(dest.ref)
        replaces = (served[0] if served and served[1] != image.id
                    else local["Id"] if local and local["Id"] != image.id else None)
        owner = owners.get(dest.key)
        exists = served is not None or local is not None
        push = PlannedPush(dest, image.id, exists, replaces, owner, takes=owner in (None, release.app) or not exists)
        if replaces is not None and owner != release.app:
            where = (f"registry tag {dest.ref} holds {replaces[:19]}…" if served and served[0] == replaces
                     else f"the engine's tag {dest.ref} names {replaces[:19]}…")
            if owner is not None:
                raise TagMoveRefused(f"{where}, pushed by app {owner}: app {release.app} may not push "
                                     f"{dest.source} over it")
            if not adopt:
                raise TagMoveRefused(f"{where}, which no app pushed from this host: app {release.app} may not push "
                                     f"{dest.source} over it (--adopt overrides)")
        pushes.append(push)
    return PushPlan(login.registry, tuple(pushes))


def tagged_by(state: StateDir) -> dict[str, str]:
    """`HOST:PORT/path:tag` (PushDestination.key) -> the app that pushed it, from this state dir's record."""
    tags = (state.read_json(state.root / RECORD) or {}).get("tags") or {}
    return {ref: t["app"] for ref, t in tags.items() if isinstance(t, dict) and isinstance(t.get("app"), str)}


def claim(state: StateDir, app: str, plan: PushPlan) -> None:
    """Before the push (journal before acting): the tags this import writes become `app`'s, except
    another app's tag that already holds this very image (nothing of it is overwritten)."""
    _update(state, {p.dest.key: {"app": app, "image_id": p.image_id, "digest": None} for p in plan.pushes if p.takes})


def record(state: StateDir, app: str, plan: PushPlan, pushed: tuple[PushedImage, ...]) -> None:
    """After the push (in the plan's order): the digest each tag of `app` now serves."""
    _update(state, {p.dest.key: {"app": app, "digest": done.digest}
                    for p, done in zip(plan.pushes, pushed, strict=True) if p.takes})


def _update(state: StateDir, entries: dict[str, dict]) -> None:
    if not entries:
        return
    doc = state.read_json(state.root / RECORD) or {}
    tags = dict(doc.get("tags") or {})
    for ref, entry in entries.items():
        before = tags.get(ref)
        tags[ref] = {**(before if isinstance(before, dict) else {}), **entry}
    state.ensure()
    atomic_write_json(state.root / RECORD, {"tags": tags})
