"""Issue 9, the operator's lifecycle (undo/recovery and preflight): the previous version is judged
by its own health settings, an undo resumes where it stopped and never restores a second time over
data written since, a host that cannot run the container is refused before anything is loaded or
stopped, and a failed first install has its own outcome (exit 9), not "the previous version runs
again" (exit 4). Real engine, real containers, real bundles."""

from __future__ import annotations

import socket

import docker
import pytest

from bundlecore.errors import EnvironmentProblem, InstallUndone, OperatorNeeded, UpdateFailed
from importer.steps import pending
from bundlecore.engine import Engine
from importer.kinds import recover_all
from importer.kinds.container.plan import plan_swap
from importer.kinds.container.run import run_swap
from tests.support import run_bundle
from tests.craft import EngineSnapshot, snapshot_dir
from tests.keys import trust_store
from tests.swap_fixtures import (bundle_for, containers_named, data_files, demo_images, free_port,  # noqa: F401
                                 install, seed_data, served_version, swap_env, target_for, typed, delivery)


def _swap(client, env: dict, image: dict, sequence: int, target: dict, out=lambda s: None) -> dict:
    """What `bundle import` does once the images are loaded: recover, plan, swap (under the lock)."""
    client = Engine(client)
    with env["state"].lock():
        recover_all(client, env["state"], out=out)
        plan = plan_swap(client, env["state"], typed(target), image["id"])
        return run_swap(client, env["state"], plan, delivery(bundle_for(image, sequence)), out=out)


def _exec(client, container: str, script: str) -> None:
    client.api.exec_start(client.api.exec_create(container, ["sh", "-c", script]))


# -- the previous version is checked with its own health settings ----------------------------

def test_rollback_checks_the_previous_version_at_its_own_url_not_the_new_ones(docker_client, swap_env, demo_images):
    """The port-moving release, reduced to the undo: v2 checks a URL where nothing answers; the
    rollback must judge v1 at v1's URL (exit 4, v1 answering), not at v2's (exit 5 before)."""
    install(docker_client, swap_env, demo_images["v1"], 1)
    v1_url = f"http://127.0.0.1:{swap_env['port']}/health"
    v2 = target_for(swap_env, demo_images["v2"], timeout=3, attempts=1)
    v2["health"]["http"] = f"http://127.0.0.1:{free_port()}/health"
    lines = []
    with pytest.raises(UpdateFailed) as e:
        _swap(docker_client, swap_env, demo_images["v2"], 2, v2, out=lines.append)
    assert e.value.exit_code == 4 and "1.0.0 is running again" in e.value.line()
    assert served_version(swap_env) == "1.0.0"
    restart = next(ln for ln in lines if "starting the previous version again" in ln)
    assert f"GET {v1_url} answers" in restart, lines
    assert pending(swap_env["state"]) == [] and swap_env["state"].installed(swap_env["name"])["version"] == "1.0.0"


def test_an_adopted_container_is_judged_by_running_not_by_the_new_bundles_probe(docker_client, swap_env, demo_images):
    """A container started by hand has no recorded health: the undo must not use the new bundle's."""
    api = docker_client.api
    port = swap_env["port"]
    cid = api.create_container_from_config({
        "Image": demo_images["v1"]["ref"], "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
                       "Binds": [f"{swap_env['volume']}:/data"]}}, name=swap_env["name"])["Id"]
    api.start(cid)
    v2 = target_for(swap_env, demo_images["v2"], timeout=3, attempts=1)
    v2["health"]["http"] = f"http://127.0.0.1:{free_port()}/health"
    lines = []
    with pytest.raises(UpdateFailed) as e:
        _swap(docker_client, swap_env, demo_images["v2"], 2, v2, out=lines.append)
    assert e.value.exit_code == 4
    assert api.inspect_container(swap_env["name"])["Id"] == cid and served_version(swap_env) == "1.0.0"
    assert any("starting the previous version again; health check: still running after" in ln for ln in lines), lines


# -- no second restore over data written since -------------------------------------------------

def test_data_written_after_an_exit_5_survives_every_later_recover_rollback_and_import(
        docker_client, swap_env, demo_images, tmp_path):
    """v1's own health needs a flag file (a read-only bind mount, not backed up); removing it
    makes the undo of a failed v3 end in exit 5 after the data was restored. Users then write to
    the running v1: no later command may restore the backup over that, and each says why."""
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "ok").write_text("")
    name, root, vol = swap_env["name"], swap_env["state"].root, swap_env["volume"]
    v1 = target_for(swap_env, demo_images["v1"], run_extra={"volumes": [f"{vol}:/data", f"{flags}:/flags:ro"]})
    v1["health"] = {"cmd": "test -e /flags/ok", "timeout": 3, "attempts": 1}
    _swap(docker_client, swap_env, demo_images["v1"], 1, v1)
    seed_data(docker_client, name)
    (flags / "ok").unlink()
    with pytest.raises(OperatorNeeded) as e:
        _swap(docker_client, swap_env, demo_images["v3"], 3, target_for(swap_env, demo_images["v3"], timeout=3, attempts=1))
    assert e.value.exit_code == 5 and "the data was restored from the backup" in e.value.line()
    _exec(docker_client, name, "echo written-after > /data/after.txt")
    expected = data_files(docker_client, name)
    assert expected["data/after.txt"] == b"written-after\n"
    for args in (("recover", "--yes"), ("rollback", name, "--yes")):
        r = run_bundle(*args, "--state-dir", root)
        assert r.code == 5, str(r)
        assert len(r.stderr_lines) == 1 and r.stderr.startswith("operator needed:"), str(r)
        assert "no later command restores it again" in r.stderr, str(r)
        assert "it is not restored again" in r.stdout and f"volume {vol} changed since: kept as it is" in r.stdout, str(r)
        assert data_files(docker_client, name) == expected
    with pytest.raises(OperatorNeeded):  # an import recovers first: the same
        install(docker_client, swap_env, demo_images["v2"], 2)
    assert data_files(docker_client, name) == expected
    (flags / "ok").write_text("")  # the operator fixes the cause
    r = run_bundle("recover", "--yes", "--state-dir", root)
    assert r.code == 0 and "1.0.0 is running again" in r.stdout, str(r)
    assert pending(swap_env["state"]) == [] and data_files(docker_client, name) == expected
    assert docker_client.api.inspect_container(name)["State"]["Running"]
    assert swap_env["state"].installed(name)["version"] == "1.0.0"


# -- a failed first install --------------------------------------------------------------------

def test_a_failed_first_install_is_exit_9_and_leaves_only_what_was_there(docker_client, swap_env, demo_images, tmp_path):
    host_dir = tmp_path / "existing"
    host_dir.mkdir()
    (host_dir / "keep.txt").write_text("from before the install\n")
    target = target_for(swap_env, demo_images["v3"], timeout=3, attempts=1,
                        run_extra={"volumes": [f"{swap_env['volume']}:/data", f"{host_dir}:/existing"]})
    with pytest.raises(InstallUndone) as e:
        _swap(docker_client, swap_env, demo_images["v3"], 1, target)
    assert e.value.exit_code == 9 and e.value.line().startswith("install failed: ")
    assert "nothing was installed" in e.value.line() and "running again" not in e.value.line()
    assert containers_named(docker_client, swap_env["name"]) == []
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_volume(swap_env["volume"])  # it created it, so it removed it
    assert sorted(p.name for p in host_dir.iterdir()) == ["keep.txt"]
    assert (host_dir / "keep.txt").read_text() == "from before the install\n"
    assert swap_env["state"].installed(swap_env["name"]) is None and pending(swap_env["state"]) == []


# -- preflight: the host is checked before anything is created, loaded or stopped --------------

def test_a_port_published_by_another_container_is_refused_before_anything_is_created(
        docker_client, swap_env, demo_images, uniq):
    api = docker_client.api
    other = api.create_container_from_config({
        "Image": demo_images["v1"]["ref"], "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(swap_env["port"])}]}}},
        name=f"squatter-{uniq}")["Id"]
    api.start(other)
    with pytest.raises(EnvironmentProblem) as e:
        install(docker_client, swap_env, demo_images["v1"], 1)
    assert e.value.exit_code == 1
    assert f"host port 127.0.0.1:{swap_env['port']}/tcp is already published by container squatter-{uniq}" in str(e.value)
    assert containers_named(docker_client, swap_env["name"]) == []
    with pytest.raises(docker.errors.NotFound):
        api.inspect_volume(swap_env["volume"])
    assert api.inspect_container(other)["State"]["Running"] and pending(swap_env["state"]) == []
    assert not (swap_env["state"].root / "apps").exists() or not any((swap_env["state"].root / "apps").iterdir())


def test_an_upgrade_may_take_the_ports_its_own_previous_version_holds(docker_client, swap_env, demo_images):
    install(docker_client, swap_env, demo_images["v1"], 1)
    install(docker_client, swap_env, demo_images["v2"], 2)
    assert served_version(swap_env) == "2.0.0"


@pytest.fixture
def listener():
    """A program of the test's own holding a port on 127.0.0.1."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


HOST_CASES = {
    "port in use": lambda t, port, missing: {"ports": [f"127.0.0.1:{port}:8080"]},
    "missing bind source": lambda t, port, missing: {"volumes": [f"{missing}:/data"]},
    "missing network": lambda t, port, missing: {"network": f"net-{t}"},
}


@pytest.mark.parametrize("case", sorted(HOST_CASES))
def test_a_host_that_cannot_run_the_container_is_refused_before_loading(
        base_bundle, docker_client, tmp_path, uniq, listener, case):
    """`bundle import` of a signed first install: exit 1, one line naming what is missing, no
    image loaded, no container or volume created, the bind source not created, nothing recorded."""
    granted = tmp_path / "granted"
    granted.mkdir()
    missing = granted / "not-there"
    app = f"{base_bundle.target_name}-host-{uniq}"
    v = base_bundle.variant()
    v.manifest["name"] = v.manifest["target"]["name"] = app
    v.manifest["target"]["run"].update(HOST_CASES[case](uniq, listener, missing))
    bundle = v.write(tmp_path / "host.bundle")
    store = trust_store(tmp_path / "keys", [base_bundle.signer])
    (store / "host-policy.toml").write_text(f'[apps.{app}]\nbind_prefixes = ["{granted}"]\n')
    state = tmp_path / "state"
    before = EngineSnapshot.take(docker_client, app)
    r = run_bundle("import", bundle, "--keys", store, "--state-dir", state, "--yes")
    assert r.code == 1, str(r)
    assert len(r.stderr_lines) == 1 and "this host is not ready: " in r.stderr, str(r)
    reason = {"port in use": f"host port 127.0.0.1:{listener}/tcp is in use by another program",
              "missing bind source": f"bind-mount source {missing} does not exist",
              "missing network": f"network net-{uniq} does not exist"}[case]
    assert reason in r.stderr and "nothing was changed" in r.stderr, str(r)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(base_bundle.image["id"])  # not loaded
    after = EngineSnapshot.take(docker_client, app)
    assert after.containers == before.containers == {}
    assert not missing.exists()
    assert not (state / "apps").exists() or not snapshot_dir(state / "apps")
