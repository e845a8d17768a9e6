"""The interrupt rules (bundlecore.interrupts): raised at once outside a step, after the step
inside one, never inside an undo; and an exception never printed as `KeyboardInterrupt: `."""

import os
import signal

import pytest

from bundlecore import interrupts
from bundlecore.errors import UpdateFailed, reason


@pytest.fixture(autouse=True)
def handlers():
    saved = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.install()
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _send(sig=signal.SIGINT):
    os.kill(os.getpid(), sig)


def test_outside_a_step_an_interrupt_is_raised_at_once():
    with pytest.raises(interrupts.Interrupted) as e:
        _send(signal.SIGTERM)
        interrupts.sleep(1)
    assert str(e.value) == "interrupted by SIGTERM" and isinstance(e.value, KeyboardInterrupt)


def test_inside_a_step_it_is_raised_once_the_step_is_over():
    done = []
    with pytest.raises(interrupts.Interrupted):
        with interrupts.deferred():
            _send()
            done.append("the engine operation finished")
    assert done == ["the engine operation finished"] and interrupts.pending() is None


def test_a_wait_inside_a_step_ends_early():
    with pytest.raises(interrupts.Interrupted):
        with interrupts.deferred():
            _send()
            interrupts.sleep(30)


def test_an_undo_runs_to_its_end_and_the_interrupt_is_dropped():
    done = []
    with interrupts.shielded():
        with interrupts.deferred():  # an undo step
            _send()
            interrupts.sleep(0.01)
            done.append("undo step")
        done.append("after it")
    assert done == ["undo step", "after it"] and interrupts.pending() is None


def test_the_notice_says_what_runs_to_its_end(capsys):
    """An undo says the rollback finishes; a commit or a unit write says what it finishes instead,
    never "the rollback" where there is none."""
    with interrupts.shielded():
        _send()
    with interrupts.shielded("the commit runs to its end"):
        with interrupts.shielded("the unit is written first"):  # the innermost scope is what runs
            _send()
    err = capsys.readouterr().err
    assert "SIGINT received: the rollback runs to its end" in err
    assert "SIGINT received: the unit is written first" in err and "the commit" not in err


@pytest.mark.parametrize("e, text", [
    (KeyboardInterrupt(), "interrupted"),
    (interrupts.Interrupted("SIGTERM"), "interrupted by SIGTERM"),
    (OSError(), "OSError"),
    (ValueError("bad"), "ValueError: bad"),
    (UpdateFailed("x"), "update failed: x"),
])
def test_a_reason_is_never_a_bare_class_name_with_nothing_after_it(e, text):
    assert reason(e) == text


def test_versions_are_shown_the_same_way_on_both_sides_and_never_as_none():
    from importer.versiontext import shown_version, version_change
    assert version_change("2.0.0", "app:2.0.0", "1.2.0", "app:1.2.0") == "2.0.0 -> 1.2.0"
    assert version_change("2.0.0", "app:2.0.0", None, "app:1.2.0") == (
        "2.0.0 (app:2.0.0) -> app:1.2.0 (no version recorded)")
    assert shown_version(None, None) == "an unknown image (no version recorded)"
    assert "None" not in version_change(None, None, None, None)
