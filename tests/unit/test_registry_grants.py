"""The registry is the host's choice (issue 18, finding 3): where a push lands (one normalisation),
which registries the host policy grants, and a role's repository scope checked on that destination."""

import pytest

from bundlecore.errors import EnvironmentProblem
from bundlecore.registrypath import push_destination, registry_address
from bundlecore.trust import Role
from importer.hostpolicy import HostPolicy, HostPolicyRefused
from importer.pushes import PlannedPush

A = "A" * 40


@pytest.mark.parametrize("ref, path", [
    ("evil.example/victim/web:1.0", "victim/web"),          # the finding: the host is stripped
    ("registry.intranet:5000/acme/web:2", "acme/web"),
    ("localhost/web:1", "web"),
    ("acme/web:2", "acme/web"),
    ("web:2", "web"),
    ("a.b/c/d/e:1", "c/d/e"),
])
def test_a_push_lands_under_the_path_with_the_registry_host_stripped(ref, path):
    d = push_destination("127.0.0.1:5000", ref)
    assert (d.source, d.path, d.repository) == (ref, path, f"127.0.0.1:5000/{path}")
    assert d.ref == f"127.0.0.1:5000/{path}:{ref.rsplit(':', 1)[1]}"


@pytest.mark.parametrize("text, normal", [
    ("127.0.0.1:5000", "127.0.0.1:5000"), ("Registry.Intranet:5000", "registry.intranet:5000"),
    ("[::1]:5000", "[::1]:5000"), ("http://r:5000", None), ("r:5000/path", None), ("r", None), ("r:0", None),
    ("r:70000", None), ("", None),
])
def test_a_registry_address_is_host_port_compared_in_lower_case(text, normal):
    assert registry_address(text) == normal


SCOPED = Role("evil", [A], 1, repos=["evil.example/*"])


@pytest.mark.parametrize("role, ref, outside", [
    # the finding: in scope as written, out of scope where it lands
    (SCOPED, "evil.example/victim/web:1.0",
     "push of evil.example/victim/web:1.0 to 127.0.0.1:5000/victim/web:1.0"),
    (Role("acme", [A], 1, repos=["acme/*"]), "acme/web:2", None),
    (Role("acme", [A], 1, repos=["acme/web"]), "acme/web:2", None),
    (Role("acme", [A], 1, repos=["acme/*"]), "registry.intranet:5000/acme/web:2", "image registry.intranet:5000/acme/web:2"),
    (Role("both", [A], 1, repos=["registry.intranet:5000/acme/*", "acme/*"]), "registry.intranet:5000/acme/web:2", None),
    # a scope naming the intranet registry itself covers what lands there
    (Role("intranet", [A], 1, repos=["127.0.0.1:5000/acme/*", "evil.example/acme/*"]), "evil.example/acme/web:2", None),
    (Role("apps-only", [A], 1, apps=["demo"]), "evil.example/victim/web:1.0", None),
])
def test_a_roles_repository_scope_is_checked_on_the_destination_of_each_push(role, ref, outside):
    assert role.out_of_scope("demo", [ref]) in (None, f"image {ref}")
    assert role.out_of_scope("demo", [ref], [push_destination("127.0.0.1:5000", ref)]) == outside


POLICY = """
[host]
registries = ["registry.intranet:5000"]

[apps.shop]
registries = ["127.0.0.1:5000"]
"""


@pytest.fixture
def policy(tmp_path):
    (tmp_path / "host-policy.toml").write_text(POLICY)
    return HostPolicy.load(tmp_path)


@pytest.mark.parametrize("app, registry, granted_by", [
    ("shop", "127.0.0.1:5000", "[apps.shop] registries"),
    ("shop", "REGISTRY.intranet:5000", "[host] registries"),
    ("other", "registry.intranet:5000", "[host] registries"),
])
def test_a_granted_registry_is_allowed_and_says_which_key_granted_it(policy, app, registry, granted_by):
    access = policy.check_registry(app, registry, "--registry")
    assert access.granted_by == granted_by
    assert access.line() == f"pushes to registry {registry}"


@pytest.mark.parametrize("app, registry", [
    ("other", "127.0.0.1:5000"),           # granted to another app
    ("shop", "127.0.0.1:5001"),            # another port
    ("shop", "localhost:5000"),            # another name for it: grants compare the address as written
])
def test_an_ungranted_registry_is_refused_with_the_key_that_would_grant_it(policy, app, registry):
    with pytest.raises(HostPolicyRefused) as e:
        policy.check_registry(app, registry, "target.registry")
    assert e.value.line() == (f"refused: host policy: target.registry asks for pushes to registry {registry}, which "
                              f"this host does not allow (to grant it: [apps.{app}] registries = "
                              f'["{registry.lower()}"] in {policy.path})')


def test_no_policy_grants_no_registry(tmp_path):
    with pytest.raises(HostPolicyRefused):
        HostPolicy.load(tmp_path).check_registry("demo", "127.0.0.1:5000", "--registry")


@pytest.mark.parametrize("value", ['["https://r:5000"]', '["r"]', '"r:5000"', '["r:5000/acme"]'])
def test_a_registries_grant_that_is_not_a_list_of_host_port_stops_the_import(tmp_path, value):
    (tmp_path / "host-policy.toml").write_text(f"[host]\nregistries = {value}\n")
    with pytest.raises(EnvironmentProblem, match="registries"):
        HostPolicy.load(tmp_path)


D = push_destination("127.0.0.1:5000", "acme/web:2")
ID, OLD = "sha256:" + "1" * 64, "sha256:" + "2" * 64


@pytest.mark.parametrize("push, words", [
    (PlannedPush(D, ID), "(new tag)"),
    (PlannedPush(D, ID, exists=True), "(already this image)"),
    (PlannedPush(D, ID, exists=True, replaces=OLD, owner="shop"), f"(over {OLD[:19]}…, pushed by app shop)"),
    (PlannedPush(D, ID, exists=True, replaces=OLD), f"(over {OLD[:19]}…, adopted)"),
])
def test_every_push_is_a_plan_line_naming_source_destination_tag_and_what_it_replaces(push, words):
    assert push.line() == f"push acme/web:2 ({ID[:19]}…) to 127.0.0.1:5000/acme/web tag 2 {words}"


def test_a_tag_is_recorded_under_its_registry_in_lower_case():
    """`LOCALHOST:5000` and `localhost:5000` are one grant, so one owner record too."""
    assert push_destination("LOCALHOST:5000", "a/b:1").key == push_destination("localhost:5000", "a/b:1").key \
        == "localhost:5000/a/b:1"


def test_the_tags_an_app_pushes_are_claimed_before_and_recorded_after_the_push(tmp_path):
    from importer import pushes
    from importer.registry import PushedImage
    from importer.state import StateDir
    state = StateDir(tmp_path / "state")
    mine = PlannedPush(push_destination("R:5000", "acme/web:2"), ID)
    theirs = PlannedPush(push_destination("R:5000", "shop/web:1"), ID, exists=True, owner="shop", takes=False)
    plan = pushes.PushPlan("R:5000", (mine, theirs))
    pushes.claim(state, "acme", plan)
    assert pushes.tagged_by(state) == {"r:5000/acme/web:2": "acme"}
    pushes.record(state, "acme", plan, (PushedImage("acme/web:2", "R:5000/acme/web:2", OLD),
                                        PushedImage("shop/web:1", "R:5000/shop/web:1", OLD)))
    assert state.read_json(state.root / pushes.RECORD) == {
        "tags": {"r:5000/acme/web:2": {"app": "acme", "image_id": ID, "digest": OLD}}}
