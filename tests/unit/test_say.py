"""Every human line a command prints goes through one escaping writer."""

import pathlib

from bundlecore.text import say

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_say_escapes_control_characters_but_keeps_line_breaks(capsys):
    say("mount /:/h\r  demo-data:/data\nsecond line\x1b[31m")
    assert capsys.readouterr().out == "mount /:/h\\x0d  demo-data:/data\nsecond line\\x1b[31m\n"


def test_no_command_module_prints_raw_text():
    """click.echo is for JSON documents only (json.dumps escapes); everything else uses say()."""
    for path in list((REPO / "importer").glob("cmd_*.py")) + list((REPO / "bundler").glob("cmd_*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "click.echo(" in line:
                assert "json.dumps" in line, f"{path.name}:{n} prints without escaping: {line.strip()}"
