"""Which probe the health gate uses and how long it waits (importer.health)."""

import pytest

from importer.health import DEFAULT_TIMEOUT, HealthGate

S = 1_000_000_000
SLOW_HC = {"Test": ["CMD", "check"], "StartPeriod": 60 * S, "Interval": 60 * S, "Timeout": 10 * S}


@pytest.mark.parametrize("health,image_hc,probe,described", [
    ({"http": "http://x/h", "tcp": "x:1", "cmd": "true"}, SLOW_HC, "http", "GET http://x/h answers 2xx/3xx"),
    ({"tcp": "127.0.0.1:80", "cmd": "true"}, None, "tcp", "tcp connect to 127.0.0.1:80"),
    ({"cmd": "test -f /ok"}, None, "cmd", "command in the container succeeds: test -f /ok"),
    (None, SLOW_HC, None, "the image's HEALTHCHECK reports healthy"),
    (None, {"Test": ["NONE"]}, None, "still running after 10 s"),
    ({}, None, None, "still running after 10 s"),
])
def test_the_manifest_probe_wins_then_the_image_healthcheck_then_still_running(health, image_hc, probe, described):
    gate = HealthGate(health, image_hc)
    assert gate.probe_kind == probe
    assert gate.describe().startswith(described)


@pytest.mark.parametrize("health,image_hc,timeout", [
    (None, SLOW_HC, 60 + 2 * 60 + 10),  # start period + two intervals + one check timeout
    (None, {"Test": ["CMD", "check"]}, 2 * 30 + 30),  # engine defaults: 30 s interval and timeout
    (None, {"Test": ["CMD", "c"], "Interval": 1 * S, "Timeout": 1 * S}, DEFAULT_TIMEOUT),  # never below the default
    (None, {"Test": ["CMD", "c"], "StartPeriod": 3600 * S}, 900),  # capped at 15 minutes
    ({"timeout": 5}, SLOW_HC, 5),  # the manifest's timeout is the operator's word
    ({"http": "http://x"}, SLOW_HC, DEFAULT_TIMEOUT),  # a manifest probe does not wait for the image's
    (None, {"Test": ["NONE"]}, DEFAULT_TIMEOUT),
])
def test_the_timeout_follows_the_image_healthcheck_unless_the_manifest_sets_one(health, image_hc, timeout):
    assert HealthGate(health, image_hc).timeout == timeout


def test_attempts_default_to_three_and_are_shown():
    assert HealthGate(None).attempts == 3
    assert HealthGate({"attempts": 1, "timeout": 7}).describe() == "still running after 10 s (timeout 7 s, 1 attempts)"
