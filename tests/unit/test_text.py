"""Signed and engine text shown to a person: control and look-alike tricks are escaped or refused."""

import pytest

from bundlecore.text import first_unprintable, printable


@pytest.mark.parametrize("raw, shown", [
    ("demo-data:/data", "demo-data:/data"),
    ("/:/h\r  mount demo-data:/data", "/:/h\\x0d  mount demo-data:/data"),
    ("\x1b[2Jcleared", "\\x1b[2Jcleared"),
    ("abc\u202egpj.exe", "abc\\u202egpj.exe"),          # right-to-left override
    ("zero\u200bwidth", "zero\\u200bwidth"),            # zero-width space
    ("nbsp\u00a0here", "nbsp\\xa0here"),                # looks like a space, is not one
    ("line\u2028sep", "line\\u2028sep"),
    ("c1\x9bcontrol", "c1\\x9bcontrol"),
    ("private\ue000use", "private\\ue000use"),
    ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),   # printable non-ASCII stays readable
])
def test_printable_escapes_what_a_terminal_would_interpret(raw, shown):
    assert printable(raw) == shown


@pytest.mark.parametrize("obj, where", [
    ({"target": {"run": {"volumes": ["a:/a", "/:/h\r"]}}}, "target.run.volumes.1"),
    ({"target": {"run": {"env": {"K\x00": "v"}}}}, "target.run.env.K\x00"),
    ({"name": "demo", "images": [{"ref": "x\u202e"}]}, "images.0.ref"),
    ("\t", "top level"),
])
def test_first_unprintable_names_where_the_bad_character_is(obj, where):
    assert first_unprintable(obj) == where


def test_clean_manifest_like_object_has_nothing_unprintable():
    assert first_unprintable({"name": "demo", "n": 1, "ok": True, "none": None,
                              "run": {"ports": ["127.0.0.1:1:2"], "env": {"A": "b c"}}}) is None
