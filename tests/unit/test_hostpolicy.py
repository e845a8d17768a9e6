"""The host-access policy: a signed bundle gets nothing from the host that the intranet did not grant."""

import pytest

from bundlecore.errors import EnvironmentProblem
from importer.hostpolicy import HostPolicy, HostPolicyRefused, Setting

GRANTS = """
[host]
bind_prefixes = ["/srv/bundle"]

[apps.anythingllm]
cap_add = ["SYS_ADMIN"]
bind_prefixes = ["/srv/anythingllm"]

[apps.router]
network_modes = ["host"]

[apps.agent]
bind_prefixes = ["/"]
"""


@pytest.fixture
def policy(tmp_path):
    (tmp_path / "host-policy.toml").write_text(GRANTS)
    return HostPolicy.load(tmp_path)


@pytest.fixture
def empty(tmp_path):
    return HostPolicy.load(tmp_path / "no-such-store")


@pytest.mark.parametrize("run, words", [
    ({"volumes": ["/etc:/host-etc:ro"]}, 'bind mount of host path /etc, which this host does not allow '
                                         '(to grant it: [apps.evil] bind_prefixes = ["/etc"]'),
    ({"volumes": ["/:/host:ro"]}, "the Docker engine socket via /, which this host does not allow"),
    ({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}, "engine_socket = true"),
    ({"volumes": ["/run:/r"]}, "the Docker engine socket via /run"),
    ({"network": "host"}, 'network_modes = ["host"]'),
    ({"network": "container:db"}, 'network_modes = ["container"]'),
    ({"cap_add": ["SYS_ADMIN"]}, 'cap_add = ["SYS_ADMIN"]'),
    ({"cap_add": ["CAP_NET_ADMIN"]}, 'cap_add = ["NET_ADMIN"]'),
    ({"cap_add": ["ALL"]}, 'cap_add = ["ALL"]'),
    ({"labels": {"io.bundle.helper": "restore"}}, "reserved label io.bundle.helper, which is reserved"),
    ({"labels": {"com.docker.compose.project": "x"}}, "reserved"),
])
def test_the_default_policy_denies_every_host_access(empty, run, words):
    with pytest.raises(HostPolicyRefused) as e:
        empty.check("evil", run)
    assert words in e.value.line()
    assert e.value.line().startswith("refused: host policy: target.run.")


def test_ordinary_settings_need_no_grant(empty):
    run = {"volumes": ["demo-data:/data", "/anon"], "ports": ["127.0.0.1:8080:8080"], "network": "appnet",
           "cap_add": ["NET_BIND_SERVICE", "CHOWN"], "labels": {"org.example.team": "a"}}
    assert empty.check("demo", run) == []


def test_grants_are_per_app(policy):
    granted = policy.check("anythingllm", {"cap_add": ["SYS_ADMIN"],
                                           "volumes": ["/srv/anythingllm/.env:/app/server/.env"]})
    assert [(a.setting, a.granted_by) for a in granted] == [
        (Setting.BIND_MOUNT, "[apps.anythingllm] bind_prefixes"), (Setting.CAP_ADD, "[apps.anythingllm] cap_add")]
    with pytest.raises(HostPolicyRefused, match=r"\[apps\.other\] cap_add"):
        policy.check("other", {"cap_add": ["SYS_ADMIN"]})


def test_host_wide_grants_apply_to_every_app(policy):
    assert policy.check("any", {"volumes": ["/srv/bundle/any:/data"]})[0].granted_by == "[host] bind_prefixes"


@pytest.mark.parametrize("source", ["/srv/bundlex:/d", "/srv:/d", "/srv/anythingllm-other:/d"])
def test_prefixes_match_whole_path_components(policy, source):
    with pytest.raises(HostPolicyRefused):
        policy.check("anythingllm", {"volumes": [source]})


def test_a_symlink_under_a_granted_prefix_cannot_lead_elsewhere(tmp_path):
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "escape").symlink_to("/etc")
    (tmp_path / "host-policy.toml").write_text(f'[host]\nbind_prefixes = ["{granted}"]\n')
    policy = HostPolicy.load(tmp_path)
    assert policy.check("a", {"volumes": [f"{granted}/data:/d"]})
    with pytest.raises(HostPolicyRefused, match="bind mount"):
        policy.check("a", {"volumes": [f"{granted}/escape:/d"]})


def test_a_root_prefix_grant_still_does_not_give_the_engine_socket(policy):
    assert policy.check("agent", {"volumes": ["/srv:/srv"]})
    with pytest.raises(HostPolicyRefused, match="engine_socket = true"):
        policy.check("agent", {"volumes": ["/:/host:ro"]})


def test_a_socket_grant_alone_does_not_give_the_whole_host(tmp_path):
    (tmp_path / "host-policy.toml").write_text("[apps.ci]\nengine_socket = true\n")
    policy = HostPolicy.load(tmp_path)
    assert policy.check("ci", {"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]})
    with pytest.raises(HostPolicyRefused, match='bind_prefixes = \\["/"\\]'):
        policy.check("ci", {"volumes": ["/:/host:ro"]})


def test_host_network_granted_only_where_granted(policy):
    assert policy.check("router", {"network": "host"})[0].granted_by == "[apps.router] network_modes"
    with pytest.raises(HostPolicyRefused):
        policy.check("router", {"network": "container:db"})


@pytest.mark.parametrize("text, words", [
    ("[host]\nbind_prefixes = [\"srv\"]\n", "clean absolute path"),
    ("[host]\nbind_prefixes = [\"/srv/../etc\"]\n", "clean absolute path"),
    ("[host]\nprivileged = true\n", "unknown key privileged"),
    ("[host]\nnetwork_modes = [\"pid\"]\n", "network_modes may hold only"),
    ("[host]\nengine_socket = \"yes\"\n", "true or false"),
    ("[roles.x]\nkeys = []\n", "only [host] and [apps.NAME]"),
    ("[host\n", "not valid TOML"),
])
def test_a_broken_policy_stops_the_import_instead_of_granting_anything(tmp_path, text, words):
    (tmp_path / "host-policy.toml").write_text(text)
    with pytest.raises(EnvironmentProblem, match=words.replace("[", r"\[").replace(".", r"\.")):
        HostPolicy.load(tmp_path)


# -- nested binds: a writable bind could plant a symlink the engine follows at the next restart --------

@pytest.mark.parametrize("volumes", [
    ["/srv/bundle/app:/data", "/srv/bundle/app/sub:/x"],            # the pair
    ["/srv/bundle/app/sub:/x", "/srv/bundle/app:/data"],            # either order
    ["/srv/bundle/app:/data:ro", "/srv/bundle/app/sub:/x"],         # the inner one writable
    ["/srv/bundle/app:/data", "/srv/bundle/app/sub:/x:ro"],         # the outer one writable
    ["/srv/bundle/app/:/data", "/srv/bundle/app/./sub/deeper:/x"],  # compared normalized
    ["/srv/bundle:/all", "/srv/bundle/app:/data"],                  # the granted prefix itself, writable
])
def test_nested_binds_are_refused_whatever_the_grants(policy, volumes):
    with pytest.raises(HostPolicyRefused) as e:
        policy.check("demo", {"volumes": volumes})
    line = e.value.line()
    assert line.startswith("refused: host policy: target.run.volumes.")
    assert "nested binds are never allowed" in line and "\n" not in line


@pytest.mark.parametrize("volumes", [
    ["/srv/bundle/app:/data", "/srv/bundle/application:/x"],        # whole components only
    ["/srv/bundle/a:/a", "/srv/bundle/b:/b"],
    ["/srv/bundle/app:/data:ro", "/srv/bundle/app/sub:/x:ro"],      # nothing writable: nothing to plant
    ["/srv/bundle/app:/a", "/srv/bundle/app:/b"],                   # the same directory twice
    ["/srv/bundle/app:/data", "appdata:/x", "/anon"],
])
def test_binds_that_do_not_nest_are_fine(policy, volumes):
    assert [a.setting for a in policy.check("demo", {"volumes": volumes})] == [Setting.BIND_MOUNT] * sum(
        v.startswith("/srv") for v in volumes)


def test_a_bind_nested_through_a_symlink_is_refused(tmp_path):
    (tmp_path / "host-policy.toml").write_text(f'[host]\nbind_prefixes = ["{tmp_path}"]\n')
    (tmp_path / "app" / "sub").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "app" / "sub")
    with pytest.raises(HostPolicyRefused, match="nested binds"):
        HostPolicy.load(tmp_path).check("demo", {"volumes": [f"{tmp_path}/app:/data", f"{tmp_path}/alias:/x"]})


def test_binds_of_other_containers_count_against_the_containers_not_among_themselves():
    from importer.hostpolicy import nested_binds
    ours = [("target.run.volumes.0", "/srv/bundle/b:/data")]
    assert "inside /srv/bundle (container agent's mount at /all)" in nested_binds(
        ours, [("container agent's mount at /all", "/srv/bundle:/all")])
    assert "container x's mount at /y is writable" not in (nested_binds(
        [("target.run.volumes.0", "/srv/bundle:/all")], [("container x's mount at /y", "/srv/bundle/b:/y")]) or "")
    assert nested_binds([("target.run.volumes.0", "/srv/bundle:/all:ro")],
                        [("container x's mount at /y", "/srv/bundle/b:/y:ro")]) is None
    assert nested_binds(ours, [("a", "/srv/other:/o"), ("b", "/srv/other/in:/i")]) is None  # theirs, not ours
    assert nested_binds(ours, [("a", "/srv/bundle/b:/same")]) is None  # the same directory shared
