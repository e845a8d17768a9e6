"""`--json` as a script relies on it: every command prints one document on stdout that validates
against its schema in schemas/cli/, on success AND on each failure exit code, with the error line
on stderr exactly as without --json (real engine, real gpg keys, bundles built by `bundle build`
or crafted from the session's real bundle)."""

from __future__ import annotations

import json
import shutil

import pytest

from bundlecli.registry import COMMANDS, EXIT_CODES, NO_JSON
from bundlecore.refusals import Check
from bundlecore.schema import cli_schema_name, first_error
from tests.support import one_line, run_bundle
from tests.swap_fixtures import containers_named, served_version

DEAD = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
OWN_VERDICT = ("status", "doctor")  # their non-zero exits are a verdict in the document, no error line
ENGINE_DOWN = "error: Docker engine unreachable at unix:///nonexistent/docker.sock; is dockerd running?"


def run_json(verb, *args, code=0, env=None, check=None):
    """`bundle VERB ARGS --json`, asserted: exit `code` (one `verb` declares), one document on
    stdout valid against verb's schema; a failure names the stderr line (and the check) exactly."""
    assert code in EXIT_CODES[verb], (verb, code)
    r = run_bundle(verb, *args, "--json", env=env)
    assert r.code == code, str(r)
    doc = json.loads(r.stdout)
    assert first_error(cli_schema_name(verb), doc) is None, (first_error(cli_schema_name(verb), doc), doc)
    assert doc["command"] == verb and doc["exit_code"] == code and doc["ok"] is ("error" not in doc)
    if "error" in doc:
        assert doc["error"]["check"] == check
    if "error" in doc and verb not in OWN_VERDICT:
        assert r.stderr.splitlines()[-1] == doc["error"]["message"], str(r)
    return r, doc


# -- usage: no engine needed ---------------------------------------------------------------------

@pytest.mark.parametrize("verb", sorted(set(COMMANDS) - NO_JSON))
def test_a_usage_error_with_json_prints_a_failure_document_and_the_same_one_line(verb):
    r, doc = run_json(verb, "--no-such-option", code=2)
    assert doc["ok"] is False and doc["error"]["kind"] == "usage"
    assert one_line(r.stderr) == doc["error"]["message"] == (f"error: No such option '--no-such-option'. "
                                                             f"(see 'bundle {verb} --help')")
    assert run_bundle(verb, "--no-such-option").stderr == r.stderr  # the line is the same without --json


def test_a_mistyped_verb_and_help_get_a_usage_document_too():
    r = run_bundle("improt", "--json")
    doc = json.loads(r.stdout)
    assert r.code == 2 and doc["command"] is None and doc["error"]["kind"] == "usage"
    assert "did you mean 'import'?" in one_line(r.stderr) == doc["error"]["message"]
    r = run_bundle("help", "--json")  # help is exempt: its --json is an unknown option
    assert r.code == 2 and json.loads(r.stdout)["command"] == "help" and json.loads(r.stdout)["exit_code"] == 2


def test_version_json():
    _, doc = run_json("version")
    assert doc["version"] and doc["ok"] is True


def test_without_json_stdout_carries_no_document(tmp_path):
    r = run_bundle("status", "nosuch", "--state-dir", tmp_path / "state")
    assert r.code == 6 and not r.stdout.lstrip().startswith("{")


# -- engine down: exit 1 (8 for status) ------------------------------------------------------------

def test_with_the_engine_down_each_command_that_needs_it_prints_a_failure_document(tmp_path, base_bundle):
    state = tmp_path / "state"
    for verb, args in (("inventory", ()), ("recover", ("-y", "--state-dir", state)),
                       ("rollback", ("app", "-y", "--state-dir", state)),
                       ("uninstall", ("app", "--yes", "--state-dir", state)),
                       ("import", (base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", state, "-y"))):
        r, doc = run_json(verb, *args, code=1, env=DEAD)
        assert one_line(r.stderr) == ENGINE_DOWN == doc["error"]["message"] and doc["error"]["kind"] == "environment"
    assert not (state / "installed").exists() or not any((state / "installed").iterdir())  # nothing changed
    r, doc = run_json("list", "--state-dir", state, code=1, env=DEAD)  # like every other command (issue 20)
    assert one_line(r.stderr) == ENGINE_DOWN == doc["error"]["message"] and doc["error"]["kind"] == "environment"
    assert doc["engine_answers"] is False and doc["apps"] == []
    _, doc = run_json("doctor", "--keys", tmp_path / "no-keys", "--state-dir", state, code=1, env=DEAD)
    assert doc["ready"] is False and doc["error"]["kind"] == "environment"
    assert any(c["verdict"] == "FAIL" for c in doc["checks"])


# -- verify, inspect, approve: a real bundle and a tampered one ---------------------------------

@pytest.fixture
def tampered(base_bundle, tmp_path):
    """The real bundle with another version in its manifest, under the original signature."""
    v = base_bundle.variant()
    v.manifest["version"] = "6.6.6"
    v.signatures = base_bundle.head.signatures
    return v.write(tmp_path / "tampered.bundle.zst")


def test_verify_inspect_and_approve_documents_share_the_signer_and_image_shapes(base_bundle, pgp_keys, tmp_path,
                                                                                 trust_store_of):
    state = tmp_path / "state"
    _, verified = run_json("verify", base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", state)
    assert verified["trusted"] is True and verified["name"] == base_bundle.name
    assert verified["signers"] == [{"fingerprint": base_bundle.signer.fpr, "uid": None, "roles": verified["signers"][0]["roles"]}]
    assert verified["images"] == [{"ref": base_bundle.image["ref"], "id": base_bundle.image["id"]}]
    _, inspected = run_json("inspect", base_bundle.path)
    assert inspected["verified"] is False and inspected["signers"][0]["roles"] == []
    assert [(i["ref"], i["id"]) for i in inspected["images"]] == [(base_bundle.image["ref"], base_bundle.image["id"])]
    copy = tmp_path / "copy.bundle.zst"
    shutil.copy(base_bundle.path, copy)
    _, approved = run_json("approve", copy, "--sign-key", pgp_keys.approver.fpr, "--gnupghome",
                           pgp_keys.approver.home, "--keys", base_bundle.keys_dir)
    assert approved["approved_by"] == {"fingerprint": pgp_keys.approver.fpr, "uid": None, "roles": []}
    assert approved["signed_before"] == [{"fingerprint": base_bundle.signer.fpr, "uid": None, "roles": []}]


def _containers_state(client, name: str) -> list[tuple]:
    """(id, image, running, started at) of every container named `name`."""
    return [(c["Id"], c["ImageID"], c["State"], client.api.inspect_container(c["Id"])["State"]["StartedAt"])
            for c in containers_named(client, name)]


def test_a_tampered_bundle_is_refused_with_a_document_naming_the_check_and_nothing_changes(
        base_bundle, tampered, pgp_keys, tmp_path, docker_client):
    state = tmp_path / "state"
    before = tampered.read_bytes()
    # the session's installed app (tests.craft installed_app) may already run under the target's name
    # when another file of this worker used it: the refused import must leave exactly what was there
    target_before = _containers_state(docker_client, base_bundle.target_name)
    for verb, args in (("verify", (tampered, "--keys", base_bundle.keys_dir, "--state-dir", state)),
                       ("import", (tampered, "--keys", base_bundle.keys_dir, "--state-dir", state, "-y")),
                       ("approve", (tampered, "--sign-key", pgp_keys.approver.fpr, "--gnupghome",
                                    pgp_keys.approver.home, "--keys", base_bundle.keys_dir))):
        r, doc = run_json(verb, *args, code=3, check=Check.SIGNATURE.value)
        assert doc["error"]["kind"] == "refused"
        assert one_line(r.stderr).startswith(f"refused: {Check.SIGNATURE.value}: ")
    assert tampered.read_bytes() == before                        # approve did not sign it
    assert _containers_state(docker_client, base_bundle.target_name) == target_before  # import touched none
    assert not (state / "installed").exists() or not any((state / "installed").iterdir())


# -- build, join, check -------------------------------------------------------------------------

def test_build_and_join_documents_and_their_usage_refusals(tmp_path, app_image, uniq, pgp_keys):
    tag = f"jsontest/app-{uniq}:1.0.0"
    image_id = app_image(tag, "1.0.0")
    spec = tmp_path / "bundle.toml"
    spec.write_text(f'name = "json-{uniq}"\nversion = "1.0.0"\nsequence = 1\nexpires = "30d"\nimages = ["{tag}"]\n\n'
                    f'[target]\nkind = "container"\nname = "json-{uniq}"\nimage = "{tag}"\n')
    key = pgp_keys.builder
    out = tmp_path / "split.bundle.zst"
    _, built = run_json("build", spec, "-o", out, "--sign-key", key.fpr, "--gnupghome", key.home, "--local",
                        "--split", "1M")
    assert built["images"] == [{"ref": tag, "id": image_id}] and len(built["parts"]) >= 1
    joined = tmp_path / "joined.bundle.zst"
    _, doc = run_json("join", out, "-o", joined)
    assert doc["path"] == str(joined) and doc["size"] == joined.stat().st_size
    r, doc = run_json("join", out, "-o", joined, code=2)           # nothing is overwritten
    assert doc["error"]["message"] == f"error: {joined} exists: choose another name (nothing is overwritten)"
    r, doc = run_json("build", tmp_path / "missing.toml", "-o", tmp_path / "x.zst", "--sign-key", key.fpr, code=2)
    assert not (tmp_path / "x.zst").exists()


def test_check_without_a_spec_prints_a_failure_document(tmp_path):
    r, doc = run_json("check", tmp_path / "missing.toml", "--api-url", "http://127.0.0.1:9", code=2)
    assert doc["error"]["kind"] == "usage" and one_line(r.stderr) == doc["error"]["message"]


# -- the life of an app: import, a failed update (4), status 0/6/7/8, rollback, uninstall --------

def _spec(tmp_path, env, image, sequence):
    spec = tmp_path / f"bundle-{sequence}.toml"
    spec.write_text(f'name = "{env["name"]}"\nversion = "{image["version"]}"\nsequence = {sequence}\n'
                    f'images = ["{image["ref"]}"]\n\n[target]\nkind = "container"\nname = "{env["name"]}"\n'
                    f'image = "{image["ref"]}"\n\n[target.run]\nports = ["127.0.0.1:{env["port"]}:8080"]\n'
                    f'volumes = ["{env["volume"]}:/data"]\nstop_timeout = 0\n\n'
                    f'[target.health]\nhttp = "http://127.0.0.1:{env["port"]}/health"\ntimeout = "5s"\nattempts = 1\n')
    return spec


def test_an_app_s_life_in_json_documents(docker_client, swap_env, demo_images, pgp_keys, trust_store_of, tmp_path):
    key, name = pgp_keys.builder, swap_env["name"]
    keys, state = trust_store_of([key]), swap_env["state"].root
    bundles = {}
    for v, seq in (("v1", 1), ("v3", 3), ("v4", 4)):
        bundles[v] = tmp_path / f"{v}.bundle.zst"
        run_json("build", _spec(tmp_path, swap_env, demo_images[v], seq), "-o", bundles[v], "--sign-key", key.fpr,
                 "--gnupghome", key.home, "--local")
    imp = ("--keys", keys, "--state-dir", state, "-y", "-q")

    _, doc = run_json("import", bundles["v1"], *imp)
    assert doc["result"] == "installed" and doc["app"]["state"] == "active" and doc["app"]["version"] == "1.0.0"
    assert doc["signers"] == [{"fingerprint": key.fpr, "uid": None, "roles": []}]

    # a broken release: exit 4, the document names the app, the version that failed and the one running
    r, doc = run_json("import", bundles["v3"], *imp, code=4)
    assert (doc["name"], doc["version"], doc["running_version"]) == (name, "3.0.0", "1.0.0")
    assert doc["error"]["kind"] == "update-failed" and doc["error"]["message"].startswith("update failed: ")
    assert served_version(swap_env) == "1.0.0" and len(containers_named(docker_client, name)) == 1

    _, doc = run_json("status", name, "--state-dir", state)
    [app] = doc["apps"]
    assert (app["name"], app["state"], app["version"], app["exit_code"]) == (name, "active", "1.0.0", 0)
    _, listed = run_json("list", "--state-dir", state)
    assert [a["name"] for a in listed["apps"]] == [name] and listed["apps"][0].keys() == app.keys()
    _, doc = run_json("history", name, "--state-dir", state)
    assert doc["name"] == name and len(doc["events"]) >= 2  # the install and the failed update
    assert all(s["fingerprint"] for e in doc["events"] for s in e["signers"])

    run_json("import", bundles["v4"], *imp)
    _, doc = run_json("rollback", name, "-y", "--state-dir", state)
    assert doc["version"] == "1.0.0" and doc["app"]["version"] == "1.0.0" and served_version(swap_env) == "1.0.0"
    run_json("rollback", name, "-y", "--state-dir", state, "--to", "99", code=2)

    # status's own failure codes: 7 stopped, 6 not installed, 8 engine down; the apps still listed
    docker_client.api.stop(name, timeout=0)
    _, doc = run_json("status", name, "--state-dir", state, code=7)
    assert doc["error"]["kind"] == "inactive" and doc["apps"][0]["state"] == "inactive"
    _, doc = run_json("status", f"nosuch-{swap_env['uniq']}", "--state-dir", state, code=6)
    assert doc["apps"][0]["installed"] is False
    _, doc = run_json("status", name, "--state-dir", state, code=8, env=DEAD)
    assert doc["engine_answers"] is False and doc["apps"][0]["version"] == "1.0.0"
    docker_client.api.start(name)

    _, doc = run_json("recover", "-y", "--state-dir", state)
    assert doc == {**doc, "pending": [], "recovered": []}
    _, doc = run_json("uninstall", name, "--yes", "--state-dir", state)
    assert doc["name"] == name and containers_named(docker_client, name) == []
    _, doc = run_json("list", "--state-dir", state)
    assert doc["apps"] == []


def test_inventory_json_is_still_the_file_build_have_reads():
    from bundlecore.inventory import parse_inventory
    r, doc = run_json("inventory")
    assert parse_inventory(r.stdout.encode())["images"] == doc["images"]


def test_a_failed_first_install_is_exit_9_with_a_document_saying_nothing_runs(
        docker_client, swap_env, demo_images, pgp_keys, trust_store_of, tmp_path):
    key, name, state = pgp_keys.builder, swap_env["name"], swap_env["state"]
    bad = tmp_path / "v3.bundle.zst"
    run_json("build", _spec(tmp_path, swap_env, demo_images["v3"], 3), "-o", bad, "--sign-key", key.fpr,
             "--gnupghome", key.home, "--local")
    _, doc = run_json("import", bad, "--keys", trust_store_of([key]), "--state-dir", state.root, "-y", "-q", code=9)
    assert (doc["name"], doc["version"], doc["running_version"]) == (name, "3.0.0", None)
    assert doc["error"]["kind"] == "install-undone"
    assert containers_named(docker_client, name) == [] and state.installed(name) is None


def test_recover_of_a_tampered_journal_needs_an_operator_and_says_so_in_its_document(docker_client, swap_env,
                                                                                      demo_images):
    """An attacker adds an unrelated volume to an interrupted uninstall's journal: recover stops
    with exit 5, the document says operator-needed, and the volume is still there."""
    from tests.swap_fixtures import install
    install(docker_client, swap_env, demo_images["v1"], 1)
    state, app = swap_env["state"], swap_env["name"]  # installed without an app name: keyed by its container
    victim = f"victim-{swap_env['uniq']}"
    docker_client.api.create_volume(victim)
    r = run_bundle("uninstall", app, "--yes", "--state-dir", state.root, "--json",
                   env={"BUNDLE_CRASH_AT": "backup", "BUNDLE_CRASH_WHEN": "after"})
    assert r.code == -9 and r.stdout == "", str(r)  # killed: no document, as for any kill -9
    path = state.app_dir(app) / "journal.json"
    journal = json.loads(path.read_text())
    journal["uninstall"]["volumes"].append(victim)
    path.write_text(json.dumps(journal))
    r, doc = run_json("recover", "--yes", "--state-dir", state.root, code=5)
    assert doc["error"]["kind"] == "operator-needed" and f"volume(s) {victim} are not mounted" in doc["error"]["message"]
    assert docker_client.api.inspect_volume(victim)["Name"] == victim
    assert len(containers_named(docker_client, swap_env["name"])) == 1 and state.installed(app) is not None
