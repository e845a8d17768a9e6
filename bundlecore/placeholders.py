"""The placeholders of a signed analysis query (`[target.health] prometheus.query`), one rule for
both sides: the bundler refuses a query that misuses them, the importer fills them in.

A query may name the release it judges through these, each only INSIDE a double-quoted PromQL
string (a label matcher's value), never as bare PromQL:

  {{app}}             the bundle's app name                       (for `="..."`)
  {{version}}         the release's version                       (for `="..."`)
  {{services}}        every service of the release, a regex       (for `=~"..."`)
  {{stage_services}}  the services of the stage being analysed, a regex; with their canaries
                      on a canary step                            (for `=~"..."`)

A value is escaped for the string it lands in (backslash and quote), and a regex value's names
are regex-escaped first, so no value can end the string or widen the match: the query's
PromQL is the signed text and nothing else. The container kind knows `{{app}}` and `{{version}}`.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

PLACEHOLDERS = ("app", "version", "services", "stage_services")
_REF = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_REGEX_META = re.compile(r"([\\.^$|?*+()\[\]{}])")


def problems(query: str) -> list[str]:
    """What is wrong with the placeholders of `query` (empty: fine): an unknown name, or one
    outside a double-quoted string."""
    out = []
    quoted = _quoted_spans(query)
    for m in _REF.finditer(query):
        if m.group(1) not in PLACEHOLDERS:
            out.append(f"unknown placeholder {m.group(0)} (known: "
                       + ", ".join("{{" + p + "}}" for p in PLACEHOLDERS) + ")")
        elif not any(a <= m.start() and m.end() <= b for a, b in quoted):
            out.append(f"placeholder {m.group(0)} outside a double-quoted string")
    return out


def _quoted_spans(query: str) -> list[tuple[int, int]]:
    """The (start, end) of the inside of every "..." string of a PromQL query (backslash escapes)."""
    spans, i, start = [], 0, None
    while i < len(query):
        c = query[i]
        if start is None:
            if c == '"':
                start = i + 1
        elif c == "\\":
            i += 1
        elif c == '"':
            spans.append((start, i))
            start = None
        i += 1
    return spans


def literal(value: str) -> str:
    """`value` as it may stand inside a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def alternation(names: Iterable[str]) -> str:
    """A regex matching exactly `names` (each regex-escaped), as it may stand inside a string."""
    return literal("|".join(_REGEX_META.sub(r"\\\1", n) for n in names))


def substitute(query: str, values: Mapping[str, str]) -> str:
    """`query` with each placeholder replaced by its (already escaped) value; a placeholder
    without a value is left as written (the query then fails to evaluate, naming it)."""
    return _REF.sub(lambda m: values.get(m.group(1), m.group(0)), query)


def values_of(app: str | None, version: str | None, services: Iterable[str] = (),
              stage_services: Iterable[str] = ()) -> dict[str, str]:
    """The escaped values of the placeholders for one analysis."""
    out = {"app": literal(app or ""), "version": literal(version or "")}
    services = list(services)
    if services:
        out["services"] = alternation(services)
        out["stage_services"] = alternation(list(stage_services) or services)
    return out
