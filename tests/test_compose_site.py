"""Site settings per service and probation of a Compose project, on the real engine: a secret from
the site file's `[services.SERVICE.run]` (importer.site), through `bundle build` and `bundle import`,
reaches its service's container, is never printed, survives an upgrade; a site bind the host policy
forbids is refused before anything changes; a service that dies in the project's probation window
puts the whole project back with its data (exit 4)."""

from __future__ import annotations

import json
import time

import yaml

from bundlecore.engine import Engine
from tests.test_compose import AFTER_EXIT, assert_recovered_to_v1, compose_yaml, container, env, images, target_for

__all__ = ["env", "images"]  # the fixtures this file's tests take

SECRET = "s3cret-site-value"


def _build(env, images, pgp_keys, version: str, web: str):
    from tests.support import run_bundle
    compose, refs = compose_yaml(images, web=web, worker=None)
    target_for(env, compose, refs)
    spec = env["dir"] / "bundle.toml"
    spec.write_text(spec.read_text().replace('version = "1"', f'version = "{version}"\nsequence = {version}'))
    out = env["dir"] / f"p{version}.bundle"
    r = run_bundle("build", spec, "-o", out, "--sign-key", pgp_keys.builder.fpr, "--gnupghome",
                   pgp_keys.builder.home, "--local")
    assert r.code == 0, str(r)
    return out


def _site(env, text: str):
    path = env["dir"] / "site.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_site_secret_reaches_its_service_is_never_shown_and_survives_an_upgrade(docker_client, env, images,
                                                                                    pgp_keys):
    from tests.keys import trust_store
    from tests.support import one_line, run_bundle
    p, state = env["project"], env["state"].root
    v1, v2 = _build(env, images, pgp_keys, "1", "1"), _build(env, images, pgp_keys, "2", "2")
    keys = trust_store(env["dir"] / "keys", [pgp_keys.builder])
    site = _site(env, f'[services.web.run]\nenv = {{ DB_PASSWORD = "{SECRET}", PLAIN = "1" }}\n')
    r = run_bundle("import", v1, "--keys", keys, "--state-dir", state, "--site", site, "--yes")
    assert r.code == 0, str(r)
    assert "services.web env DB_PASSWORD=***" in r.stdout and SECRET not in r.stdout + r.stderr
    env_of = lambda svc: container(docker_client, env, svc)["Config"]["Env"]  # noqa: E731
    assert f"DB_PASSWORD={SECRET}" in env_of("web") and not any("DB_PASSWORD" in e for e in env_of("db"))
    ids = {s: container(docker_client, env, s)["Id"] for s in ("db", "web")}

    # a bind the host policy does not grant, asked by the site file: refused before anything changes
    bad = _site(env, '[services.web.run]\nvolumes = ["/etc:/host-etc:ro"]\n')
    r = run_bundle("import", v2, "--keys", keys, "--state-dir", state, "--site", bad, "--yes")
    assert r.code == 3, str(r)
    line = one_line(r.stderr)
    assert line.startswith("refused: host policy: services.web.volumes.1 asks for bind mount of host path /etc"), line
    assert {s: container(docker_client, env, s)["Id"] for s in ("db", "web")} == ids
    st = json.loads(run_bundle("status", p, "--state-dir", state, "--json").stdout)["apps"][0]
    assert (st["state"], st["version"]) == ("active", "1")

    # the upgrade: web's image changes, its secret is carried (and still never shown), db is left alone
    site = _site(env, f'[services.web.run]\nenv = {{ DB_PASSWORD = "{SECRET}", PLAIN = "1" }}\n')
    r = run_bundle("import", v2, "--keys", keys, "--state-dir", state, "--site", site, "--yes", "--json")
    assert r.code == 0, str(r)
    assert SECRET not in r.stdout + r.stderr
    doc = json.loads(r.stdout)
    # every env value from the site file is a secret (importer.masking); the bundle's own are shown
    assert doc["installed"]["services"]["web"]["settings"]["run"]["env"] == {"WEB": "x", "DB_PASSWORD": "***",
                                                                               "PLAIN": "***"}
    assert f"DB_PASSWORD={SECRET}" in env_of("web") and container(docker_client, env, "db")["Id"] == ids["db"]
    assert container(docker_client, env, "web")["Image"] == images[("web", "2")]["id"]
    for verb in (("status", p), ("history", p), ("show", p)):
        shown = run_bundle(*verb, "--state-dir", state, "--json")
        assert shown.code == 0 and SECRET not in shown.stdout, verb

    # `bundle show`: the compose file as applied (images as loaded, the site's settings in, masked)
    text = run_bundle("show", p, "--state-dir", state)
    assert text.code == 0 and SECRET not in text.stdout + text.stderr, str(text)
    applied = yaml.safe_load(text.stdout)
    web = applied["services"]["web"]
    assert applied["name"] == p and web["image"] == images[("web", "2")]["id"]
    assert web["environment"] == {"WEB": "x", "DB_PASSWORD": "***", "PLAIN": "***"}
    assert web["volumes"] == ["data:/data:ro"] and web["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert "$$(cat /release)" in applied["services"]["db"]["command"][-1]
    rows = {r["setting"]: r for r in json.loads(run_bundle("show", p, "--state-dir", state, "--json").stdout)["settings"]}
    assert rows["services.web env DB_PASSWORD"]["source"] == "site" and rows["services.web env WEB"]["source"] == "bundle"
    assert rows["services.web env DB_PASSWORD"]["value"] == "***" and rows["services.web env DB_PASSWORD"]["secret"]


# -- probation: the whole project watched once every service passed its gate ----------------------

def test_a_service_failing_in_the_projects_probation_puts_the_whole_project_back_with_its_data(docker_client, env,
                                                                                               images):
    """db migrates its volume to 2 and web passes its gate; web then dies inside the probation window
    (`[target.health.web] probation`): the whole project is back on 1, every volume byte-identical, exit 4."""
    import threading

    from bundlecore.errors import UpdateFailed
    from importer.kinds.compose.machine import ProjectJournal
    from importer.kinds.compose.status import app_status
    from tests.swap_fixtures import wait_until
    from tests.test_compose import bundle_for, project_containers, swap, volume_files
    compose, refs = compose_yaml(images, worker=None)
    swap(docker_client, env["state"], target_for(env, compose, refs), bundle_for(env, images, refs, "1", 1))
    data_before = volume_files(docker_client, env)
    ids_before = {s: container(docker_client, env, s)["Id"] for s in ("db", "web")}
    compose, refs = compose_yaml(images, db="2", web="2", worker=None)
    target = target_for(env, compose, refs, extra='[target.health.web]\ncmd = "test -s /seen"\nprobation = "60s"\n')
    lines: list[str] = []
    failed: list[BaseException] = []

    def upgrade():
        try:
            swap(docker_client, env["state"], target, bundle_for(env, images, refs, "2", 2), out=lines.append)
        except BaseException as e:  # the test asserts on it
            failed.append(e)

    worker = threading.Thread(target=upgrade)
    worker.start()
    app_dir = env["state"].app_dir(env["project"])
    in_probation = lambda: ((ProjectJournal.read(app_dir) or {}).get("step") == "probation")  # noqa: E731
    assert wait_until(in_probation, timeout=120), lines
    new_web = container(docker_client, env, "web")
    assert new_web["Image"] == images[("web", "2")]["id"] and volume_files(docker_client, env)["data/schema"] == b"2\n"
    docker_client.api.kill(new_web["Id"])  # web dies in its probation (restart policy "no": not restarted)
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], UpdateFailed), (failed, lines)
    e = failed[0]
    assert e.exit_code == 4 and "failed its probation: service web: it exited" in str(e) and "\n" not in str(e)
    assert any(line.startswith("  probation: watching db, web of") for line in lines), lines
    assert volume_files(docker_client, env) == data_before  # db's migration to 2 undone byte for byte
    for s in ("db", "web"):
        info = container(docker_client, env, s)
        assert info["Id"] == ids_before[s] and info["State"]["Running"], s
    assert project_containers(docker_client, env) == sorted(f"{env['project']}-{s}-1" for s in ("db", "web"))
    st = app_status(Engine(docker_client), env["state"], env["project"])
    assert st["state"] == "active" and st["installed"]["version"] == "1" and st["last_swap"]["result"] == "rolled-back"


def test_an_upgrade_killed_in_its_probation_is_put_back_by_recover_with_its_data(docker_client, env, images):
    """kill -9 as the probation step starts (every service had passed its gate, db had migrated its
    volume): `bundle recover` puts the whole project back on 1 with the data as it was."""
    import os
    import subprocess
    import sys

    from tests.test_compose import KILLED, REPO, bundle_for, swap, volume_files
    from tests.test_compose import __file__ as driver
    compose, refs = compose_yaml(images, worker=None)
    swap(docker_client, env["state"], target_for(env, compose, refs), bundle_for(env, images, refs, "1", 1))
    data_before = volume_files(docker_client, env)
    compose, refs = compose_yaml(images, db="2", web="2", worker=None)
    target = target_for(env, compose, refs, extra='[target.health.web]\ncmd = "test -s /seen"\nprobation = "60s"\n')
    r = subprocess.run([sys.executable, driver, "swap", str(env["state"].root), json.dumps(target),
                        json.dumps(bundle_for(env, images, refs, "2", 2))], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "BUNDLE_CRASH_AT": "compose:probation", "BUNDLE_CRASH_WHEN": "before"},
                       timeout=300)
    assert r.returncode == KILLED, f"not killed in probation: rc={r.returncode} {r.stderr[-800:]}"
    assert volume_files(docker_client, env)["data/schema"] == b"2\n"  # db had migrated
    assert_recovered_to_v1(docker_client, env, images, data_before)


def test_a_rollback_keeps_the_kept_generations_probation_and_a_death_in_it_puts_the_current_one_back(
        docker_client, env, images):
    """Generation 1 was imported with a probation window for web; a rollback to it watches that window
    too (before, it ended at the gates). web dies inside it: the rollback is undone, generation 2 runs
    again with the data it had (v2's migration and what it wrote), exit 4."""
    import threading

    from bundlecore.errors import UpdateFailed
    from importer.kinds.compose.machine import ProjectJournal
    from importer.kinds.compose.run import plan_rollback, rollback
    from importer.kinds.compose.status import app_status
    from tests.swap_fixtures import wait_until
    from tests.test_compose import bundle_for, swap, volume_files
    engine, state = Engine(docker_client), env["state"]
    compose, refs = compose_yaml(images, worker=None)
    swap(docker_client, state, target_for(env, compose, refs, extra=WEB_PROBATION), bundle_for(env, images, refs, "1", 1))
    compose, refs = compose_yaml(images, db="2", web="2", worker=None)
    swap(docker_client, state, target_for(env, compose, refs), bundle_for(env, images, refs, "2", 2))
    docker_client.api.exec_start(docker_client.api.exec_create(f"{env['project']}-db-1",
                                                                ["sh", "-c", "echo v2 > /data/written-by-v2"]))
    v2_files = volume_files(docker_client, env)
    v2_ids = {s: container(docker_client, env, s)["Id"] for s in ("db", "web")}
    with state.lock():
        plan = plan_rollback(engine, state, env["project"])
    assert plan.probation == 8
    assert any(line.startswith("  probation: every service watched 8 s") for line in plan.lines()), plan.lines()
    lines: list[str] = []
    failed: list[BaseException] = []

    def roll_back():
        try:
            with state.lock():
                rollback(engine, state, plan, out=lines.append)
        except BaseException as e:  # the test asserts on it
            failed.append(e)

    worker = threading.Thread(target=roll_back)
    worker.start()
    app_dir = state.app_dir(env["project"])
    assert wait_until(lambda: (ProjectJournal.read(app_dir) or {}).get("step") == "probation", timeout=120), lines
    web = container(docker_client, env, "web")
    assert web["Image"] == images[("web", "1")]["id"] and web["Id"] != v2_ids["web"]
    docker_client.api.kill(web["Id"])  # generation 1's web dies in its window
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], UpdateFailed), (failed, lines)
    assert failed[0].exit_code == 4 and "failed its probation: service web: it exited" in str(failed[0])
    assert volume_files(docker_client, env) == v2_files  # generation 2's data, as it was before the rollback
    time.sleep(AFTER_EXIT)  # "running again" is still true a moment later
    for s in ("db", "web"):
        info = container(docker_client, env, s)
        assert info["Id"] == v2_ids[s] and info["State"]["Running"] and not info["State"]["Restarting"], s
    st = app_status(engine, state, env["project"])
    assert st["state"] == "active" and st["installed"]["version"] == "2" and st["installed"]["generation"] == 2


WEB_PROBATION = '[target.health.web]\ncmd = "test -s /seen"\nprobation = "8s"\n'
