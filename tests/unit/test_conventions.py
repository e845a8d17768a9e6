"""Table tests of the pure parts of the CLI conventions, the doctor's clock row and progress output."""

import io
from datetime import datetime, timedelta, timezone

import pytest

from bundlecore import progress
from bundlecli.main import hoist_global_flags, suggestion
from bundlecli.registry import COMMANDS
from importer.doctor import Check, Finding, Report, Verdict, _parse_engine_time, clock_finding


@pytest.mark.parametrize("argv, expected", [
    (["import", "x.zst", "--debug"], ["--debug", "import", "x.zst"]),
    (["status", "-q", "app", "-v"], ["--quiet", "--verbose", "status", "app"]),
    (["--debug", "verify", "b", "--debug"], ["--debug", "verify", "b"]),
    (["rollback", "--", "-v"], ["rollback", "--", "-v"]),       # after `--` it is an argument
    (["build", "-o", "out"], ["build", "-o", "out"]),
    ([], []),
])
def test_global_flags_are_hoisted_from_anywhere(argv, expected):
    assert hoist_global_flags(argv) == expected


@pytest.mark.parametrize("typed, hint", [
    ("imprt", " (did you mean 'import'?)"),
    ("verfy", " (did you mean 'verify'?)"),
    ("rollbak", " (did you mean 'rollback'?)"),
    ("statsu", " (did you mean 'status'?)"),
    ("zzz", ""),
    ("install", ""),        # never "uninstall": a typo must not lead to removing an app
    ("uninstal", ""),
])
def test_a_mistyped_verb_gets_the_closest_known_one(typed, hint):
    assert suggestion(typed, COMMANDS) == hint


NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("engine_time, verdict", [
    ("2026-06-01T12:00:03.123456789Z", Verdict.OK),
    ("2026-06-01T14:00:01.5+02:00", Verdict.OK),
    ("2026-06-01T12:04:59Z", Verdict.OK),
    ("2026-06-01T12:05:01Z", Verdict.FAIL),
    ("2026-06-01T11:50:00.000000001Z", Verdict.FAIL),
    ("yesterday", Verdict.WARN),
    (None, Verdict.WARN),
])
def test_clock_row_compares_with_the_engines_clock(engine_time, verdict):
    assert clock_finding(engine_time, NOW).verdict == verdict


def test_a_host_clock_before_2024_fails_whatever_the_engine_says():
    old = datetime(2001, 1, 1, tzinfo=timezone.utc)
    assert clock_finding("2001-01-01T00:00:00Z", old).verdict == Verdict.FAIL


def test_engine_time_keeps_its_offset():
    assert _parse_engine_time("2026-06-01T14:00:00.999999999+02:00") - NOW < timedelta(seconds=1)


def test_report_is_ready_unless_a_row_fails():
    ok = Finding(Check.GPG, Verdict.OK, "gpg 2")
    warn = Finding(Check.CLOCK, Verdict.WARN, "no engine clock")
    assert Report([ok, warn]).ready
    failed = Report([ok, Finding(Check.ENGINE, Verdict.FAIL, "down")])
    assert not failed.ready and failed.document()["ready"] is False
    assert failed.lines()[-1] == "NOT ready: fix the FAIL rows first"


class Pipe(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.fixture
def level():
    yield progress.set_verbosity
    progress.set_verbosity(progress.NORMAL)


def test_off_a_terminal_progress_is_timestamped_lines_not_redraws(level, monkeypatch):
    monkeypatch.setenv("BUNDLE_PROGRESS_INTERVAL", "0")
    out = Pipe(tty=False)
    p = progress.Progress("verify", 100, stream=out)
    p(50)
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2
    assert all(line[:4].isdigit() and line[19] == "Z" and " verify: " in line for line in lines)


def test_a_short_run_off_a_terminal_adds_no_line(level):
    out = Pipe(tty=False)
    p = progress.Progress("verify", 100, stream=out)
    p(100)
    p.close()
    assert out.getvalue() == ""


def test_quiet_silences_progress_countdown_and_pulls(level, monkeypatch):
    monkeypatch.setenv("BUNDLE_PROGRESS_INTERVAL", "0")
    level(progress.QUIET)
    out = Pipe(tty=False)
    p = progress.Progress("verify", 10, stream=out)
    p(10)
    p.close()
    c = progress.Countdown("health", 30, stream=out)
    c.tick()
    c.close()
    pull = progress.PullProgress("a/b:1", stream=out)
    pull.event({"id": "l1", "status": "Pull complete", "progressDetail": {}})
    pull.close()
    assert out.getvalue() == ""


def test_countdown_counts_down_in_lines_off_a_terminal(level, monkeypatch):
    monkeypatch.setenv("BUNDLE_PROGRESS_INTERVAL", "0")
    out = Pipe(tty=False)
    c = progress.Countdown("waiting for the health gate", 30, stream=out)
    c.tick("health status starting")
    c.close()
    assert out.getvalue().endswith("waiting for the health gate: 30 s left (health status starting)\n")


def test_pull_progress_counts_layers_and_bytes(level):
    out = Pipe(tty=False)
    pull = progress.PullProgress("a/b:1", stream=out)
    for ev in [{"status": "Pulling from a/b", "id": "1"},
               {"id": "l1", "status": "Downloading", "progressDetail": {"current": 1024, "total": 2048}},
               {"id": "l1", "status": "Pull complete", "progressDetail": {}},
               {"id": "l2", "status": "Already exists", "progressDetail": {}}]:
        pull.event(ev)
    pull.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(" pulling a/b:1")
    assert lines[-1].endswith(" pulled a/b:1: 2 layer(s), 1.0 KiB fetched")


def test_verbose_adds_step_lines(level, capsys):
    progress.step("app: stop_old")
    assert capsys.readouterr().err == ""
    level(progress.VERBOSE)
    progress.step("app: stop_old")
    assert capsys.readouterr().err.endswith("Z app: stop_old\n")


@pytest.mark.parametrize("value, every", [(None, 10.0), ("2.5", 2.5), ("0", 0.0), ("-3", 0.0), ("soon", 10.0)])
def test_progress_interval_comes_from_the_environment_or_defaults(monkeypatch, value, every):
    if value is None:
        monkeypatch.delenv("BUNDLE_PROGRESS_INTERVAL", raising=False)
    else:
        monkeypatch.setenv("BUNDLE_PROGRESS_INTERVAL", value)
    assert progress.line_every() == every


def test_in_a_log_the_first_countdown_line_waits_an_interval(level, monkeypatch):
    """A health gate passing in a few seconds adds nothing to a log (and an error stays one line)."""
    monkeypatch.delenv("BUNDLE_PROGRESS_INTERVAL", raising=False)
    out = Pipe(tty=False)
    c = progress.Countdown("waiting for the health gate", 30, stream=out)
    c.tick()
    c.close()
    assert out.getvalue() == ""
    tty = Pipe(tty=True)
    c = progress.Countdown("waiting for the health gate", 30, stream=tty)
    c.tick()
    c.close()
    # cleared before each redraw and when it ends: nothing of it is left on the screen (issue 20)
    assert tty.getvalue() == "\r\x1b[Kwaiting for the health gate: 30 s left\r\x1b[K"


def test_on_a_terminal_a_shorter_redraw_leaves_nothing_of_a_longer_one(level):
    tty = Pipe(tty=True)
    c = progress.Countdown("health", 30, stream=tty)
    c.tick("connection refused by 127.0.0.1:18900")
    c._last = None  # the next second
    c.tick("HTTP 503")
    c.close()
    redraws = tty.getvalue().split("\r")
    assert all(r.startswith("\x1b[K") for r in redraws[1:]), redraws
    assert redraws[2] == "\x1b[Khealth: 30 s left (HTTP 503)"


def test_a_pull_the_engine_refused_prints_nothing(level):
    out = Pipe(tty=False)
    pull = progress.PullProgress("a/missing:1", stream=out)
    pull.close()
    assert out.getvalue() == ""
