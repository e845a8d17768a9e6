"""The swap on a real engine: first install, faithful upgrade, automatic rollback with exact data
restore, manual rollback, the lock, pruning, and plans that change nothing."""

from __future__ import annotations

import json
import random

import docker
import pytest

from bundlecore.engine import Engine
from bundlecore.errors import EnvironmentProblem, InstallUndone, OperatorNeeded, UpdateFailed
from importer.backup import data as swap_data
from importer.backup.data import STATE_LABEL, SWAP_LABEL
from importer.steps import pending
from importer.kinds.container.plan import plan_swap
from importer.kinds.container.run import run_swap
from importer.kinds.container.status import app_status
from tests.support import one_line, run_bundle
from tests.swap_fixtures import (bundle_for, containers_named, data_files, digest, free_port, install,
                                 seed_data, served_version, target_for, typed, delivery, wait_until)

QUIET = dict(out=lambda s: None)


def _network(client, name: str):
    """A user network with a subnet of its own (random, retried on overlap)."""
    for _ in range(20):
        subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"
        try:
            net = client.networks.create(name, ipam=docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=subnet)]))
            return net, subnet.rsplit(".", 1)[0]
        except docker.errors.APIError:
            continue
    raise RuntimeError("no free subnet")


def _settings(client, cid: str) -> dict:
    """What a faithful copy must keep, with what is per-container by nature removed."""
    info = client.api.inspect_container(cid)
    cfg = dict(info["Config"])
    cfg.pop("Image")
    # The state dir and swap that made a container (importer.backup.data.HelperOwner) are per-container.
    cfg["Labels"] = {k: v for k, v in (cfg.get("Labels") or {}).items() if k not in (STATE_LABEL, SWAP_LABEL)}
    cfg["Env"] = sorted(cfg.get("Env") or [])
    host = dict(info["HostConfig"])
    host.pop("Binds")  # compared through the mounts (anonymous volumes become named binds)
    nets = {}
    for net, ep in info["NetworkSettings"]["Networks"].items():
        nets[net] = {"ipam": ep.get("IPAMConfig"), "aliases": sorted(a for a in ep.get("Aliases") or []
                                                                     if a != info["Id"][:12])}
    mounts = sorted((m["Type"], m.get("Name"), m["Source"], m["Destination"], m["RW"]) for m in info["Mounts"])
    return {"config": cfg, "host": host, "networks": nets, "mounts": mounts}


def test_first_install_creates_the_container_from_the_run_spec(docker_client, swap_env, demo_images):
    rec = install(docker_client, swap_env, demo_images["v1"], 1, run_extra={"stop_timeout": 1})
    assert served_version(swap_env) == "1.0.0"
    info = docker_client.api.inspect_container(swap_env["name"])
    assert rec["container_id"] == info["Id"] and rec["version"] == "1.0.0" and rec["highest_sequence"] == 1
    assert "GREETING=hello" in info["Config"]["Env"]
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert info["HostConfig"]["CapAdd"] == ["SYS_ADMIN"] and info["Config"]["StopTimeout"] == 1
    assert info["Config"]["Labels"]["org.user.owner"] == "ops"
    assert info["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(swap_env["port"])}]}
    assert any(m.get("Name") == swap_env["volume"] and m["Destination"] == "/data" for m in info["Mounts"])
    assert swap_env["state"].installed(swap_env["name"])["images"] == {demo_images["v1"]["ref"]: demo_images["v1"]["id"]}
    audit = [json.loads(ln) for ln in (swap_env["state"].root / "audit.log").read_text().splitlines()]
    assert audit[-1]["result"] == "done" and audit[-1]["versions"]["to"] == "1.0.0" and audit[-1]["operator"]["user"]
    # An update keeps the user's StopTimeout (and so stops it with it).
    install(docker_client, swap_env, demo_images["v2"], 2, run_extra={"stop_timeout": 1})
    assert docker_client.api.inspect_container(swap_env["name"])["Config"]["StopTimeout"] == 1


def test_failed_first_install_leaves_nothing_behind(docker_client, swap_env, demo_images):
    with pytest.raises(InstallUndone, match="nothing was installed") as e:
        install(docker_client, swap_env, demo_images["v3"], 1)
    assert e.value.exit_code == 9
    assert containers_named(docker_client, swap_env["name"]) == []
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_volume(swap_env["volume"])  # it created the volume, so it removed it
    assert swap_env["state"].installed(swap_env["name"]) is None


def test_failed_first_install_puts_back_data_that_was_already_there(docker_client, swap_env, demo_images):
    """Installing onto existing data (say, a storage directory kept from a `docker run` era)."""
    api = docker_client.api
    seeder = api.create_container_from_config({"Image": demo_images["v1"]["ref"], "Cmd": ["sleep", "60"],
                                               "HostConfig": {"Binds": [f"{swap_env['volume']}:/data"]}},
                                              name=f"seed-{swap_env['uniq']}")["Id"]
    api.start(seeder)
    seed_data(docker_client, seeder)
    before = data_files(docker_client, seeder)
    api.remove_container(seeder, force=True, v=True)
    with pytest.raises(InstallUndone, match="nothing was installed") as e:
        install(docker_client, swap_env, demo_images["v3"], 1)
    assert e.value.exit_code == 9
    assert containers_named(docker_client, swap_env["name"]) == []
    probe = api.create_container_from_config({"Image": demo_images["v1"]["ref"], "Cmd": ["true"],
                                              "HostConfig": {"Binds": [f"{swap_env['volume']}:/data"]}},
                                             name=f"probe-{swap_env['uniq']}")["Id"]
    assert data_files(docker_client, probe) == before  # not even the broken version's start-up line


def test_upgrade_keeps_data_and_every_user_setting_while_new_image_defaults_apply(
        docker_client, swap_env, demo_images, tmp_path):
    api, u, name, port = docker_client.api, swap_env["uniq"], swap_env["name"], swap_env["port"]
    net1, prefix = _network(docker_client, f"net1-{u}")
    net2, _ = _network(docker_client, f"net2-{u}")
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    (hostdir / "site.txt").write_text("host data\n")
    # v1 was started by hand (docker run): the swap adopts it.
    cfg = {
        "Image": demo_images["v1"]["ref"], "Env": ["GREETING=hello", "APP_MODE=prod"], "Hostname": "demo-host",
        "Labels": {"org.user.owner": "ops"}, "ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/cache": {}},
        "StopTimeout": 1, "WorkingDir": "/data",
        "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health"], "Interval": 1_000_000_000},
        "HostConfig": {
            "Binds": [f"{swap_env['volume']}:/data", f"{hostdir}:/hostdir"],
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
            "RestartPolicy": {"Name": "unless-stopped"}, "CapAdd": ["SYS_ADMIN"], "ExtraHosts": ["db.local:10.1.2.3"],
            "Dns": ["10.0.0.53"], "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
            "Memory": 256 << 20, "NetworkMode": net1.name,
        },
        "NetworkingConfig": {"EndpointsConfig": {net1.name: {"IPAMConfig": {"IPv4Address": f"{prefix}.10"},
                                                             "Aliases": ["app-alias"]}}},
    }
    cid = api.create_container_from_config(cfg, name=name)["Id"]
    api.connect_container_to_network(cid, net2.id, aliases=["second-alias"])
    api.start(cid)
    assert wait_until(lambda: served_version(swap_env) == "1.0.0")
    seed_data(docker_client, cid)
    api.exec_start(api.exec_create(cid, ["sh", "-c", "echo c > /cache/c.txt; echo s > /state/s.txt"]))
    before = _settings(docker_client, cid)
    data_before = data_files(docker_client, cid)

    target = target_for(swap_env, demo_images["v2"])
    plan = plan_swap(Engine(docker_client), swap_env["state"], typed(target), demo_images["v2"]["id"])
    assert plan.kind == "upgrade" and any("/data" in ln for ln in plan.lines())
    with swap_env["state"].lock():
        rec = run_swap(Engine(docker_client), swap_env["state"], plan, delivery(bundle_for(demo_images["v2"], 2)), **QUIET)

    assert served_version(swap_env) == "2.0.0"
    new = api.inspect_container(name)
    assert new["Id"] == rec["container_id"] != cid
    after = _settings(docker_client, new["Id"])
    # The new image's defaults apply...
    assert "APP_VERSION=2.0.0" in after["config"]["Env"] and "APP_VERSION=1.0.0" in before["config"]["Env"]
    assert after["config"]["Labels"]["org.demo.release"] == "2.0.0"
    # ...and everything else is as the user set it: the whole diff is the image's defaults.
    for s in (before, after):
        s["config"]["Env"].remove(next(e for e in s["config"]["Env"] if e.startswith("APP_VERSION=")))
        s["config"]["Labels"].pop("org.demo.release")
        s["config"].pop("Hostname") if s["config"]["Hostname"] != "demo-host" else None
    assert after == before
    assert after["networks"][net1.name]["ipam"] == {"IPv4Address": f"{prefix}.10"}
    assert "app-alias" in after["networks"][net1.name]["aliases"]
    assert "second-alias" in after["networks"][net2.name]["aliases"]
    for ep in new["NetworkSettings"]["Networks"].values():
        assert cid[:12] not in (ep.get("Aliases") or [])  # the old short-ID alias is dropped
    # Same anonymous volumes (the user's -v /cache and the image's VOLUME /state), same data.
    assert data_files(docker_client, new["Id"]) == {**data_before, "data/schema-version": b"2.0.0\n",
                                                   "data/migrations.log": b"migrated to 1.0.0\nmigrated to 2.0.0\n"}
    out = api.exec_start(api.exec_create(new["Id"], ["cat", "/cache/c.txt", "/state/s.txt", "/hostdir/site.txt"]))
    assert out == b"c\ns\nhost data\n"
    # The old container is kept, stopped, renamed, and cannot be restarted by the engine behind our back.
    old = api.inspect_container(cid)
    assert old["Name"] == f"/{name}.previous-1" and not old["State"]["Running"]
    assert old["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert rec["previous"][0]["parked_name"] == f"{name}.previous-1"


def test_failed_migration_is_undone_on_rollback(docker_client, swap_env, demo_images):
    install(docker_client, swap_env, demo_images["v1"], 1)
    install(docker_client, swap_env, demo_images["v2"], 2)
    name = swap_env["name"]
    seed_data(docker_client, name)
    running = docker_client.api.inspect_container(name)["Id"]
    before = data_files(docker_client, name)
    with pytest.raises(UpdateFailed) as e:
        install(docker_client, swap_env, demo_images["v3"], 3, timeout=5, attempts=2)
    assert "did not become healthy" in str(e.value) and "2.0.0 is running again" in str(e.value)
    assert served_version(swap_env) == "2.0.0"
    assert docker_client.api.inspect_container(name)["Id"] == running
    after = data_files(docker_client, name)
    # Byte-identical, incl. the file the bad migration deleted, the one it rewrote and the one it created.
    assert "data/created-by-broken.txt" not in after and after["data/important.txt"] == b"do not lose me\n"
    assert after == before and digest(after) == digest(before)
    assert len(containers_named(docker_client, name)) == 1
    rec = swap_env["state"].installed(name)
    assert rec["version"] == "2.0.0" and rec["highest_sequence"] == 2  # a failed version is no high-water mark
    st = app_status(Engine(docker_client), swap_env["state"], name)
    assert st["last_swap"]["result"] == "rolled back" and not st["pending_swap"]


def test_restore_puts_back_every_kind_of_mount_exactly(docker_client, swap_env, demo_images, tmp_path):
    """Named, anonymous, nested and bind mounts, directory and single file, through the API only."""
    api, u = docker_client.api, swap_env["uniq"]
    hostdir, hostfile = tmp_path / "bind", tmp_path / "app.env"
    hostdir.mkdir()
    (hostdir / "keep.txt").write_text("bind\n")
    hostfile.write_text("SECRET=1\n")
    cid = api.create_container_from_config({
        "Image": demo_images["v1"]["ref"], "Cmd": ["sleep", "300"], "Volumes": {"/anon": {}},
        "HostConfig": {"Binds": [f"{swap_env['volume']}:/data", f"nested-{u}:/data/cache", f"{hostdir}:/bind",
                                 f"{hostfile}:/etc/app.env"]}}, name=f"mounts-{u}")["Id"]
    api.start(cid)
    api.exec_start(api.exec_create(cid, ["sh", "-c",
        "echo a > /data/a; mkdir /data/d; echo n > /data/cache/n; echo x > /anon/x; echo s > /state/s;"
        "ln -s a /data/l; mkdir -p /data/.hidden; echo h > /data/.hidden/h"]))
    api.stop(cid, timeout=0)
    info = api.inspect_container(cid)
    mounts = swap_data.backed_up_mounts(info)
    assert {m["destination"] for m in mounts} == {"/data", "/data/cache", "/anon", "/state", "/bind", "/etc/app.env"}
    snapshot = {m["destination"]: data_files(docker_client, cid, m["destination"]) for m in mounts}
    bdir = tmp_path / "backup"
    manifest = swap_data.backup_mounts(Engine(docker_client), cid, mounts, bdir)
    api.start(cid)
    api.exec_start(api.exec_create(cid, ["sh", "-c",
        "rm -rf /data/a /data/d /data/.hidden; echo new > /data/new; echo changed > /data/cache/n; echo y > /data/cache/y;"
        "rm /anon/x; echo z > /anon/..z; echo t > /state/t; echo bad > /bind/keep.txt; echo B > /bind/b;"
        "echo SECRET=2 > /etc/app.env"]))
    api.stop(cid, timeout=0)
    with swap_data.helpers_owned_by(swap_data.HelperOwner(swap_env["state"].identity, "test")):
        helper = swap_data.find_helper_image(Engine(docker_client), [demo_images["v1"]["id"]])
        swap_data.restore_mounts(Engine(docker_client), bdir, manifest, helper)
    for dest, files in snapshot.items():
        assert data_files(docker_client, cid, dest) == files, dest
    assert hostfile.read_text() == "SECRET=1\n" and (hostdir / "keep.txt").read_text() == "bind\n"
    assert api.containers(all=True, filters={"label": [swap_data.HELPER_LABEL,
                                                       f"{STATE_LABEL}={swap_env['state'].identity}"]}) == []


def test_manual_rollback_puts_the_previous_generation_and_its_data_back(docker_client, swap_env, demo_images):
    name, state = swap_env["name"], swap_env["state"]
    install(docker_client, swap_env, demo_images["v1"], 1)
    seed_data(docker_client, name)
    v1_data = data_files(docker_client, name)
    install(docker_client, swap_env, demo_images["v2"], 2)
    docker_client.api.exec_start(docker_client.api.exec_create(name, ["sh", "-c", "echo v2 > /data/v2-only.txt"]))
    r = run_bundle("rollback", name, "--yes", "--state-dir", state.root)
    assert r.returncode == 0, r.stderr
    assert served_version(swap_env) == "1.0.0"
    after = data_files(docker_client, name)
    assert "data/v2-only.txt" not in after
    assert after == v1_data  # v1's data as it was when v2 replaced it, not v2's
    rec = state.installed(name)
    assert rec["version"] == "1.0.0" and rec["sequence"] == 1 and rec["highest_sequence"] == 2
    names = sorted(n for c in docker_client.api.containers(all=True) for n in c["Names"] if name in n)
    assert names == [f"/{name}", f"/{name}.previous-2"]
    # Rolling back again returns to 2.0.0 with the data it had.
    r = run_bundle("rollback", name, "--yes", "--state-dir", state.root)
    assert r.returncode == 0, r.stderr
    assert served_version(swap_env) == "2.0.0"
    assert data_files(docker_client, name)["data/v2-only.txt"] == b"v2\n"
    st = json.loads(run_bundle("status", name, "--json", "--state-dir", state.root).stdout)["apps"][0]["detail"]
    assert st["installed"]["version"] == "2.0.0" and st["previous"][0]["version"] == "1.0.0"
    assert st["container"]["status"] == "running"


def test_rollback_without_a_previous_generation_is_a_usage_error(docker_client, swap_env, demo_images):
    install(docker_client, swap_env, demo_images["v1"], 1)
    r = run_bundle("rollback", swap_env["name"], "--yes", "--state-dir", swap_env["state"].root)
    assert r.returncode == 2 and "no previous generation" in one_line(r.stderr)


def test_a_second_concurrent_operation_is_refused(docker_client, swap_env, demo_images):
    install(docker_client, swap_env, demo_images["v1"], 1)
    install(docker_client, swap_env, demo_images["v2"], 2)
    with swap_env["state"].lock():
        for args in (("rollback", swap_env["name"], "--yes"), ("recover", "--yes")):
            r = run_bundle(*args, "--state-dir", swap_env["state"].root)
            assert r.returncode == 1 and "holds the lock" in one_line(r.stderr)
        with pytest.raises(EnvironmentProblem, match="holds the lock"):
            with swap_env["state"].lock():
                pass
    assert served_version(swap_env) == "2.0.0"


def test_plan_changes_nothing(docker_client, swap_env, demo_images):
    install(docker_client, swap_env, demo_images["v1"], 1)
    state = swap_env["state"]

    def world():
        files = sorted((str(p.relative_to(state.root)), p.stat().st_mtime_ns) for p in state.root.rglob("*") if p.is_file())
        # this test's containers (by its unique token) and any helper of its state dir; other
        # sessions' containers on a shared engine come and go on their own
        cs = sorted((c["Id"], tuple(c["Names"]), c["State"]) for c in docker_client.api.containers(all=True)
                    if any(swap_env["uniq"] in n for n in c["Names"])
                    or (c.get("Labels") or {}).get("io.bundle.state") == state.identity)
        return files, cs, data_files(docker_client, swap_env["name"])

    before = world()
    plan = plan_swap(Engine(docker_client), state, typed(target_for(swap_env, demo_images["v2"])), demo_images["v2"]["id"],
                          new_version="2.0.0")
    text = "\n".join(plan.lines())
    assert "1.0.0 -> 2.0.0" in text and "health check: GET" in text and swap_env["volume"] in text
    other = dict(swap_env, name=f"other-{swap_env['uniq']}", port=free_port())  # v1 holds swap_env's port
    fresh = plan_swap(Engine(docker_client), state, typed(target_for(other, demo_images["v1"])), demo_images["v1"]["id"])
    assert fresh.kind == "install"
    # The plan is confirmed before the bundle's images are loaded: an image not in the engine yet is fine.
    unloaded = plan_swap(Engine(docker_client), state, typed(dict(target_for(swap_env, demo_images["v2"]), image="x/y:9")),
                              "sha256:" + "0" * 64, new_version="9.0.0")
    assert unloaded.kind == "upgrade" and "1.0.0 -> 9.0.0" in "\n".join(unloaded.lines())
    assert world() == before


def test_generations_beyond_keep_are_pruned(docker_client, app_image, swap_env, demo_images):
    name, state = swap_env["name"], swap_env["state"]
    ref = f"swaptest/prune-{swap_env['uniq']}:0.9.0"
    # its own image (a unique label: no other build on the shared engine makes it a parent): pruning removes it
    first = {"ref": ref, "id": app_image(ref, "0.9.0", dockerfile_extra=f"LABEL test={swap_env['uniq']}"),
             "version": "0.9.0"}
    install(docker_client, swap_env, first, 1, loaded=True)  # as if its import's load had created it
    install(docker_client, swap_env, demo_images["v2"], 2)
    install(docker_client, swap_env, demo_images["v4"], 4)
    users = [(c["Names"], c["Labels"], c["Status"])
             for c in docker_client.api.containers(all=True, filters={"ancestor": first["id"]})]
    assert users == [], "containers still use the pruned generation's image"  # (who kept it, if it is kept)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.api.inspect_image(first["id"])
    names = sorted(n for c in docker_client.api.containers(all=True) for n in c["Names"] if name in n)
    assert names == [f"/{name}", f"/{name}.previous-2"]
    assert sorted(p.name for p in (state.app_dir(name) / "generations").iterdir()) == ["2"]
    rec = state.installed(name)
    assert [p["version"] for p in rec["previous"]] == ["2.0.0"] and rec["highest_sequence"] == 4


def test_image_healthcheck_is_the_gate_when_the_manifest_has_none(docker_client, app_image, swap_env, demo_images):
    hc = "HEALTHCHECK --interval=1s --start-period=1s CMD wget -q -O- http://127.0.0.1:8080/health || exit 1"
    ref = f"swaptest/hc-{swap_env['uniq']}:1"
    image = {"ref": ref, "id": app_image(ref, "1.5.0", dockerfile_extra=hc), "version": "1.5.0"}
    target = target_for(swap_env, image)
    target.pop("health")
    plan = plan_swap(Engine(docker_client), swap_env["state"], typed(target), image["id"])
    assert "HEALTHCHECK reports healthy" in plan.health
    with swap_env["state"].lock():
        run_swap(Engine(docker_client), swap_env["state"], plan, delivery(bundle_for(image, 1)), **QUIET)
    assert docker_client.api.inspect_container(swap_env["name"])["State"]["Health"]["Status"] == "healthy"


def test_when_the_old_version_cannot_come_back_the_operator_is_called_and_nothing_is_deleted(
        docker_client, swap_env, demo_images):
    name, state = swap_env["name"], swap_env["state"]
    v1 = target_for(swap_env, demo_images["v1"])
    v1["health"] = {"cmd": "test ! -e /broken", "timeout": 1, "attempts": 1}  # v1's own check
    with state.lock():
        run_swap(Engine(docker_client), state, plan_swap(Engine(docker_client), state, typed(v1), demo_images["v1"]["id"]),
                 delivery(bundle_for(demo_images["v1"], 1)), **QUIET)
    seed_data(docker_client, name)
    docker_client.api.exec_start(docker_client.api.exec_create(name, ["sh", "-c", "echo > /broken"]))  # v1 breaks
    old_id = docker_client.api.inspect_container(name)["Id"]
    target = target_for(swap_env, demo_images["v2"])
    target["health"] = {"cmd": "exit 1", "timeout": 1, "attempts": 1}
    plan = plan_swap(Engine(docker_client), state, typed(target), demo_images["v2"]["id"])
    with state.lock(), pytest.raises(OperatorNeeded) as e:
        run_swap(Engine(docker_client), state, plan, delivery(bundle_for(demo_images["v2"], 2)), **QUIET)
    assert "does not come up healthy either" in str(e.value) and "No container or backup was deleted" in str(e.value)
    # What the data holds is said exactly: here, restored, and from where.
    assert f"the data was restored from the backup in {state.app_dir(name) / 'generations' / '1'}" in str(e.value)
    assert e.value.exit_code == 5
    assert pending(state) == [name]  # the journal stays for `bundle recover`
    assert docker_client.api.inspect_container(name)["Id"] == old_id  # the old container, back under its name
    assert (state.app_dir(name) / "generations" / "1" / "backup.json").exists()
    assert data_files(docker_client, name)["data/important.txt"] == b"do not lose me\n"
    r = run_bundle("recover", "--yes", "--state-dir", state.root)
    assert r.returncode == 5 and one_line(r.stderr).startswith("operator needed:")
    audit = [json.loads(ln) for ln in (state.root / "audit.log").read_text().splitlines()]
    assert audit[-1]["result"] == "operator-needed" and audit[-1]["exit_code"] == 5
