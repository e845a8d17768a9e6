"""Pure parts of the fleet: what a signed service target asks Swarm for, how a rollout's outcome is
read, where an image is pushed, and how a spec's service settings and stages are validated."""

import pytest

from bundlecore.errors import UsageProblem
from bundlecore.schema import first_error
from bundler.spec import load_spec
from bundlecore.registrypath import push_destination
from importer.registry import check_registry_address, is_loopback
from bundlecore.release import RunSettings, ServiceTarget
from importer.kinds.service import release
from importer.kinds.service.settings import (NS, Outcome, healthcheck, outcome, service_spec,
                                       update_config, with_image)

SERVICE_SPEC = """\
name = "web"
version = "2.0.0"
sequence = 2
images = ["registry.intranet:5000/acme/web:2.0.0"]

[target]
kind = "service"
name = "web"
image = "registry.intranet:5000/acme/web:2.0.0"
registry = "registry.intranet:5000"

[target.run]
replicas = 3
ports = ["8080:8080"]
constraints = ["node.labels.group==test"]

[target.rollout]
parallelism = 1
delay = "5s"
order = "start-first"
monitor = "15s"
max_failure_ratio = 0
failure_action = "rollback"
"""

STAGES = """
[[stage]]
services = ["web-canary"]
soak = "7d"

[[stage]]
services = ["web"]
"""


@pytest.mark.parametrize("state,expected", [
    (None, None), ({}, None), ({"State": "updating"}, Outcome.RUNNING),
    ({"State": "rollback_started"}, Outcome.RUNNING), ({"State": "completed"}, Outcome.COMPLETED),
    ({"State": "rollback_completed"}, Outcome.ROLLED_BACK), ({"State": "paused"}, Outcome.PAUSED),
    ({"State": "rollback_paused"}, Outcome.PAUSED), ({"State": "something new"}, Outcome.RUNNING),
])
def test_a_rollouts_outcome_is_read_from_swarms_update_state_only(state, expected):
    assert outcome(state) == expected


def test_the_rollout_settings_become_swarms_update_config_in_nanoseconds():
    cfg = update_config({"rollout": {"delay": "5s", "monitor": "15s", "order": "stop-first", "parallelism": 2}})
    assert cfg == {"Parallelism": 2, "Delay": 5 * NS, "Order": "stop-first", "Monitor": 15 * NS,
                   "MaxFailureRatio": 0.0, "FailureAction": "rollback"}
    assert update_config({})["Order"] == "start-first"  # no outage unless asked for


@pytest.mark.parametrize("health,test", [
    (None, None),
    ({"cmd": ["/bin/check", "--quick"], "timeout": 20, "attempts": 3}, ["CMD", "/bin/check", "--quick"]),
    ({"cmd": "check || exit 1", "timeout": 20, "attempts": 3}, ["CMD-SHELL", "check || exit 1"]),
    ({"tcp": "127.0.0.1:8080", "timeout": 20, "attempts": 3}, ["CMD-SHELL", "nc -w 2 127.0.0.1 8080 </dev/null"]),
])
def test_target_health_becomes_a_swarm_healthcheck(health, test):
    hc = healthcheck(health)
    assert (hc or {}).get("Test") == test
    if hc:
        assert hc["Retries"] == 3 and hc["StartPeriod"] == 20 * NS and hc["Timeout"] == 10 * NS


def test_the_first_install_spec_carries_replicas_ports_networks_constraints_and_mounts():
    target = {"run": {"replicas": 3, "ports": ["8080:80/udp", "9090"], "networks": ["front"],
                      "constraints": ["node.labels.group==test"], "volumes": ["data:/data", "/srv:/srv:ro"],
                      "env": {"A": "1"}, "command": ["serve"]}}
    spec = service_spec("web", target, "reg:5000/web:2@sha256:" + "a" * 64)
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert spec["EndpointSpec"] == {"Mode": "vip", "Ports": [
        {"Protocol": "udp", "TargetPort": 80, "PublishMode": "ingress", "PublishedPort": 8080},
        {"Protocol": "tcp", "TargetPort": 9090, "PublishMode": "ingress"}]}
    task = spec["TaskTemplate"]
    assert task["Networks"] == [{"Target": "front"}]
    assert task["Placement"]["Constraints"] == ["node.labels.group==test"]
    assert task["ContainerSpec"]["Mounts"] == [
        {"Type": "volume", "Source": "data", "Target": "/data", "ReadOnly": False},
        {"Type": "bind", "Source": "/srv", "Target": "/srv", "ReadOnly": True}]
    assert task["ContainerSpec"]["Env"] == ["A=1"] and task["ContainerSpec"]["Args"] == ["serve"]


@pytest.mark.parametrize("run,message", [
    ({"endpoint_mode": "dnsrr", "ports": ["8080:8080"]}, "dnsrr cannot publish ports"),
    ({"ports": ["127.0.0.1:8080:8080"]}, "has no host address"),
    ({"cap_add": ["NET_ADMIN"]}, "cap_add do not apply"),
    ({"restart": "always", "network": "host"}, "network, restart do not apply"),
])
def test_settings_swarm_cannot_honour_are_usage_errors_not_silently_dropped(run, message):
    with pytest.raises(UsageProblem, match=message):
        service_spec("web", {"run": run}, "img")


def test_an_update_changes_only_the_image_and_the_rollout_keeping_what_the_admin_scaled():
    spec = service_spec("web", {"run": {"replicas": 2}}, "old")
    spec["Mode"]["Replicated"]["Replicas"] = 7  # an admin's `docker service scale web=7`
    new = with_image(spec, "new", {"rollout": {"order": "stop-first"}})
    assert new["TaskTemplate"]["ContainerSpec"]["Image"] == "new"
    assert new["Mode"]["Replicated"]["Replicas"] == 7
    assert new["UpdateConfig"]["Order"] == "stop-first"
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == "old"  # the current spec is not modified


@pytest.mark.parametrize("ref,registry,expected", [
    ("acme/web:2.0.0", "reg:5000", ("reg:5000/acme/web", "2.0.0")),
    ("registry.intranet:5000/acme/web:2.0.0", "127.0.0.1:5000", ("127.0.0.1:5000/acme/web", "2.0.0")),
    ("localhost/web:1", "r:1", ("r:1/web", "1")),
    ("web:1", "r:1", ("r:1/web", "1")),
    ("library.v2/web:1", "r:1", ("r:1/web", "1")),
])
def test_an_image_is_pushed_under_its_signed_repository_path_and_tag(ref, registry, expected):
    d = push_destination(registry, ref)
    assert (d.repository, d.tag) == expected


@pytest.mark.parametrize("ref", ["acme/web", "acme/web@sha256:" + "a" * 64])
def test_an_image_without_a_tag_cannot_be_pushed(ref):
    with pytest.raises(UsageProblem):
        push_destination("r:1", ref)


@pytest.mark.parametrize("registry,loopback", [
    ("127.0.0.1:5000", True), ("127.9.9.9:5000", True), ("localhost:5000", True), ("[::1]:5000", True),
    ("10.0.0.1:5000", False), ("registry.intranet:5000", False), ("localhost.evil.com:5000", False),
])
def test_plain_http_only_for_a_loopback_registry(registry, loopback):
    assert is_loopback(registry) is loopback


@pytest.mark.parametrize("registry", ["", "reg", "http://reg:5000", "reg:5000/path", "reg:0", "reg:65536",
                                      "-reg:5000", "reg :5000"])
def test_a_registry_must_be_host_port(registry):
    with pytest.raises(UsageProblem, match="is not HOST:PORT"):
        check_registry_address(registry)


def test_a_service_spec_with_stages_normalizes_soaks_to_seconds(tmp_path):
    p = tmp_path / "bundle.toml"
    p.write_text(SERVICE_SPEC + STAGES)
    spec = load_spec(p)
    assert spec.target["stages"] == [{"services": ["web-canary"], "soak": 7 * 86400}, {"services": ["web"], "soak": 0}]
    target = ServiceTarget.from_json(spec.target)
    assert target.services() == [["web-canary"], ["web"]]
    assert target.soak(0) == 7 * 86400
    assert ServiceTarget("web", "web:1", RunSettings()).services() == [["web"]]


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.replace('kind = "service"', 'kind = "container"').split("[target.run]")[0] + STAGES,
     "applies to target.kind"),
    (lambda s: s + STAGES + '\n[[stage]]\nservices = ["web"]\n', "names web again"),
    (lambda s: s.replace('kind = "service"', 'kind = "container"').replace("replicas = 3\n", ""),
     "does not allow"),  # a container has no rollout
    (lambda s: s.replace("replicas = 3", 'cap_add = ["SYS_ADMIN"]'), "at target.run"),
    (lambda s: s.replace('order = "start-first"', 'order = "sideways"'), "at target.rollout.order"),
    (lambda s: s.replace('registry = "registry.intranet:5000"', 'registry = "http://x"'), "at target.registry"),
    (lambda s: s.replace('"node.labels.group==test"', '"anything goes"'), "at target.run.constraints.0"),
    (lambda s: s + '\n[[stage]]\nservices = []\n', "at stage.0.services"),
    # what only the container kind honours is refused, not silently ignored, for a service
    (lambda s: s.replace("[target.run]", '[target.health]\ncmd = "true"\ntimeout = 5\nmax_restarts = 1\n\n'
                         '[target.run]'), "at target.health"),
])
def test_bad_service_settings_are_refused_when_the_spec_is_read(tmp_path, edit, message):
    p = tmp_path / "bundle.toml"
    p.write_text(edit(SERVICE_SPEC))
    with pytest.raises(UsageProblem, match=message):
        load_spec(p)


def test_a_service_target_may_carry_a_probation_and_a_metrics_gate_that_its_stages_are_watched_by(tmp_path):
    """The analysis of each stage (importer.analysis); probation is a soak, no restart count is implied."""
    p = tmp_path / "bundle.toml"
    p.write_text(SERVICE_SPEC.replace("[target.run]", '[target.health]\ncmd = "true"\ntimeout = 5\nprobation = "1m"\n'
                                      '[target.health.prometheus]\nquery = "up"\nmax = 0\nwindow = "1m"\n'
                                      'failure_limit = 2\n\n[target.run]'))
    health = load_spec(p).target["health"]
    assert health["probation"] == 60 and "max_restarts" not in health
    assert health["prometheus"] == {"query": "up", "max": 0, "window": 60, "failure_limit": 2}


def test_a_container_target_is_validated_exactly_as_before():
    base = {"kind": "container", "name": "c", "image": "i:1", "run": {"cap_add": ["NET_ADMIN"], "restart": "always"}}
    manifest_like = {"name": "c", "version": "1", "images": ["i:1"], "target": base}
    assert first_error("spec.schema.json", manifest_like) is None
    assert first_error("spec.schema.json", {**manifest_like, "target": {**base, "run": {"replicas": 2}}})


@pytest.mark.parametrize("extra,refused", [
    ({}, set()),
    ({"probation": 60}, set()),  # each stage soaks at least that long (importer.kinds.service.release)
    ({"probation": 60, "max_restarts": 1}, {"max_restarts"}),
    ({"prometheus": {"url": "http://p:9090", "query": "up", "max": 0, "window": 60, "failure_limit": 2}}, set()),
])
def test_a_signed_service_target_asking_for_container_only_health_is_refused_by_the_manifest_schema(extra, refused):
    """A crafted manifest is held to the same rule as the spec: refused (exit 3, schema), not ignored."""
    from bundlecore.schema import validator
    v = validator("manifest.schema.json")
    target = {"kind": "service", "name": "web", "image": "registry.intranet:5000/acme/web:2.0.0",
              "registry": "registry.intranet:5000", "run": {"replicas": 2},
              "health": {"cmd": ["true"], "timeout": 5, "attempts": 3, **extra}}
    errors = list(v.evolve(schema=v.schema["$defs"]["target"]).iter_errors(target))
    assert {e.instance for e in errors if e.validator == "not"} == refused and len(errors) == len(refused), errors


@pytest.mark.parametrize("env, expected", [(None, 30), ("5", 5.0), ("0", 0.0), ("-3", 0.0), ("soon", 30)])
def test_the_inline_soak_is_30_s_unless_the_test_only_environment_lowers_it(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv(release.INLINE_SOAK_ENV, raising=False)
    else:
        monkeypatch.setenv(release.INLINE_SOAK_ENV, env)
    assert release.inline_soak() == expected


def test_a_created_service_and_the_volumes_its_tasks_create_carry_the_app_that_owns_them():
    spec = service_spec("web", {"run": {"volumes": ["data:/data", "/srv:/srv"]}}, "img", app="shop")
    assert spec["Labels"] == {"io.bundle.service": "web", "io.bundle.app": "shop"}
    mounts = spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert mounts[0]["VolumeOptions"] == {"Labels": {"io.bundle.app": "shop"}}
    assert "VolumeOptions" not in mounts[1]  # a bind mount is the host's, granted by the host policy
