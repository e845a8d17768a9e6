"""The typed release (bundlecore.release) and the JSON Schemas agree field by field, and
`from_manifest` parses good manifests and refuses bad ones with one line."""

import copy
import dataclasses
import typing

import pytest

from bundlecore import release as rel
from bundlecore.schema import first_error, load

MANIFEST = load("manifest.schema.json")
RUN = load("run.schema.json")
TARGET = MANIFEST["$defs"]["target"]
DELTA = MANIFEST["$defs"]["delta"]
SERVICE_ONLY = {"rollout", "stages"}  # the schema's `else` (a container) sets them to false
COMPOSE_ONLY = {"compose"}            # false for every kind but compose
COMPOSE = MANIFEST["$defs"]["compose"]


def _union(*nodes):
    """Several schema objects read as one (their properties, and what all of them require)."""
    props = {k: v for n in nodes for k, v in n.get("properties", {}).items()}
    required = set.intersection(*(set(n.get("required", [])) for n in nodes))
    return {"properties": props, "required": sorted(required)}


def _without(node, names):
    return {"properties": {k: v for k, v in node["properties"].items() if k not in names},
            "required": [k for k in node.get("required", []) if k not in names]}


# (record, the schema object it types)
PAIRS = [
    (rel.Release, MANIFEST),
    (rel.Builder, MANIFEST["properties"]["builder"]),
    (rel.Image, MANIFEST["properties"]["images"]["items"]),
    (rel.PayloadFile, MANIFEST["properties"]["payload"]["items"]),
    (rel.Delta, DELTA),
    (rel.DeltaBase, DELTA["properties"]["base"]),
    (rel.OmittedLayer, DELTA["properties"]["omitted"]["items"]),
    (rel.PatchedLayer, DELTA["properties"]["patched"]["items"]),
    (rel.ContainerTarget, _without(TARGET, SERVICE_ONLY | COMPOSE_ONLY)),
    (rel.ServiceTarget, _without(TARGET, COMPOSE_ONLY)),
    (rel.ComposeTarget, _without(TARGET, SERVICE_ONLY)),
    (rel.ComposeProject, COMPOSE),
    (rel.ComposeService, COMPOSE["properties"]["services"]["additionalProperties"]),
    (rel.Stage, TARGET["properties"]["stages"]["items"]),
    (rel.HealthSettings, TARGET["properties"]["health"]),
    (rel.PrometheusGate, RUN["$defs"]["prometheus_gate"]),
    (rel.RunSettings, _union(RUN["$defs"]["run"], RUN["$defs"]["service_run"])),
    (rel.RolloutSettings, RUN["$defs"]["rollout"]),
]


def _fields(cls) -> dict[str, bool]:
    """JSON name -> required, of a record (fields marked json=None are not from the manifest; a
    target's kind is its class)."""
    out = {rel.json_name(f): f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
           for f in dataclasses.fields(cls) if rel.json_name(f) is not None}
    if issubclass(cls, rel.Target):
        out["kind"] = True
    return out


@pytest.mark.parametrize("cls,node", PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_every_schema_property_is_a_field_and_every_field_a_property(cls, node):
    fields = _fields(cls)
    props = set(node["properties"])
    assert sorted(props - set(fields)) == [], f"{cls.__name__} lacks these schema properties"
    assert sorted(set(fields) - props) == [], f"{cls.__name__} has fields the schema does not describe"


@pytest.mark.parametrize("cls,node", PAIRS, ids=[c.__name__ for c, _ in PAIRS])
def test_a_field_is_required_exactly_when_the_schema_requires_it(cls, node):
    required = {name for name, req in _fields(cls).items() if req}
    assert sorted(required) == sorted(node.get("required", [])), cls.__name__


def test_every_target_kind_of_the_schema_has_a_type_and_no_other():
    assert sorted(rel.TARGET_KINDS) == sorted(TARGET["properties"]["kind"]["enum"])


def test_every_record_is_frozen():
    for cls, _ in PAIRS:
        assert cls.__dataclass_params__.frozen, cls.__name__


def test_a_list_in_the_schema_is_a_tuple_in_the_record():
    """What came signed cannot be changed by whoever holds the record."""
    for cls, node in PAIRS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            prop = node["properties"].get(rel.json_name(f) or "")
            if prop and prop.get("type") == "array":
                assert "tuple" in str(hints[f.name]), f"{cls.__name__}.{f.name}"


# -- from_manifest -------------------------------------------------------------------------------

D = "sha256:" + "a" * 64
GOOD = {
    "format_version": 1, "name": "shop", "version": "1.2.0", "sequence": 7,
    "created": "2026-01-01T00:00:00Z", "expires": "2026-02-01T00:00:00Z",
    "builder": {"tool": "bundle 1", "host": "ci", "engine": "20.10"}, "platform": "linux/amd64",
    "allow_latest": False,
    "images": [{"ref": "shop:1.2.0", "platform": "linux/amd64", "repo_digest": None, "id": D, "diff_ids": [D],
                "config": "images/c.json", "layers": ["images/l.tar"]}],
    "payload": [{"path": "images/c.json", "size": 10, "sha256": "b" * 64}],
    "target": {"kind": "container", "name": "shop", "image": "shop:1.2.0",
               "run": {"ports": ["8080:80"], "env": {"A": "1"}, "volumes": ["data:/data"]},
               "health": {"http": "http://127.0.0.1:8080/", "timeout": 30, "attempts": 3, "probation": 60,
                          "prometheus": {"query": "rate(x[1m])", "max": 0.5, "window": 60}}},
}
SERVICE = {"kind": "service", "name": "web", "image": "shop:1.2.0", "run": {"replicas": 2},
           "registry": "reg:5000", "rollout": {"parallelism": 1, "order": "start-first"},
           "stages": [{"services": ["web-canary"], "soak": 600}, {"services": ["web"], "soak": 0}]}
DELTA_OF = {"base": {"kind": "bundle", "sha256": "c" * 64, "name": "shop", "version": "1.1.0", "sequence": 6},
            "omitted": [{"path": "images/l.tar", "diff_id": D}]}


class FakeSigner:  # the verifier's signer shape (bundlecore.trust.Signer)
    def __init__(self, fingerprint, roles):
        self.fingerprint, self.roles = fingerprint, roles


def with_(**changes):
    m = copy.deepcopy(GOOD)
    m.update(changes)
    return m


@pytest.mark.parametrize("manifest", [GOOD, with_(target=SERVICE), with_(delta=DELTA_OF)], ids=["container", "service", "delta"])
def test_the_good_manifests_of_the_table_pass_the_schema(manifest):
    assert first_error("manifest.schema.json", manifest) is None


def test_a_container_release_is_parsed_once_into_typed_parts():
    r = rel.from_manifest(GOOD, [FakeSigner("F" * 40, ["release"])])
    assert (r.app, r.version, r.sequence, r.platform) == ("shop", "1.2.0", 7, "linux/amd64")
    assert r.signers == (rel.Signer("F" * 40, None, ("release",)),) and r.fingerprints == ["F" * 40]
    assert r.images[0].diff_ids == (D,) and r.target_image_id == D and r.delta is None
    t = r.target
    assert isinstance(t, rel.ContainerTarget) and t.kind == "container"
    assert t.run.ports == ("8080:80",) and t.run.env["A"] == "1" and t.run.restart is None
    assert t.health.prometheus == rel.PrometheusGate("rate(x[1m])", 0.5, 60)
    assert t.to_json() == GOOD["target"]  # what is written back is what was signed
    with pytest.raises(TypeError):
        t.run.env["A"] = "2"  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.version = "9"


def test_a_service_release_has_its_stages_and_rollout_typed():
    r = rel.from_manifest(with_(target=SERVICE))
    t = r.target
    assert isinstance(t, rel.ServiceTarget) and t.kind == "service" and t.registry == "reg:5000"
    assert t.services() == [["web-canary"], ["web"]] and t.soak(0) == 600 and t.soak(1) == 0
    assert t.rollout.as_mapping() == {"parallelism": 1, "order": "start-first"} and t.run.replicas == 2
    assert t.to_json() == SERVICE
    bare = rel.ServiceTarget("web", "shop:1", rel.RunSettings())
    assert bare.services() == [["web"]] and bare.soak(0) == 0


def test_a_delta_release_names_its_base():
    d = rel.from_manifest(with_(delta=DELTA_OF)).delta
    assert d.base.came_in() == f"shop 1.1.0 (sequence 6, sha256 {'c' * 12})"
    assert d.omitted == (rel.OmittedLayer("images/l.tar", D),) and d.patched == ()
    inv = rel.DeltaBase("inventory", "c" * 64, "host1")
    assert inv.came_in() == f"the inventory of host1 (sha256 {'c' * 12})"


def _drop(path):
    m = copy.deepcopy(GOOD)
    *outer, last = path
    node = m
    for k in outer:
        node = node[k]
    del node[last]
    return m


@pytest.mark.parametrize("manifest,error,match", [
    (_drop(["name"]), rel.ManifestError, "'name'"),
    (_drop(["target", "image"]), rel.ManifestError, "'image'"),
    (_drop(["builder", "tool"]), rel.ManifestError, "tool"),
    (with_(images=[{"ref": "x"}]), rel.ManifestError, "mistypes"),
    (with_(target={**GOOD["target"], "kind": "pod"}), rel.UnknownTargetKind, "'pod' is not handled"),
    (with_(target={**GOOD["target"], "run": {"privileged": True}}), rel.ManifestError,
     "RunSettings has no field for privileged"),
    (with_(target={**GOOD["target"], "health": {"http": "http://x/", "probation": 5}}), rel.ManifestError,
     "timeout"),
])
def test_a_manifest_without_the_shape_is_refused_with_one_line(manifest, error, match):
    with pytest.raises(error, match=match):
        rel.from_manifest(manifest)


def test_a_target_without_a_kind_is_a_container():
    t = rel.target_from_json({"name": "shop", "image": "shop:1", "run": {}})
    assert isinstance(t, rel.ContainerTarget) and t.health is None


def test_the_probation_flag_replaces_only_the_window():
    t = rel.from_manifest(GOOD).target
    assert t.with_probation(None) is t
    assert t.with_probation(15).health.probation == 15 and t.with_probation(15).health.prometheus == t.health.prometheus
    assert t.health.probation == 60


# -- signers, installed records ------------------------------------------------------------------

@pytest.mark.parametrize("given,expected", [
    ("F" * 40, rel.Signer("F" * 40)),
    ({"fingerprint": "F" * 40, "uid": "ops <o@x>", "roles": ["release"]}, rel.Signer("F" * 40, "ops <o@x>", ("release",))),
    (FakeSigner("F" * 40, ["builders"]), rel.Signer("F" * 40, None, ("builders",))),
])
def test_every_signer_shape_reads_into_the_one_signer(given, expected):
    assert rel.Signer.of(given) == expected


def test_a_signer_is_written_in_the_jsondoc_shape():
    assert rel.Signer("F" * 40, None, ("release",)).to_json() == {"fingerprint": "F" * 40, "uid": None,
                                                                  "roles": ["release"]}


@pytest.mark.parametrize("record,kind", [
    (None, None), ({"version": "1"}, "container"), ({"kind": "container"}, "container"),
    ({"kind": "service", "signers": ["F" * 40]}, "service"),
])
def test_an_installed_record_without_a_kind_is_a_container_record(record, kind):
    assert rel.installed_kind(record) == kind


def test_an_installed_record_reads_its_signers_as_fingerprints():
    rec = rel.InstalledRecord.from_json({"app": "shop", "version": "1", "sequence": 3, "highest_sequence": 4,
                                         "signers": ["F" * 40, {"fingerprint": "E" * 40}]})
    assert rec.signers == ("F" * 40, "E" * 40) and rec.highest_sequence == 4 and rec.kind == "container"


# -- results -------------------------------------------------------------------------------------

def test_every_result_is_in_the_audit_schema():
    schema = load("audit-event.schema.json")
    assert sorted(schema["properties"]["result"]["enum"]) == sorted(r.value for r in rel.Result)
