"""A Compose project swapped, gated and rolled back as one unit (importer.kinds.compose), on the real
engine: a database-like service writing a volume, a web service reading it, a worker that waits for
the database to be healthy. Built from the compose file by the build side (bundler.spec), planned
and applied as an import does; the kill -9 matrix runs the swap in a separate process
(`python tests/test_compose.py swap ...`) and `bundle recover` in another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bundlecore.engine import Engine  # noqa: E402
from tests.swap_fixtures import Cleanup, data_files, delivery, digest  # noqa: E402

KILLED = -9
DB = ("sh", "-c", 'v=$(cat /release); [ -f /data/schema ] || echo 0 > /data/schema; '
      '[ "$(cat /data/schema)" = "$v" ] || { echo "migrated $(cat /data/schema) -> $v" >> /data/log; '
      'echo "$v" > /data/schema; }; touch /ready; exec sleep 100000')  # migrates once per release
WEB = ("sh", "-c", '[ "$(cat /release)" = bad ] && exit 3; cat /data/schema > /seen; exec sleep 100000')
WORKER = ("sh", "-c", '[ "$(cat /release)" = bad ] && { echo "worker: no queue in release bad" >&2; exit 3; }; '
          'exec sleep 100000')


@pytest.fixture(scope="module")
def images(docker_client):
    """db/web/worker images at releases 1 and 2 (+ a worker that exits at once), from the demo app's busybox."""
    import uuid

    from tests.support import build_app_image, child_image
    tok = uuid.uuid4().hex[:8]
    base = f"composetest/base-{tok}:1"
    build_app_image(docker_client, base, "1.0.0")
    made = {}
    for svc, rel in (("db", "1"), ("db", "2"), ("web", "1"), ("web", "2"), ("web", "bad"), ("worker", "1"), ("worker", "bad")):
        ref = f"composetest/{svc}-{tok}:{rel}"
        made[(svc, rel)] = {"ref": ref, "id": child_image(docker_client, base, ref, f"echo {rel} > /release")}
    yield made
    for ref in [m["ref"] for m in made.values()] + [base]:
        try:
            docker_client.images.remove(ref, force=True)
        except Exception:
            pass


@pytest.fixture
def env(docker_client, uniq, tmp_path):
    from importer.state import StateDir
    project = f"ct{uniq}"
    yield {"project": project, "state": StateDir(tmp_path / "state"), "dir": tmp_path / "spec", "uniq": uniq}
    Cleanup(docker_client, project, StateDir(tmp_path / "state").identity)()


# a verdict must still be true this long after the command said it (the container kind's rule)
AFTER_EXIT = 5


def _escaped(argv) -> list[str]:
    """A shell command as a compose file writes it: `$$` for each `$` (Compose's own escape)."""
    return [a.replace("$", "$$") for a in argv]


def compose_yaml(images, db="1", web="1", worker: str | None = "1", web_env="x") -> tuple[str, list[str]]:
    """The demo project's compose file, and the images it names."""
    svc = {
        "db": {"image": images[("db", db)]["ref"], "command": _escaped(DB), "volumes": ["data:/data"],
               "healthcheck": {"test": "test -f /ready", "interval": "500ms", "retries": 3},
               "stop_grace_period": "0s", "restart": "unless-stopped"},
        "web": {"image": images[("web", web)]["ref"], "command": _escaped(WEB), "volumes": ["data:/data:ro"],
                "environment": {"WEB": web_env}, "depends_on": {"db": {"condition": "service_healthy"}},
                "healthcheck": {"test": "test -s /seen", "interval": "500ms"}, "stop_grace_period": "0s",
                "labels": {"org.demo.tier": "web"}},
    }
    if worker:
        svc["worker"] = {"image": images[("worker", worker)]["ref"], "command": _escaped(WORKER),
                         "depends_on": {"db": {"condition": "service_healthy"}},
                         "healthcheck": {"test": "true", "interval": "500ms"}, "stop_grace_period": "0s"}
    doc = {"services": svc, "volumes": {"data": None}}
    return json.dumps(doc), sorted({s["image"] for s in svc.values()})  # JSON is YAML


def target_for(env, compose: str, refs: list[str], extra: str = "", version: str = "1", sequence: int | None = None) -> dict:
    from bundler.spec import load_spec
    d = env["dir"]
    d.mkdir(exist_ok=True)
    (d / "compose.yaml").write_text(compose)
    (d / "bundle.toml").write_text(textwrap.dedent(f"""\
        name = "{env['project']}"
        version = "{version}"
        {f"sequence = {sequence}" if sequence else ""}
        images = {json.dumps(refs)}
        [target]
        kind = "compose"
        project = "{env['project']}"
        file = "compose.yaml"
        """) + extra)
    return load_spec(d / "bundle.toml").target


def bundle_for(env, images, refs, version: str, sequence: int) -> dict:
    by_ref = {m["ref"]: m["id"] for m in images.values()}
    return {"name": env["project"], "version": version, "sequence": sequence, "sha256": "cd" * 32,
            "signers": ["F" * 40], "images": {r: by_ref[r] for r in refs}}


def swap(client, state, target: dict, bundle: dict, out=None, adopt: bool = False):
    """plan + apply under the lock, as `bundle import` does after its load."""
    from bundlecore.engine import Engine
    from bundlecore.release import target_from_json
    from importer import kinds
    engine = Engine(client) if not hasattr(client, "container_named") else client
    t = target_from_json(target)
    kind = kinds.for_target(t)
    with state.lock():
        kinds.recover_all(engine, state, out=lambda s: None)
        plan = kind.plan(engine, state, t, bundle["images"][t.image], new_version=bundle["version"],
                         app=bundle["name"], images=bundle["images"], adopt=adopt)
        return plan, kind.apply(engine, state, plan, delivery(bundle), out=out or (lambda s: None))


def install(client, env, images, **kw):
    compose, refs = compose_yaml(images, **kw)
    bundle = bundle_for(env, images, refs, "1", 1)
    return swap(client, env["state"], target_for(env, compose, refs), bundle)


def container(client, env, svc: str) -> dict:
    return client.api.inspect_container(f"{env['project']}-{svc}-1")


def volume_files(client, env) -> dict[str, bytes]:
    return data_files(client, f"{env['project']}-db-1", "/data")


def project_containers(client, env) -> list[str]:
    label = f"com.docker.compose.project={env['project']}"
    return sorted(n.lstrip("/") for c in client.api.containers(all=True, filters={"label": label}) for n in c["Names"])


# -- first install, upgrade of one service, failed upgrade -------------------------------------------

def test_first_install_creates_the_project_in_dependency_order_with_compose_labels(docker_client, env, images):
    from importer.kinds.compose.status import app_status
    plan, rec = install(docker_client, env, images)
    assert [s.name for s in plan.services] == ["db", "web", "worker"]
    assert [s.action for s in plan.services] == ["create"] * 3
    p = env["project"]
    assert project_containers(docker_client, env) == [f"{p}-db-1", f"{p}-web-1", f"{p}-worker-1"]
    web = container(docker_client, env, "web")
    labels = web["Config"]["Labels"]
    assert labels["com.docker.compose.project"] == p and labels["com.docker.compose.service"] == "web"
    assert labels["com.docker.compose.container-number"] == "1" and labels["com.docker.compose.oneoff"] == "False"
    assert labels["com.docker.compose.config-hash"] == rec["services"]["web"]["config_hash"]
    assert labels["io.bundle.app"] == p and labels["org.demo.tier"] == "web"
    assert "WEB=x" in web["Config"]["Env"] and web["State"]["Health"]["Status"] == "healthy"
    assert "web" in web["NetworkSettings"]["Networks"][f"{p}_default"]["Aliases"]
    assert docker_client.api.inspect_volume(f"{p}_data")["Labels"]["com.docker.compose.volume"] == "data"
    assert volume_files(docker_client, env)["data/schema"] == b"1\n"
    st = app_status(Engine(docker_client), env["state"], p)
    assert st["state"] == "active" and st["exit_code"] == 0 and sorted(st["services"]) == ["db", "web", "worker"]
    assert rec["kind"] == "compose" and rec["generation"] == 1 and rec["order"] == ["db", "web", "worker"]


def test_upgrade_of_one_service_image_recreates_only_that_service(docker_client, env, images):
    install(docker_client, env, images)
    before = {s: container(docker_client, env, s)["Id"] for s in ("db", "web", "worker")}
    compose, refs = compose_yaml(images, web="2")
    plan, rec = swap(docker_client, env["state"], target_for(env, compose, refs), bundle_for(env, images, refs, "2", 2))
    assert {s.name: s.action for s in plan.services} == {"db": "keep", "web": "recreate", "worker": "keep"}
    after = {s: container(docker_client, env, s)["Id"] for s in ("db", "web", "worker")}
    assert after["db"] == before["db"] and after["worker"] == before["worker"] and after["web"] != before["web"]
    assert container(docker_client, env, "web")["Image"] == images[("web", "2")]["id"]
    parked = docker_client.api.inspect_container(f"{env['project']}-web-1.previous-1")
    assert not parked["State"]["Running"] and parked["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert rec["version"] == "2" and rec["generation"] == 2 and rec["previous"][0]["version"] == "1"
    from importer.kinds.compose.status import app_status, status_lines
    lines = status_lines(app_status(Engine(docker_client), env["state"], env["project"]))
    assert any(ln.startswith(f"  previous: generation 1 1 as {env['project']}-web-1.previous-1, data backup "
                             "generations/1 (replaced ") for ln in lines), lines


def test_a_failing_service_after_a_migration_puts_the_whole_project_back_with_its_data(docker_client, env, images):
    from bundlecore.errors import UpdateFailed
    from importer.kinds.compose.status import app_status
    install(docker_client, env, images)
    data_before = volume_files(docker_client, env)
    ids_before = {s: container(docker_client, env, s)["Id"] for s in ("db", "web", "worker")}
    compose, refs = compose_yaml(images, db="2", web="2", worker="bad")
    lines: list[str] = []
    with pytest.raises(UpdateFailed) as e:
        swap(docker_client, env["state"], target_for(env, compose, refs), bundle_for(env, images, refs, "2", 2),
             out=lines.append)
    assert e.value.exit_code == 4 and "service worker" in str(e.value) and "\n" not in str(e.value)
    assert any("migrated" in line or "backed up" in line for line in lines)
    assert volume_files(docker_client, env) == data_before  # db had migrated the volume to 2: restored exactly
    assert digest(volume_files(docker_client, env)) == digest(data_before)
    for s in ("db", "web", "worker"):
        info = container(docker_client, env, s)
        assert info["Id"] == ids_before[s] and info["State"]["Running"], s
    assert project_containers(docker_client, env) == sorted(f"{env['project']}-{s}-1" for s in ("db", "web", "worker"))
    st = app_status(Engine(docker_client), env["state"], env["project"])
    assert st["state"] == "active" and st["installed"]["version"] == "1"
    assert st["last_swap"]["result"] == "rolled-back"
    # the failed service's last log lines are kept (importer.logtail) and shown by `bundle history`
    from tests.support import run_bundle
    h = run_bundle("history", env["project"], "--state-dir", env["state"].root)
    assert h.code == 0 and "logs of the failed container: " in h.stdout, str(h)
    assert "    worker: no queue in release bad" in h.stdout, str(h)


# -- `bundle rollback` of a project ------------------------------------------------------------------

def upgraded(client, env, images, worker: str | None = "1", **v2) -> dict:
    """v1 installed, then upgraded to 2 (`v2`: the services whose release changes), then v2 writes data:
    returns what the volume held under v1 and each v1 container's ID."""
    install(client, env, images, worker=worker)
    names = ("db", "web", "worker") if worker else ("db", "web")
    before = {"files": volume_files(client, env), "ids": {s: container(client, env, s)["Id"] for s in names}}
    compose, refs = compose_yaml(images, worker=worker, **v2)
    swap(client, env["state"], target_for(env, compose, refs), bundle_for(env, images, refs, "2", 2))
    client.api.exec_start(client.api.exec_create(f"{env['project']}-db-1", ["sh", "-c", "echo v2 > /data/written-by-v2"]))
    return before


def test_rollback_puts_the_previous_generation_back_with_its_data_exactly(docker_client, env, images):
    from tests.support import run_bundle
    p, state = env["project"], env["state"].root
    before = upgraded(docker_client, env, images, db="2", web="2")
    v2_files = volume_files(docker_client, env)
    assert v2_files["data/schema"] == b"2\n" and v2_files["data/written-by-v2"] == b"v2\n"
    v2_ids = {s: container(docker_client, env, s)["Id"] for s in ("db", "web")}
    dry = run_bundle("rollback", p, "--dry-run", "--state-dir", state)
    assert dry.code == 0 and f"roll back compose project {p} (app {p}): 2 -> 1 (generation 1" in dry.stdout, str(dry)
    assert f"service db: park {p}-db-1 as {p}-db-1.previous-2" in dry.stdout and "service worker: keep" in dry.stdout
    r = run_bundle("rollback", p, "--yes", "--state-dir", state)
    assert r.code == 0, str(r)
    assert f"{p} 1 (generation 1) is running" in r.stdout
    assert volume_files(docker_client, env) == before["files"]  # v1's data byte for byte; v2's kept as generation 2
    assert digest(volume_files(docker_client, env)) == digest(before["files"])
    for s in ("db", "web", "worker"):
        info = container(docker_client, env, s)
        assert info["Id"] == before["ids"][s] and info["State"]["Running"], s
        assert info["State"]["Health"]["Status"] == "healthy", s
    for s in ("db", "web"):
        parked = docker_client.api.inspect_container(f"{p}-{s}-1.previous-2")
        assert parked["Id"] == v2_ids[s] and not parked["State"]["Running"]
    time.sleep(AFTER_EXIT)  # "is running" is still true: the same containers up and healthy, v2's still parked
    for s in ("db", "web", "worker"):
        info = container(docker_client, env, s)
        assert info["Id"] == before["ids"][s] and info["State"]["Running"] and not info["State"]["Restarting"], s
        assert info["State"]["Health"]["Status"] == "healthy" and info["RestartCount"] == 0, s
    assert not any(docker_client.api.inspect_container(f"{p}-{s}-1.previous-2")["State"]["Running"]
                   for s in ("db", "web"))
    st = run_bundle("status", p, "--state-dir", state)
    assert st.code == 0 and f"compose project {p} 1 " in st.stdout and "[active]" in st.stdout, str(st)
    assert f"previous: generation 2 2 as {p}-db-1.previous-2, {p}-web-1.previous-2, data backup generations/2" \
        in st.stdout, str(st)
    doc = json.loads(run_bundle("status", p, "--state-dir", state, "--json").stdout)["apps"][0]
    assert (doc["state"], doc["version"], doc["detail"]["installed"]["generation"]) == ("active", "1", 1)
    # the newer data was kept: rolling forward puts generation 2 back with what v2 had written
    fwd = run_bundle("rollback", p, "--to", "2", "--yes", "--state-dir", state)
    assert fwd.code == 0, str(fwd)
    assert volume_files(docker_client, env) == v2_files
    assert {s: container(docker_client, env, s)["Id"] for s in ("db", "web")} == v2_ids


# -- `bundle uninstall` of a project ------------------------------------------------------------------

@pytest.mark.parametrize("keep_data", [True, False])
def test_uninstall_removes_every_service_after_a_final_backup(docker_client, env, images, keep_data):
    from tests.support import one_line, run_bundle
    p, state = env["project"], env["state"]
    upgraded(docker_client, env, images, worker=None, web="2")  # web of generation 1 is kept parked
    data_before = volume_files(docker_client, env)
    r = run_bundle("uninstall", p, "--yes", "--state-dir", state.root, *(["--keep-data"] if keep_data else []))
    assert r.code == 0, str(r)
    assert f"{p} is uninstalled; its final backup and records are in" in r.stdout
    assert f"remove kept generation {p}-web-1.previous-1" in r.stdout
    assert f"{'keep' if keep_data else 'remove'} volume {p}_data" in r.stdout
    assert project_containers(docker_client, env) == []  # the parked generation too
    time.sleep(AFTER_EXIT)  # and it stays so: nothing of the project comes back
    assert project_containers(docker_client, env) == []
    volumes = {v["Name"] for v in docker_client.api.volumes()["Volumes"] or []}
    assert (f"{p}_data" in volumes) == keep_data
    if keep_data:
        assert volume_files_of(docker_client, f"{p}_data", images) == data_before
    assert not any(n["Name"] == f"{p}_default" for n in docker_client.api.networks(names=[f"{p}_default"]))
    assert state.installed(p) is None and not state.app_dir(p).exists()
    (kept,) = list((state.root / "removed").glob(f"{p}-*"))
    backup = json.loads((kept / "final-backup" / "db" / "backup.json").read_text())
    assert [m["destination"] for m in backup["mounts"]] == ["/data"]
    assert state.highest_sequence(p) == 2  # uninstalling does not make sequence 1 installable again
    st = run_bundle("status", p, "--state-dir", state.root)
    assert st.code == 6 and "not installed" in st.stdout, str(st)
    last = json.loads(run_bundle("history", p, "--state-dir", state.root, "--json").stdout)["events"][-1]
    assert (last["event"], last["result"]) == ("uninstall", "done")
    # the data back from the per-service final backups: the shared volume once, exactly as it was
    r = run_bundle("restore", p, "--from-uninstall", "--yes", "--state-dir", state.root)
    if keep_data:
        assert r.code == 1 and f"volume(s) {p}_data exist: restore never overwrites data" in one_line(r.stderr), str(r)
    else:
        assert r.code == 0 and f"volume {p}_data (was /data): created and filled from the backup" in r.stdout, str(r)
        assert volume_files_of(docker_client, f"{p}_data", images) == data_before
        assert project_containers(docker_client, env) == []  # the data only: no service is started


def volume_files_of(client, volume: str, images) -> dict[str, bytes]:
    """The files of a volume no container mounts, through a stopped container made for the look."""
    c = client.api.create_container(images[("db", "1")]["ref"], ["true"],
                                    host_config=client.api.create_host_config(binds=[f"{volume}:/data"]))
    try:
        return data_files(client, c["Id"], "/data")
    finally:
        client.api.remove_container(c["Id"])


# -- the whole path: `bundle build` of the compose file, `bundle import`, status/list/history --json -----

def test_compose_bundle_built_imported_and_shown_by_status_list_history(docker_client, env, images, pgp_keys):
    from tests.keys import trust_store
    from tests.support import run_bundle
    compose, refs = compose_yaml(images, worker=None)
    target_for(env, compose, refs)  # writes compose.yaml and bundle.toml
    out, keys, state = env["dir"] / "p.bundle", trust_store(env["dir"] / "keys", [pgp_keys.builder]), env["state"].root
    r = run_bundle("build", env["dir"] / "bundle.toml", "-o", out, "--sign-key", pgp_keys.builder.fpr,
                   "--gnupghome", pgp_keys.builder.home, "--local")
    assert r.code == 0, str(r)
    r = run_bundle("import", out, "--keys", keys, "--state-dir", state, "--yes")
    assert r.code == 0, str(r)
    assert f"install compose project {env['project']}" in r.stdout and "service web: create" in r.stdout
    p = env["project"]
    st = json.loads(run_bundle("status", p, "--state-dir", state, "--json").stdout)
    app = st["apps"][0]
    assert (app["kind"], app["state"], app["version"]) == ("compose", "active", "1")
    assert sorted(app["detail"]["services"]) == ["db", "web"]
    assert app["detail"]["services"]["web"]["live"]["health"] == "healthy"
    text = run_bundle("status", p, "--state-dir", state)
    assert text.code == 0 and f"service db: container {p}-db-1" in text.stdout
    listed = json.loads(run_bundle("list", "--state-dir", state, "--json").stdout)
    assert [(a["name"], a["kind"], a["state"]) for a in listed["apps"]] == [(p, "compose", "active")]
    history = run_bundle("history", p, "--state-dir", state, "--json")
    assert history.code == 0 and '"install"' in history.stdout and '"project"' in history.stdout


def test_importing_the_installed_release_of_a_project_again_is_refused_as_a_replay(docker_client, env, images, pgp_keys):
    """As the container kind refuses a replay: the sequence check, exit 3, one line, nothing changed."""
    from tests.keys import trust_store
    from tests.support import one_line, run_bundle
    compose, refs = compose_yaml(images, worker=None)
    target_for(env, compose, refs)
    out, keys, state = env["dir"] / "p.bundle", trust_store(env["dir"] / "keys", [pgp_keys.builder]), env["state"].root
    r = run_bundle("build", env["dir"] / "bundle.toml", "-o", out, "--sign-key", pgp_keys.builder.fpr,
                   "--gnupghome", pgp_keys.builder.home, "--local")
    assert r.code == 0, str(r)
    assert run_bundle("import", out, "--keys", keys, "--state-dir", state, "--yes").code == 0
    ids = {s: container(docker_client, env, s)["Id"] for s in ("db", "web")}
    files = {str(f.relative_to(state)): f.read_bytes() for f in sorted(state.rglob("*"))
             if f.is_file() and f.name not in ("lock", "audit.log", "bundle.prom")}
    again = run_bundle("import", out, "--keys", keys, "--state-dir", state, "--yes")
    assert again.code == 3, str(again)
    seq = json.loads(run_bundle("status", env["project"], "--state-dir", state, "--json").stdout)["apps"][0]["sequence"]
    assert one_line(again.stderr) == (f"refused: sequence: replay: {env['project']} sequence {seq} is not above {seq}, "
                                      f"the highest installed (--allow-downgrade overrides)")
    assert {s: container(docker_client, env, s)["Id"] for s in ("db", "web")} == ids
    assert {str(f.relative_to(state)): f.read_bytes() for f in sorted(state.rglob("*"))
            if f.is_file() and f.name not in ("lock", "audit.log", "bundle.prom")} == files
    assert project_containers(docker_client, env) == sorted(f"{env['project']}-{s}-1" for s in ("db", "web"))


def built(env, pgp_keys, compose: str, refs: list[str], version: str, sequence: int) -> Path:
    """A signed bundle of the project (`bundle build --local`)."""
    from tests.support import run_bundle
    target_for(env, compose, refs, version=version, sequence=sequence)
    out = env["dir"] / f"p-{version}.bundle"
    r = run_bundle("build", env["dir"] / "bundle.toml", "-o", out, "--sign-key", pgp_keys.builder.fpr,
                   "--gnupghome", pgp_keys.builder.home, "--local")
    assert r.code == 0, str(r)
    return out


def test_sigint_during_a_project_swap_is_undone_as_the_container_kinds(docker_client, env, images, pgp_keys):
    """SIGINT once the swap has changed something: the whole project is put back and the import ends
    as the container kind's does (tests/test_verdicts.py): `update failed: interrupted by SIGINT
    during step ...`, exit 4, v1 running healthy with its data (nothing changed would be exit 130)."""
    import re
    import signal
    import time

    from tests.keys import trust_store
    from tests.support import BUNDLE, one_line, run_bundle
    keys, state, p = trust_store(env["dir"] / "keys", [pgp_keys.builder]), env["state"].root, env["project"]
    env["dir"].mkdir(exist_ok=True)
    v1 = built(env, pgp_keys, *_two(images, "1", "1"), "1", 1)
    v2 = built(env, pgp_keys, *_two(images, "2", "2"), "2", 2)
    assert run_bundle("import", v1, "--keys", keys, "--state-dir", state, "--yes").code == 0
    ids, data_before = {s: container(docker_client, env, s)["Id"] for s in ("db", "web")}, volume_files(docker_client, env)
    journal = state / "apps" / p / "journal.json"

    def swapping() -> bool:  # a step that changes the engine has started
        try:
            return json.loads(journal.read_text()).get("step", "").split(":")[0] in (
                "stop_old", "rename_old", "backup", "create_new", "start_new")
        except (FileNotFoundError, ValueError):
            return False
    proc = subprocess.Popen([str(BUNDLE), "import", str(v2), "--keys", str(keys), "--state-dir", str(state), "--yes"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not swapping():
        assert proc.poll() is None and time.monotonic() < deadline, "the swap never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 4, (out, err)
    last = one_line("\n".join(ln for ln in err.splitlines() if ln.strip() and " received: " not in ln))
    assert re.fullmatch(rf"update failed: interrupted by SIGINT during step \S+; the whole project {p} is back on 1 "
                        r"with every volume restored", last), err
    assert "KeyboardInterrupt" not in out + err
    for s in ("db", "web"):
        info = container(docker_client, env, s)
        assert info["Id"] == ids[s] and info["State"]["Running"] and info["State"]["Health"]["Status"] == "healthy"
    assert volume_files(docker_client, env) == data_before
    st = run_bundle("status", p, "--state-dir", state)
    assert st.code == 0 and f"compose project {p} 1 " in st.stdout and "[active]" in st.stdout, str(st)
    assert not journal.exists()


# -- --adopt: a project started with `docker compose up` (plain `docker run` with Compose's labels) ----

def _compose_up_by_hand(client, env, images) -> None:
    """What `docker compose -p PROJECT up -d` makes of the demo's db and web, made with `docker run`."""
    p = env["project"]
    client.api.create_network(f"{p}_default", labels={"com.docker.compose.project": p,
                                                      "com.docker.compose.network": "default"})
    client.api.create_volume(f"{p}_data", labels={"com.docker.compose.project": p, "com.docker.compose.volume": "data"})
    for svc, cmd, vol in (("db", DB, f"{p}_data:/data"), ("web", WEB, f"{p}_data:/data:ro")):
        labels = {"com.docker.compose.project": p, "com.docker.compose.service": svc,
                  "com.docker.compose.container-number": "1", "com.docker.compose.oneoff": "False"}
        c = client.api.create_container(images[(svc, "1")]["ref"], list(cmd), name=f"{p}-{svc}-1", labels=labels,
                                        host_config=client.api.create_host_config(binds=[vol], network_mode=f"{p}_default"))
        client.api.start(c["Id"])
        if svc == "db":
            from tests.swap_fixtures import wait_until
            assert wait_until(lambda: "data/schema" in volume_files(client, env), timeout=30)
            client.api.exec_start(client.api.exec_create(c["Id"], ["sh", "-c", "echo 'admin notes' > /data/notes"]))


def test_adopt_takes_over_a_compose_project_keeping_its_data(docker_client, env, images):
    from bundlecore.refusals import OwnershipRefused
    from importer.kinds.compose.status import app_status
    _compose_up_by_hand(docker_client, env, images)
    data_before = volume_files(docker_client, env)
    assert data_before["data/notes"] == b"admin notes\n"
    ids = {s: container(docker_client, env, s)["Id"] for s in ("db", "web")}
    compose, refs = _two(images, "1", "1")
    target, bundle = target_for(env, compose, refs), bundle_for(env, images, refs, "1", 1)
    with pytest.raises(OwnershipRefused) as e:
        swap(docker_client, env["state"], target, bundle)
    assert "pass --adopt" in str(e.value) and e.value.exit_code == 3
    assert {s: container(docker_client, env, s)["Id"] for s in ("db", "web")} == ids  # nothing changed
    plan, rec = swap(docker_client, env["state"], target, bundle, adopt=True)
    assert plan.kind == "upgrade" and [s.action for s in plan.services] == ["recreate", "recreate"]
    assert volume_files(docker_client, env) == data_before
    for s in ("db", "web"):
        info = container(docker_client, env, s)
        assert info["Id"] != ids[s] and info["Config"]["Labels"]["io.bundle.app"] == env["project"]
        parked = docker_client.api.inspect_container(f"{env['project']}-{s}-1.previous-0")
        assert parked["Id"] == ids[s] and not parked["State"]["Running"]
    st = app_status(Engine(docker_client), env["state"], env["project"])
    assert st["state"] == "active"
    assert rec["previous"][0]["generation"] == 0
    from importer.kinds.compose.status import status_lines
    previous = [ln for ln in status_lines(st) if ln.startswith("  previous:")]
    assert len(previous) == 1 and "None" not in previous[0], previous  # review finding D5
    assert previous[0].startswith("  previous: generation 0 an unknown image (no version recorded) as ")
    # `bundle rollback` puts the project the admin had back, with the data it had when it was taken over
    from tests.support import run_bundle
    docker_client.api.exec_start(docker_client.api.exec_create(f"{env['project']}-db-1", ["sh", "-c", "echo x > /data/new"]))
    r = run_bundle("rollback", env["project"], "--yes", "--state-dir", env["state"].root)
    assert r.code == 0 and "(no version recorded) (generation 0) is running" in r.stdout, str(r)
    assert volume_files(docker_client, env) == data_before
    assert {s: container(docker_client, env, s)["Id"] for s in ("db", "web")} == ids
    assert app_status(Engine(docker_client), env["state"], env["project"])["state"] == "active"


# -- refusals: before anything changes ---------------------------------------------------------------

def test_service_asking_a_forbidden_host_path_is_refused_before_anything_changes(docker_client, env, images, tmp_path):
    from bundlecore.refusals import HostPolicyRefused
    from bundlecore.release import target_from_json
    from importer.hostpolicy import HostPolicy
    compose, refs = compose_yaml(images)
    doc = json.loads(compose)
    doc["services"]["web"]["volumes"].append("/etc:/host-etc:ro")
    target = target_from_json(target_for(env, json.dumps(doc), refs))
    with pytest.raises(HostPolicyRefused) as e:
        HostPolicy(None).check_target(env["project"], target)
    assert str(e.value).startswith("services.web.volumes.1 asks for bind mount of host path /etc")
    assert e.value.exit_code == 3
    assert project_containers(docker_client, env) == []


def test_a_service_bind_inside_another_containers_writable_bind_is_refused_before_anything_changes(
        docker_client, env, images, tmp_path):
    """The nested-bind rule across containers, for a project as for a container: a container outside
    the project mounts G writable, so it could plant a symlink at G/app; web's bind of G/app is
    refused (exit 3) naming both, and nothing of the project is made."""
    from bundlecore.refusals import HostPolicyRefused
    shared = tmp_path / "granted"
    (shared / "app").mkdir(parents=True)
    agent = docker_client.api.create_container_from_config(
        {"Image": images[("db", "1")]["ref"], "Cmd": ["true"], "HostConfig": {"Binds": [f"{shared}:/all"]}},
        name=f"agent-{env['uniq']}")["Id"]
    try:
        compose, refs = compose_yaml(images, worker=None)
        doc = json.loads(compose)
        doc["services"]["web"]["volumes"].append(f"{shared}/app:/x:ro")
        with pytest.raises(HostPolicyRefused) as e:
            swap(docker_client, env["state"], target_for(env, json.dumps(doc), refs), bundle_for(env, images, refs, "1", 1))
        assert str(e.value) == (f"services.web.volumes.1 binds host path {shared}/app inside {shared} (container "
                                f"agent-{env['uniq']}'s mount at /all), and container agent-{env['uniq']}'s mount at "
                                f"/all is writable: a container could put a symlink in its place that a restart would "
                                f"mount; nested binds are never allowed (bind {shared} once and use the subdirectory "
                                f"inside the container)")
        assert e.value.exit_code == 3
        assert project_containers(docker_client, env) == [] and os.listdir(shared / "app") == []
        assert env["state"].installed(env["project"]) is None
    finally:
        docker_client.api.remove_container(agent, force=True)


def test_a_service_bind_inside_a_sibling_services_writable_bind_is_refused_before_anything_changes(
        docker_client, env, images, tmp_path):
    """The nested-bind rule between the services of one project too: db mounts G writable, so it
    could plant a symlink at G/app that web's next start would mount; refused (exit 3) naming both,
    nothing made. Two services binding the same directory are not nested, and go through."""
    from bundlecore.refusals import HostPolicyRefused
    shared = tmp_path / "granted"
    (shared / "app").mkdir(parents=True)
    compose, refs = compose_yaml(images, worker=None)
    doc = json.loads(compose)
    doc["services"]["db"]["volumes"].append(f"{shared}:/all")
    doc["services"]["web"]["volumes"].append(f"{shared}/app:/x:ro")
    with pytest.raises(HostPolicyRefused) as e:
        swap(docker_client, env["state"], target_for(env, json.dumps(doc), refs), bundle_for(env, images, refs, "1", 1))
    assert str(e.value).startswith(f"services.web.volumes.1 binds host path {shared}/app inside {shared} "
                                   f"(services.db.volumes.1), and services.db.volumes.1 is writable: ")
    assert e.value.exit_code == 3
    assert project_containers(docker_client, env) == [] and os.listdir(shared / "app") == []
    assert env["state"].installed(env["project"]) is None

    doc["services"]["web"]["volumes"][1] = f"{shared}:/x:ro"  # the same directory, shared: not nested
    swap(docker_client, env["state"], target_for(env, json.dumps(doc), refs), bundle_for(env, images, refs, "1", 1))
    assert env["state"].installed(env["project"])["version"] == "1"


# -- kill -9 at every step, then `bundle recover` -----------------------------------------------------

def _two(images, db, web):
    return compose_yaml(images, db=db, web=web, worker=None)


def _upgrade_steps() -> list[str]:
    order = ["db", "web"]
    steps = ["begin", "networks"] + [f"{k}:{s}" for k in ("stop_old", "rename_old", "backup") for s in reversed(order)]
    steps += [f"{k}:{s}" for s in order for k in ("create_new", "start_new")]
    return steps + ["commit", "prune"]


def test_the_matrix_names_every_step_of_the_upgrade(docker_client, env, images):
    from importer.kinds.compose.machine import ServiceSwap, forward_steps
    services = {n: ServiceSwap(n, "recreate", f"p-{n}-1") for n in ("db", "web")}
    assert forward_steps(["db", "web"], services) == _upgrade_steps()


UNDO_STEPS = ["remove_new:web", "remove_new:db", "restore_data:db", "restore_data:web", "rename_back:db",
              "rename_back:web", "start_old:db", "start_old:web", "remove_networks"]


@pytest.mark.parametrize("step", UNDO_STEPS)
def test_undo_killed_at_each_step_is_finished_by_recover_with_the_data_restored(docker_client, env, images, step):
    """db migrates its volume to 2, web fails its gate: the undo is killed at `step`; `recover` finishes it."""
    compose, refs = _two(images, "1", "1")
    swap(docker_client, env["state"], target_for(env, compose, refs), bundle_for(env, images, refs, "1", 1))
    data_before = volume_files(docker_client, env)
    compose, refs = _two(images, "2", "bad")
    r = subprocess.run([sys.executable, __file__, "swap", str(env["state"].root), json.dumps(target_for(env, compose, refs)),
                        json.dumps(bundle_for(env, images, refs, "2", 2))], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "BUNDLE_CRASH_AT": f"compose:{step}", "BUNDLE_CRASH_WHEN": "after"}, timeout=300)
    assert r.returncode == KILLED, f"not killed at {step}: rc={r.returncode} {r.stderr[-800:]}"
    assert_recovered_to_v1(docker_client, env, images, data_before)


def _driver(argv: list[str]) -> int:
    """`swap STATE_DIR TARGET_JSON BUNDLE_JSON`: one import's project swap in this process."""
    from bundlecore.engine import connect
    from bundlecore.errors import BundleError
    from importer.state import StateDir
    cmd, state_dir, target, bundle = argv
    assert cmd == "swap"
    try:
        swap(connect(timeout=300), StateDir(state_dir), json.loads(target), json.loads(bundle))
    except BundleError as e:
        print(e.line(), file=sys.stderr)
        return int(e.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1:]))


def assert_recovered_to_v1(docker_client, env, images, data_before) -> None:
    """`bundle recover` of a killed project swap: release 1 back, active, every volume as before."""
    from importer.kinds.compose.status import app_status
    from importer.steps import pending
    from tests.support import run_bundle
    rec = run_bundle("recover", "--yes", "--state-dir", env["state"].root)
    assert rec.code == 0, str(rec)
    assert pending(env["state"]) == []
    st = app_status(Engine(docker_client), env["state"], env["project"])
    assert st["state"] == "active" and st["installed"]["version"] == "1", st
    assert volume_files(docker_client, env) == data_before
    for s in ("db", "web"):
        assert container(docker_client, env, s)["Image"] == images[(s, "1")]["id"]
