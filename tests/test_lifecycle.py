"""The operator's lifecycle against a real engine: state keyed by the app name (and a state dir of
the previous layout migrated), `status` exit codes for monitoring, `list`, `history` with the
failed container's logs, `rollback --to` any kept generation, and `uninstall` with and without
--keep-data. The app is deliberately named differently from its container throughout."""

from __future__ import annotations

import json

import pytest

from bundlecore.errors import AppState
from importer.state import StateDir
from importer.steps import pending
from tests.support import one_line, run_bundle
from tests.swap_fixtures import (bundle_for, containers_named, data_files, delivery, digest, seed_data,
                                 served_version, target_for, typed)


def app_of(env) -> str:
    return f"shop-{env['uniq']}"


def install_app(client, env, image, sequence, *, keep=2, **kw):
    """plan + run_swap under the lock for app `shop-<uniq>` into container `demo-<uniq>`, as `bundle import` does."""
    from bundlecore.engine import Engine
    from importer.kinds import recover_all
    from importer.kinds.container.plan import plan_swap
    from importer.kinds.container.run import run_swap
    bundle = {**bundle_for(image, sequence), "name": app_of(env)}
    client = Engine(client)
    with env["state"].lock():
        recover_all(client, env["state"], out=lambda s: None)
        plan = plan_swap(client, env["state"], typed(target_for(env, image, **kw)), image["id"], app=app_of(env))
        return run_swap(client, env["state"], plan, delivery(bundle), keep=keep, out=lambda s: None)


def bundle_cmd(swap, *args, **kw):
    return run_bundle(*args, "--state-dir", swap["state"].root, **kw)


def status_json(env, name):
    r = bundle_cmd(env, "status", name, "--json")
    [app] = json.loads(r.stdout)["apps"]
    return r.returncode, app["detail"]


def state_files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "lock"}


# -- keying and status -------------------------------------------------------------------------

def test_status_by_the_bundle_name_right_after_installing_it(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app, container = app_of(swap_env), swap_env["name"]
    rec = swap_env["state"].installed(app)
    assert rec["container"] == container and rec["app"] == app and swap_env["state"].installed(container) is None
    code, st = status_json(swap_env, app)
    assert code == AppState.ACTIVE == 0, st
    assert st["state"] == "active" and st["container_name"] == container and st["installed"]["version"] == "1.0.0"
    r = bundle_cmd(swap_env, "status", app)
    assert r.returncode == 0 and f"{app}: 1.0.0" in r.stdout and f"container {container}" in r.stdout


def test_status_exit_codes_for_each_state_monitoring_relies_on(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app, container = app_of(swap_env), swap_env["name"]
    code, st = status_json(swap_env, f"nosuch-{swap_env['uniq']}")
    assert code == AppState.NOT_INSTALLED == 6 and st["state"] == "not-installed"
    # The engine does not answer: not "fine", and not "not installed" either.
    r = bundle_cmd(swap_env, "status", app, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert r.returncode == AppState.ENGINE_UNREACHABLE == 8, r.stdout + r.stderr
    assert "does not answer" in r.stdout
    # Stopped by someone: inactive; the whole list (no NAME) says so too.
    docker_client.api.stop(container, timeout=0)
    code, st = status_json(swap_env, app)
    assert code == AppState.INACTIVE == 7 and st["state"] == "inactive" and st["container"]["status"] == "exited"
    assert bundle_cmd(swap_env, "status").returncode == 7
    docker_client.api.start(container)
    assert status_json(swap_env, app)[0] == 0
    # Replaced by hand with another image under the same name: running, but not the installed version.
    docker_client.api.remove_container(container, force=True)
    docker_client.api.create_container(demo_images["v2"]["id"], name=container)
    docker_client.api.start(container)
    code, st = status_json(swap_env, app)
    assert code == 7 and st["container"]["status"] == "running"
    assert "NOT the installed image" in bundle_cmd(swap_env, "status", app).stdout


def test_status_of_an_empty_state_dir_says_nothing_is_installed(swap_env):
    r = bundle_cmd(swap_env, "status")
    assert r.returncode == 6 and "nothing installed" in r.stdout


def test_list_shows_each_app_its_version_container_and_health(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    install_app(docker_client, swap_env, demo_images["v2"], 2)
    r = bundle_cmd(swap_env, "list", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["apps"]
    assert {k: row[k] for k in ("name", "version", "sequence", "generation", "state", "previous")} == {
        "name": app_of(swap_env), "version": "2.0.0", "sequence": 2, "generation": 2, "state": "active", "previous": [1]}
    assert row["detail"]["container_name"] == swap_env["name"] and row["detail"]["container"]["status"] == "running"
    r = bundle_cmd(swap_env, "list")
    assert r.returncode == 0 and f"{app_of(swap_env)} 2.0.0 (generation 2) container {swap_env['name']}" in r.stdout


# -- history -----------------------------------------------------------------------------------

def test_history_lists_every_swap_with_sha256_signers_result_and_the_failed_containers_logs(
        docker_client, swap_env, demo_images):
    from bundlecore.errors import UpdateFailed
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    install_app(docker_client, swap_env, demo_images["v2"], 2)
    with pytest.raises(UpdateFailed):
        install_app(docker_client, swap_env, demo_images["v3"], 3, timeout=3, attempts=1)
    app = app_of(swap_env)
    r = bundle_cmd(swap_env, "history", app, "--json")
    assert r.returncode == 0, r.stderr
    events = json.loads(r.stdout)["events"]
    assert [(e["event"], e["result"], e["versions"]["to"]) for e in events] == [
        ("install", "done", "1.0.0"), ("upgrade", "done", "2.0.0"), ("upgrade", "rolled-back", "3.0.0")]
    assert all(e["bundle"]["sha256"] == "ab" * 32 and [s["fingerprint"] for s in e["signers"]] == ["F" * 40]
               for e in events)
    logs = events[-1]["details"]["logs_path"]
    assert logs.startswith(str(swap_env["state"].app_dir(app))) and b"migration failed" in open(logs, "rb").read()
    text = bundle_cmd(swap_env, "history", app).stdout
    assert "install  1.0.0  result: done" in text and "2.0.0 -> 3.0.0  result: rolled-back" in text
    assert f"signed by {'F' * 40}" in text and "migration failed" in text
    # After an uninstall, the logs are found where the app's state was moved.
    assert bundle_cmd(swap_env, "uninstall", app, "--yes").returncode == 0
    moved = json.loads(bundle_cmd(swap_env, "history", app, "--json").stdout)["events"][2]["details"]["logs_path"]
    assert "/removed/" in moved and b"migration failed" in open(moved, "rb").read()
    # Nothing of another app.
    assert json.loads(bundle_cmd(swap_env, "history", f"other-{swap_env['uniq']}", "--json").stdout)["events"] == []


# -- rollback --to -----------------------------------------------------------------------------

def test_rollback_to_any_kept_generation_with_the_data_it_had(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1, keep=3)
    seed_data(docker_client, swap_env["name"])
    v1_data = data_files(docker_client, swap_env["name"])
    install_app(docker_client, swap_env, demo_images["v2"], 2, keep=3)
    install_app(docker_client, swap_env, demo_images["v4"], 4, keep=3)
    app = app_of(swap_env)
    r = bundle_cmd(swap_env, "rollback", app, "--to", "1", "--yes")
    assert r.returncode == 0, r.stderr
    assert served_version(swap_env) == "1.0.0" and digest(data_files(docker_client, swap_env["name"])) == digest(v1_data)
    rec = swap_env["state"].installed(app)
    assert rec["generation"] == 1 and sorted(p["generation"] for p in rec["previous"]) == [2, 3]


@pytest.mark.parametrize("to, why", [("1", "it is the installed one"), ("9", "it is not kept")])
def test_rollback_to_a_generation_that_is_not_kept_changes_nothing(docker_client, swap_env, demo_images, to, why):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    install_app(docker_client, swap_env, demo_images["v2"], 2)
    # generation 2 is installed, 1 kept: roll to 1 first so that 1 is the installed one in the first case
    if to == "1":
        assert bundle_cmd(swap_env, "rollback", app_of(swap_env), "--yes").returncode == 0
    before = state_files(swap_env["state"].root)
    version = served_version(swap_env)
    r = bundle_cmd(swap_env, "rollback", app_of(swap_env), "--to", to, "--yes")
    assert r.returncode == 2 and why in one_line(r.stderr)
    assert served_version(swap_env) == version and state_files(swap_env["state"].root) == before


def test_rollback_to_an_old_generation_keeps_the_anti_rollback_mark(docker_client, swap_env, demo_images, pgp_keys,
                                                                    trust_store_of, tmp_path):
    """Allowed: putting back any kept generation, whatever its sequence (it was installed here and is
    put back by the operator, not by a bundle), and back up to a later one. Refused: a bundle whose
    sequence is not above the highest ever installed, even one newer than the generation running
    now (exit 3, nothing changed; --allow-downgrade overrides). README: "rollback --to"."""
    install_app(docker_client, swap_env, demo_images["v1"], 1, keep=3)
    install_app(docker_client, swap_env, demo_images["v2"], 2, keep=3)
    install_app(docker_client, swap_env, demo_images["v4"], 4, keep=3)
    app, state = app_of(swap_env), swap_env["state"]
    r = bundle_cmd(swap_env, "rollback", app, "--to", "1", "--yes")
    assert r.returncode == 0, r.stderr
    rec = state.installed(app)
    assert served_version(swap_env) == "1.0.0" and (rec["sequence"], rec["highest_sequence"]) == (1, 4)
    assert state.highest_sequence(app) == 4  # the mark does not follow the rollback down
    v2 = demo_images["v2"]
    spec = tmp_path / "bundle.toml"
    spec.write_text(f'name = "{app}"\nversion = "2.0.0"\nsequence = 2\nimages = ["{v2["ref"]}"]\n\n'
                    f'[target]\nkind = "container"\nname = "{swap_env["name"]}"\nimage = "{v2["ref"]}"\n')
    bundle, key = tmp_path / "v2.bundle", pgp_keys.builder
    assert run_bundle("build", spec, "-o", bundle, "--sign-key", key.fpr, "--gnupghome", key.home, "--local").code == 0
    before = state_files(state.root)
    r = bundle_cmd(swap_env, "import", bundle, "--keys", trust_store_of([key]), "--yes")
    assert r.returncode == 3, r.stderr
    assert one_line(r.stderr) == (f"refused: sequence: downgrade: {app} sequence 2 is not above 4, the highest "
                                  f"installed (--allow-downgrade overrides)")
    assert served_version(swap_env) == "1.0.0"
    assert {k: v for k, v in state_files(state.root).items() if k != "audit.log" and not k.startswith("metrics")} == \
        {k: v for k, v in before.items() if k != "audit.log" and not k.startswith("metrics")}
    # back up to the newest kept generation: allowed, the operator's own history
    gen4 = next(p["generation"] for p in rec["previous"] if p["version"] == "4.0.0")
    r = bundle_cmd(swap_env, "rollback", app, "--to", str(gen4), "--yes")
    assert r.returncode == 0, r.stderr
    assert served_version(swap_env) == "4.0.0" and state.highest_sequence(app) == 4


# -- uninstall ---------------------------------------------------------------------------------

@pytest.fixture
def request_cleanup_of(request):
    """Remove these volumes after the test (anonymous volumes that --keep-data leaves behind)."""
    def register(client, volumes):
        def remove():
            for v in volumes:
                try:
                    client.api.remove_volume(v, force=True)
                except Exception:
                    pass
        request.addfinalizer(remove)
    return register


def _removed_dirs(state: StateDir):
    d = state.root / "removed"
    return sorted(d.iterdir()) if d.exists() else []


@pytest.mark.parametrize("keep_data", [False, True])
def test_uninstall_removes_the_app_after_a_final_backup(docker_client, swap_env, demo_images, keep_data,
                                                        request_cleanup_of):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    install_app(docker_client, swap_env, demo_images["v2"], 2)
    seed_data(docker_client, swap_env["name"])
    data_before = data_files(docker_client, swap_env["name"])
    app, state = app_of(swap_env), swap_env["state"]
    anonymous = {m["Name"] for c in (swap_env["name"], f"{swap_env['name']}.previous-1")
                 for m in docker_client.api.inspect_container(c)["Mounts"] if m["Name"] != swap_env["volume"]}
    request_cleanup_of(docker_client, anonymous)
    r = bundle_cmd(swap_env, "uninstall", app, "--yes", *(["--keep-data"] if keep_data else []))
    assert r.returncode == 0, r.stderr
    assert f"remove kept generation {swap_env['name']}.previous-1" in r.stdout
    assert containers_named(docker_client, swap_env["name"]) == []
    assert containers_named(docker_client, f"{swap_env['name']}.previous-1") == []
    volumes = {v["Name"] for v in docker_client.api.volumes()["Volumes"] or []}
    assert (swap_env["volume"] in volumes) == keep_data
    assert state.installed(app) is None and not state.app_dir(app).exists() and pending(state) == []
    (kept,) = _removed_dirs(state)
    backup = json.loads((kept / "final-backup" / "backup.json").read_text())
    assert sorted(m["destination"] for m in backup["mounts"]) == ["/data", "/state"]
    assert state.highest_sequence(app) == 2  # uninstalling does not make sequence 1 installable again
    assert bundle_cmd(swap_env, "status", app).returncode == 6
    assert json.loads(bundle_cmd(swap_env, "list", "--json").stdout)["apps"] == []
    last = json.loads(bundle_cmd(swap_env, "history", app, "--json").stdout)["events"][-1]
    assert (last["event"], last["result"]) == ("uninstall", "done")
    if keep_data:  # the same data is there for a reinstall
        install_app(docker_client, swap_env, demo_images["v2"], 3)
        after = data_files(docker_client, swap_env["name"])
        assert after["data/important.txt"] == data_before["data/important.txt"]


def test_uninstall_keeps_a_volume_another_container_also_mounts(docker_client, swap_env, demo_images):
    """Safe and stated: the volume stays (with a line saying why), the other container keeps running
    on its data; the app's final backup still has a copy."""
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    seed_data(docker_client, swap_env["name"])
    app, vol = app_of(swap_env), swap_env["volume"]
    other = docker_client.containers.run(demo_images["v1"]["ref"], ["sleep", "600"], detach=True,
                                         name=f"reader-{swap_env['uniq']}", volumes={vol: {"bind": "/data", "mode": "rw"}})
    data_before = data_files(docker_client, other.name)
    r = bundle_cmd(swap_env, "uninstall", app, "--yes")
    assert r.returncode == 0, r.stderr
    assert f"keep volume {vol} (other containers use it)" in r.stdout and f"remove volume {vol}" not in r.stdout
    assert containers_named(docker_client, swap_env["name"]) == []
    assert docker_client.api.inspect_volume(vol)["Name"] == vol
    other.reload()
    assert other.status == "running" and data_files(docker_client, other.name) == data_before
    (kept,) = _removed_dirs(swap_env["state"])
    backup = json.loads((kept / "final-backup" / "backup.json").read_text())
    assert "/data" in [m["destination"] for m in backup["mounts"]]


def test_uninstall_asks_and_refuses_what_is_not_its_own(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app, container = app_of(swap_env), swap_env["name"]
    before = state_files(swap_env["state"].root)
    # No terminal and no --yes: refused, nothing changed.
    r = bundle_cmd(swap_env, "uninstall", app)
    assert r.returncode == 2 and "--yes" in one_line(r.stderr)
    # An app that is not installed.
    r = bundle_cmd(swap_env, "uninstall", f"nosuch-{swap_env['uniq']}", "--yes")
    assert r.returncode == 2 and "is not installed" in one_line(r.stderr)
    assert served_version(swap_env) == "1.0.0" and state_files(swap_env["state"].root) == before
    # The container was replaced by hand: not bundle's to remove.
    docker_client.api.remove_container(container, force=True)
    cid = docker_client.api.create_container(demo_images["v2"]["id"], name=container)["Id"]
    r = bundle_cmd(swap_env, "uninstall", app, "--yes")
    assert r.returncode == 3 and one_line(r.stderr).startswith("refused: ownership:")
    assert docker_client.api.inspect_container(container)["Id"] == cid and state_files(swap_env["state"].root) == before


# -- migration of the previous layout ----------------------------------------------------------

def make_layout_1(state: StateDir, app: str, container: str) -> None:
    """Rewrite a state dir to what the previous code wrote: keyed by container name, the app only
    in owners/<container>.json and in the journals' bundle."""
    root = state.root
    rec = json.loads((root / "installed" / f"{app}.json").read_text())
    for k in ("app", "container"):
        rec.pop(k)
    (root / "installed" / f"{app}.json").unlink()
    (root / "installed" / f"{container}.json").write_text(json.dumps(rec))
    (root / "apps" / app).rename(root / "apps" / container)
    last = json.loads((root / "apps" / container / "last-swap.json").read_text())
    last.pop("app")
    (root / "apps" / container / "last-swap.json").write_text(json.dumps(last))
    (root / "owners").mkdir(mode=0o700)
    (root / "owners" / f"{container}.json").write_text(json.dumps({"container": container, "app": app}))


def test_a_state_dir_of_the_previous_layout_is_migrated_on_first_use(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    install_app(docker_client, swap_env, demo_images["v2"], 2)
    app, container, root = app_of(swap_env), swap_env["name"], swap_env["state"].root
    make_layout_1(swap_env["state"], app, container)
    code, st = status_json(swap_env, app)
    assert code == 0, st
    assert st["installed"]["version"] == "2.0.0" and st["previous"][0]["version"] == "1.0.0"
    assert sorted(p.name for p in (root / "installed").iterdir()) == [f"{app}.json"]
    assert not (root / "owners").exists() and not (root / "apps" / container).exists()
    # The migrated state works: a rollback by the app name puts v1 back.
    r = bundle_cmd(swap_env, "rollback", app, "--yes")
    assert r.returncode == 0, r.stderr
    assert served_version(swap_env) == "1.0.0"


def test_a_tampered_uninstall_journal_cannot_make_recover_remove_another_volume(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app, state = app_of(swap_env), swap_env["state"]
    victim = f"victim-{swap_env['uniq']}"
    docker_client.api.create_volume(victim)
    r = bundle_cmd(swap_env, "uninstall", app, "--yes", env={"BUNDLE_CRASH_AT": "backup", "BUNDLE_CRASH_WHEN": "after"})
    assert r.returncode == -9, r.stderr
    path = state.app_dir(app) / "journal.json"
    journal = json.loads(path.read_text())
    journal["uninstall"]["volumes"].append(victim)
    path.write_text(json.dumps(journal))
    r = bundle_cmd(swap_env, "recover", "--yes")
    assert r.returncode == 5 and f"{victim} are not mounted by {swap_env['name']}" in one_line(r.stderr)
    assert docker_client.api.inspect_volume(victim)["Name"] == victim
    assert len(containers_named(docker_client, swap_env["name"])) == 1 and state.installed(app) is not None
