"""The new container's settings (importer.kinds.container.config): a faithful copy of the user's settings
that lets the NEW image's defaults apply, and a first install from the manifest's `run` object."""

import copy

import pytest

from bundlecore.errors import UsageProblem
from importer.kinds.container.config import recreate_config, run_config

OLD_ID = "a1b2c3d4e5f6" + "0" * 52
ANON = "f" * 64


def old_container(config=None, host=None, mounts=None, networks=None):
    """An inspect of a container the user ran from an image with IMAGE_CONFIG defaults."""
    c = {"Hostname": OLD_ID[:12], "Image": "app:1", "Env": ["PATH=/bin", "GREETING=hi"],
         "Labels": {"org.demo.release": "1", "org.user.owner": "ops"}, "Entrypoint": ["/entry"],
         "Cmd": ["serve"], "ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/state": {}}, "StopTimeout": 0}
    c.update(config or {})
    h = {"NetworkMode": "default", "Binds": ["data:/data"], "PortBindings": {}, "RestartPolicy": {"Name": "no"}}
    h.update(host or {})
    return {"Id": OLD_ID, "Config": c, "HostConfig": h,
            "Mounts": mounts if mounts is not None else [
                {"Type": "volume", "Name": "data", "Destination": "/data", "RW": True},
                {"Type": "volume", "Name": ANON, "Destination": "/state", "RW": True}],
            "NetworkSettings": {"Networks": networks or {}}}


IMAGE = {"Config": {"Env": ["PATH=/bin"], "Labels": {"org.demo.release": "1"}, "Entrypoint": ["/entry"],
                    "Cmd": ["serve"], "ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/state": {}},
                    "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30_000_000_000}}}
NEW_IMAGE = {"Config": {"Env": ["PATH=/usr/bin"], "Labels": {"org.demo.release": "2"}}}


def recreate(old, joined=None):
    return recreate_config(old, IMAGE, NEW_IMAGE, "app:2", joined)


def test_user_env_is_kept_and_the_old_image_defaults_are_dropped():
    cfg = recreate(old_container())["config"]
    assert cfg["Image"] == "app:2" and cfg["Env"] == ["GREETING=hi"]


def test_labels_keep_the_users_own_and_the_users_override_of_an_image_label():
    cfg = recreate(old_container())["config"]
    assert cfg["Labels"] == {"org.user.owner": "ops"}
    cfg = recreate(old_container({"Labels": {"org.demo.release": "pinned"}}))["config"]
    assert cfg["Labels"] == {"org.demo.release": "pinned"}


@pytest.mark.parametrize("config,expected", [
    ({}, {}),  # both the image's: the new image's apply
    ({"Cmd": ["serve", "--debug"]}, {"Cmd": ["serve", "--debug"]}),
    ({"Entrypoint": ["/custom"]}, {"Entrypoint": ["/custom"], "Cmd": ["serve"]}),  # Cmd goes with it
    ({"Entrypoint": None, "Cmd": None}, {"Entrypoint": [""]}),  # entrypoint reset by the user stays reset
])
def test_entrypoint_and_cmd_are_carried_only_when_the_user_set_them(config, expected):
    cfg = recreate(old_container(config))["config"]
    assert {k: cfg[k] for k in ("Entrypoint", "Cmd") if k in cfg} == expected


def test_a_healthcheck_override_carries_only_what_differs_from_the_image():
    hc = {"Test": ["CMD", "true"], "Interval": 5_000_000_000}
    assert recreate(old_container({"Healthcheck": hc}))["config"]["Healthcheck"] == {"Interval": 5_000_000_000}
    same = copy.deepcopy(IMAGE["Config"]["Healthcheck"])
    assert "Healthcheck" not in recreate(old_container({"Healthcheck": same}))["config"]


def test_anonymous_volumes_are_bound_again_by_name_so_their_data_follows():
    old = old_container(host={"Binds": ["data:/data", "/cache"]},
                        mounts=[{"Type": "volume", "Name": "data", "Destination": "/data", "RW": True},
                                {"Type": "volume", "Name": ANON, "Destination": "/state", "RW": True},
                                {"Type": "volume", "Name": "e" * 64, "Destination": "/cache", "RW": False}])
    binds = recreate(old)["config"]["HostConfig"]["Binds"]
    assert binds == ["data:/data", f"{'e' * 64}:/cache:ro", f"{ANON}:/state"]


def test_an_anonymous_mount_in_hostconfig_mounts_gets_its_volume_name():
    old = old_container(host={"Binds": None, "Mounts": [{"Type": "volume", "Target": "/state"}]},
                        mounts=[{"Type": "volume", "Name": ANON, "Destination": "/state", "RW": True}])
    hc = recreate(old)["config"]["HostConfig"]
    assert hc["Mounts"] == [{"Type": "volume", "Target": "/state", "Source": ANON}] and hc["Binds"] is None


def test_a_joined_network_namespace_is_named_not_id():
    old = old_container(host={"NetworkMode": "container:" + "9" * 64})
    cfg = recreate(old, {"9" * 64: "db"})["config"]
    assert cfg["HostConfig"]["NetworkMode"] == "container:db"
    assert "Hostname" not in cfg and "NetworkingConfig" not in cfg


def test_links_are_rewritten_from_inspect_form_to_create_form():
    cfg = recreate(old_container(host={"Links": ["/db:/app/database", "/cache"]}))["config"]
    assert cfg["HostConfig"]["Links"] == ["db:database", "cache"]


def test_a_published_port_is_exposed_even_when_the_old_image_declared_it():
    old = old_container(host={"PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "80"}]}})
    assert recreate(old)["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert "ExposedPorts" not in recreate(old_container())["config"]


def test_extra_networks_are_connected_after_create_without_the_short_id_alias():
    nets = {"bridge": {"Aliases": None},
            "backend": {"Aliases": [OLD_ID[:12], "api"], "IPAMConfig": {"IPv4Address": "10.0.0.5"}},
            "frontend": {"Aliases": [OLD_ID[:12]], "DriverOpts": {"x": "y"}}}
    body = recreate(old_container(networks=nets))
    assert body["config"]["NetworkingConfig"] == {"EndpointsConfig": {"bridge": {}}}
    assert body["extra_networks"] == {"backend": {"Aliases": ["api"], "IPAMConfig": {"IPv4Address": "10.0.0.5"}},
                                      "frontend": {"DriverOpts": {"x": "y"}}}


def test_a_hostname_the_user_chose_is_kept_and_the_engine_default_is_not():
    assert "Hostname" not in recreate(old_container())["config"]
    assert recreate(old_container({"Hostname": "web"}))["config"]["Hostname"] == "web"


def test_stop_timeout_zero_is_a_setting_and_is_kept():
    assert recreate(old_container())["config"]["StopTimeout"] == 0


def run(**run):
    return run_config(run, "app:1")["config"]


def test_first_install_publishes_ports_and_exposes_them():
    cfg = run(ports=["127.0.0.1:80:8080", "9090/udp"])
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "9090/udp": {}}
    assert cfg["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "80"}],
                                                 "9090/udp": [{"HostIp": "", "HostPort": ""}]}


def test_first_install_binds_named_and_host_volumes_and_declares_anonymous_ones():
    cfg = run(volumes=["data:/data", "/srv/x:/x:ro", "/cache", "/tmpro:ro"])
    assert cfg["HostConfig"]["Binds"] == ["data:/data", "/srv/x:/x:ro", "/tmpro:ro"]
    assert cfg["Volumes"] == {"/cache": {}}


def test_first_install_refuses_a_volume_it_cannot_read():
    with pytest.raises(UsageProblem, match="cannot parse volume"):
        run(volumes=["a:b:c:d"])


def test_first_install_env_restart_caps_and_network():
    cfg = run(env={"A": "1", "B": "x=y"}, restart="on-failure:3", cap_add=["NET_ADMIN"], network="backend")
    assert cfg["Env"] == ["A=1", "B=x=y"]
    assert cfg["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert cfg["HostConfig"]["CapAdd"] == ["NET_ADMIN"] and cfg["HostConfig"]["NetworkMode"] == "backend"
    assert run(restart="always")["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}


@pytest.mark.parametrize("command,expected", [
    ("serve --port 8080 'a b'", ["serve", "--port", "8080", "a b"]),
    (["serve", "a b"], ["serve", "a b"]),
])
def test_first_install_command_is_split_like_a_shell_when_a_string(command, expected):
    assert run(command=command)["Cmd"] == expected
    assert "Cmd" not in run(command=None)
