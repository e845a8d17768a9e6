"""Pure functions of the spec: pinning, durations, and the issue's example spec as written."""


import pytest

from bundlecore.errors import UsageProblem
from bundlecore.timeutil import parse_duration
from bundler.spec import is_pinned, load_spec

ISSUE_SPEC = """\
name = "demo"
version = "2.0.0"
sequence = 2
expires = "90d"
platform = "linux/amd64"
images = ["127.0.0.1:5000/demo/app:2.0.0"]

[target]
kind = "container"
name = "demo"
image = "127.0.0.1:5000/demo/app:2.0.0"

[target.run]
ports = ["127.0.0.1:8080:8080"]
volumes = ["demo-data:/data"]
env = { GREETING = "hello" }
restart = "unless-stopped"

[target.health]
http = "http://127.0.0.1:8080/health"
timeout = "60s"
attempts = 3
"""


@pytest.mark.parametrize("ref,pinned", [
    ("app:1.0", True), ("registry:5000/app:1.0", True), ("registry:5000/app", False),
    ("app", False), ("app:latest", False), ("app@sha256:" + "a" * 64, True),
    ("mintplexlabs/anythingllm:1.9.0", True), ("127.0.0.1:5000/demo/app:2.0.0", True),
])
def test_only_versioned_or_digest_refs_count_as_pinned(ref, pinned):
    assert is_pinned(ref) is pinned


@pytest.mark.parametrize("text,seconds", [("60s", 60), ("5m", 300), ("2h", 7200), ("90d", 7776000), ("1w", 604800), (15, 15)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_duration_without_unit_is_refused():
    with pytest.raises(ValueError):
        parse_duration("90")


def test_the_issue_example_spec_works_as_written(tmp_path):
    p = tmp_path / "bundle.toml"
    p.write_text(ISSUE_SPEC)
    spec = load_spec(p)
    assert spec.sequence == 2 and spec.expires_seconds == 90 * 86400 and spec.platform == "linux/amd64"
    assert spec.target["health"] == {"http": "http://127.0.0.1:8080/health", "timeout": 60, "attempts": 3}
    assert spec.target["run"]["ports"] == ["127.0.0.1:8080:8080"]


@pytest.mark.parametrize("mutation,needle", [
    (lambda s: s.replace('kind = "container"', 'kind = "container"\ncolour = "red"'), "colour"),
    (lambda s: s.replace('timeout = "60s"', 'timeout = "soon"'), "timeout"),
    (lambda s: s.replace('http = "http://127.0.0.1:8080/health"', 'http = "http://x/h"\ntcp = "x:1"'), "health"),
    (lambda s: s.replace('image = "127.0.0.1:5000/demo/app:2.0.0"', 'image = "other/app:1"'), "not one of images"),
    (lambda s: s.replace("sequence = 2", "sequence = -2"), "sequence"),
    (lambda s: s + "[[oops", "not valid TOML"),
])
def test_bad_specs_are_one_clear_usage_error(tmp_path, mutation, needle):
    p = tmp_path / "bundle.toml"
    p.write_text(mutation(ISSUE_SPEC))
    with pytest.raises(UsageProblem) as e:
        load_spec(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_shipped_examples_are_valid_specs():
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "examples"
    for p in (root / "demo" / "bundle.toml", root / "anythingllm" / "bundle.toml"):
        spec = load_spec(p)
        assert spec.target["image"] in spec.images


def test_secret_env_is_a_list_of_distinct_env_names_signed_sorted(tmp_path):
    p = tmp_path / "bundle.toml"
    p.write_text(ISSUE_SPEC.replace('env = { GREETING = "hello" }',
                                    'env = { GREETING = "hello" }\nsecret_env = ["DSN", "API_SALT"]'))
    assert load_spec(p).target["run"]["secret_env"] == ["API_SALT", "DSN"]
    for bad in ('["A=B"]', '["DSN", "DSN"]', '"DSN"'):
        p.write_text(ISSUE_SPEC.replace('env = { GREETING = "hello" }', f'secret_env = {bad}'))
        with pytest.raises(UsageProblem) as e:
            load_spec(p)
        assert "target.run.secret_env" in str(e.value) and "\n" not in str(e.value)
