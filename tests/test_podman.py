"""The container kind on a real Podman service (issue 23): a signed bundle imported through
Podman's Docker-compatible socket, install, upgrade, a failed upgrade with the data restored byte
for byte, kill -9 at steps of the swap and its undo then `bundle recover`, and what Podman cannot
do (Swarm services) refused before anything changes. The same product code as on Docker: only
DOCKER_HOST differs (scripts/ensure-podman.sh starts the service on its own socket)."""

from __future__ import annotations

import json
import re
import shutil
import time

import docker
import pytest

from bundlecore.engine import EngineKind, engine_for
from importer.backup.data import HELPER_LABEL, STATE_LABEL
from importer.kinds.container.run import UNIT_WRITTEN
from importer.steps import pending
from tests.support import one_line, run_bundle, set_up
from tests.swap_fixtures import (Cleanup, bundle_for, containers_named, data_files, digest, free_port, install,
                                 remove_images, run_driver, seed_data, served_version, target_for)

KILLED, REFUSED, UPDATE_FAILED = -9, 3, 4


@pytest.fixture(scope="module")
def podman_images(docker_client, podman_client, demo_images):
    """The demo app's v1, v2, v3 (broken migration) as Podman has them: `docker save` of the images
    built on Docker, `podman load`ed (Podman tags them localhost/..., same image IDs)."""
    made = {k: demo_images[k] for k in ("v1", "v2", "v3")}
    for m in made.values():
        saved = b"".join(docker_client.api.get_image(m["ref"]))
        loaded = list(podman_client.api.load_image(saved))
        assert loaded == [{"stream": f"Loaded image: localhost/{m['ref']}"}], loaded
        assert podman_client.api.inspect_image(m["ref"])["Id"] == m["id"]
    yield made
    remove_images(podman_client, made)


@pytest.fixture
def pod_env(podman_client, podman_host, uniq, tmp_path):
    """swap_env on the Podman service: state dir, app name, port; `env` points the CLI at Podman."""
    from importer.state import StateDir
    env = {"name": f"demo-{uniq}", "port": free_port(), "state": StateDir(tmp_path / "state"),
           "volume": f"demo-{uniq}-data", "uniq": uniq, "units": tmp_path / "units",
           "env": {"DOCKER_HOST": podman_host, "BUNDLE_SYSTEMD_DIR": str(tmp_path / "units")}}
    yield env
    Cleanup(podman_client, uniq, env["state"].identity)()


def _cli(pod_env, *args):
    return run_bundle(*args, "--state-dir", pod_env["state"].root, env=pod_env["env"])


def _with_v1(client, pod_env, images, **kw):
    install(client, pod_env, images["v1"], 1, **kw)
    seed_data(client, pod_env["name"])
    return data_files(client, pod_env["name"])


def _assert_runs(client, pod_env, version, data):
    """One container of the app's name, running `version`, the installed record its, no journal
    left, no restore helper of this state dir left, and the data exactly `data`."""
    name = pod_env["name"]
    assert pending(pod_env["state"]) == []
    assert len(containers_named(client, name)) == 1
    info = client.api.inspect_container(name)
    assert info["State"]["Running"] and served_version(pod_env) == version
    rec = pod_env["state"].installed(name)
    assert rec["version"] == version and rec["container_id"] == info["Id"]
    assert digest(data_files(client, name)) == digest(data)
    mine = [HELPER_LABEL, f"{STATE_LABEL}={pod_env['state'].identity}"]
    assert client.api.containers(all=True, filters={"label": mine}) == []
    unit = _unit(pod_env)
    if unit.exists():  # the unit bundle wrote starts the container that runs, of the version that runs
        assert f" {version} " in unit.read_text().splitlines()[0] and f"{info['Id']}/userdata" in unit.read_text()
    for c in client.api.containers(all=True):  # parked generations are stopped
        if any(n.startswith(f"/{name}.previous-") for n in c["Names"]):
            assert not client.api.inspect_container(c["Id"])["State"]["Running"]


def _migrated(data, version):
    return {**data, "data/schema-version": f"{version}\n".encode(),
            "data/migrations.log": data["data/migrations.log"] + f"migrated to {version}\n".encode()}


def test_the_podman_service_is_told_apart_from_docker(docker_client, podman_client):
    assert engine_for(podman_client).kind is EngineKind.PODMAN
    assert engine_for(docker_client).kind is EngineKind.DOCKER
    assert engine_for(podman_client).describe().startswith("Podman 4.")


def test_a_signed_bundle_imports_on_podman_under_its_localhost_name(podman_client, podman_host, base_bundle, tmp_path):
    """The issue's report: `bundle import` refused "docker load set localhost/demo/app:1.0.0, which was
    not signed". Podman's name for the signed ref is matched, the image checked by its ID. Imported
    again with `--systemd-unit`, the release running as recorded gets only its unit (no swap), also
    after that import was killed, or interrupted, between writing the unit and recording it."""
    env, state = {"DOCKER_HOST": podman_host, "BUNDLE_SYSTEMD_DIR": str(tmp_path / "units")}, tmp_path / "state"
    name, ref, image_id = base_bundle.target_name, base_bundle.image["ref"], base_bundle.image["id"]
    unit = tmp_path / "units" / f"container-{name}.service"
    try:
        r = run_bundle("import", base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", state, "--yes",
                       env=env)
        assert r.code == 0, str(r)
        assert "engine: Podman 4." in r.stdout and f"at {podman_host}" in r.stdout, r.stdout
        assert podman_client.api.inspect_image(image_id)["RepoTags"] == [f"localhost/{ref}"]
        info = podman_client.api.inspect_container(name)
        assert info["State"]["Running"] and info["Image"] == image_id
        assert run_bundle("status", name, "--state-dir", state, env=env).code == 0
        listed = run_bundle("list", "--state-dir", state, env=env)
        assert listed.code == 0 and name in listed.stdout, str(listed)
        doctor = run_bundle("doctor", "--json", "--keys", base_bundle.keys_dir, "--state-dir", state, env=env)
        found = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert found["engine"]["verdict"] == "ok" and found["engine"]["detail"].startswith("Podman 4."), doctor.stdout
        assert found["reboot"]["verdict"] == "ok", doctor.stdout  # restart = "no": nothing to bring back
        assert not unit.exists()  # not asked for

        again = ("import", base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", state, "--yes",
                 "--systemd-unit")
        # killed once the unit is written and before the record names it: the rerun below records it
        # (else uninstall, which retires the unit its record names, would leave it behind)
        r = run_bundle(*again, env={**env, "BUNDLE_CRASH_AT": UNIT_WRITTEN, "BUNDLE_CRASH_WHEN": "after"})
        assert r.code == KILLED and unit.exists(), str(r)
        assert "systemd_unit" not in json.loads((state / "installed" / f"{name}.json").read_text())
        # the rerun gets SIGINT at the same point: the unit is written and recorded all the same, and the
        # exit says so (0), never "interrupted ...; nothing changed" with a unit written
        r = run_bundle(*again, env={**env, "BUNDLE_CRASH_AT": UNIT_WRITTEN, "BUNDLE_CRASH_SIGNAL": "SIGINT"})
        assert r.code == 0, str(r)
        assert "SIGINT received: the unit is written and recorded first" in r.stderr, str(r)
        assert f"only its systemd unit {unit} is written" in r.stdout and "nothing to do" not in r.stdout, r.stdout
        first = unit.read_text().splitlines()[0]
        assert first.startswith(f"# written by bundle: app {name} ") and f"container {info['Id'][:12]}" in first
        now = podman_client.api.inspect_container(name)
        assert (now["Id"], now["State"]["StartedAt"]) == (info["Id"], info["State"]["StartedAt"])  # not touched
        assert json.loads((state / "installed" / f"{name}.json").read_text())["systemd_unit"] == str(unit)
        time.sleep(3)  # and still so a moment later: the container untouched, the unit in place
        later = podman_client.api.inspect_container(name)
        assert (later["Id"], later["State"]["StartedAt"], later["State"]["Running"]) == \
            (info["Id"], info["State"]["StartedAt"], True)
        assert unit.read_text().splitlines()[0] == first
        text = unit.read_text()
        r = run_bundle(*again, env=env)
        assert r.code == 0 and "nothing to do" in r.stdout and unit.read_text() == text, str(r)

        r = run_bundle("uninstall", name, "--yes", "--state-dir", state, env=env)
        assert r.code == 0, str(r)
        assert containers_named(podman_client, name) == []
        assert not unit.exists() and (unit.parent / f"{unit.name}.removed").read_text() == text
    finally:
        for c in containers_named(podman_client, name) + containers_named(podman_client, f"{name}.previous-1"):
            podman_client.api.remove_container(c["Id"], force=True, v=True)
        remove_images(podman_client, {"it": {"ref": image_id}})


@pytest.fixture(scope="module")
def rootless_host():
    """DOCKER_HOST of a rootless Podman: a user's own `podman system service` on
    $XDG_RUNTIME_DIR/podman/podman.sock (scripts/ensure-podman-rootless.sh makes the user and starts it)."""
    code, said = set_up("ensure-podman-rootless.sh")
    if code != 0:
        pytest.fail(f"no rootless Podman service: {said}", pytrace=False)
    return said


def test_a_signed_bundle_imports_on_a_rootless_podman(rootless_host, base_bundle, tmp_path):
    """Rootless Podman (issue 23): the user's own socket and storage, named so in the plan and by doctor.
    The container gets no network (a site file's `network = "none"`): a rootless network is slirp4netns,
    which needs /dev/net/tun, and a sandboxed test machine may keep that to root."""
    client = docker.DockerClient(base_url=rootless_host, timeout=300)
    env, state = {"DOCKER_HOST": rootless_host}, tmp_path / "state"
    name, ref, image_id = base_bundle.target_name, base_bundle.image["ref"], base_bundle.image["id"]
    assert re.fullmatch(r"unix:///run/user/\d+/podman/podman\.sock", rootless_host)
    site = tmp_path / "site.toml"
    site.write_text('[run]\nnetwork = "none"\n')
    try:
        r = run_bundle("import", base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", state, "--yes",
                       "--site", site, env=env)
        assert r.code == 0, str(r)
        assert re.search(rf"engine: Podman 4\.\S+, API 1\.41, rootless at {rootless_host}\n", r.stdout), r.stdout
        assert client.api.inspect_image(image_id)["RepoTags"] == [f"localhost/{ref}"]
        info = client.api.inspect_container(name)
        assert info["State"]["Running"] and info["Image"] == image_id
        assert run_bundle("status", name, "--state-dir", state, env=env).code == 0
        doctor = run_bundle("doctor", "--json", "--keys", base_bundle.keys_dir, "--state-dir", state, env=env)
        engine = next(c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "engine")
        assert engine["verdict"] == "ok" and engine["detail"].endswith(", rootless"), engine
        r = run_bundle("uninstall", name, "--yes", "--state-dir", state, env=env)
        assert r.code == 0, str(r)
        assert containers_named(client, name) == []
    finally:
        for c in containers_named(client, name):
            client.api.remove_container(c["Id"], force=True, v=True)
        remove_images(client, {"it": {"ref": image_id}})


def test_a_swarm_service_is_refused_on_podman_before_anything_changes(podman_client, podman_host, base_bundle,
                                                                      tmp_path):
    variant = base_bundle.variant()
    ref, image_id = base_bundle.image["ref"], base_bundle.image["id"]
    variant.manifest["target"] = {"kind": "service", "name": f"web-{base_bundle.token}", "image": ref, "run": {},
                                  "registry": "127.0.0.1:5999"}
    bundle = variant.write(tmp_path / "service.bundle")
    keys = tmp_path / "keys"
    shutil.copytree(base_bundle.keys_dir, keys)
    (keys / "host-policy.toml").write_text('[host]\nregistries = ["127.0.0.1:5999"]\n')  # granted: the engine decides
    r = run_bundle("import", bundle, "--keys", keys, "--state-dir", tmp_path / "state", "--yes",
                   env={"DOCKER_HOST": podman_host})
    assert r.code == REFUSED, str(r)
    assert one_line(r.stderr).startswith(f"refused: engine: service web-{base_bundle.token}: Podman 4."), r.stderr
    assert one_line(r.stderr).endswith("runs no Swarm services; import it on a Docker Swarm manager")
    assert podman_client.api.images(filters={"reference": f"*{base_bundle.token}*"}) == []
    assert all(c["Image"] != image_id for c in podman_client.api.containers(all=True))
    assert not (tmp_path / "state" / "installed").exists() or not list((tmp_path / "state" / "installed").iterdir())


def test_install_and_upgrade_on_podman_keep_the_data_and_the_settings(podman_client, pod_env, podman_images):
    before = _with_v1(podman_client, pod_env, podman_images)
    v1 = podman_client.api.inspect_container(pod_env["name"])
    assert v1["Config"]["StopTimeout"] == 0  # as the test target asks (busybox httpd ignores SIGTERM)
    assert v1["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    install(podman_client, pod_env, podman_images["v2"], 2)
    _assert_runs(podman_client, pod_env, "2.0.0", _migrated(before, "2.0.0"))
    v2 = podman_client.api.inspect_container(pod_env["name"])
    assert v2["Image"] == podman_images["v2"]["id"] and v2["Id"] != v1["Id"]
    # recreated with the same settings
    assert "GREETING=hello" in v2["Config"]["Env"] and v2["Config"]["Labels"]["org.user.owner"] == "ops"
    assert v2["HostConfig"]["PortBindings"] == v1["HostConfig"]["PortBindings"]
    r = _cli(pod_env, "status", pod_env["name"])
    assert r.code == 0 and "2.0.0" in r.stdout, str(r)
    doctor = _cli(pod_env, "doctor", "--json")  # no trust store here: its row fails, the others are listed
    reboot = next(c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "reboot")
    assert reboot["verdict"] == "warn" and f"have no systemd unit: {pod_env['name']} (" in reboot["detail"], reboot
    r = _cli(pod_env, "rollback", pod_env["name"], "--yes")
    assert r.code == 0, str(r)
    _assert_runs(podman_client, pod_env, "1.0.0", before)


def test_a_failed_upgrade_on_podman_restores_the_data_byte_for_byte(podman_client, pod_env, podman_images):
    before = _with_v1(podman_client, pod_env, podman_images)
    target = target_for(pod_env, podman_images["v3"], timeout=3, attempts=1)
    r = run_driver("swap", pod_env["state"].root, json.dumps(target), podman_images["v3"]["id"],
                   json.dumps(bundle_for(podman_images["v3"], 3)), env=pod_env["env"])
    assert r.returncode == UPDATE_FAILED, r.stderr
    assert one_line(r.stderr).startswith(f"update failed: {pod_env['name']} 3.0.0 did not become healthy"), r.stderr
    _assert_runs(podman_client, pod_env, "1.0.0", before)
    r = _cli(pod_env, "history", pod_env["name"])
    assert r.code == 0 and "result: rolled-back" in r.stdout, str(r)


def _unit(pod_env):
    return pod_env["units"] / f"container-{pod_env['name']}.service"


def test_a_systemd_unit_brings_the_container_back_after_a_reboot_and_follows_every_swap(
        podman_client, pod_env, podman_images, monkeypatch):
    """`--systemd-unit` (issue 23): the commit writes Podman's own unit for the container (starts it by
    name), the upgrade replaces it (the one before kept as .previous), `bundle rollback` writes the one of
    the generation put back, doctor's reboot row finds it, and uninstall renames it .removed."""
    name, unit = pod_env["name"], _unit(pod_env)
    monkeypatch.setenv("BUNDLE_SYSTEMD_DIR", str(pod_env["units"]))  # install() runs in this process
    before = _with_v1(podman_client, pod_env, podman_images, systemd_unit=True)
    v1_id = podman_client.api.inspect_container(name)["Id"]
    text = unit.read_text()
    assert text.startswith(f"# written by bundle: app {name} 1.0.0 image {podman_images['v1']['ref']} "), text
    assert f"container {v1_id[:12]}" in text.splitlines()[0]
    assert f"ExecStart=/usr/bin/podman start {name}\n" in text and "Restart=on-failure" in text, text  # unless-stopped
    assert f"{v1_id}/userdata/conmon.pid" in text and "--new" not in text
    assert pod_env["state"].installed(name)["systemd_unit"] == str(unit)

    install(podman_client, pod_env, podman_images["v2"], 2)  # no flag: the unit bundle wrote is kept current
    _assert_runs(podman_client, pod_env, "2.0.0", _migrated(before, "2.0.0"))
    v2_id = podman_client.api.inspect_container(name)["Id"]
    assert f" 2.0.0 image {podman_images['v2']['ref']} " in unit.read_text().splitlines()[0]
    assert f"{v2_id}/userdata/conmon.pid" in unit.read_text()
    assert f"container {v1_id[:12]}" in (unit.parent / f"{unit.name}.previous").read_text().splitlines()[0]
    doctor = _cli(pod_env, "doctor", "--json")
    reboot = next(c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "reboot")
    assert reboot["verdict"] == "ok", reboot

    r = _cli(pod_env, "rollback", name, "--yes")
    assert r.code == 0, str(r)
    assert f"systemd unit {unit}: update" in r.stdout and f"{unit} written, not enabled: " in r.stdout, r.stdout
    _assert_runs(podman_client, pod_env, "1.0.0", before)
    assert f"{v1_id}/userdata/conmon.pid" in unit.read_text()

    r = _cli(pod_env, "uninstall", name, "--yes")
    assert r.code == 0, str(r)
    assert containers_named(podman_client, name) == [] and not unit.exists()
    assert not any(c["Names"][0].startswith(f"/{name}.previous-") for c in podman_client.api.containers(all=True))
    assert pod_env["volume"] not in [v["Name"] for v in podman_client.api.volumes()["Volumes"] or []]
    assert pod_env["state"].installed(name) is None
    kept, = (pod_env["state"].root / "removed").iterdir()  # the final backup of the data is kept
    assert (kept / "final-backup").is_dir() and list((kept / "final-backup").iterdir())
    assert f"container {v1_id[:12]}" in (unit.parent / f"{unit.name}.removed").read_text()


def test_a_systemd_unit_is_refused_on_docker_before_anything_changes(docker_client, base_bundle, tmp_path):
    state = tmp_path / "state"
    r = run_bundle("import", base_bundle.path, "--keys", base_bundle.keys_dir, "--state-dir", state, "--yes",
                   "--systemd-unit", env={"BUNDLE_SYSTEMD_DIR": str(tmp_path / "units")})
    assert r.code == REFUSED, str(r)
    assert one_line(r.stderr).startswith(f"refused: engine: systemd unit for {base_bundle.target_name}: Docker "), r
    assert one_line(r.stderr).endswith("restarts containers itself after a reboot (their restart policy); "
                                       "--systemd-unit is for Podman hosts")
    assert containers_named(docker_client, base_bundle.target_name) == []
    assert not (tmp_path / "units").exists()
    assert not (state / "installed").exists() or not list((state / "installed").iterdir())
