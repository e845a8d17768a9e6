"""A stage's pause (issue 19): how the spec says it, how the manifest keeps it, and what a paused
release's mark means to status, promote and --resume (importer.kinds.service.mark)."""

import io

import pytest

from bundlecore.errors import UsageProblem
from bundlecore.progress import Countdown
from bundlecore.release import PROMOTE, ServiceTarget
from bundlecore.timeutil import format_ts, utc_now
from bundler.spec import stage_pause
from importer.kinds.service.mark import Phase, next_action, phase_of


def test_a_pause_is_seconds_or_promote_and_none_after_the_last_stage():
    assert stage_pause("s.toml", 1, 2, "10m") == {"pause": 600}
    assert stage_pause("s.toml", 1, 2, "promote") == {"pause": PROMOTE}
    assert stage_pause("s.toml", 1, 2, None) == {}
    with pytest.raises(UsageProblem, match="stage 2 is the last; a pause after it has nothing to wait for"):
        stage_pause("s.toml", 2, 2, "promote")
    with pytest.raises(UsageProblem, match="pause must be at least 1s"):
        stage_pause("s.toml", 1, 2, "0s")


def test_the_typed_target_keeps_each_stages_pause_and_writes_it_back():
    d = {"kind": "service", "name": "web", "image": "r/web:2", "run": {},
         "stages": [{"services": ["canary"], "soak": 0, "pause": "promote"}, {"services": ["web"], "soak": 0}]}
    t = ServiceTarget.from_json(d)
    assert (t.pause(0), t.pause(1), t.pause(5)) == (PROMOTE, None, None)
    assert t.to_json()["stages"] == d["stages"]


def _mark(**kw) -> dict:
    return {"version": "2.0.0", "app": "shop", "stages": 3, "done": 1, "running": None, "aborting": False,
            "pause": None, "resume_after": format_ts(utc_now()), **kw}


# parameters are made when the tests are collected, maybe half an hour before this one runs: "later"
# is far enough ahead not to have passed by then
LATER = "2999-01-01T00:00:00Z"


@pytest.mark.parametrize("mark, phase, says", [
    (_mark(aborting=True), Phase.ABORTING, "the abort of release 2.0.0 of shop was interrupted: run `bundle recover`"),
    (_mark(running=2), Phase.INTERRUPTED, "interrupted in stage 2 of 3: run `bundle recover`"),
    (_mark(pause=PROMOTE), Phase.PAUSED, "paused after stage 1 of 3: continue with `bundle promote shop`"),
    (_mark(pause="timed", resume_after=LATER), Phase.PAUSED,
     "continue with `bundle promote shop` (or `bundle import BUNDLE --resume` after"),
    (_mark(pause="timed", resume_after="2020-01-01T00:00:00Z"), Phase.PAUSED, "until 2020-01-01T00:00:00Z (over)"),
    (_mark(resume_after=LATER), Phase.SOAKING, "continue with `bundle import BUNDLE --resume`"),
    (_mark(resume_after="2020-01-01T00:00:00Z"), Phase.STOPPED, "roll it back with `bundle abort shop`"),
])
def test_each_phase_of_a_release_says_what_to_run_next(mark, phase, says):
    assert phase_of(mark) is phase
    assert says in next_action(mark)


def test_a_countdowns_detail_function_is_asked_only_when_a_line_is_drawn(monkeypatch):
    monkeypatch.setenv("BUNDLE_PROGRESS_INTERVAL", "3600")
    asked = []
    c = Countdown("rolling service web", 60, stream=io.StringIO())
    c.tick(lambda: asked.append(1) or "1/3 tasks updated")  # a log: the first line only after the interval
    assert asked == []
    monkeypatch.setenv("BUNDLE_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    c = Countdown("rolling service web", 60, stream=out)
    c.tick(lambda: asked.append(1) or "1/3 tasks updated")
    assert asked == [1] and "rolling service web: 60 s left (1/3 tasks updated)" in out.getvalue()
