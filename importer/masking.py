"""Which env values are secrets, and how one is shown: one rule for every output of the importer
(the plan, a settings conflict's refusal and so the audit log, the site settings' lines).

An env value is secret when its key is marked (set by the site file, or listed in the signed
`[target.run] secret_env`, now or when the running version was installed: a removed or changed
secret is still a secret) or its name says so
(case-insensitive: *PASSWORD*, *PASSWD*, *TOKEN*, *SECRET*, *KEY*). A secret is shown as MASK
whatever its length; an absent value is still shown as absent, so a removal is seen. Masking a
value that was not secret (KEYBOARD_LAYOUT) costs a look at the container; printing one that was
cannot be undone: on doubt, mask.
"""

from __future__ import annotations

from collections.abc import Collection

MASK = "***"
UNSET = "(unset)"
SECRET_WORDS = ("PASSWORD", "PASSWD", "TOKEN", "SECRET", "KEY")


def is_secret(name: str, marked: Collection[str] = frozenset()) -> bool:
    """True if the env value of `name` must never be printed (`marked`: the site file's keys and the
    bundle's `secret_env`)."""
    return name in marked or any(word in name.upper() for word in SECRET_WORDS)


def shown_env(name: str, value: str | None, marked: Collection[str] = frozenset()) -> str:
    """An env value as any output may print it."""
    if value is None:
        return UNSET
    return MASK if is_secret(name, marked) else value
