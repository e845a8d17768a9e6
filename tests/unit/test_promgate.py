"""The metrics gate's pure parts (importer.analysis, importer.hostpolicy, the schemas): how a
Prometheus answer is read, the limit rule, what the host allows, and what a spec may say."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from bundlecore.errors import EnvironmentProblem, UsageProblem
from bundlecore.schema import _registry
from bundler.spec import load_spec
from importer.hostpolicy import HostPolicy, HostPolicyRefused, base_url
from importer.site import SiteSettings
from importer.health import HealthGate
from importer.analysis import Analysis, MetricsGate, MetricsUnavailable, Reading, judge, parse_answer


def vector(*values) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"job": f"j{i}"}, "value": [1700000000.5, v]} for i, v in enumerate(values)]}}).encode()


# -- reading the answer -------------------------------------------------------------------------

@pytest.mark.parametrize("body, expected", [
    (vector("0"), Reading(0.0)),
    (vector("0.25", "3", "1e-3"), Reading(3.0)),  # the highest series counts
    (vector("-2"), Reading(-2.0)),
    (vector(), Reading(None)),                     # no series: no data (yet)
    (json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}}).encode(), Reading(7.0)),
])
def test_a_successful_answer_is_read_as_its_highest_value(body, expected):
    assert parse_answer(200, body) == expected


@pytest.mark.parametrize("status, body, words", [
    (400, json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}).encode(),
     "Prometheus says error: parse error at char 5"),
    (422, json.dumps({"status": "error", "errorType": "execution"}).encode(), "Prometheus says error: execution"),
    (503, b"<html>Service Unavailable</html>", "HTTP 503, not a Prometheus API answer"),
    (200, b"", "HTTP 200, not a Prometheus API answer"),
    (200, b"\xff\xfe", "not a Prometheus API answer"),
    (200, b"[1, 2]", "not a Prometheus API answer"),
    (500, json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode(), "HTTP 500"),
    (200, vector("NaN"), "the value is NaN, not a finite number"),
    (200, vector("+Inf"), "not a finite number"),
    (200, vector("-Inf"), "not a finite number"),
    (200, vector("0", "NaN"), "NaN"),                 # one bad series spoils the reading
    (200, vector("lots"), "the value 'lots' is not a number"),
    (200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1, 0.5]}]}}).encode(), "is not [time, \"value\"]"),   # a JSON number, not the API's string
    (200, json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode(),
     "the result is a matrix, not an instant vector or scalar"),
    (200, json.dumps({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}).encode(),
     "a string"),
    (200, json.dumps({"status": "success"}).encode(), "malformed answer"),
    (200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": ["x"]}}).encode(), "not [time"),
])
def test_an_answer_that_is_not_a_number_cannot_be_evaluated(status, body, words):
    with pytest.raises(MetricsUnavailable) as e:
        parse_answer(status, body)
    assert words in str(e.value)


# -- the limit rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("reading, limit, final, why", [
    (Reading(0.0), 0.01, False, None),
    (Reading(0.01), 0.01, True, None),                  # at the limit is fine
    (Reading(0.0100001), 0.01, False, "its value 0.0100001 is above the limit 0.01"),
    (Reading(5.0), 0.5, True, "its value 5 is above the limit 0.5"),
    (Reading(-1.0), -0.5, False, None),
    (Reading(None), 0.01, False, None),                 # empty while the window runs: no data yet
    (Reading(None), 0.01, True, "it returned no data by the end of the window"),
    (Reading(0.0), math.nan, False, "its value 0 is above the limit nan"),  # a NaN limit passes nothing
])
def test_the_limit_rule(reading, limit, final, why):
    assert judge(reading, limit, final) == why


def test_the_window_extends_probation_and_the_plan_says_so():
    prom = {"url": "http://prom:9090", "query": "up", "max": 0.01, "window": 120}
    assert HealthGate({"http": "http://x/", "probation": 30, "prometheus": prom}).probation == 120
    assert HealthGate({"http": "http://x/", "probation": 600, "prometheus": prom}).probation == 600
    gate = HealthGate({"http": "http://x/", "prometheus": prom})
    assert gate.probation == 120 and gate.max_restarts == 0
    assert "metrics gate: Prometheus http://prom:9090: up at most 0.01 for 120 s" in gate.describe()
    assert HealthGate({"http": "http://x/"}).metrics is None


# -- what the host allows ---------------------------------------------------------------------

@pytest.mark.parametrize("url, normal", [
    ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
    ("http://127.0.0.1:9090/", "http://127.0.0.1:9090"),
    ("HTTP://Prom.Intranet", "http://prom.intranet:80"),
    ("https://prom/sub/path/", "https://prom:443/sub/path"),
    ("http://[::1]:9090", "http://[::1]:9090"),
    ("http://user:secret@prom:9090", None),
    ("http://prom:9090@evil:80", None),
    ("ftp://prom", None),
    ("file:///etc/passwd", None),
    ("http://prom:9090/?x=1", None),
    ("http://prom:9090/#f", None),
    ("http://prom:99999", None),
    ("http://prom/a/../b", None),
    ("", None),
])
def test_base_urls_are_compared_in_one_normal_form(url, normal):
    assert base_url(url) == normal


POLICY = """
[host]
prometheus_urls = ["http://prom.intranet:9090/"]

[apps.shop]
prometheus_urls = ["https://metrics.shop.intranet/prom"]
"""


def _health(url=None):
    prom = {"query": "up", "max": 0, "window": 60}
    if url is not None:
        prom["url"] = url
    return {"http": "http://127.0.0.1:1/", "prometheus": prom}


@pytest.fixture
def policy(tmp_path):
    (tmp_path / "host-policy.toml").write_text(POLICY)
    return HostPolicy.load(tmp_path)


@pytest.mark.parametrize("app, url, granted_by", [
    ("demo", "http://prom.intranet:9090", "[host] prometheus_urls"),
    ("demo", "HTTP://PROM.INTRANET:9090/", "[host] prometheus_urls"),
    ("shop", "https://metrics.shop.intranet:443/prom/", "[apps.shop] prometheus_urls"),
    ("shop", "http://prom.intranet:9090", "[host] prometheus_urls"),
])
def test_a_granted_prometheus_url_is_shown_with_its_grant(policy, app, url, granted_by):
    (access,) = policy.check(app, {}, _health(url), url_required=True)
    assert access.granted_by == granted_by
    assert access.line() == f"metrics queries to Prometheus at {url}"


@pytest.mark.parametrize("app, url, words", [
    ("demo", "http://prom.intranet:9091", 'to grant it: [apps.demo] prometheus_urls = ["http://prom.intranet:9091"]'),
    ("demo", "https://prom.intranet:9090", "which this host does not allow"),        # another scheme
    ("demo", "http://prom.intranet:9090/other", "which this host does not allow"),   # another path
    ("demo", "https://metrics.shop.intranet/prom", "which this host does not allow"),  # granted to shop only
    ("demo", "http://10.0.0.1:9090", "metrics queries to Prometheus at http://10.0.0.1:9090"),
])
def test_a_prometheus_url_the_host_does_not_allow_is_refused(policy, app, url, words):
    with pytest.raises(HostPolicyRefused) as e:
        policy.check(app, {}, _health(url))
    line = e.value.line()
    assert line.startswith("refused: host policy: target.health.prometheus.url asks for") and words in line, line


def test_a_metrics_gate_with_no_url_waits_for_the_site_file_then_is_refused(policy):
    assert policy.check("demo", {}, _health()) == []  # the signed bundle alone: the site may set it
    with pytest.raises(HostPolicyRefused) as e:
        policy.check("demo", {}, _health(), url_required=True)
    assert "set [health.prometheus] url in the site settings of demo" in e.value.line()


def test_no_policy_file_allows_no_prometheus(tmp_path):
    with pytest.raises(HostPolicyRefused):
        HostPolicy.load(tmp_path).check("demo", {}, _health("http://127.0.0.1:9090"))


@pytest.mark.parametrize("text", [
    '[host]\nprometheus_urls = "http://p:9090"\n',
    '[host]\nprometheus_urls = ["http://u:p@p:9090"]\n',
    '[host]\nprometheus_urls = ["p:9090"]\n',
    '[apps.x]\nprometheus_urls = ["http://p:9090?q=1"]\n',
])
def test_a_bad_prometheus_grant_is_an_environment_error(tmp_path, text):
    (tmp_path / "host-policy.toml").write_text(text)
    with pytest.raises(EnvironmentProblem, match="prometheus_urls"):
        HostPolicy.load(tmp_path)


# -- the site file ----------------------------------------------------------------------------

def test_the_site_file_sets_or_replaces_the_url_of_a_signed_metrics_gate(tmp_path):
    site = tmp_path / "demo.toml"
    site.write_text('[health.prometheus]\nurl = "http://prom.site:9090"\n')
    site.chmod(0o644)
    s = SiteSettings.load("demo", site)
    assert s.run == {} and s.prometheus_url == "http://prom.site:9090"
    for signed in (_health(), _health("http://prom.signed:9090")):
        assert s.over_health(signed)["health"]["prometheus"] == {"query": "up", "max": 0, "window": 60,
                                                                  "url": "http://prom.site:9090"}
    assert s.over_health({"http": "http://x/"}) == {}  # no metrics gate: nothing to set
    assert "  health.prometheus.url http://prom.site:9090" in s.plan_lines()


@pytest.mark.parametrize("text", [
    '[health.prometheus]\nurl = "http://u:p@prom:9090"\n',
    '[health.prometheus]\nurl = "ftp://prom"\n',
    '[health.prometheus]\nquery = "up"\n',                       # the query is the bundle's, never the site's
    '[health.prometheus]\nurl = "http://p:9090"\nmax = 1\n',
    '',
])
def test_a_bad_site_prometheus_setting_is_an_environment_error(tmp_path, text):
    site = tmp_path / "demo.toml"
    site.write_text(text)
    site.chmod(0o644)
    with pytest.raises(EnvironmentProblem):
        SiteSettings.load("demo", site)


# -- what a spec and a manifest may say --------------------------------------------------------

SPEC = """name = "demo"
version = "1.0.0"
images = ["a/b:1"]
[target]
kind = "container"
name = "demo"
image = "a/b:1"
[target.health]
http = "http://127.0.0.1:8080/"
"""


def test_a_spec_s_metrics_gate_reaches_the_manifest_in_seconds(tmp_path):
    spec = tmp_path / "b.toml"
    spec.write_text(SPEC + 'prometheus = { url = "http://prom:9090", query = "rate(e[1m])", max = 0.01, window = "2m" }\n')
    prom = load_spec(spec).target["health"]["prometheus"]
    assert prom == {"url": "http://prom:9090", "query": "rate(e[1m])", "max": 0.01, "window": 120}
    assert manifest_gate_error(prom) is None


@pytest.mark.parametrize("gate, words", [
    ('{ url = "http://u:p@prom:9090", query = "up", max = 1, window = "1m" }', "no credentials"),
    ('{ url = "ftp://prom", query = "up", max = 1, window = "1m" }', "http(s)://host"),
    ('{ url = "http://prom:9090/?q=up", query = "up", max = 1, window = "1m" }', "no credentials, query or fragment"),
    ('{ url = "http://prom:9090", query = "", max = 1, window = "1m" }', "should be non-empty"),
    ('{ url = "http://prom:9090", query = "' + "x" * 2049 + '", max = 1, window = "1m" }', "is too long"),
    ('{ url = "http://prom:9090", query = "up", max = nan, window = "1m" }', "max must be a finite number"),
    ('{ url = "http://prom:9090", query = "up", max = inf, window = "1m" }', "greater than the maximum"),
    ('{ url = "http://prom:9090", query = "up", max = "0.01", window = "1m" }', "is not of type 'number'"),
    ('{ url = "http://prom:9090", query = "up", max = 1, window = "0s" }', "window must be between 1s and 86400s"),
    ('{ url = "http://prom:9090", query = "up", max = 1, window = "25h" }', "window must be between 1s and 86400s"),
    ('{ url = "http://prom:9090", query = "up", max = 1, window = "2d" }', "window"),
    ('{ url = "http://prom:9090", query = "up", max = 1 }', "'window' is a required property"),
    ('{ url = "http://prom:9090", query = "up", window = "1m" }', "'max' is a required property"),
    ('{ url = "http://prom:9090", max = 1, window = "1m" }', "'query' is a required property"),
    ('{ url = "http://prom:9090", query = "up", max = 1, window = "1m", token = "x" }', "Additional properties"),
])
def test_a_bad_metrics_gate_in_a_spec_is_one_usage_error(tmp_path, gate, words):
    spec = tmp_path / "b.toml"
    spec.write_text(SPEC + f"prometheus = {gate}\n")
    with pytest.raises(UsageProblem) as e:
        load_spec(spec)
    assert words in str(e.value) and "prometheus" in str(e.value), str(e.value)


@pytest.mark.parametrize("prom, ok", [
    ({"url": "http://prom:9090", "query": "up", "max": 0.01, "window": 120}, True),
    ({"query": "up", "max": 0, "window": 1}, True),                       # the site file gives the url
    ({"query": "up", "max": 0, "window": 1, "failure_limit": 3}, True),
    ({"query": "up", "max": 0, "window": 1, "failure_limit": -1}, False),
    ({"query": "up", "max": 0.01, "window": "2m"}, False),                # seconds only in a manifest
    ({"query": "up", "max": 0.01, "window": 86401}, False),
    ({"query": "up", "max": 1e16, "window": 60}, False),
    ({"query": "up", "max": 0.01, "window": 60, "url": "http://a@b"}, False),
])
def test_the_manifest_schema_s_metrics_gate(prom, ok):
    assert (manifest_gate_error(prom) is None) is ok


def manifest_gate_error(prom: dict):
    """The manifest's `target.health.prometheus` rule (run.schema.json's prometheus_gate)."""
    ref = {"$ref": "https://bundle.invalid/schemas/run.schema.json#/$defs/prometheus_gate"}
    return jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(ref, registry=_registry()).iter_errors(prom))


@pytest.mark.parametrize("raw", [b'{"max": NaN}', b'{"max": Infinity}', b'{"max": -Infinity}'])
def test_strict_json_refuses_nan_and_infinity(raw):
    """A signed NaN limit would compare false with everything: the manifest reader refuses it."""
    from bundlecore.format import FormatError, loads_strict_json
    with pytest.raises(FormatError, match="which is not JSON"):
        loads_strict_json(raw, "manifest.json")


class _Readings(MetricsGate):
    """A gate whose evaluations are given (the pure counting of `Analysis`, no Prometheus)."""

    def __init__(self, values, failure_limit):
        super().__init__("http://prom:9090", "q", 0.5, 10, failure_limit)
        object.__setattr__(self, "values", list(values))

    def evaluate(self):
        return Reading(self.values.pop(0))


@pytest.mark.parametrize("values, limit, fails_at", [
    ([0, 5, 0, 0], 0, 1),           # no tolerance: the first reading above the limit fails it
    ([0, 5, 0, 5, 0], 1, 3),        # one failure tolerated, the second fails it
    ([5, 5, 0, 0], 2, None),        # within the limit, ending good: passes
    ([0, 0, 0, 5], 3, 3),           # the final evaluation must pass whatever the limit
    ([None, None, None, None], 5, 3),  # no data by the end: a failed evaluation
])
def test_the_failure_limit_counts_failed_evaluations_and_the_last_must_pass(values, limit, fails_at):
    analysis = Analysis(_Readings(values, limit))
    n = len(values)
    verdicts = [analysis.step(final=(i == n - 1)) for i in range(n)]
    first = next((i for i, v in enumerate(verdicts) if v), None)
    assert first == fails_at, verdicts
    if fails_at is not None and limit:
        assert f"{limit} tolerated" in verdicts[fails_at]
