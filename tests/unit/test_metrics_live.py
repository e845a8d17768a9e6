"""The live gauges (up, healthy, stopped by admin, engine up, when measured) and label values in
snake case, read back by the reference parser."""

from __future__ import annotations

import re

import pytest

from bundlecore.refusals import Check
from bundlecore.release import Result
from importer.metrics import Live, label_value, live_of, render
from tests.unit.test_metrics_format import ev, samples


def report(name, *, installed=True, status="running", image="sha256:a", installed_image="sha256:a", code=0, stopped=None):
    return {"name": name, "installed": {"image_id": installed_image} if installed else None, "exit_code": code,
            "container": {"status": status, "image_id": image} if status else None,
            **({"stopped_by_admin": stopped} if stopped else {})}


@pytest.mark.parametrize("text, value", [("host policy", "host_policy"), ("rolled-back", "rolled_back"),
                                         ("docker archive", "docker_archive"), ("done", "done"),
                                         ("Size Cap", "size_cap")])
def test_a_label_value_made_of_words_is_snake_case(text, value):
    assert label_value(text) == value


def test_no_label_value_of_a_check_result_or_phase_holds_a_space_or_a_dash():
    events = [ev("import", "refused", check=str(c), run=f"r{i}") for i, c in enumerate(Check)]
    events += [ev("upgrade", "rolled-back", run="x", phases={"health": 1})]
    text = render(events)
    for m in re.finditer(r'(check|result|phase)="([^"]*)"', text):
        assert re.fullmatch(r"[a-z0-9_]+", m.group(2)), m.group(0)
    assert {label_value(r) for r in Result} == {dict(k[1])["result"] for k in samples(text)
                                                if k[0] == "bundle_imports_total"}


def test_live_gauges_say_which_app_is_up_healthy_or_stopped_by_an_admin():
    live = live_of([report("ok"), report("sick", code=7), report("old", image="sha256:b", code=7),
                    report("stopped", status="exited", code=7, stopped={"at": "t", "by": "ops"}),
                    report("gone", installed=False, status=None, code=6)], True, 1234.5)
    got = samples(render([], live))
    assert got[("bundle_engine_up", ())] == 1 and got[("bundle_status_timestamp_seconds", ())] == 1234.5
    up = {dict(k[1])["app"]: v for k, v in got.items() if k[0] == "bundle_app_up"}
    healthy = {dict(k[1])["app"]: v for k, v in got.items() if k[0] == "bundle_app_healthy"}
    admin = {dict(k[1])["app"]: v for k, v in got.items() if k[0] == "bundle_app_stopped_by_admin"}
    assert up == {"ok": 1, "sick": 1, "old": 0, "stopped": 0}  # not installed: no gauge
    assert healthy == {"ok": 1, "sick": 0, "old": 0, "stopped": 0}
    assert admin == {"ok": 0, "sick": 0, "old": 0, "stopped": 1}


def test_with_the_engine_down_every_app_is_down_and_the_engine_gauge_says_why():
    got = samples(render([], live_of([report("ok", status=None, code=8)], False, 1.0)))
    assert got[("bundle_engine_up", ())] == 0 and got[("bundle_app_up", (("app", "ok"),))] == 0


def test_without_a_measure_the_file_has_no_live_sample():
    assert not [k for k in samples(render([], None)) if k[0] in ("bundle_app_up", "bundle_engine_up")]
    assert samples(render([], Live(1.0, True)))[("bundle_engine_up", ())] == 1


def test_a_staged_release_under_way_shows_its_stage_and_phase():
    rel = {"app": "shop", "version": "2.0.0", "done": 1, "stages": 3, "phase": "paused"}
    live = live_of([{**report("fl-web"), "release": rel}, report("other")], True, 1.0)
    got = samples(render([], live))
    labels = (("app", "shop"), ("version", "2.0.0"))
    assert got[("bundle_release_stages_done", labels)] == 1 and got[("bundle_release_stages", labels)] == 3
    phases = {dict(k[1])["phase"]: v for k, v in got.items() if k[0] == "bundle_release_phase"}
    assert phases == {"interrupted": 0, "aborting": 0, "paused": 1, "soaking": 0, "stopped": 0}
    # no release under way: no release sample at all (an alert on a stuck phase cannot fire on nothing)
    assert not [k for k in samples(render([], live_of([report("other")], True, 1.0))) if "release" in k[0]]


def test_the_release_phases_named_in_the_metrics_are_the_release_s_own():
    from importer.kinds.service.mark import Phase
    from importer.metrics import RELEASE_PHASES
    assert set(RELEASE_PHASES) == {str(p) for p in Phase}
