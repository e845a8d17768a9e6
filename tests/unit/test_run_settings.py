"""Run settings are checked by the schema exactly as the importer will apply them, on both sides:
what `bundle build` accepts and `bundle verify` calls trusted is what `bundle import` can run."""

import pytest

from bundlecore.errors import UsageProblem
from bundlecore.schema import first_error
from bundler.spec import load_spec

SPEC = """\
name = "demo"
version = "2.0.0"
sequence = 2
expires = "{expires}"
images = ["demo/app:2.0.0"]

[target]
kind = "container"
name = "demo"
image = "demo/app:2.0.0"

[target.run]
{run}

[target.health]
http = "http://127.0.0.1:8080/health"
timeout = "{timeout}"
"""


def spec_file(tmp_path, run="", expires="90d", timeout="60s"):
    p = tmp_path / "bundle.toml"
    p.write_text(SPEC.format(run=run, expires=expires, timeout=timeout), encoding="utf-8")
    return p



def _run_error(run: dict) -> str | None:
    """The spec schema's verdict on one [target.run] table (the manifest shares the same definition)."""
    return first_error("spec.schema.json", {"name": "demo", "version": "1", "images": ["demo/app:1"],
                                            "target": {"kind": "container", "name": "demo", "image": "demo/app:1",
                                                       "run": run}})


@pytest.mark.parametrize("port", ["8080", "18080:8080", "127.0.0.1:18080:8080", "127.0.0.1::8080",
                                  "53:53/udp", "65535:1/sctp"])
def test_ports_docker_accepts_are_valid(port):
    assert _run_error({"ports": [port]}) is None


@pytest.mark.parametrize("port", ["0:8080", "99999:8080", "8080:0", "1.2.3.4:", "300.1.1.1:80:80", "80/icmp",
                                  "a:80", "", "::80", "80:80:80:80"])
def test_ports_out_of_range_or_malformed_are_refused(port):
    assert "is not a port" in (_run_error({"ports": [port]}) or "")


@pytest.mark.parametrize("volume", ["data:/data", "demo-data:/app/server/storage:ro", "/srv/app:/data",
                                    "/srv/app/.env:/app/server/.env:rw", "/anonymous"])
def test_volume_forms_the_importer_applies_are_valid(volume):
    assert _run_error({"volumes": [volume]}) is None


@pytest.mark.parametrize("volume", ["a:b:c:d", "relative/host:/data", "data:relative", "data:/data:z",
                                    "/srv/../etc:/data", "data:/x/../../etc", "/anon:ro", "data:/", ":/data",
                                    "x:/data", "/srv/a b:/data"])
def test_volume_strings_the_importer_cannot_apply_are_refused(volume):
    assert "is not a volume" in (_run_error({"volumes": [volume]}) or "")


@pytest.mark.parametrize("run, words", [
    ({"cap_add": ["sys_admin"]}, "capability"),
    ({"network": "host network"}, "network"),
    ({"workdir": "app"}, "absolute path"),
    ({"env": {"A=B": "x"}}, "environment variable name"),
    ({"dns": ["dns.example"]}, "IP address"),
    ({"stop_timeout": 7200}, "maximum"),
])
def test_other_run_settings_are_checked(run, words):
    assert words in (_run_error(run) or "")


def test_a_carriage_return_in_a_signed_volume_string_is_refused_at_build(tmp_path):
    p = spec_file(tmp_path, run='volumes = ["/:/h\\r  mount demo-data:/data"]')
    with pytest.raises(UsageProblem, match=r"target\.run\.volumes\.0: control or non-printing"):
        load_spec(p)


def test_a_bidi_override_anywhere_in_the_spec_is_refused(tmp_path):
    p = spec_file(tmp_path, run='env = { GREETING = "hello\u202e" }')
    with pytest.raises(UsageProblem, match=r"target\.run\.env\.GREETING"):
        load_spec(p)


@pytest.mark.parametrize("expires", ["0s", "59m", "3599s"])
def test_a_bundle_that_would_expire_before_crossing_is_refused(tmp_path, expires):
    with pytest.raises(UsageProblem, match="under an hour"):
        load_spec(spec_file(tmp_path, expires=expires))


def test_an_hour_is_enough_to_build(tmp_path):
    assert load_spec(spec_file(tmp_path, expires="1h")).expires_seconds == 3600


@pytest.mark.parametrize("timeout", ["0s", "2h", "7200s"])
def test_health_timeouts_are_bounded(tmp_path, timeout):
    with pytest.raises(UsageProblem, match="timeout"):
        load_spec(spec_file(tmp_path, timeout=timeout))


def test_manifest_health_timeout_is_bounded_like_the_spec():
    from bundlecore.schema import validator
    health = validator("manifest.schema.json").schema["$defs"]["target"]["properties"]["health"]
    assert health["properties"]["timeout"] == {"$ref": "run.schema.json#/$defs/health_timeout_seconds"}
