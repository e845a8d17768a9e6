"""The health gate's pure rules: where a probe goes (the container's own address behind a published
port, never the host's port proxy), and probation as the spec, the manifest and --probation give it."""

import time

import pytest

from bundlecore.errors import UsageProblem
from bundlecore.schema import validator
from bundler.spec import load_spec
from bundlecore.release import ContainerTarget, RunSettings
from importer.pipeline import probation_seconds
from importer.health import PROBE_TIMEOUT, HealthGate, ProbeRoute, container_address, container_ip
from tests.unit.conftest import answer, drip
from tests.unit.test_spec import ISSUE_SPEC


def _info(ports, networks=None, ip=""):
    return {"NetworkSettings": {"Ports": ports, "IPAddress": ip,
                                "Networks": networks if networks is not None else {"bridge": {"IPAddress": "172.17.0.9"}}}}


LOOP = {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18093"}]}
ANY = {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18093"}, {"HostIp": "::", "HostPort": "18093"}]}


@pytest.mark.parametrize("info,host,port,local,expected", [
    (_info(LOOP), "127.0.0.1", 18093, True, ("172.17.0.9", 8080)),        # the usual case: behind the proxy
    (_info(LOOP), "localhost", 18093, True, ("172.17.0.9", 8080)),
    (_info(ANY), "127.0.0.1", 18093, True, ("172.17.0.9", 8080)),         # published on every address
    (_info(ANY), "10.1.2.3", 18093, True, ("172.17.0.9", 8080)),          # one of this host's own addresses
    (_info(LOOP), "127.0.0.1", 18094, True, None),                        # not a port it publishes: as written
    (_info(LOOP), "db.example", 18093, False, None),                      # another host: as written
    (_info({"8080/udp": [{"HostIp": "", "HostPort": "18093"}]}), "127.0.0.1", 18093, True, None),  # udp is no tcp
    (_info(LOOP, networks={}), "127.0.0.1", 18093, True, None),           # network none: no address
    (_info({"8080/tcp": None}), "127.0.0.1", 8080, True, None),           # exposed, not published
    (_info({}), "127.0.0.1", 18093, True, None),
])
def test_a_published_port_on_this_host_is_probed_at_the_container_s_own_address(info, host, port, local, expected):
    assert container_address(info, host, port, local) == expected


def test_the_container_address_is_the_first_network_by_name_and_ipv6_only_counts():
    nets = {"zeta": {"IPAddress": "10.0.9.2"}, "alpha": {"IPAddress": "", "GlobalIPv6Address": "fd00::2"}}
    assert container_ip(_info({}, networks=nets)) == "fd00::2"
    assert container_ip(_info({}, networks={}, ip="172.17.0.3")) == "172.17.0.3"
    assert container_ip(_info({}, networks={"none": {"IPAddress": ""}})) is None


@pytest.mark.parametrize("health,route_address,fallback", [
    ({"tcp": "127.0.0.1:18093"}, ("172.17.0.9", 8080), ""),
    ({"http": "http://127.0.0.1:18093/health"}, ("172.17.0.9", 8080), ""),
    ({"http": "https://127.0.0.1:18093/health"}, None, "https"),          # the certificate names the host
    ({"tcp": "127.0.0.1:9"}, None, ""),                                    # not published: as written, no note
])
def test_the_route_says_when_it_falls_back(health, route_address, fallback):
    route = HealthGate(health).route(_info(LOOP))
    assert route.address == route_address
    assert (fallback in route.why_fallback) if fallback else route.why_fallback == ""


def test_no_reachable_address_falls_back_through_the_port_and_says_so():
    route = HealthGate({"tcp": "127.0.0.1:18093"}).route(_info(LOOP, networks={}))
    assert route.address is None and "through the published port" in route.why_fallback
    assert "stay open" in route.why_fallback


def test_probation_is_off_unless_set_and_the_plan_says_it():
    assert HealthGate({"http": "http://x/h"}).probation == 0
    gate = HealthGate({"http": "http://x/h", "probation": 600, "max_restarts": 3})
    assert (gate.probation, gate.max_restarts) == (600, 3)
    assert "probation 600 s, at most 3 restart(s)" in gate.describe()
    assert "2 passes in a row 1 s apart" in gate.describe()


def _spec(tmp_path, extra):
    p = tmp_path / "bundle.toml"
    p.write_text(ISSUE_SPEC + extra)
    return load_spec(p)


def test_spec_probation_is_normalized_to_seconds_with_no_restart_allowed_by_default(tmp_path):
    assert _spec(tmp_path, 'probation = "10m"\nmax_restarts = 3\n').target["health"] == {
        "http": "http://127.0.0.1:8080/health", "timeout": 60, "attempts": 3, "probation": 600, "max_restarts": 3}
    assert _spec(tmp_path, "probation = 15\n").target["health"]["max_restarts"] == 0
    assert "probation" not in _spec(tmp_path, "").target["health"]


@pytest.mark.parametrize("extra,needle", [
    ("max_restarts = 3\n", "probation"),              # restarts counted in no window
    ('probation = "2d"\n', "probation"),              # not a schema unit
    ('probation = "25h"\n', "between 1s and 86400s"),
    ("probation = 0\n", "probation"),
    ('probation = "1m"\nmax_restarts = -1\n', "max_restarts"),
    ('probation = "soon"\n', "probation"),
])
def test_bad_probation_settings_are_one_clear_usage_error(tmp_path, extra, needle):
    with pytest.raises(UsageProblem) as e:
        _spec(tmp_path, extra)
    assert needle in str(e.value) and "\n" not in str(e.value)


HEALTH = {"http": "http://127.0.0.1:8080/health", "timeout": 60, "attempts": 3}


@pytest.mark.parametrize("health,ok", [
    (HEALTH, True),
    ({**HEALTH, "probation": 600, "max_restarts": 3}, True),
    ({**HEALTH, "probation": 600}, True),
    ({**HEALTH, "max_restarts": 3}, False),                                # no window
    ({**HEALTH, "probation": "10m", "max_restarts": 3}, False),            # the manifest holds seconds
    ({**HEALTH, "probation": 86401}, False),
    ({**HEALTH, "tcp": "x:1", "probation": 60}, False),                    # still one probe only
    ({"timeout": 60, "attempts": 3, "probation": 60}, False),              # and a probe at all
])
def test_the_manifest_schema_takes_probation_in_seconds_only_with_one_probe(health, ok):
    v = validator("manifest.schema.json")
    sub = v.evolve(schema=v.schema["$defs"]["target"]["properties"]["health"])
    assert (not list(sub.iter_errors(health))) is ok


@pytest.mark.parametrize("text,seconds", [(None, None), ("10m", 600), ("15s", 15), ("24h", 86400)])
def test_the_probation_flag_is_a_duration(text, seconds):
    assert probation_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0s", "25h", "soon", "10", "-5m"])
def test_a_bad_probation_flag_is_a_usage_error(text):
    with pytest.raises(UsageProblem, match="--probation"):
        probation_seconds(text)


def test_the_probation_flag_overrides_the_window_and_keeps_the_signed_rest():
    target = ContainerTarget.from_json({"name": "demo", "image": "demo:1", "run": {},
                                        "health": {**HEALTH, "probation": 60, "max_restarts": 2}})
    bare = ContainerTarget("demo", "demo:1", RunSettings())
    assert target.with_probation(None) is target
    assert target.with_probation(15).health_json() == {**HEALTH, "probation": 15, "max_restarts": 2}
    assert bare.with_probation(15).health_json() == {"probation": 15}
    assert HealthGate(bare.with_probation(15).health_json()).max_restarts == 0  # no restart allowed
    assert target.health.probation == 60  # the signed release is not changed


def test_a_health_endpoint_dripping_its_headers_fails_the_probe_within_its_timeout(serve):
    """The release under test is not trusted to answer promptly: a status line and then one header
    byte every 0.2 s keeps every per-read timeout happy, but not the probe's total one."""
    url = serve(lambda c: drip(c, b"HTTP/1.1 200 OK\r\n", b"X", 0.2))
    gate = HealthGate({"http": url})
    started = time.monotonic()
    assert gate._probe_http(ProbeRoute(None)) == (False, f"no answer within {PROBE_TIMEOUT:g} s")
    assert time.monotonic() - started < PROBE_TIMEOUT + 1


def test_the_health_probe_goes_straight_to_the_container_whatever_proxy_the_environment_names(serve, monkeypatch):
    """An intranet host often has http_proxy set: the probe of a container on this host must not go to it."""
    url = serve(answer(b"ok"))
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: through it, the probe would fail
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert HealthGate({"http": url})._probe_http(ProbeRoute(None)) == (True, "HTTP 200")
