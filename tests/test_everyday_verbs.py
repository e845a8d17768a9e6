"""The admin's everyday verbs on the real engine (issue 20, points 6 and 8): `logs` (also the saved
log of a failed release), `stop` / `start` / `restart` (status says "stopped by admin"),
`restore --from-uninstall`, `rollback --dry-run`, the plan in `import --dry-run --json`, `show`
with where each setting came from, `-y` on uninstall, `status --metrics` keeping the live gauges
current, shell completion of app names and generations, and every verb's one-line exit 1 when
the engine does not answer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from bundlecore.errors import UpdateFailed
from tests.support import BUNDLE, one_line, run_bundle
from tests.swap_fixtures import data_files, digest, seed_data
from tests.test_lifecycle import app_of, bundle_cmd, install_app, state_files, status_json
from tests.unit.test_metrics_format import samples


def container(client, env) -> dict:
    return client.api.inspect_container(env["name"])


# -- stop, start, restart ------------------------------------------------------------------------

def test_a_stopped_app_is_reported_as_stopped_by_admin_and_start_brings_it_back(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app, before = app_of(swap_env), container(docker_client, swap_env)

    r = bundle_cmd(swap_env, "stop", app, "--json")
    assert r.code == 0, str(r)
    doc = json.loads(r.stdout)
    assert doc["action"] == "stop" and doc["app"]["state"] == "inactive"
    after = container(docker_client, swap_env)
    assert after["Id"] == before["Id"] and not after["State"]["Running"]
    assert after["HostConfig"]["RestartPolicy"] == before["HostConfig"]["RestartPolicy"]  # a swap copies it

    code, st = status_json(swap_env, app)
    assert code == 7 and st["stopped_by_admin"]["by"]  # inactive (like systemctl is-active), on purpose
    text = bundle_cmd(swap_env, "status", app)
    assert text.code == 7 and "(stopped by admin: `bundle stop` by " in text.stdout

    r = bundle_cmd(swap_env, "start", app)
    assert r.code == 0, str(r)
    assert container(docker_client, swap_env)["State"]["Running"]
    code, st = status_json(swap_env, app)
    assert code == 0 and "stopped_by_admin" not in st

    started = container(docker_client, swap_env)["State"]["StartedAt"]
    r = bundle_cmd(swap_env, "restart", app, "--json")
    assert r.code == 0 and json.loads(r.stdout)["app"]["state"] == "active", str(r)
    assert container(docker_client, swap_env)["State"]["StartedAt"] != started
    events = json.loads(bundle_cmd(swap_env, "history", app, "--json").stdout)["events"]
    assert [(e["event"], e["result"]) for e in events][-3:] == [("stop", "done"), ("start", "done"), ("restart", "done")]


def test_stop_of_a_container_replaced_by_hand_is_refused_and_changes_nothing(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app = app_of(swap_env)
    docker_client.api.remove_container(swap_env["name"], force=True)
    other = docker_client.containers.run(demo_images["v1"]["ref"], name=swap_env["name"], detach=True)
    before = state_files(swap_env["state"].root)
    r = bundle_cmd(swap_env, "stop", app)
    assert r.code == 3 and one_line(r.stderr).startswith(f"refused: ownership: container {swap_env['name']}"), str(r)
    other.reload()
    assert other.status == "running" and state_files(swap_env["state"].root) == before


def test_a_start_the_engine_refuses_is_one_line_and_the_app_stays_stopped_by_admin(docker_client, swap_env,
                                                                                      demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app = app_of(swap_env)
    assert bundle_cmd(swap_env, "stop", app).code == 0
    with socket.socket() as taken:  # its host port, taken meanwhile
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", swap_env["port"]))
        taken.listen()
        r = bundle_cmd(swap_env, "start", app)
        refused = f"error: the engine refused the start of {swap_env['name']}: "
        assert r.code == 1 and one_line(r.stderr).startswith(refused), str(r)
    assert not container(docker_client, swap_env)["State"]["Running"]
    code, st = status_json(swap_env, app)
    assert code == 7 and st["stopped_by_admin"]
    assert bundle_cmd(swap_env, "start", app).code == 0  # once the port is free again


def test_a_restart_not_healthy_in_time_exits_7_like_status(docker_client, app_image, swap_env):
    hc = "HEALTHCHECK --interval=5s CMD wget -q -O- http://127.0.0.1:8080/health || exit 1"
    ref = f"swaptest/hc-{swap_env['uniq']}:1"
    install_app(docker_client, swap_env, {"ref": ref, "id": app_image(ref, "1.5.0", dockerfile_extra=hc),
                                          "version": "1.5.0"}, 1)
    app = app_of(swap_env)
    r = bundle_cmd(swap_env, "restart", app, "--wait", "0")  # its HEALTHCHECK has not run yet
    assert r.code == 7, str(r)
    assert one_line(r.stderr) == (f"inactive: {app} was restarted but is inactive: container {swap_env['name']} "
                                  f"{container(docker_client, swap_env)['Id'][:12]}: running, health starting "
                                  f"(see `bundle logs {app}`)")
    r = bundle_cmd(swap_env, "restart", app, "--wait", "0", "--json")
    doc = json.loads(r.stdout)
    assert r.code == 7 and (doc["ok"], doc["error"]["kind"], doc["app"]["state"]) == (False, "inactive", "inactive")
    assert r.stderr_lines[-1] == doc["error"]["message"] and "health starting" in doc["error"]["message"]


def test_start_of_an_app_that_is_not_installed_is_one_line(swap_env):
    r = bundle_cmd(swap_env, "start", f"nosuch-{swap_env['uniq']}")
    assert r.code == 2 and one_line(r.stderr) == f"error: nosuch-{swap_env['uniq']} is not installed (see `bundle list`)"


# -- logs ----------------------------------------------------------------------------------------

def test_logs_of_the_container_and_of_the_last_failed_release(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    install_app(docker_client, swap_env, demo_images["v2"], 2)
    with pytest.raises(UpdateFailed):
        install_app(docker_client, swap_env, demo_images["v3"], 3, timeout=3, attempts=1)
    app = app_of(swap_env)
    docker_logs = docker_client.api.logs(swap_env["name"]).decode()

    r = bundle_cmd(swap_env, "logs", app, "--json")
    assert r.code == 0, str(r)
    doc = json.loads(r.stdout)
    assert doc["source"] == "container" and doc["lines"] == docker_logs.splitlines()
    r = bundle_cmd(swap_env, "logs", app, "--tail", "1")
    assert r.code == 0 and r.stdout.splitlines() == docker_logs.splitlines()[-1:]

    r = bundle_cmd(swap_env, "logs", app, "--failed", "--json")
    assert r.code == 0, str(r)
    doc = json.loads(r.stdout)
    assert doc["source"].startswith(str(swap_env["state"].app_dir(app))) and "migration failed" in "\n".join(doc["lines"])

    r = bundle_cmd(swap_env, "logs", app, "-f", "--json")
    assert r.code == 2 and one_line(r.stderr) == "error: -f follows the running container: not with --json or --failed"


def test_logs_follow_ends_when_the_app_is_stopped(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app = app_of(swap_env)
    follow = subprocess.Popen([str(BUNDLE), "logs", app, "-f", "--state-dir", str(swap_env["state"].root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        assert follow.poll() is None  # still following
        assert bundle_cmd(swap_env, "stop", app).code == 0
        out, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0 and err == "", err
    assert out.splitlines() == docker_client.api.logs(swap_env["name"]).decode().splitlines()


def test_logs_follow_ends_quietly_on_ctrl_c(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    follow = subprocess.Popen([str(BUNDLE), "logs", app_of(swap_env), "-f", "--state-dir", str(swap_env["state"].root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)  # started and following (nothing to wait on: the app may print nothing)
        assert follow.poll() is None
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0 and err == "", err
    assert container(docker_client, swap_env)["State"]["Running"]  # following changed nothing


# -- rollback --dry-run, and the plans in --json ---------------------------------------------------

def test_rollback_dry_run_prints_the_plan_and_changes_nothing(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    install_app(docker_client, swap_env, demo_images["v2"], 2)
    app = app_of(swap_env)
    before_files, before = state_files(swap_env["state"].root), container(docker_client, swap_env)

    r = bundle_cmd(swap_env, "rollback", app, "--dry-run", "--json")
    assert r.code == 0, str(r)
    plan = json.loads(r.stdout)["plan"]
    assert (plan["action"], plan["app"], plan["version_from"], plan["version_to"], plan["generation_to"]) == (
        "rollback", app, "2.0.0", "1.0.0", 1)
    assert plan["lines"][0] == f"roll back {swap_env['name']}: 2.0.0 -> 1.0.0" and plan["lines"][0] in r.stderr
    text = bundle_cmd(swap_env, "rollback", app, "--dry-run")  # no --yes needed: nothing is asked
    assert text.code == 0 and text.stdout.splitlines()[-1] == "dry run: nothing changed"

    after = container(docker_client, swap_env)
    assert (after["Id"], after["Image"], after["State"]["StartedAt"]) == (before["Id"], before["Image"],
                                                                         before["State"]["StartedAt"])
    assert state_files(swap_env["state"].root) == before_files


def test_import_dry_run_json_carries_the_plan(base_bundle, installed_app, tmp_path):
    # the worker's session app (tests.craft installed_app) runs under the target's name whichever file
    # of this worker came first: taken over (--adopt), so the plan does not depend on the order
    r = run_bundle("import", base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", tmp_path / "state",
                   "--dry-run", "--json", "--adopt")
    assert r.code == 0, str(r)
    doc = json.loads(r.stdout)
    plan = doc["plan"]
    assert doc["result"] == "dry-run" and plan["action"] == "upgrade" and plan["app"] == base_bundle.name
    assert plan["version_to"] == "2.0.0" and plan["version_from"] is None
    assert plan["lines"][0].startswith(f"update {base_bundle.target_name}: {installed_app.ref} (no version recorded) -> ")
    assert f"adopt container {base_bundle.target_name}, not installed by bundle" in plan["lines"]
    assert all(line in r.stderr for line in plan["lines"])  # the lines shown, every one


# -- show ----------------------------------------------------------------------------------------

def test_show_gives_each_setting_as_applied_and_where_it_came_from(docker_client, swap_env, demo_images, tmp_path):
    app = app_of(swap_env)
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{app}.toml").write_text('[run]\nenv = { API_TOKEN = "hunter2" }\n')
    # the install ran with the site's value merged over the bundle's (as `bundle import` does)
    install_app(docker_client, swap_env, demo_images["v1"], 1,
                run_extra={"env": {"GREETING": "hello", "API_TOKEN": "hunter2"}})
    docker_client.api.update_container(swap_env["name"], restart_policy={"Name": "always"})  # by hand

    r = bundle_cmd(swap_env, "show", app, "--json", env={"BUNDLE_SITE_DIR": str(site)})
    assert r.code == 0, str(r)
    doc = json.loads(r.stdout)
    rows = {row["setting"]: (row["value"], row["source"]) for row in doc["settings"]}
    assert rows["env GREETING"] == ("hello", "bundle")
    assert rows["env API_TOKEN"] == ("***", "site")
    assert rows["restart"] == ("always", "this host")
    assert rows["volume /data"] == (f"{swap_env['volume']}:/data", "bundle")
    assert doc["site_file"] == str(site / f"{app}.toml") and doc["version"] == "1.0.0"
    text = bundle_cmd(swap_env, "show", app, env={"BUNDLE_SITE_DIR": str(site)})
    assert text.code == 0 and "hunter2" not in text.stdout + text.stderr + r.stdout
    assert any(line.split() == ["restart", "always", "[this", "host]"] for line in text.stdout.splitlines())


# -- uninstall -y, restore --from-uninstall ---------------------------------------------------------

def test_restore_from_uninstall_puts_the_final_backup_back_and_never_overwrites(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app = app_of(swap_env)
    seed_data(docker_client, swap_env["name"])
    before = digest(data_files(docker_client, swap_env["name"]))

    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall", "--yes")
    assert r.code == 2 and one_line(r.stderr).startswith(f"error: {app} is installed: restore puts back"), str(r)
    assert bundle_cmd(swap_env, "uninstall", app, "-y").code == 0  # -y like every other verb that asks
    assert not docker_client.api.volumes(filters={"name": swap_env["volume"]})["Volumes"]

    r = bundle_cmd(swap_env, "restore", app)
    assert r.code == 2 and one_line(r.stderr).startswith("error: say where the data comes from: --from-uninstall")
    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall")
    assert r.code == 2 and one_line(r.stderr) == "error: not a terminal: pass --yes to restore without confirmation"
    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall", "--yes", "--json")
    assert r.code == 0, str(r)
    assert json.loads(r.stdout)["volumes"] == [swap_env["volume"]]
    assert docker_client.api.inspect_volume(swap_env["volume"])["Labels"] == {"io.bundle.app": app}  # still the app's
    assert "anonymous volume of /state: not restored" in r.stderr  # the image's VOLUME: a new one comes
    probe = docker_client.containers.create(demo_images["v1"]["ref"], name=f"probe-{swap_env['uniq']}",
                                            volumes={swap_env["volume"]: {"bind": "/data", "mode": "ro"}})
    assert digest(data_files(docker_client, probe.id)) == before
    probe.remove()

    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall", "--yes")
    assert r.code == 1 and one_line(r.stderr) == (f"error: volume(s) {swap_env['volume']} exist: restore never "
                                                  f"overwrites data (remove or rename them first); nothing restored")
    events = json.loads(bundle_cmd(swap_env, "history", app, "--json").stdout)["events"]
    assert [e["event"] for e in events if e["event"] == "restore"] == ["restore"]
    install_app(docker_client, swap_env, demo_images["v1"], 1)  # installed again: the app runs on its data
    assert digest(data_files(docker_client, swap_env["name"])) == before


def test_a_restore_killed_after_making_its_volumes_is_finished_by_running_it_again(docker_client, swap_env,
                                                                                   demo_images):
    """kill -9 between creating the volumes and filling them: the rerun fills exactly those volumes
    (its journal names them) instead of refusing them as data it must not overwrite; a volume of that
    name someone else made meanwhile is still refused."""
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app, volume = app_of(swap_env), swap_env["volume"]
    seed_data(docker_client, swap_env["name"])
    before = digest(data_files(docker_client, swap_env["name"]))
    assert bundle_cmd(swap_env, "uninstall", app, "-y").code == 0

    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall", "--yes",
                   env={"BUNDLE_CRASH_AT": "restore_volumes_made", "BUNDLE_CRASH_WHEN": "after"})
    assert r.code == -9, str(r)
    assert docker_client.api.inspect_volume(volume)["Labels"] == {"io.bundle.app": app}  # made, empty

    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall", "--yes")
    assert r.code == 0, str(r)
    assert f"volume {volume} (was /data): made by an interrupted restore: filled again from the backup" in r.stdout
    probe = docker_client.containers.create(demo_images["v1"]["ref"], name=f"probe-{swap_env['uniq']}",
                                            volumes={volume: {"bind": "/data", "mode": "ro"}})
    assert digest(data_files(docker_client, probe.id)) == before
    probe.remove()
    events = json.loads(bundle_cmd(swap_env, "history", app, "--json").stdout)["events"]
    assert [e["result"] for e in events if e["event"] == "restore"] == ["done"]
    # done: a third run finds the data there and refuses, as for any volume that exists
    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall", "--yes")
    assert r.code == 1 and f"volume(s) {volume} exist: restore never overwrites data" in one_line(r.stderr), str(r)

    # interrupted again, then the admin replaces the volume with one of their own: never filled over
    docker_client.api.remove_volume(volume)
    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall", "--yes",
                   env={"BUNDLE_CRASH_AT": "restore_volumes_made", "BUNDLE_CRASH_WHEN": "after"})
    assert r.code == -9, str(r)
    docker_client.api.remove_volume(volume)
    docker_client.api.create_volume(volume, labels={"owner": "admin"})
    r = bundle_cmd(swap_env, "restore", app, "--from-uninstall", "--yes")
    assert r.code == 1 and f"volume(s) {volume} exist: restore never overwrites data" in one_line(r.stderr), str(r)
    assert docker_client.api.inspect_volume(volume)["Labels"] == {"owner": "admin"}


# -- status --metrics ------------------------------------------------------------------------------

def test_status_metrics_keeps_the_up_and_healthy_gauges_current(docker_client, swap_env, demo_images, tmp_path):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    app, prom = app_of(swap_env), tmp_path / "bundle.prom"

    r = bundle_cmd(swap_env, "status", "--metrics", "--metrics-file", prom)
    assert r.code == 0, str(r)
    got = samples(prom.read_text())
    assert got[("bundle_app_up", (("app", app),))] == 1 and got[("bundle_app_healthy", (("app", app),))] == 1
    assert got[("bundle_engine_up", ())] == 1 and time.time() - got[("bundle_status_timestamp_seconds", ())] < 60

    docker_client.api.stop(swap_env["name"], timeout=0)  # it died, nobody ran `bundle stop`
    r = bundle_cmd(swap_env, "status", app, "--metrics", "--metrics-file", prom)
    assert r.code == 7
    got = samples(prom.read_text())
    assert got[("bundle_app_up", (("app", app),))] == 0 and got[("bundle_app_stopped_by_admin", (("app", app),))] == 0

    assert bundle_cmd(swap_env, "start", app, "--metrics-file", prom).code == 0  # every command refreshes it
    assert samples(prom.read_text())[("bundle_app_healthy", (("app", app),))] == 1
    assert bundle_cmd(swap_env, "stop", app, "--metrics-file", prom).code == 0
    got = samples(prom.read_text())
    assert got[("bundle_app_healthy", (("app", app),))] == 0 and got[("bundle_app_stopped_by_admin", (("app", app),))] == 1


# -- completion, engine down -------------------------------------------------------------------------

def complete(words: str, state) -> list[str]:
    env = {**os.environ, "_BUNDLE_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)), "BUNDLE_STATE_DIR": str(state)}
    r = subprocess.run([str(BUNDLE)], env=env, capture_output=True, text=True, timeout=30)
    return [line.split(",", 1)[1] for line in r.stdout.splitlines() if line]


def test_completion_knows_the_installed_apps_and_their_kept_generations(docker_client, swap_env, demo_images):
    install_app(docker_client, swap_env, demo_images["v1"], 1)
    install_app(docker_client, swap_env, demo_images["v2"], 2)
    app, root = app_of(swap_env), swap_env["state"].root
    assert complete("bundle stop sh", root) == [app]
    assert complete("bundle status ", root) == [app]
    assert complete(f"bundle rollback {app} --to ", root) == ["1"]
    assert bundle_cmd(swap_env, "uninstall", app, "--yes").code == 0
    assert complete("bundle restore ", root) == [app] and complete("bundle logs ", root) == []


@pytest.mark.parametrize("args", [["logs", "x"], ["start", "x"], ["stop", "x"], ["restart", "x"], ["show", "x"],
                                  ["restore", "x", "--from-uninstall", "--yes"], ["rollback", "x", "--dry-run"]])
def test_every_verb_says_in_one_line_that_the_engine_does_not_answer(args, tmp_path):
    r = run_bundle(*args, "--state-dir", tmp_path / "state", env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert r.code == 1 and one_line(r.stderr).startswith("error: Docker engine unreachable at unix://"), str(r)
    assert not (tmp_path / "state").exists()
