"""Probation of a compose project (importer.kinds.compose.machine): one window over every service,
the longest any service's `[target.health.NAME]` or the project's `--probation` asks, and the step
it adds to the swap only when a window is set."""

import pytest

from importer.kinds.compose.machine import ServiceSwap, forward_steps, probation_healths, probation_window


@pytest.mark.parametrize("own,project,want", [
    # no window anywhere: no probation
    ({"db": None, "web": {"http": "http://x/"}}, None, 0),
    # one service's own window is the project's
    ({"db": None, "web": {"probation": 30, "max_restarts": 1}}, None, 30),
    # --probation longer than a service's: the project's window
    ({"db": None, "web": {"probation": 30}}, {"probation": 90}, 90),
    # a service's metrics window is part of its probation
    ({"db": {"prometheus": {"url": "http://p:9090", "query": "q", "max": 1, "window": 120}}}, {"probation": 60}, 120),
])
def test_the_project_window_is_the_longest_any_service_or_the_project_asks(own, project, want):
    assert probation_window(probation_healths(own, project)) == want


def test_the_projects_window_allows_no_restart_unless_set_and_keeps_a_services_own_limit():
    healths = probation_healths({"db": None, "web": {"probation": 10, "max_restarts": 2}}, {"probation": 60})
    assert healths["db"] == {"probation": 60.0, "max_restarts": 0}
    assert healths["web"] == {"probation": 60.0, "max_restarts": 2}
    assert probation_healths({"db": None}, {"probation": 5, "max_restarts": 3})["db"]["max_restarts"] == 3


def test_probation_is_one_project_step_after_every_gate_and_before_commit():
    services = {n: ServiceSwap(n, "recreate", f"p-{n}-1") for n in ("db", "web")}
    without = forward_steps(["db", "web"], services)
    with_window = forward_steps(["db", "web"], services, probation=True)
    assert "probation" not in without
    assert with_window == without[:-2] + ["probation", "commit", "prune"]


def test_the_probation_flag_over_a_compose_target_is_the_projects_window():
    from bundlecore.release import ComposeTarget, target_from_json
    svc = {"image": "demo/web:1", "run": {}, "depends_on": {}, "networks": {}}
    t = target_from_json({"kind": "compose", "name": "p", "image": "demo/web:1", "run": {},
                          "compose": {"project": "p", "services": {"web": svc}, "volumes": {}, "networks": {}}})
    assert isinstance(t, ComposeTarget)
    project = t.with_probation(45).health_json()
    assert probation_window(probation_healths({"web": None}, project)) == 45
