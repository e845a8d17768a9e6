"""What a signed bundle may take on this host, as pure rules: the anti-rollback marks per app and
per container, who owns a container, the plan lines of adoption, tag moves and host access."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bundlecore.refusals import Check, RollbackRefused
from importer import ownership
from importer.gate import TrustGate
from importer.hostpolicy import HostPolicy, plan_lines
from importer.state import StateDir

REPO = Path(__file__).resolve().parents[2]
MANIFEST = {"name": "seq-canary", "sequence": 1, "target": {"name": "seqc"}}


def gate(app_mark=None, container_mark=None, allow_downgrade=False) -> TrustGate:
    return TrustGate(None, engine_platform=None, installed_sequence=lambda app: app_mark,
                     container_sequence=lambda name: container_mark, allow_downgrade=allow_downgrade)


@pytest.mark.parametrize("app_mark, container_mark, whose", [
    (10, None, "the highest installed (--allow"),
    (None, 10, "the highest installed in container seqc"),
    (0, 1, "the highest installed in container seqc"),
])
def test_a_sequence_not_above_either_mark_is_refused_naming_the_mark(app_mark, container_mark, whose):
    with pytest.raises(RollbackRefused) as e:
        gate(app_mark, container_mark)._check_history(MANIFEST)
    assert e.value.check is Check.SEQUENCE and whose in str(e.value)


def test_a_sequence_above_both_marks_passes_and_a_downgrade_can_be_allowed_with_a_note():
    assert gate(0, 0)._check_history(MANIFEST) == []
    assert gate(None, None)._check_history(MANIFEST) == []
    assert gate(1, 10, allow_downgrade=True)._check_history(MANIFEST) == [
        "replay allowed by --allow-downgrade: accepting sequence 1 again (1 is the highest installed)",
        "downgrade allowed by --allow-downgrade: accepting sequence 1 below 10, the highest installed in container seqc"]


def test_the_installed_release_is_no_replay_but_a_lower_sequence_still_is_refused():
    """Importing the release this host runs is "already installed" or a repair (the plan decides)."""
    installed = TrustGate(None, engine_platform=None, installed_sequence=lambda app: 1,
                          container_sequence=lambda name: 1, is_installed=lambda manifest: manifest["sequence"] == 1)
    [note] = installed._check_history(MANIFEST)
    assert "sequence 1 is the installed release" in note
    with pytest.raises(RollbackRefused):
        installed._check_history({**MANIFEST, "sequence": 0})


@pytest.fixture
def state(tmp_path) -> StateDir:
    return StateDir(tmp_path / "state").ensure()


@pytest.mark.parametrize("owner, record, why", [
    (None, None, "not installed by bundle"),
    ("seq", {"container": "seqc", "container_id": "other"}, "not installed by bundle"),  # recreated by hand
    ("seq", {"container": "elsewhere", "container_id": "live"}, "not installed by bundle"),  # another container
    ("other-app", {"container": "seqc", "container_id": "live"}, "installed by bundle for app other-app"),
    ("seq", {"container": "seqc", "container_id": "live"}, None),
])
def test_a_container_is_the_apps_only_when_that_apps_installed_record_names_it(state, owner, record, why):
    if record:
        state.record_installed(owner, record)
    found = state.app_of_container("seqc")
    assert ownership._not_owned("seq", found, state.installed(found) if found else None, "live") == why


def test_the_plan_names_the_adoption_and_every_tag_move():
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    review = ownership.OwnershipReview("evil", "victimdb", "not installed by bundle", [
        ownership.TagMove("demo/app:1", old, new, owned=True),
        ownership.TagMove("victim/db:15", old, new, owned=False)])
    assert review.plan_lines() == [
        "adopt container victimdb, not installed by bundle",
        f"move tag demo/app:1 from {old[:19]}… to {new[:19]}…",
        f"move tag victim/db:15 from {old[:19]}… to {new[:19]}… (adopted)"]
    assert ownership.OwnershipReview("demo", "demo").plan_lines() == []


def test_the_anythingllm_example_policy_grants_exactly_what_its_bundle_asks():
    spec = tomllib.loads((REPO / "examples/anythingllm/bundle.toml").read_text())
    granted = HostPolicy.load(REPO / "examples/anythingllm").check(spec["name"], spec["target"]["run"])
    assert plan_lines(granted) == ["host access: added capability SYS_ADMIN (granted by [apps.anythingllm] cap_add)"]
