"""Pause, promote and abort of a staged service release (issue 19), on the real single-node swarm
and loopback registry of tests/test_fleet.py.

A stage's `pause` ("promote", or a duration) is journaled in the release mark before the import
ends (exit 11), so `bundle promote APP` / `bundle abort APP` work from a fresh process, and a
kill -9 anywhere near them leaves a release `status` calls inactive and `recover` brings to one
honest state.
"""

from __future__ import annotations

import json
import re
import signal

from bundlecore.schema import cli_schema_name, first_error
from bundlecore.timeutil import parse_ts, utc_now
from tests.support import one_line, run_bundle
from tests.swap_fixtures import wait_until
from tests.test_fleet import bundle_of, do_import, fleet, pinned, running, services, swarm  # noqa: F401 (fixtures)

PAUSED, USAGE, INACTIVE = 11, 2, 7


def _app(fleet) -> str:  # noqa: F811 (the fixture's value)
    return f"pause-{fleet['tok']}"


def _stages(fleet, pause: str, *, third: bool = False) -> list[tuple]:  # noqa: F811
    """canary, then web (paused after the first stage); `third`: api after them, paused after web."""
    if third:
        return [([fleet["canary"]], "0s"), ([fleet["web"]], "0s", pause), ([f"fl-{fleet['tok']}-api"], "0s")]
    return [([fleet["canary"]], "0s", pause), ([fleet["web"]], "0s")]


def _bundle(fleet, version: str, sequence: int, pause: str | None, *, third: bool = False):  # noqa: F811
    stages = _stages(fleet, pause or "1s", third=third)
    if pause is None:  # the same stages, no pause (the install of v1)
        stages = [s[:2] for s in stages]
    return bundle_of(fleet, version, sequence, stages, name="pause")


def _cmd(verb: str, fleet, state, *more, env=None):  # noqa: F811
    return run_bundle(verb, _app(fleet), "--state-dir", state, "--yes", *more, env=env)


def _json(verb: str, fleet, state):  # noqa: F811
    """`bundle VERB APP --yes --json`: exit 0, one document valid against the verb's schema."""
    r = _cmd(verb, fleet, state, "--json")
    assert r.code == 0, str(r)
    doc = json.loads(r.stdout)
    assert first_error(cli_schema_name(verb), doc) is None, (first_error(cli_schema_name(verb), doc), doc)
    return r, doc


def _install_v1(fleet, state, swarm, *, third: bool = False, pause: str | None = None):  # noqa: F811
    r = do_import(fleet, _bundle(fleet, "1.0.0", 1, pause, third=third), state)
    assert r.code == 0, str(r)
    return r


def _on(swarm, fleet, version: str, *names: str) -> bool:  # noqa: F811
    v = pinned(fleet, version)
    return all(running(swarm, n) == {v: 2} for n in names)


def test_a_release_paused_for_promote_ends_the_import_with_exit_11_and_promote_from_a_fresh_process_completes_it(
        fleet, services, swarm):  # noqa: F811
    # a pause within the inline soak (30 s) is waited inside the import, which goes on by itself
    r = _install_v1(fleet, services, swarm, pause="1s")
    assert "stage 1 of 2: paused for 1s" in r.stdout and "stage 1 of 2: its pause ended at" in r.stdout, r.stdout
    app, bundle = _app(fleet), _bundle(fleet, "2.0.0", 2, "promote")
    r = do_import(fleet, bundle, services)
    assert r.code == PAUSED, str(r)
    assert (f"release 2.0.0 of {app} is paused after stage 1 of 2: continue with `bundle promote {app}`, "
            f"or roll it back with `bundle abort {app}`") in r.stdout, r.stdout
    assert _on(swarm, fleet, "2.0.0", fleet["canary"]) and _on(swarm, fleet, "1.0.0", fleet["web"])
    # the importer is gone: the pause is in the state dir, and status says what to run next
    prom = services.parent / "bundle.prom"
    st = run_bundle("status", app, "--state-dir", services, "--metrics-file", prom)
    assert st.code == INACTIVE and f"  paused: release 2.0.0 of {app} is paused after stage 1 of 2" in st.stdout, str(st)
    # ... and so do the metrics a monitoring system reads (docs/metrics.md: bundle_release_*)
    text, labels = prom.read_text(), f'app="{app}",version="2.0.0"'
    assert f"bundle_release_stages_done{{{labels}}} 1" in text and f"bundle_release_stages{{{labels}}} 2" in text, text
    assert f'bundle_release_phase{{{labels},phase="paused"}} 1' in text, text
    assert f'bundle_release_phase{{{labels},phase="stopped"}} 0' in text, text
    doc = json.loads(run_bundle("status", app, "--state-dir", services, "--json").stdout)
    rel = doc["apps"][0]["detail"]["release"]
    assert (rel["phase"], rel["done"], rel["pause"]) == ("paused", 1, "promote"), rel
    assert f"bundle promote {app}" in rel["next_action"]
    assert "(paused release)" in run_bundle("list", "--state-dir", services).stdout
    # --resume is no way around a person's word
    again = do_import(fleet, bundle, services, "--resume")
    assert again.code == USAGE and f"`bundle promote {app}`" in one_line(again.stderr), str(again)
    p, doc = _json("promote", fleet, services)
    assert "stage 1 of 2: promoted; continuing with stage 2" in p.stderr, p.stderr
    assert f"release 2.0.0 of {app} completed: every stage done" in p.stderr, p.stderr
    assert _on(swarm, fleet, "2.0.0", fleet["canary"], fleet["web"])
    assert doc["services"] == {fleet["canary"]: "2.0.0", fleet["web"]: "2.0.0"} and doc["app"]["state"] == "active"
    assert run_bundle("status", app, "--state-dir", services, "--metrics-file", prom).code == 0
    assert "bundle_release_phase{" not in prom.read_text()  # no release under way any more
    h = run_bundle("history", app, "--state-dir", services).stdout
    assert "2.0.0  result: paused" in h and "promote  1.0.0 -> 2.0.0  result: done" in h, h
    # nothing is paused any more: refused in one line, nothing changed
    twice = _cmd("promote", fleet, services)
    assert twice.code == USAGE and one_line(twice.stderr) == (
        f"error: nothing of {app} is paused: no staged release of it is under way"), str(twice)


def test_a_timed_pause_that_ended_while_nothing_ran_continues_on_resume_and_says_so(fleet, services, swarm):  # noqa: F811
    _install_v1(fleet, services, swarm)
    bundle = _bundle(fleet, "2.0.0", 2, "25s")  # long enough for the early --resume below, on a loaded machine
    r = do_import(fleet, bundle, services, "--json", env={"BUNDLE_INLINE_SOAK": "0"})  # longer than the inline wait
    assert r.code == PAUSED, str(r)
    doc = json.loads(r.stdout)
    assert first_error(cli_schema_name("import"), doc) is None and doc["ok"] is True, doc
    assert (doc["result"], doc["exit_code"], doc["app"]["state"]) == ("paused after stage 1", PAUSED, "inactive"), doc
    m = re.search(r"is paused after stage 1 of 2 until (\S+): continue with `bundle promote", r.stderr)
    assert m, r.stderr
    early = do_import(fleet, bundle, services, "--resume")
    assert early.code == 1 and f"is paused until {m.group(1)}" in one_line(early.stderr), str(early)
    assert wait_until(lambda: utc_now() > parse_ts(m.group(1)), timeout=60, every=0.2)  # nothing runs meanwhile
    r = do_import(fleet, bundle, services, "--resume", env={"BUNDLE_PROGRESS_INTERVAL": "0"})
    assert r.code == 0, str(r)
    assert f"stage 1 of 2: its pause ended at {m.group(1)}; continuing with stage 2" in r.stdout, r.stdout
    # progress off a terminal: timestamped lines with the tasks on the new image out of the replicas
    assert re.search(rf"^\S+Z rolling service {fleet['web']}: \d+ s left \([012]/2 tasks updated\)$", r.stderr, re.M), r.stderr
    assert _on(swarm, fleet, "2.0.0", fleet["canary"], fleet["web"])


def test_kill_9_inside_an_abort_then_recover_finishes_rolling_the_release_back_in_reverse_stage_order(
        fleet, services, swarm):  # noqa: F811
    _install_v1(fleet, services, swarm, third=True)
    app, api = _app(fleet), f"fl-{fleet['tok']}-api"
    api_before = swarm.api.inspect_service(api)["Version"]["Index"]
    r = do_import(fleet, _bundle(fleet, "2.0.0", 2, "promote", third=True), services)
    assert r.code == PAUSED, str(r)
    assert _on(swarm, fleet, "2.0.0", fleet["canary"], fleet["web"])
    # killed once stage 2 (web) is rolled back, before stage 1 (canary): the reverse order, half done
    a = _cmd("abort", fleet, services, env={"BUNDLE_CRASH_AT": "release_abort_2", "BUNDLE_CRASH_WHEN": "after"})
    assert a.code == -signal.SIGKILL, str(a)
    assert _on(swarm, fleet, "1.0.0", fleet["web"]) and _on(swarm, fleet, "2.0.0", fleet["canary"])
    st = run_bundle("status", app, "--state-dir", services)
    assert st.code == INACTIVE and "the abort of release 2.0.0" in st.stdout and "bundle recover" in st.stdout, str(st)
    rec = run_bundle("recover", "--state-dir", services, "--yes")
    assert rec.code == 0, str(rec)
    assert f"release 2.0.0 of {app} aborted: every service it moved runs its version from before" in rec.stdout
    assert _on(swarm, fleet, "1.0.0", fleet["canary"], fleet["web"], api)
    assert swarm.api.inspect_service(api)["Version"]["Index"] == api_before  # never touched
    st = run_bundle("status", app, "--state-dir", services)
    assert st.code == 0 and f"{app} (app of 3 service(s)): 1.0.0 [active]" in st.stdout, str(st)
    h = run_bundle("history", app, "--state-dir", services).stdout
    assert "abort  1.0.0 -> 2.0.0  result: aborted" in h, h
    assert f"services: {api} 1.0.0, {fleet['canary']} 1.0.0, {fleet['web']} 1.0.0" in h, h


def test_kill_9_entering_a_pause_and_inside_promote_then_recover_and_abort_leave_one_version(
        fleet, services, swarm):  # noqa: F811
    _install_v1(fleet, services, swarm)
    app = _app(fleet)
    bundle = _bundle(fleet, "2.0.0", 2, "promote")
    # killed as stage 1 is done, before its pause is journaled: recover must not lose the pause
    r = do_import(fleet, bundle, services, env={"BUNDLE_CRASH_AT": "release_pause_1", "BUNDLE_CRASH_WHEN": "before"})
    assert r.code == -signal.SIGKILL, str(r)
    rec = run_bundle("recover", "--state-dir", services, "--yes")
    assert rec.code == 0 and f"is paused after stage 1 of 2: continue with `bundle promote {app}`" in rec.stdout, str(rec)
    again = do_import(fleet, bundle, services, "--resume")
    assert again.code == USAGE and "is paused after stage 1 of 2" in one_line(again.stderr), str(again)
    st = run_bundle("status", app, "--state-dir", services)
    assert st.code == INACTIVE and "paused: release 2.0.0" in st.stdout, str(st)
    # promote killed as stage 2 starts: recover leaves it stopped after stage 1, never half of stage 2
    p = _cmd("promote", fleet, services, env={"BUNDLE_CRASH_AT": "release_stage_2", "BUNDLE_CRASH_WHEN": "before"})
    assert p.code == -signal.SIGKILL, str(p)
    rec = run_bundle("recover", "--state-dir", services, "--yes")
    assert rec.code == 0 and "stopped after stage 1 of 2" in rec.stdout, str(rec)
    st = run_bundle("status", app, "--state-dir", services)
    assert st.code == INACTIVE and "1.0.0, 2.0.0 [inactive]" in st.stdout, str(st)
    a, doc = _json("abort", fleet, services)
    assert f"release 2.0.0 of {app} aborted" in a.stderr, a.stderr
    assert doc["services"] == {fleet["canary"]: "1.0.0", fleet["web"]: "1.0.0"} and doc["app"]["state"] == "active"
    assert _on(swarm, fleet, "1.0.0", fleet["canary"], fleet["web"])
    assert run_bundle("status", app, "--state-dir", services).code == 0
    again = _cmd("abort", fleet, services)
    assert again.code == USAGE and "nothing of" in one_line(again.stderr), str(again)
    assert "result: aborted" in run_bundle("history", app, "--state-dir", services).stdout


def test_abort_of_a_release_paused_after_a_canary_step_removes_the_canary_and_leaves_the_stable_service(
        fleet, services, swarm):  # noqa: F811
    """Canary 1 beside the stable 2, paused for a person: abort takes the canary away; the stable
    service, never moved by the release, keeps its v1 tasks; status is active on v1 again."""
    app, web = _app(fleet), fleet["web"]
    r = do_import(fleet, bundle_of(fleet, "1.0.0", 1, [([web], "0s")], name="pause"), services)
    assert r.code == 0, str(r)
    stages = [([web], "0s", {"replicas": 1, "pause": "promote"}), ([web], "0s")]
    r = do_import(fleet, bundle_of(fleet, "2.0.0", 2, stages, name="pause"), services)
    assert r.code == PAUSED, str(r)
    v1, v2 = pinned(fleet, "1.0.0"), pinned(fleet, "2.0.0")
    assert running(swarm, f"{web}-canary") == {v2: 1} and running(swarm, web) == {v1: 2}
    a = _cmd("abort", fleet, services)
    assert a.code == 0, str(a)
    assert f"release 2.0.0 of {app} aborted" in a.stderr + a.stdout, str(a)
    assert swarm.api.services(filters={"name": f"{web}-canary"}) == []
    assert running(swarm, web) == {v1: 2}
    st = run_bundle("status", app, "--state-dir", services)
    assert st.code == 0 and "paused" not in st.stdout, str(st)
