"""Secrets are never printed (importer.masking): which env values are secret, and every line that
prints an env value (the upgrade plan, a settings conflict's refusal, the site settings) masks them,
also a site secret the site file changed or removed since the running version was installed."""

from __future__ import annotations

import json

import pytest

from bundlecore.refusals import SettingsConflict
from bundlecore.release import ContainerTarget, RunSettings
from importer.merge import Key, Kind, merge
from importer.kinds.container.plan import CurrentContainer, PlanKind, SwapPlan, _merge_settings
from importer.masking import MASK, is_secret, shown_env
from importer.site import SiteSettings
from importer.state import StateDir

SECRET = "hunter2"


@pytest.mark.parametrize("name,marked,secret", [
    ("DB_PASSWORD", (), True), ("db_passwd", (), True), ("API_TOKEN", (), True), ("client_secret", (), True),
    ("SSH_KEY", (), True), ("KeyFile", (), True),
    ("KEYBOARD_LAYOUT", (), True),  # a false positive, masked: on doubt, mask
    ("GREETING", (), False), ("PATH", (), False), ("PASS", (), False),
    ("GREETING", ("GREETING",), True),  # set by the site file: whatever its name
])
def test_a_value_is_secret_by_its_key_being_marked_or_by_its_name(name, marked, secret):
    assert is_secret(name, frozenset(marked)) is secret
    assert shown_env(name, "v4lue", frozenset(marked)) == (MASK if secret else "v4lue")


def test_an_absent_value_is_shown_as_absent_secret_or_not():
    assert shown_env("DB_PASSWORD", None) == "(unset)" == shown_env("GREETING", None)


CONN, GREETING, TOKEN = Key(Kind.ENV, "CONN"), Key(Kind.ENV, "GREETING"), Key(Kind.ENV, "API_TOKEN")


@pytest.mark.parametrize("case,base,theirs,line", [
    ("changed", {CONN: SECRET}, {CONN: "hunter3"}, "env CONN: *** -> *** (from the bundle)"),
    ("removed", {CONN: SECRET}, {}, "env CONN: *** -> (unset) (from the bundle)"),
    ("added", {}, {CONN: SECRET}, "env CONN: (unset) -> *** (from the bundle)"),
])
def test_a_site_secret_changed_removed_or_added_shows_no_value(case, base, theirs, line):
    ours = dict(base)
    [decision] = merge(base, theirs, ours).decisions
    assert decision.line(frozenset({"CONN"})) == line


def test_a_bundle_value_shows_unless_its_name_says_secret():
    result = merge({GREETING: "hello", TOKEN: "t0k3n-1"}, {GREETING: "hi", TOKEN: "t0k3n-2"},
                   {GREETING: "hello", TOKEN: "t0k3n-1"})
    assert [d.line() for d in result.decisions] == ["env API_TOKEN: *** -> *** (from the bundle)",
                                                    "env GREETING: hello -> hi (from the bundle)"]


def test_a_conflict_names_the_setting_but_not_the_secret():
    [d] = merge({TOKEN: "t0k3n-1"}, {TOKEN: "t0k3n-2"}, {TOKEN: "t0k3n-3"}).conflicts
    assert d.conflict() == ("env API_TOKEN was changed on this host (*** -> ***) and by the bundle (*** -> ***)")


def test_the_site_settings_lines_mask_every_env_value(tmp_path):
    site = tmp_path / "demo.toml"
    site.write_text(f'[run]\nenv = {{ CONN = "{SECRET}" }}\nlabels = {{ team = "ops" }}\n')
    lines = SiteSettings.load("demo", site).plan_lines()
    assert "  env CONN=***" in lines and "  label team=ops" in lines and SECRET not in "\n".join(lines)


def _upgrade(tmp_path, recorded: dict, running_env: list[str], new_env: dict, masked=frozenset()) -> SwapPlan:
    """An upgrade plan merged against a recorded generation (as a swap records it) and a running container."""
    state = StateDir(tmp_path / "state").ensure()
    app_dir = state.app_dir("demo")
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "generations.json").write_text(json.dumps(
        {"next": 2, "current": 1, "items": {"1": {"generation": 1, "bundle": recorded}}}))
    plan = SwapPlan(PlanKind.UPGRADE, "demo", ContainerTarget("demo", "demo:2", RunSettings.from_json({"env": new_env})),
                    "sha256:" + "b" * 64, "demo:2", old=CurrentContainer("c" * 64, "sha256:" + "a" * 64, "demo:1",
                                                                       "1.0.0", 1, 1, True), masked=masked)
    _merge_settings(plan, state, {"Config": {"Env": running_env}}, {"Config": {}})
    return plan


def test_a_site_secret_the_site_file_removed_is_still_masked_in_the_plan(tmp_path):
    recorded = {"run": {"env": {"GREETING": "hello", "CONN": SECRET}}, "site_env": ["CONN"]}
    plan = _upgrade(tmp_path, recorded, ["GREETING=hello", f"CONN={SECRET}"], {"GREETING": "hi"})
    text = "\n".join(plan.lines())
    assert "env CONN: *** -> (unset) (from the site file)" in text  # the site file dropped it, not the bundle
    assert "env GREETING: hello -> hi (from the bundle)" in text
    assert SECRET not in text


def test_a_generation_recorded_before_site_keys_were_masks_every_env_key_it_set(tmp_path):
    plan = _upgrade(tmp_path, {"run": {"env": {"CONN": SECRET}}}, [f"CONN={SECRET}"], {})
    assert plan.marked == {"CONN"} and SECRET not in "\n".join(plan.lines())


def test_a_conflict_refusal_masks_a_removed_site_secret(tmp_path):
    recorded = {"run": {"env": {"CONN": SECRET}}, "site_env": ["CONN"]}
    with pytest.raises(SettingsConflict) as e:
        _upgrade(tmp_path, recorded, ["CONN=changed-by-hand"], {"CONN": "from-the-bundle"})
    assert "env CONN was changed on this host (*** -> ***)" in e.value.line()
    assert not any(v in e.value.line() for v in (SECRET, "changed-by-hand", "from-the-bundle"))


def test_a_key_the_bundle_marks_secret_is_masked_whatever_its_name(tmp_path):
    """`[target.run] secret_env` (signed): API_SALT says nothing of a secret, yet is one."""
    recorded = {"run": {"env": {"API_SALT": SECRET}}, "site_env": []}
    plan = _upgrade(tmp_path, recorded, [f"API_SALT={SECRET}"], {"API_SALT": "s4lt-2"})
    plan.target = ContainerTarget("demo", "demo:2", RunSettings.from_json({"env": {"API_SALT": "s4lt-2"},
                                                                          "secret_env": ["API_SALT"]}))
    text = "\n".join(plan.lines())
    assert "env API_SALT: *** -> ***" in text and SECRET not in text and "s4lt-2" not in text


def test_a_key_the_running_version_marked_secret_stays_masked_once_the_bundle_drops_the_mark(tmp_path):
    recorded = {"run": {"env": {"API_SALT": SECRET}, "secret_env": ["API_SALT"]}, "site_env": []}
    plan = _upgrade(tmp_path, recorded, [f"API_SALT={SECRET}"], {})
    assert "API_SALT" in plan.marked and SECRET not in "\n".join(plan.lines())
