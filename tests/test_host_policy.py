"""Issue 8, finding 1: a valid signature is not root on the host. The importer's own host-access
policy (host-policy.toml in the trust store, deny by default) refuses before anything is loaded
every run setting that reaches beyond the container unless it grants it -- for `bundle verify`
and `bundle import` alike, one line naming the setting and the key that would grant it, nothing
changed -- and what it grants really reaches the created container and is shown in the plan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.craft import imported_for_real
from tests.keys import trust_store
from tests.test_gate import Gate

pytest.register_assert_rewrite("tests.craft")


@pytest.fixture
def gate(base_bundle, docker_client, installed_app, tmp_path) -> Gate:
    return Gate(base_bundle, docker_client, installed_app, tmp_path)


@pytest.fixture
def granted_dir(tmp_path) -> Path:
    d = tmp_path / "granted"
    (d / "data").mkdir(parents=True)
    os.symlink("/etc", d / "to-etc")
    return d


def policed_store(gate: Gate, text: str) -> Path:
    """A trust store of the builder's key with this host-policy.toml."""
    store = trust_store(gate.tmp / "policed-keys", [gate.base.signer])
    (store / "host-policy.toml").write_text(text)
    return store


def asking(gate: Gate, label: str, *, app: str | None = None, container: str | None = None, **run) -> Path:
    """The base bundle, signed, with `run` merged into its target.run."""
    v = gate.variant()
    v.manifest["target"]["run"].update(run)
    if app:
        v.manifest["name"] = app
    if container:
        v.manifest["target"]["name"] = container
    return v.write(gate.path(label))


def test_a_signed_run_spec_asking_for_the_host_root_its_network_and_sys_admin_is_refused(gate):
    """The finding itself: `/:/host:ro`, host network and SYS_ADMIN, validly signed, no policy file."""
    bundle = asking(gate, "root", volumes=["/:/host:ro"], network="host", cap_add=["SYS_ADMIN"])
    results = gate.refused(bundle, "host policy", "target.run.volumes.0 asks for the Docker engine socket via /")
    for r in results:
        assert f"[apps.{gate.base.name}] engine_socket = true in " in r.stderr, str(r)


FORBIDDEN = {
    # id: (run settings, the setting named, the policy key named)
    "bind outside the granted prefix": ({"volumes": ["/etc:/x:ro"]},
                                        "bind mount of host path /etc", 'bind_prefixes = ["/etc"]'),
    "symlink under the prefix leading out": ({"volumes": ["{granted}/to-etc:/x:ro"]},
                                             "bind mount of host path {granted}/to-etc", "bind_prefixes = "),
    "engine socket": ({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]},
                      "the Docker engine socket via /var/run/docker.sock", "engine_socket = true"),
    "host root": ({"volumes": ["/:/host"]}, "the Docker engine socket via /", "engine_socket = true"),
    "host network": ({"network": "host"}, "network mode host", 'network_modes = ["host"]'),
    "container network": ({"network": "container:{installed}"}, "network mode container:{installed}",
                          'network_modes = ["container"]'),
    "non-default capability": ({"cap_add": ["NET_ADMIN"]}, "added capability NET_ADMIN", 'cap_add = ["NET_ADMIN"]'),
    "capability granted to another app": ({"cap_add": ["SYS_ADMIN"]}, "added capability SYS_ADMIN",
                                          'cap_add = ["SYS_ADMIN"]'),
    "reserved helper label": ({"labels": {"io.bundle.helper": "1"}}, "reserved label io.bundle.helper",
                              "is reserved on this host"),
}


@pytest.mark.parametrize("case", FORBIDDEN, ids=list(FORBIDDEN))
def test_each_forbidden_host_access_is_refused_naming_the_setting_and_its_policy_key(gate, granted_dir, case):
    run, setting, key = FORBIDDEN[case]
    fill = lambda text: text.format(granted=granted_dir, installed=gate.installed.name)  # noqa: E731
    run = {k: ([fill(x) for x in v] if isinstance(v, list) else fill(v) if isinstance(v, str) else v)
           for k, v in run.items()}
    store = policed_store(gate, f'[host]\nbind_prefixes = ["{granted_dir}"]\n\n'
                                '[apps.someone-else]\ncap_add = ["SYS_ADMIN"]\n')
    results = gate.refused(asking(gate, "forbidden", **run), "host policy", fill(setting), keys_dir=store)
    for r in results:
        assert key in r.stderr, str(r)


def test_granted_bind_prefix_and_capability_reach_the_container_and_the_plan(gate, granted_dir, uniq):
    app = container = f"{gate.base.target_name}-granted-{uniq}"
    store = policed_store(gate, f'[apps.{app}]\nbind_prefixes = ["{granted_dir}"]\ncap_add = ["SYS_ADMIN"]\n')
    bundle = asking(gate, "granted", app=app, container=container,
                    volumes=[f"{granted_dir}/data:/data"], cap_add=["SYS_ADMIN"])
    expected = [f"host access: bind mount of host path {granted_dir}/data (granted by [apps.{app}] bind_prefixes)",
                f"host access: added capability SYS_ADMIN (granted by [apps.{app}] cap_add)"]
    r = gate.verify(bundle, keys_dir=store)
    assert r.code == 0 and all(line in r.stdout.splitlines() for line in expected), str(r)
    with imported_for_real(gate, bundle, container, keys_dir=store) as r:
        assert all(line in r.stdout.splitlines() for line in expected), str(r)
        host = gate.client.api.inspect_container(container)["HostConfig"]
        assert f"{granted_dir}/data:/data" in host["Binds"], host["Binds"]
        assert [c.removeprefix("CAP_") for c in host["CapAdd"]] == ["SYS_ADMIN"], host["CapAdd"]


def test_nested_writable_binds_are_refused_before_anything_runs(gate, granted_dir, uniq):
    """Issue 18, finding 2: `G/app:/data` and `G/app/sub:/x`, both granted, restart always. Once
    running, the container could replace /data/sub with a symlink out of G and exit; the engine's
    restart would mount wherever it points at /x. The pair is refused (exit 3, one line), nothing runs."""
    app = container = f"{gate.base.target_name}-nested-{uniq}"
    (granted_dir / "app").mkdir()
    store = policed_store(gate, f'[host]\nbind_prefixes = ["{granted_dir}"]\n')
    bundle = asking(gate, "nested", app=app, container=container, restart="always",
                    volumes=[f"{granted_dir}/app:/data", f"{granted_dir}/app/sub:/x"])
    gate.refused(bundle, "host policy", f"target.run.volumes.1 binds host path {granted_dir}/app/sub inside "
                 f"{granted_dir}/app (target.run.volumes.0), and target.run.volumes.0 is writable", keys_dir=store)
    assert not gate.client.containers.list(all=True, filters={"name": container})
    assert sorted(os.listdir(granted_dir / "app")) == [], "the refused import made the bind source"


def test_a_site_file_adding_a_nested_bind_is_refused_the_same(gate, granted_dir, uniq):
    """The site file's volumes go through the same rule: the bundle's one bind is fine, the admin's
    added bind inside it is not."""
    app = container = f"{gate.base.target_name}-nestsite-{uniq}"
    (granted_dir / "app").mkdir()
    store = policed_store(gate, f'[host]\nbind_prefixes = ["{granted_dir}"]\n')
    bundle = asking(gate, "nestsite", app=app, container=container, volumes=[f"{granted_dir}/app:/data:ro"])
    site = gate.tmp / "site.toml"
    site.write_text(f'[run]\nvolumes = ["{granted_dir}/app/sub:/x"]\n')
    site.chmod(0o644)
    assert gate.verify(bundle, keys_dir=store).code == 0
    gate.refused(bundle, "host policy", f"binds host path {granted_dir}/app/sub inside {granted_dir}/app",
                 keys_dir=store, extra=("--site", str(site)), verify=False)
    assert not gate.client.containers.list(all=True, filters={"name": container})
    assert sorted(os.listdir(granted_dir / "app")) == []


def test_a_bind_inside_another_containers_writable_bind_is_refused(gate, granted_dir, uniq):
    """Issue 18, finding 2, across containers: another container on this engine mounts the granted
    directory G writable, so it could plant the symlink at G/app; a bundle's bind of G/app is refused
    at import (the plan reads the engine; `verify` cannot), nothing created."""
    app = container = f"{gate.base.target_name}-under-{uniq}"
    (granted_dir / "app").mkdir()
    store = policed_store(gate, f'[host]\nbind_prefixes = ["{granted_dir}"]\n')
    agent = gate.client.api.create_container_from_config(
        {"Image": gate.installed.ref, "HostConfig": {"Binds": [f"{granted_dir}:/all"]}}, name=f"agent-{uniq}")["Id"]
    try:
        bundle = asking(gate, "under", app=app, container=container, volumes=[f"{granted_dir}/app:/data:ro"])
        gate.refused(bundle, "host policy", f"target.run.volumes.0 binds host path {granted_dir}/app inside "
                     f"{granted_dir} (container agent-{uniq}'s mount at /all), and container agent-{uniq}'s mount at "
                     f"/all is writable", keys_dir=store, verify=False)
        assert not gate.client.containers.list(all=True, filters={"name": container})
    finally:
        gate.client.api.remove_container(agent, force=True)
