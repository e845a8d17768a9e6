"""Pure parts of progressive delivery on the fleet (issue 19): a stage's canary step and parallel
flag as the spec states them and the model reads them, the canary's task count and spec, and the
placeholders of an analysis query (bundlecore.placeholders)."""

import pytest

from bundlecore import placeholders
from bundlecore.errors import UsageProblem
from bundlecore.release import ServiceTarget, canary_name
from bundler.spec import load_spec
from importer.analysis import MetricsGate
from importer.kinds.service import canary
from importer.kinds.service.settings import service_spec
from importer.ownership import APP_LABEL, Resource, named_resources
from tests.unit.test_service_settings import SERVICE_SPEC

CANARY_STAGES = """
[[stage]]
services = ["web"]
replicas = 1
soak = "1m"

[[stage]]
services = ["web", "api"]
parallel = true
"""


def test_a_canary_step_and_a_parallel_stage_are_read_from_the_spec_into_the_model(tmp_path):
    p = tmp_path / "bundle.toml"
    p.write_text(SERVICE_SPEC + CANARY_STAGES)
    spec = load_spec(p)
    assert spec.target["stages"] == [{"services": ["web"], "soak": 60, "replicas": 1},
                                     {"services": ["web", "api"], "soak": 0, "parallel": True}]
    t = ServiceTarget.from_json(spec.target)
    assert t.stage(0).canary and t.stage(0).replicas == 1 and not t.stage(1).canary and t.stage(1).parallel
    assert t.to_json()["stages"] == spec.target["stages"]  # journaled as signed
    assert t.services() == [["web"], ["web", "api"]] and t.canaries() == ["web-canary"]
    assert (Resource.SERVICE, "web-canary") in named_resources(t)  # ownership claims the canary's name


@pytest.mark.parametrize("stages,message", [
    ('\n[[stage]]\nservices = ["web"]\nreplicas = 1\n', "stage 1 rolls part of web .replicas.; a later stage must"),
    ('\n[[stage]]\nservices = ["web"]\n\n[[stage]]\nservices = ["web"]\nreplicas = 1\n', "stage 2 names web again"),
    ('\n[[stage]]\nservices = ["web"]\nreplicas = 0\n', "at stage.0.replicas"),
    ('\n[[stage]]\nservices = ["web"]\nreplicas = "100%"\n', "at stage.0.replicas"),
    ('\n[[stage]]\nservices = ["web"]\nparallel = "yes"\n', "at stage.0.parallel"),
])
def test_a_canary_step_left_unfinished_or_out_of_bounds_is_refused_when_the_spec_is_read(tmp_path, stages, message):
    p = tmp_path / "bundle.toml"
    p.write_text(SERVICE_SPEC + stages)
    with pytest.raises(UsageProblem, match=message):
        load_spec(p)


def test_two_canary_steps_may_grow_the_canary_before_the_service_rolls_whole(tmp_path):
    p = tmp_path / "bundle.toml"
    p.write_text(SERVICE_SPEC + '\n[[stage]]\nservices = ["web"]\nreplicas = 1\n\n[[stage]]\nservices = ["web"]\n'
                 'replicas = "50%"\n\n[[stage]]\nservices = ["web"]\n')
    assert [s.get("replicas") for s in load_spec(p).target["stages"]] == [1, "50%", None]


@pytest.mark.parametrize("replicas,stable,expected", [(1, 3, 1), (2, 3, 2), ("25%", 3, 1), ("50%", 3, 2),
                                                      ("10%", 40, 4), ("1%", 1, 1), ("99%", 4, 4)])
def test_a_canarys_task_count_is_its_replicas_or_its_percentage_of_the_stable_one_rounded_up(replicas, stable, expected):
    assert canary.count(replicas, stable) == expected


def test_a_canarys_spec_is_the_stable_ones_on_the_new_image_beside_it_under_its_alias_without_its_ports():
    target = {"run": {"replicas": 3, "ports": ["8080:8080"], "networks": ["front"]},
              "health": {"tcp": "127.0.0.1:8080", "timeout": 10, "attempts": 2}}
    stable = service_spec("web", target, "reg/web:1@sha256:a", app="shop")
    spec = canary.spec_of(stable, "web", "reg/web:2@sha256:b", 1, target, "shop")
    assert spec["Name"] == canary_name("web") == "web-canary"
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == "reg/web:2@sha256:b"
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert spec["TaskTemplate"]["Networks"] == [{"Target": "front", "Aliases": ["web"]}]
    assert "Ports" not in spec["EndpointSpec"] and spec["Labels"][canary.CANARY_OF] == "web"
    assert spec["Labels"][APP_LABEL] == "shop"
    assert stable["Name"] == "web" and stable["Mode"] == {"Replicated": {"Replicas": 3}}  # not changed


def test_placeholders_are_filled_escaped_and_only_inside_strings():
    q = 'sum(rate(x{version="{{version}}",service=~"{{services}}"}[1m])) / sum(rate(x{app="{{app}}"}[1m]))'
    assert placeholders.problems(q) == []
    values = placeholders.values_of('sh"op', "2.0.0", ["web", "a.b"], ["web"])
    assert placeholders.substitute(q, values) == (
        'sum(rate(x{version="2.0.0",service=~"web|a\\\\.b"}[1m])) / sum(rate(x{app="sh\\"op"}[1m]))')
    # a value can neither end its string nor widen its regex
    assert placeholders.literal('a"} or vector(1) #') == 'a\\"} or vector(1) #'
    assert placeholders.alternation(["a|b", "c.*"]) == "a\\\\|b|c\\\\.\\\\*"
    assert placeholders.problems('x > {{version}}') == ["placeholder {{version}} outside a double-quoted string"]
    assert placeholders.problems('x{a="{{nope}}"}')[0].startswith("unknown placeholder {{nope}}")
    assert placeholders.problems('x{a="\\"{{version}}"}') == []  # an escaped quote does not end the string


def test_a_query_misusing_a_placeholder_is_refused_when_the_spec_is_read(tmp_path):
    p = tmp_path / "bundle.toml"
    p.write_text(SERVICE_SPEC.replace("[target.run]", "[target.health]\ncmd = \"true\"\ntimeout = 5\n"
                                      "[target.health.prometheus]\nquery = 'up > {{version}}'\nmax = 0\n"
                                      'window = "1m"\n\n[target.run]'))
    with pytest.raises(UsageProblem, match="prometheus.query: placeholder .* outside a double-quoted string"):
        load_spec(p)


def test_the_metrics_gate_bound_to_a_stage_names_the_query_it_evaluates():
    gate = MetricsGate("http://p:9090", 'x{service=~"{{stage_services}}"}', 0.5, 10)
    bound = gate.bound(placeholders.values_of("shop", "2", ["web", "api"], ["web-canary"]))
    assert bound.query == 'x{service=~"web-canary"}' and "web-canary" in bound.describe()
