"""How a version and a kept generation are shown to people, by every kind (one rule, one place):
an adopted generation has no version recorded, and no output ever says "None" for it."""

from __future__ import annotations


def shown_version(version: str | None, image_ref: str | None = None) -> str:
    """A generation's version as shown to people: an adopted one has none recorded (never "None")."""
    if version:
        return version
    return f"{image_ref or 'an unknown image'} (no version recorded)"


def version_change(old: str | None, old_ref: str | None, new: str | None, new_ref: str | None) -> str:
    """"2.0.0 -> 1.2.0"; the same kind of words on both sides: images too when a version is missing."""
    if old and new:
        return f"{old} -> {new}"

    def side(v: str | None, ref: str | None) -> str:
        return f"{v} ({ref})" if v and ref else shown_version(v, ref)
    return f"{side(old, old_ref)} -> {side(new, new_ref)}"


def previous_line(p: dict) -> str:
    """`bundle status`'s line for a kept generation (a container's or a Compose project's)."""
    return (f"  previous: generation {p.get('generation')} {shown_version(p.get('version'), p.get('image_ref'))} "
            f"as {p.get('parked_name')}, data backup {p.get('backup_dir')} (replaced {p.get('displaced_at')})")
