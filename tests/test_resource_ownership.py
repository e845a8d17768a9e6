"""Issue 18, finding 1: one app's key reaches nothing of another app's. With keys scoped per app,
a bundle of app B signed only by B's key names a volume or a network of app A: refused before
anything is loaded (exit 3, one line naming the owner and what would allow it), A's data byte for
byte as it was, nothing of B created. A volume or network no app owns needs --adopt (and the plan
says so); another app's needs a grant of the host policy (`shared_volumes`, `shared_networks`),
and even then B's data steps never touch it: a failed first install of B does not "put back"
A's live volume from B's backup."""

from __future__ import annotations

import pytest

from tests.craft import IMAGE_REPO, imported_for_real
from tests.test_gate import Gate

pytest.register_assert_rewrite("tests.craft")


@pytest.fixture
def gate(base_bundle, docker_client, installed_app, tmp_path) -> Gate:
    return Gate(base_bundle, docker_client, installed_app, tmp_path, adopt=False)


@pytest.fixture
def apps(gate, uniq, trust_store_of, pgp_keys, docker_client):
    """Apps A and B, each with its own key (the builder's scoped to A, the approver's to B), and a
    trust store holding both; every volume and network named with `uniq` is removed afterwards."""
    prefix = gate.base.target_name
    env = {"a": f"{prefix}-a-{uniq}", "b": f"{prefix}-b-{uniq}", "key_a": pgp_keys.builder,
           "key_b": pgp_keys.approver, "volume": f"own-{uniq}-data", "network": f"own-{uniq}-net", "uniq": uniq}
    store = trust_store_of([env["key_a"], env["key_b"]])
    (store / "policy.toml").write_text(
        f'[roles.a]\nkeys = ["{env["key_a"].fpr}"]\nthreshold = 1\napps = ["{env["a"]}"]\nrepos = ["{IMAGE_REPO}"]\n'
        f'[roles.b]\nkeys = ["{env["key_b"].fpr}"]\nthreshold = 1\napps = ["{env["b"]}"]\nrepos = ["{IMAGE_REPO}"]\n')
    env["store"] = store
    yield env
    for c in docker_client.api.containers(all=True, filters={"name": uniq}):
        docker_client.api.remove_container(c["Id"], force=True)
    for v in docker_client.api.volumes().get("Volumes") or []:
        if uniq in v["Name"]:
            docker_client.api.remove_volume(v["Name"], force=True)
    for n in docker_client.api.networks(names=[env["network"]]):
        docker_client.api.remove_network(n["Id"])


def bundle_of(gate: Gate, apps: dict, who: str, *, sequence: int = 5, **run) -> object:
    """The base bundle as app `who` ("a" or "b"), signed by that app's key only, into container
    `<app>`, with these run settings added."""
    v = gate.variant()
    v.manifest.update(name=apps[who], sequence=sequence)
    v.manifest["target"]["name"] = apps[who]
    v.manifest["target"].setdefault("run", {}).update(run)
    v.signers = [apps[f"key_{who}"]]
    return v.write(gate.path(f"{who}-{sequence}-{len(run)}-{abs(hash(repr(sorted(run.items())))) % 10**6}"))


def volume_content(client, image: str, volume: str) -> str:
    """Every path in the volume with its size, mode, owner and mtime, and every file's sha256."""
    script = ("cd /v && find . | sort | while read -r f; do stat -c '%n %s %a %u:%g %Y' \"$f\"; done; "
              "find . -type f | sort | xargs -r sha256sum")
    return client.containers.run(image, ["sh", "-c", script], remove=True, network_mode="none",
                                 volumes={volume: {"bind": "/v", "mode": "ro"}}).decode()


def in_container(client, name: str, script: str) -> None:
    r = client.api.exec_start(client.api.exec_create(name, ["sh", "-c", script]))
    assert r == b"", r


def assert_nothing_of(client, app: str) -> None:
    assert client.api.containers(all=True, filters={"name": app}) == [], f"a container of {app} was created"


def test_other_apps_volume_is_refused(gate, apps, docker_client):
    vol = apps["volume"]
    with imported_for_real(gate, bundle_of(gate, apps, "a", volumes=[f"{vol}:/data"]), apps["a"],
                           keys_dir=apps["store"]) as r:
        assert docker_client.api.inspect_volume(vol)["Labels"] == {"io.bundle.app": apps["a"]}, \
            "the volume A's install created does not say whose it is"
        in_container(docker_client, apps["a"], "echo 'the secret of A' > /data/secret.txt")
        before = volume_content(docker_client, gate.installed.ref, vol)
        steal = bundle_of(gate, apps, "b", volumes=[f"{vol}:/steal"])
        (r,) = gate.refused(steal, "ownership", f"volume {vol} belongs to app {apps['a']}: a bundle of app "
                                                f"{apps['b']} may not use it", keys_dir=apps["store"], verify=False)
        assert f'[apps.{apps["b"]}] shared_volumes = ["{vol}"]' in r.stderr
        # --adopt takes only what no app owns
        gate.refused(steal, "ownership", f"volume {vol} belongs to app {apps['a']}", keys_dir=apps["store"],
                     verify=False, extra=("--adopt",))
        assert volume_content(docker_client, gate.installed.ref, vol) == before, "A's data changed"
        assert_nothing_of(docker_client, apps["b"])


def test_a_volume_shared_by_the_host_policy_is_used_but_never_restored_by_the_other_app(gate, apps, docker_client):
    vol = apps["volume"]
    (apps["store"] / "host-policy.toml").write_text(f'[apps.{apps["b"]}]\nshared_volumes = ["{vol}"]\n')
    with imported_for_real(gate, bundle_of(gate, apps, "a", volumes=[f"{vol}:/data"]), apps["a"],
                           keys_dir=apps["store"]):
        in_container(docker_client, apps["a"], "echo 'the secret of A' > /data/secret.txt")
        # B's first release writes into the shared volume, then fails its health gate
        failing = bundle_of(gate, apps, "b", volumes=[f"{vol}:/shared"],
                            command=["sh", "-c", "echo 'written by B' > /shared/by-b.txt; exit 1"])
        r = gate.import_(failing, keys_dir=apps["store"])
        assert r.code == 9, str(r)
        assert (f"use volume {vol} of app {apps['a']} (granted by [apps.{apps['b']}] shared_volumes; never backed up, "
                f"restored or removed by this app)") in r.stdout, r.stdout
        assert f"volume {vol} belongs to app {apps['a']}: not backed up or restored by {apps['b']}" in r.stdout
        # B's undo did not "put back" A's live volume from B's backup: what B wrote stays, A's data too
        content = volume_content(docker_client, gate.installed.ref, vol)
        assert "./by-b.txt" in content and "./secret.txt" in content, content
        assert docker_client.api.inspect_container(apps["a"])["State"]["Running"]
        assert_nothing_of(docker_client, apps["b"])


def test_an_unowned_volume_needs_adopt_and_is_then_the_apps(gate, apps, docker_client):
    vol = apps["volume"]
    docker_client.api.create_volume(vol)  # an admin's volume, with the admin's data
    docker_client.containers.run(gate.installed.ref, ["sh", "-c", "echo 'admin data' > /v/admin.txt"], remove=True,
                                 network_mode="none", volumes={vol: {"bind": "/v", "mode": "rw"}})
    before = volume_content(docker_client, gate.installed.ref, vol)
    b = bundle_of(gate, apps, "b", volumes=[f"{vol}:/data"])
    gate.refused(b, "ownership", f"volume {vol} exists and no app owns it: a bundle of app {apps['b']} may "
                                 f"take it only with --adopt", keys_dir=apps["store"], verify=False)
    assert volume_content(docker_client, gate.installed.ref, vol) == before
    assert_nothing_of(docker_client, apps["b"])
    with imported_for_real(gate, b, apps["b"], "--adopt", keys_dir=apps["store"]) as r:
        assert f"adopt volume {vol} (no app owns it; this app's from now on)" in r.stdout, r.stdout
        assert "./admin.txt 11 " in volume_content(docker_client, gate.installed.ref, vol)
        # from now on B's: its next release needs no flag, A may not have it
        nxt = gate.import_(bundle_of(gate, apps, "b", sequence=6, volumes=[f"{vol}:/data"]), "--dry-run",
                           keys_dir=apps["store"])
        assert nxt.code == 0 and "adopt" not in nxt.stdout, str(nxt)
        gate.refused(bundle_of(gate, apps, "a", volumes=[f"{vol}:/data"]), "ownership",
                     f"volume {vol} belongs to app {apps['b']}", keys_dir=apps["store"], verify=False)


def test_other_apps_network_is_refused(gate, apps, docker_client):
    net = apps["network"]
    docker_client.api.create_network(net)
    a = bundle_of(gate, apps, "a", network=net)
    gate.refused(a, "ownership", f"network {net} exists and no app owns it", keys_dir=apps["store"], verify=False)
    with imported_for_real(gate, a, apps["a"], "--adopt", keys_dir=apps["store"]) as r:
        assert f"adopt network {net} (no app owns it" in r.stdout, r.stdout
        b = bundle_of(gate, apps, "b", network=net)
        (r,) = gate.refused(b, "ownership", f"network {net} belongs to app {apps['a']}: a bundle of app {apps['b']} "
                                            f"may not use it", keys_dir=apps["store"], verify=False)
        assert f'[apps.{apps["b"]}] shared_networks = ["{net}"]' in r.stderr
        assert_nothing_of(docker_client, apps["b"])
        assert list(docker_client.api.inspect_network(net)["Containers"].values())[0]["Name"] == apps["a"]
        (apps["store"] / "host-policy.toml").write_text(f'[host]\nshared_networks = ["{net}"]\n')
        shared = gate.import_(b, "--dry-run", keys_dir=apps["store"])
        assert shared.code == 0, str(shared)
        assert f"use network {net} of app {apps['a']} (granted by [host] shared_networks" in shared.stdout


def test_the_volumes_an_install_did_not_create_are_kept_by_uninstall(gate, apps, docker_client):
    """Even what B adopted stays when B goes: only a volume bundle created for B is removed."""
    vol, own = apps["volume"], f"own-{apps['uniq']}-created"
    docker_client.api.create_volume(vol)
    with imported_for_real(gate, bundle_of(gate, apps, "b", volumes=[f"{vol}:/data", f"{own}:/own"]), apps["b"],
                           "--adopt", keys_dir=apps["store"]):
        r = gate_cmd(gate, "uninstall", apps["b"], "--yes")
        assert r.code == 0, str(r)
        assert f"keep volume {vol} (bundle did not create it for {apps['b']}; backed up, not removed)" in r.stdout
        assert f"remove volume {own}" in r.stdout
        names = {v["Name"] for v in docker_client.api.volumes()["Volumes"] or []}
        assert vol in names and own not in names


def gate_cmd(gate: Gate, *args):
    from tests.support import run_bundle
    return run_bundle(*args, "--state-dir", gate.state_dir)
