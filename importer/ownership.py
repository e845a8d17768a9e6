"""Scope of a signature on this host: which container a bundle may take over, which tags it may move.

A key trusted to sign app `evil` is not trusted to replace container `victimdb` or retag
`victim/db:15`. Before anything is loaded, for the signed manifest:

- the target container must not exist yet, or be the one this tool installed for this same app:
  container X is owned by app A iff A's installed record names X as its `container` and X's live
  ID as its `container_id` (the record is written at the swap's commit, so a swap finished by
  `bundle recover` is owned too); anything else is refused (check `ownership`) unless the
  operator passes --adopt, and the plan says what is adopted;
- `docker load` silently moves an existing tag: every signed ref already in the engine on another
  image is a tag move; it is refused (check `tags`) unless this app loaded that ref before (its
  installed record lists it) or the operator passes --adopt; every move is in the plan.

Only the installed records (importer.state) and the engine's inspect calls are read, not the
swap's internals. The tags a push to the registry writes are judged by importer.pushes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from bundlecore.refusals import OwnershipRefused, TagMoveRefused
from bundlecore.release import Release
from importer.state import StateDir


@dataclass(frozen=True)
class TagMove:
    ref: str
    old_id: str
    new_id: str
    owned: bool          # this app loaded the ref before

    def line(self) -> str:
        return f"move tag {self.ref} from {self.old_id[:19]}… to {self.new_id[:19]}…"


@dataclass
class OwnershipReview:
    """What the bundle takes over on this engine; `plan_lines()` is shown before confirmation."""

    app: str
    container: str
    adopt: str | None = None                            # why the target container is adopted, if it is
    tag_moves: list[TagMove] = field(default_factory=list)

    def plan_lines(self) -> list[str]:
        lines = [f"adopt container {self.container}, {self.adopt}"] if self.adopt else []
        return lines + [m.line() + ("" if m.owned else " (adopted)") for m in self.tag_moves]


def review(client, state: StateDir, release: Release, *, adopt: bool = False) -> OwnershipReview:
    """Refuse (exit 3) what the bundle would take over without owning it, unless `adopt`."""
    app, container = release.app, release.target.name
    result = OwnershipReview(app, container)
    owner = state.app_of_container(container)
    live = client.container(container)
    if live is not None and live["Name"].lstrip("/") == container:
        result.adopt = _not_owned(app, owner, state.installed(owner) if owner else None, live["Id"])
        if result.adopt and not adopt:
            raise OwnershipRefused(f"container {container} exists and is {result.adopt}: a bundle of app {app} "
                                   f"may not take it over (--adopt overrides)")
    owned_refs = set((state.installed(app) or {}).get("images") or {})
    for img in release.images:
        current = client.image(img.ref)
        if current is None or current["Id"] == img.id:
            continue
        move = TagMove(img.ref, current["Id"], img.id, img.ref in owned_refs)
        if not move.owned and not adopt:
            raise TagMoveRefused(f"{move.ref} already names {move.old_id[:19]}…, which app {app} did not load; "
                                 f"loading would move it to {move.new_id[:19]}… (--adopt overrides)")
        result.tag_moves.append(move)
    return result


def _not_owned(app: str, owner: str | None, record: dict | None, live_id: str) -> str | None:
    """Why the live container is not this app's to replace, or None when it is."""
    if not record or record.get("container_id") != live_id:
        return "not installed by bundle"
    if owner != app:
        return f"installed by bundle for app {owner}"
    return None

