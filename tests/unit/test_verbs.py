"""The everyday verbs' pure parts: -y wherever --yes is, the plan as --json carries it, the
names completion reads from removed/, and a usage error pointing to the command's own help."""

from __future__ import annotations

from types import SimpleNamespace

import click
import pytest

from bundlecli.main import cli, help_of
from bundlecli.registry import COMMANDS
from bundlecore.schema import cli_schema_name, first_error
from importer.kinds import plan_json
from importer.options import REMOVED_DIR


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_verb_that_asks_takes_y_as_well_as_yes(verb):
    root = click.Context(cli, info_name="bundle")
    cmd = cli.get_command(root, verb)
    for param in cmd.params:
        if "--yes" in getattr(param, "opts", []):
            assert "-y" in param.opts, verb


class Plan:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def lines(self):
        return ["roll back shop: 2.0.0 -> 1.0.0", "  env DB_PASSWORD: *** -> (unset)"]


def test_a_rollback_plan_as_json_says_what_it_puts_back():
    plan = Plan(kind="rollback", key="shop", name="shop-c", old=SimpleNamespace(version="2.0.0"), new_version=None,
                rollback_to={"generation": 3, "version": "1.0.0"}, warnings=["w"])
    doc = plan_json(plan)
    assert doc == {"action": "rollback", "app": "shop", "version_from": "2.0.0", "version_to": "1.0.0",
                   "generation_to": 3, "warnings": ["w"], "lines": plan.lines()}
    envelope = {"command": "rollback", "ok": True, "exit_code": 0, "name": "shop", "version": "1.0.0",
                "generation": 3, "dry_run": True, "plan": doc}
    assert first_error(cli_schema_name("rollback"), envelope) is None


def test_an_install_plan_has_no_version_from_and_carries_every_line_shown():
    plan = Plan(kind="install", key=None, name="shop", old=None, new_version="1.0.0", warnings=[])
    doc = plan_json(plan, ["install shop", "site settings x (over the bundle's):"])
    assert (doc["app"], doc["version_from"], doc["version_to"], doc["generation_to"]) == ("shop", None, "1.0.0", None)
    assert doc["lines"] == ["install shop", "site settings x (over the bundle's):"]


@pytest.mark.parametrize("dirname, app", [("shop-20261206T101010Z-abcd1234", "shop"),
                                          ("my-app-2-20261206T101010Z-0000ffff", "my-app-2"),
                                          ("shop-20261206T101010Z", "shop"), ("shop", None), ("shop-backup", None)])
def test_the_app_of_an_uninstalls_directory(dirname, app):
    m = REMOVED_DIR.match(dirname)
    assert (m["app"] if m else None) == app


def test_a_usage_error_points_to_the_help_of_its_command():
    root = click.Context(cli, info_name="bundle")
    sub = click.Context(cli.get_command(root, "import"), info_name="import", parent=root)
    assert help_of(click.UsageError("x", sub)) == "bundle import --help"
    assert help_of(click.UsageError("x", root)) == "bundle --help"
    assert help_of(click.UsageError("x")) == "bundle --help"


def test_where_an_applied_setting_came_from():
    from importer.merge import Applied as Source
    from importer.merge import source_of
    from importer.merge import Key, Kind
    env, restart = Key(Kind.ENV, "DB_PASSWORD"), Key(Kind.RESTART)
    recorded = {env: "old", restart: "unless-stopped", Key(Kind.ENV, "GREETING"): "hi"}
    assert source_of(env, "new", recorded, {env: "new"}, frozenset()) is Source.SITE          # the site file now
    assert source_of(env, "old", recorded, {}, frozenset({"DB_PASSWORD"})) is Source.SITE     # the site then, unchanged
    assert source_of(env, "edited", recorded, {}, frozenset({"DB_PASSWORD"})) is Source.HOST  # changed by hand since
    assert source_of(Key(Kind.ENV, "GREETING"), "hi", recorded, {}, frozenset()) is Source.BUNDLE
    assert source_of(restart, "always", recorded, {}, frozenset()) is Source.HOST
    assert source_of(Key(Kind.LABEL, "x"), "1", {}, {}, frozenset()) is Source.HOST          # never recorded: adopted
