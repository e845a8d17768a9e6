"""Text that came from a bundle or from the engine, made safe to show and to accept.

A signed string is still the builder's string: a carriage return, an ANSI escape or a
right-to-left override in it can make a terminal show a harmless mount line for `/:/h`. So
nothing from signed or engine data is printed raw (`printable`), and the manifest may not carry
such characters at all (`first_unprintable`, applied by the verifier and by `bundle build`).
"""

from __future__ import annotations

from typing import Any, Iterable


def _is_safe(ch: str) -> bool:
    return ch == " " or ch.isprintable()


def printable(text: object) -> str:
    """`text` with every control or non-printing character (C0/C1 controls, format characters
    such as bidi overrides and zero-width joiners, line/paragraph separators, unassigned and
    private-use code points) shown as a Python-style escape; printable text unchanged."""
    s = str(text)
    if all(_is_safe(ch) for ch in s):
        return s
    out = []
    for ch in s:
        if _is_safe(ch):
            out.append(ch)
        else:
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
    return "".join(out)


def printable_lines(text: object) -> str:
    """Like `printable`, but keeps line breaks: for multi-line output assembled by this program."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def first_unprintable(obj: object, where: str = "") -> str | None:
    """The location (`target.run.volumes.0`) of the first string or key in a JSON-like object
    holding a character `printable` would escape; None when there is none."""
    if isinstance(obj, str):
        return None if all(_is_safe(ch) for ch in obj) else (where or "top level")
    if isinstance(obj, dict):
        for key, value in obj.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and not all(_is_safe(ch) for ch in key):
                return here
            found = first_unprintable(value, here)
            if found:
                return found
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found = first_unprintable(value, f"{where}.{i}" if where else str(i))
            if found:
                return found
    return None


def say(line: object = "", err: bool = False) -> None:
    """Print one line of human output, escaped: every command prints through here (JSON output
    goes through json.dumps, which escapes on its own)."""
    import click

    click.echo(printable_lines(line), err=err)


def emit(document: dict[str, Any], as_json: bool, lines: Iterable[str] = ()) -> None:
    """A command's result: its JSON document on stdout with --json, else its human lines."""
    if as_json:
        import json

        import click

        click.echo(json.dumps(document, indent=2, default=str))
        return
    for line in lines:
        say(line)
