"""The journaled step runner (importer.steps) on a toy kind of three steps: journal before and after
each step, the crash points, the resume rules, the undo order. No engine."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import pytest

from importer import steps
from importer.state import JOURNAL, StateDir
from importer.steps import Direction, Resume, Rule, StepJournal, StepRunner


class T(StrEnum):
    A = "a"
    B = "b"
    C = "c"
    UNDO_A = "undo_a"
    UNDO_B = "undo_b"


UNDO_ORDER = [T.UNDO_B, T.UNDO_A]


@dataclass
class Rec:
    step: str | None = None
    phase: str | None = None
    direction: str = Direction.FORWARD
    history: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


class ToyJournal(StepJournal):
    LAST = "last-toy.json"
    POINT_PREFIX = "toy_"


class Toy:
    def __init__(self, log: list):
        self.log = log

    def act(self, what: str) -> None:
        self.log.append(what)


RULES = {
    T.A: Rule(lambda m: m.act("a"), undo=T.UNDO_A),
    T.B: Rule(lambda m: m.act("b"), undo=T.UNDO_B),
    T.C: Rule(lambda m: m.act("c"), started=Resume.REPLAY),  # the point of no return
    T.UNDO_A: Rule(lambda m: m.act("undo_a")),
    T.UNDO_B: Rule(lambda m: m.act("undo_b")),
}
FORWARD = [T.A, T.B, T.C]


class Killed(BaseException):
    """Stands for the SIGKILL of the crash hook."""


@pytest.fixture
def kill(monkeypatch):
    def fake_kill(pid, sig):
        raise Killed()
    monkeypatch.setattr(steps.os, "kill", fake_kill)
    return monkeypatch


def runner(tmp_path, log, record=None, events=None):
    j = ToyJournal(tmp_path, record if record is not None else Rec())
    return StepRunner(StateDir(tmp_path / "state"), j, RULES, Toy(log), out=(events if events is not None else []).append)


def on_disk(tmp_path) -> dict | None:
    return StepJournal.read(tmp_path)


def recover(tmp_path, log) -> StepRunner:
    """What a fresh process does: the journal from disk, then its resume rule."""
    r = runner(tmp_path, log, Rec(**on_disk(tmp_path)))
    rule = r.resume()
    if rule == Resume.REPLAY:
        r.forward(FORWARD)
    elif rule == Resume.UNDO:
        r.j.record.direction = Direction.UNDO
        r.undo(UNDO_ORDER)
    return r


def test_each_step_is_journaled_started_before_and_done_after_it_runs(tmp_path):
    seen = []

    class Spy(Toy):
        def act(self, what):
            seen.append((what, [(h["step"], h["phase"]) for h in on_disk(tmp_path)["history"]][-1]))

    r = StepRunner(StateDir(tmp_path / "state"), ToyJournal(tmp_path, Rec()), RULES, Spy([]))
    r.forward(FORWARD)
    assert seen == [("a", ("a", "started")), ("b", ("b", "started")), ("c", ("c", "started"))]
    assert [(h["step"], h["phase"]) for h in on_disk(tmp_path)["history"]] == [
        ("a", "started"), ("a", "done"), ("b", "started"), ("b", "done"), ("c", "started"), ("c", "done")]


def test_finish_keeps_the_record_as_last_and_drops_the_journal(tmp_path):
    r = runner(tmp_path, [])
    r.forward(FORWARD)
    r.finish("installed", "all done")
    assert not (tmp_path / JOURNAL).exists()
    last = json.loads((tmp_path / ToyJournal.LAST).read_text())
    assert last["result"] == "installed" and last["message"] == "all done" and last["phase"] == "done"


def test_forward_skips_the_steps_already_done_and_replays_a_started_one(tmp_path):
    log = []
    r = runner(tmp_path, log, Rec(history=[{"step": "a", "phase": "started"}, {"step": "a", "phase": "done"},
                                           {"step": "b", "phase": "started"}]))
    r.forward(FORWARD)
    assert log == ["b", "c"]


# (crash point, BUNDLE_CRASH_WHEN) -> the last record on disk, what recovery runs
MATRIX = [
    ("a", "ahead", None, []),                                  # nothing recorded of it: nothing to undo
    ("a", "before", ("a", "started"), ["undo_a"]),
    ("a", "after", ("a", "done"), ["undo_a"]),
    ("b", "ahead", ("a", "done"), ["undo_a"]),
    ("b", "before", ("b", "started"), ["undo_b", "undo_a"]),   # undo order: the kind's, not the history's
    ("b", "after", ("b", "done"), ["undo_b", "undo_a"]),
    ("c", "ahead", ("b", "done"), ["undo_b", "undo_a"]),
    ("c", "before", ("c", "started"), ["c"]),                  # REPLAY: the step again
    ("c", "after", ("c", "done"), []),                         # REPLAY: nothing left
]


@pytest.mark.parametrize("point,when,last,recovery", MATRIX)
def test_a_crash_at_each_point_leaves_a_journal_recovery_resumes_by_the_step_rule(
        tmp_path, kill, point, when, last, recovery):
    kill.setenv("BUNDLE_CRASH_AT", f"toy_{point}")
    kill.setenv("BUNDLE_CRASH_WHEN", when)
    log = []
    with pytest.raises(Killed):
        r = runner(tmp_path, log)
        r.step(T.A)  # the first step creates the journal; a crash ahead of it leaves none
        r.forward(FORWARD)
    doc = on_disk(tmp_path)
    if last is None:
        assert doc is None
        return
    assert (doc["step"], doc["phase"]) == last and (doc["history"][-1]["step"], doc["history"][-1]["phase"]) == last
    kill.delenv("BUNDLE_CRASH_AT")
    after = []
    recover(tmp_path, after)
    assert after == recovery


def test_the_crash_point_is_the_kinds_prefix_and_the_step(tmp_path, kill):
    kill.setenv("BUNDLE_CRASH_AT", "b")  # another kind's point of the same name
    runner(tmp_path, []).forward(FORWARD)
    assert on_disk(tmp_path)["step"] == "c"


def test_an_undo_runs_the_undo_of_every_started_step_in_the_kinds_order(tmp_path):
    log = []
    r = runner(tmp_path, log)
    r.forward([T.A, T.B])
    assert r.undo_steps(UNDO_ORDER) == [T.UNDO_B, T.UNDO_A]
    r.undo(UNDO_ORDER)
    assert log == ["a", "b", "undo_b", "undo_a"]
    assert r.resume() == Resume.UNDO  # the last step is an undo step: its rule is UNDO


def test_an_interrupted_undo_resumes_after_its_last_completed_step(tmp_path, kill):
    log = []
    r = runner(tmp_path, log)
    r.forward([T.A, T.B])
    r.j.record.direction = Direction.UNDO
    kill.setenv("BUNDLE_CRASH_AT", "toy_undo_b")
    with pytest.raises(Killed):
        r.undo(UNDO_ORDER)
    kill.delenv("BUNDLE_CRASH_AT")
    again, told = [], []
    r2 = runner(tmp_path, again, Rec(**on_disk(tmp_path)))
    assert r2.resume() == Resume.UNDO  # an undo stays an undo, whatever step it is at
    r2.undo(UNDO_ORDER, already_done=told.append)
    assert again == ["undo_a"] and told == [T.UNDO_B]


def test_a_rule_can_resume_differently_once_its_step_is_done():
    rule = Rule(lambda m: None, done=Resume.REPLAY)
    assert rule.resume("started") == Resume.UNDO and rule.resume("done") == Resume.REPLAY
    assert Rule(lambda m: None, started=Resume.NONE).resume("done") == Resume.NONE


def test_a_journal_at_no_step_is_undone(tmp_path):
    assert runner(tmp_path, []).resume() == Resume.UNDO


def test_the_audit_event_is_written_once_at_the_end_and_a_full_disk_does_not_fail_the_run(tmp_path):
    out = []
    r = runner(tmp_path, [], events=out)
    r.forward(FORWARD)

    def event():
        raise OSError(28, "No space left on device")
    r.finish("installed", "done", event)
    assert out == ["  could not write the audit log: No space left on device"]
    assert json.loads((tmp_path / ToyJournal.LAST).read_text())["result"] == "installed"


def test_pending_lists_the_apps_with_a_journal_of_any_kind(tmp_path):
    state = StateDir(tmp_path)
    for app in ("b-app", "a-app"):
        runner(state.ensure_app_dir(app), []).step(T.A)
    state.ensure_app_dir("done-app")
    assert steps.pending(state) == ["a-app", "b-app"]


TOY = f"""
import sys
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from tests.unit.test_step_runner import FORWARD, runner
runner(Path(sys.argv[1]), []).forward(FORWARD)
"""


def test_the_hook_is_a_real_sigkill(tmp_path):
    r = subprocess.run([sys.executable, "-c", TOY, str(tmp_path)], capture_output=True, text=True,
                       env={"BUNDLE_CRASH_AT": "toy_b", "BUNDLE_CRASH_WHEN": "before", "PATH": "/usr/bin:/bin"})
    assert r.returncode == -9, r.stderr
    doc = on_disk(tmp_path)
    assert (doc["step"], doc["phase"]) == ("b", "started")
