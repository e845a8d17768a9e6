"""The compose kind's pure rules (importer.kinds.compose): Compose's names and labels, the config
hash, each service's create body, the per-service steps and their undo, the project's verdict."""

import json

import pytest

from bundlecore.errors import AppState
from bundlecore.release import ComposeService, RunSettings, dependency_order, target_from_json
from importer.kinds.compose.machine import (ProjectRecord, Rules, ServiceStep, ServiceSwap, Step, forward_steps,
                                            undo_order)
from importer.kinds.compose.project import Action, config_hash, create_body, service_labels
from importer.kinds.compose.status import app_state


def _svc(**kw) -> ComposeService:
    base = {"name": "web", "image": "demo/web:1", "run": RunSettings.from_json({"env": {"A": "1"}, "restart": "always",
                                                                               "volumes": ["p_data:/data:ro"]}),
            "depends_on": {"db": "service_healthy"}, "networks": {"default": {}, "front": {"aliases": ("www",)}}}
    return ComposeService(**{**base, **kw})


def test_config_hash_changes_with_the_image_or_a_setting_only():
    svc = _svc()
    assert config_hash("p", svc, "sha256:a") == config_hash("p", _svc(), "sha256:a")
    assert config_hash("p", svc, "sha256:a") != config_hash("p", svc, "sha256:b")
    assert config_hash("p", svc, "sha256:a") != config_hash("p", _svc(run=RunSettings.from_json({"env": {"A": "2"}})),
                                                            "sha256:a")


def test_create_body_carries_composes_labels_healthcheck_networks_tmpfs_ulimits():
    svc = _svc(healthcheck={"test": ("CMD-SHELL", "true"), "interval": 0.5, "retries": 3}, tmpfs=("/tmp:size=1m", "/run"),
               ulimits={"nofile": {"soft": 10, "hard": 20}})
    labels = service_labels("p", "web", "h" * 64, "app", 2)
    body = create_body("p", svc, "sha256:img", labels)
    cfg = body["config"]
    assert cfg["Image"] == "sha256:img" and cfg["Env"] == ["A=1"]
    assert cfg["Labels"]["com.docker.compose.project"] == "p" and cfg["Labels"]["com.docker.compose.service"] == "web"
    assert cfg["Labels"]["com.docker.compose.oneoff"] == "False" and cfg["Labels"]["io.bundle.app"] == "app"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 500_000_000, "Retries": 3}
    hc = cfg["HostConfig"]
    assert hc["Tmpfs"] == {"/tmp": "size=1m", "/run": ""} and hc["Ulimits"] == [{"Name": "nofile", "Soft": 10, "Hard": 20}]
    assert hc["Binds"] == ["p_data:/data:ro"] and hc["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert hc["NetworkMode"] == "p_default"
    assert cfg["NetworkingConfig"] == {"EndpointsConfig": {"p_default": {"Aliases": ["web"]}}}
    assert body["extra_networks"] == {"p_front": {"Aliases": ["web", "www"]}}


def _swaps(actions: dict) -> dict:
    return {n: ServiceSwap(n, str(a), f"p-{n}-1") for n, a in actions.items()}


def test_an_upgrade_stops_in_reverse_order_and_creates_in_order_leaving_kept_services_alone():
    services = _swaps({"db": Action.RECREATE, "cache": Action.KEEP, "web": Action.RECREATE, "old": Action.RETIRE})
    steps = forward_steps(["db", "cache", "web"], services)
    assert steps == ["begin", "networks", "stop_old:old", "stop_old:web", "stop_old:db", "rename_old:old",
                     "rename_old:web", "rename_old:db", "backup:old", "backup:web", "backup:db",
                     "create_new:db", "start_new:db", "create_new:web", "start_new:web", "commit", "prune"]
    assert not any(s.endswith(":cache") for s in steps)


def test_each_service_step_is_undone_by_its_own_services_undo_step():
    rules = Rules()
    assert rules["stop_old:db"].undo == "start_old:db" and rules["backup:web"].undo == "restore_data:web"
    assert rules["start_new:web"].undo == "remove_new:web" and rules["networks"].undo == Step.REMOVE_NETWORKS
    assert rules["commit"].started == "replay" and rules["create_new:db"].started == "undo"
    assert "nonsense:db" not in rules and "start_new:db" in rules
    assert ServiceStep.of(Step.BACKUP, "db").value == "backup:db"


def test_the_undo_removes_new_ones_first_then_restores_then_brings_the_old_ones_back_in_order():
    r = ProjectRecord(kind="upgrade", app="a", project="p", target={}, order=["db", "web"],
                      services=_swaps({"db": Action.RECREATE, "web": Action.RECREATE}), steps=[], generation=2, keep=2,
                      bundle={}, version="2", sequence=2, installed_before=None, swap_id="s")
    order = [str(s) for s in undo_order(r)]
    assert order == ["remove_new:web", "remove_new:db", "restore_data:db", "restore_data:web", "rename_back:db",
                     "rename_back:web", "start_old:db", "start_old:web", "remove_networks"]
    r.history.append({"step": ServiceStep.of(Step.BACKUP, "db"), "phase": "done", "at": "t"})
    r.step = ServiceStep.of(Step.BACKUP, "db")
    again = ProjectRecord.from_json(json.loads(json.dumps(r.to_json())))
    assert again.to_json() == r.to_json() and again.history[0]["step"] == "backup:db"
    assert isinstance(again.services["db"], ServiceSwap)


@pytest.mark.parametrize("services, state", [
    ({"db": {"image_id": "i", "live": {"image_id": "i", "status": "running", "health": "healthy"}}}, AppState.ACTIVE),
    ({"db": {"image_id": "i", "live": {"image_id": "i", "status": "running", "health": "unhealthy"}}}, AppState.INACTIVE),
    ({"db": {"image_id": "i", "live": {"image_id": "j", "status": "running", "health": None}}}, AppState.INACTIVE),
    ({"db": {"image_id": "i", "live": None}}, AppState.INACTIVE),
    ({"job": {"image_id": "i", "live": {"image_id": "i", "status": "exited", "exit_code": 0}}}, AppState.ACTIVE),
    ({"job": {"image_id": "i", "live": {"image_id": "i", "status": "exited", "exit_code": 1}}}, AppState.INACTIVE),
])
def test_a_project_is_active_only_when_every_service_is(services, state):
    assert app_state({"installed": {"v": 1}, "services": services}, engine_answers=True) == state
    assert app_state({"installed": None, "services": {}}, engine_answers=True) == AppState.NOT_INSTALLED
    assert app_state({"installed": {"v": 1}, "services": services}, engine_answers=False) == AppState.ENGINE_UNREACHABLE


def test_dependency_order_and_its_cycle():
    assert dependency_order({"web": ["db"], "db": [], "worker": ["db", "web"]}) == ["db", "web", "worker"]
    with pytest.raises(ValueError, match="cycle"):
        dependency_order({"a": ["b"], "b": ["a"]})


def test_host_policy_names_the_service_in_a_refusal():
    from bundlecore.refusals import HostPolicyRefused
    from importer.hostpolicy import HostPolicy
    t = target_from_json({"kind": "compose", "name": "p", "image": "x:1", "run": {}, "compose": {
        "project": "p", "volumes": {}, "networks": {"default": {}},
        "services": {"db": {"image": "x:1", "run": {"cap_add": ["SYS_ADMIN"]}, "depends_on": {},
                            "networks": {"default": {}}}}}})
    with pytest.raises(HostPolicyRefused, match=r"^services\.db\.cap_add\.0 asks for added capability SYS_ADMIN"):
        HostPolicy(None).check_target("p", t)


def test_a_rollback_restores_every_kept_containers_data_before_any_of_them_starts():
    services = _swaps({"db": Action.RECREATE, "web": Action.RECREATE, "cache": Action.KEEP, "old": Action.RETIRE})
    steps = forward_steps(["db", "cache", "web"], services, rollback=True)
    assert steps == ["begin", "networks", "stop_old:old", "stop_old:web", "stop_old:db", "rename_old:old",
                     "rename_old:web", "rename_old:db", "backup:old", "backup:web", "backup:db",
                     "restore_target:db", "restore_target:web", "rename_target:db", "start_new:db",
                     "rename_target:web", "start_new:web", "commit", "prune"]
    rules = Rules()
    assert rules["restore_target:db"].undo == "restore_data:db" and rules["rename_target:web"].undo == "remove_new:web"


def test_a_new_generation_number_is_above_every_kept_and_rolled_back_one():
    from importer.kinds.compose.run import next_generation
    assert next_generation(None) == 1
    assert next_generation({"generation": 1, "previous": [{"generation": 2}]}) == 3  # rolled back from 2 to 1
    assert next_generation({"generation": 1, "highest_generation": 4, "previous": []}) == 5


def test_the_previous_line_never_says_none_for_a_generation_without_a_version():
    from importer.versiontext import previous_line
    line = previous_line({"generation": 0, "version": None, "parked_name": "p-db-1.previous-0",
                          "backup_dir": "generations/0", "displaced_at": "t"})
    assert "None" not in line and "generation 0 an unknown image (no version recorded) as p-db-1.previous-0" in line
