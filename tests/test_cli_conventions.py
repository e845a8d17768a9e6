"""What an admin expects of a Unix command, run for real: `-y`, `bundle version`, `bundle help`,
a suggestion for a typo, `--debug`/`-q`/`-v` anywhere, a current man page, click's completion,
progress lines in a log, and ONE engine-down line whichever command met the dead engine."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import docker
import pytest

from bundlecore import __version__
from tests.support import REPO, one_line, run_bundle
from tests.craft import snapshot_dir
from tests.test_build import build, write_spec

DEAD = {"DOCKER_HOST": "unix:///nonexistent"}
ENGINE_DOWN = "error: Docker engine unreachable at unix:///nonexistent; is dockerd running?"
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def test_version_verb_and_flag_agree():
    r = run_bundle("version")
    assert (r.code, r.stdout, r.stderr) == (0, f"bundle {__version__}\n", "")
    assert run_bundle("--version").stdout == f"bundle, version {__version__}\n"


def test_help_verb_shows_the_same_help_as_dash_dash_help():
    assert run_bundle("help", "import").stdout == run_bundle("import", "--help").stdout
    top = run_bundle("help")
    assert top.code == 0 and top.stdout == run_bundle("--help").stdout
    assert "  doctor " in top.stdout and "_BUNDLE_COMPLETE=bash_source" in top.stdout


@pytest.mark.parametrize("argv, line", [
    (["imprt", "x.zst"], "error: No such command 'imprt' (did you mean 'import'?) (see 'bundle --help')"),
    (["help", "rollbak"], "error: No such command 'rollbak' (did you mean 'rollback'?) (see 'bundle --help')"),
    (["frobnicate"], "error: No such command 'frobnicate' (see 'bundle --help')"),
    (["status", "-q", "-v"], "error: -q and -v exclude each other (see 'bundle --help')"),
])
def test_a_careless_command_line_is_one_usage_line(argv, line):
    r = run_bundle(*argv)
    assert r.code == 2 and one_line(r.stderr) == line and r.stdout == ""


def test_debug_is_accepted_after_the_verb_and_shows_the_traceback(tmp_path):
    r = run_bundle("recover", "-y", "--state-dir", tmp_path / "state", "--debug", env=DEAD)
    assert r.code == 1
    assert "Traceback" in r.stderr and r.stderr.splitlines()[-1] == ENGINE_DOWN


def test_the_man_page_is_current():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-man.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = (REPO / "docs" / "bundle.1").read_text()
    for verb in ("import", "doctor", "rollback", "version", "help", "logs", "stop", "show", "restore"):
        assert f".SS bundle {verb}" in page
    for section in ("EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f"\n.SH {section}\n" in page
    assert "\\fBBUNDLE_SITE_DIR\\fR" in page and "\\fB/var/lib/bundle/audit.log\\fR" in page
    assert "BUNDLE_CRASH_AT" not in page  # a test hook


def test_shell_completion_is_clicks_and_knows_the_verbs():
    script = run_bundle(env={"_BUNDLE_COMPLETE": "bash_source"})
    assert script.code == 0 and "complete -o nosort -F _bundle_completion bundle" in script.stdout
    words = run_bundle(env={"_BUNDLE_COMPLETE": "bash_complete", "COMP_WORDS": "bundle im", "COMP_CWORD": "1"})
    assert words.code == 0 and "plain,import" in words.stdout.splitlines()


# -- the engine is down: one line, exit 1, nothing changed, whichever command --------------------------

def _engine_down_commands(base_bundle, pgp_keys, tmp_path):
    state = tmp_path / "state"
    spec = write_spec(tmp_path / "bundle.toml", [base_bundle.image["ref"]])
    return {
        "import": ["import", base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", state, "-y"],
        "import --dry-run": ["import", base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", state,
                             "--dry-run"],
        "rollback": ["rollback", base_bundle.name, "--state-dir", state, "-y"],
        "recover": ["recover", "--state-dir", state, "-y"],
        "build": ["build", spec, "-o", tmp_path / "out.zst", "--sign-key", pgp_keys.builder.fpr,
                  "--gnupghome", pgp_keys.builder.home, "--local"],
    }


def test_every_engine_using_command_prints_the_same_engine_down_line(base_bundle, pgp_keys, tmp_path):
    commands = _engine_down_commands(base_bundle, pgp_keys, tmp_path)
    before = snapshot_dir(tmp_path)
    for what, argv in commands.items():
        r = run_bundle(*argv, env=DEAD)
        assert (r.code, one_line(r.stderr), r.stdout) == (1, ENGINE_DOWN, ""), f"{what}: {r}"
    assert snapshot_dir(tmp_path) == before  # no state dir, no bundle file, nothing


# -- -y, -v and the health countdown on a real import ----------------------------------------------------

@pytest.fixture
def own_target(base_bundle, docker_client, uniq, tmp_path):
    """The base bundle re-signed for a target of this test's own (no other test's container)."""
    name = f"conv-{uniq}"
    v = base_bundle.variant()
    v.manifest["name"] = v.manifest["target"]["name"] = name  # the app is its container
    path = v.write(tmp_path / "own.bundle")
    yield name, path
    for c in docker_client.containers.list(all=True, filters={"name": name}):
        c.remove(force=True)
    try:
        docker_client.images.remove(base_bundle.image["id"], force=True)
    except docker.errors.APIError:
        pass


def test_dash_y_confirms_and_dash_v_logs_each_step_with_a_health_countdown(own_target, base_bundle, docker_client,
                                                                          tmp_path):
    name, bundle = own_target
    state = tmp_path / "state"
    args = ["import", bundle, "--keys", base_bundle.keys_dir, "--state-dir", state]
    unconfirmed = run_bundle(*args)
    assert unconfirmed.code == 2 and "pass --yes" in one_line(unconfirmed.stderr)
    assert not docker_client.containers.list(all=True, filters={"name": name})

    r = run_bundle(*args, "-y", "-v", env={"BUNDLE_PROGRESS_INTERVAL": "1"})
    assert r.code == 0, str(r)
    assert docker_client.containers.get(name).status == "running"
    log = r.stderr.splitlines()
    assert all(STAMPED.match(line) for line in log), r.stderr   # a log, not redraws
    steps = [line.split(" ", 1)[1] for line in log if line.split(" ", 1)[1].startswith(f"{name}: ")]
    assert f"{name}: start_new" in steps and f"{name}: commit" in steps
    assert any(" waiting for the health gate: " in line and " s left" in line for line in log)

    again = run_bundle("status", name, "--state-dir", state, "--json", "-q")
    assert again.code == 0 and json.loads(again.stdout)["apps"][0]["name"] == name and again.stderr == ""


def test_build_shows_its_pulls_in_a_log_and_q_silences_them(tmp_path, app_image, uniq, registry, docker_client,
                                                            pgp_keys):
    ref = f"{registry}/convtest/pulled-{uniq}:1.0"
    app_image(ref, "1.0")
    for _ in docker_client.images.push(ref, stream=True, decode=True):
        pass
    docker_client.images.remove(ref)
    spec = write_spec(tmp_path / "bundle.toml", [ref], name=f"pulled-{uniq}")
    key = (pgp_keys.builder.home, pgp_keys.builder.fpr)
    r = build(spec, tmp_path / "a.zst", key)
    assert r.code == 0, str(r)
    log = r.stderr.splitlines()
    assert all(STAMPED.match(line) for line in log), r.stderr
    assert log[0].endswith(f" pulling {ref}")
    assert re.search(rf" pulled {re.escape(ref)}: \d+ layer\(s\), .* fetched$", log[1]), log

    docker_client.images.remove(ref)
    quiet = build(spec, tmp_path / "b.zst", key, "-q")
    assert quiet.code == 0 and quiet.stderr == "", str(quiet)
    assert docker_client.images.get(ref)  # it did pull, silently
