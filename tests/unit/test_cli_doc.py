"""docs/cli.md is generated from the code: it must be current, and what it is generated from must
cover every command (options with --json, an exit-code declaration, a schema)."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import jsonschema
import pytest

from bundlecli.registry import COMMANDS, EXIT_CODES, NO_JSON
from bundlecore.errors import MEANINGS
from bundlecore.schema import cli_schema_name, load

REPO = Path(__file__).resolve().parents[2]


def command(verb):
    module, func = COMMANDS[verb][0].split(":")
    return getattr(importlib.import_module(module), func)


def test_docs_cli_md_is_what_the_code_says_now():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-cli-doc.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_readme_links_the_cli_reference():
    assert "(docs/cli.md)" in (REPO / "README.md").read_text()


def test_every_command_declares_its_exit_codes_and_each_code_has_a_meaning():
    assert set(EXIT_CODES) == set(COMMANDS)
    for verb, codes in EXIT_CODES.items():
        assert codes[0] == 0 and 2 in codes, verb  # done, and click's usage errors
        assert set(codes) <= set(MEANINGS), verb


@pytest.mark.parametrize("verb", sorted(set(COMMANDS) - NO_JSON))
def test_every_command_but_help_takes_json_and_has_a_valid_schema_of_its_own(verb):
    assert "as_json" in {p.name for p in command(verb).params if isinstance(p, click.Option)}
    schema = load(cli_schema_name(verb))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"/cli/{verb}.schema.json")
    success, failure = schema["anyOf"]
    assert success["allOf"][1]["properties"]["command"] == {"const": verb}
    assert failure["allOf"][1]["properties"]["command"] == {"const": verb}


def test_help_is_the_one_exemption_and_it_is_explained():
    assert NO_JSON == {"help"}
    assert "`help` is exempt" in (REPO / "docs" / "cli.md").read_text()
    assert not (REPO / "schemas" / "cli" / "help.schema.json").exists()


def test_no_schema_of_a_command_that_does_not_exist():
    names = {p.name.split(".")[0] for p in (REPO / "schemas" / "cli").glob("*.schema.json")}
    assert names == (set(COMMANDS) - NO_JSON) | {"common"}
    for p in (REPO / "schemas" / "cli").glob("*.json"):
        json.loads(p.read_text())
