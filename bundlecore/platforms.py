"""Platform strings (os/arch[/variant]) and when two of them name the same platform.

One rule for both sides: `bundle build` picks images with it and the importer's gate compares
the bundle with its engine with it, so a bundle the builder accepts is never refused for a
platform spelling (Docker reports linux/arm64 images as linux/arm64/v8, or without a variant).
"""

from __future__ import annotations


def platforms_match(a: str, b: str) -> bool:
    """linux/arm64 matches linux/arm64/v8: the variant counts only when both name one."""
    pa, pb = a.split("/"), b.split("/")
    return pa[:2] == pb[:2] and (len(pa) < 3 or len(pb) < 3 or pa[2] == pb[2])
