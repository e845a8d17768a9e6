"""The one rule for the volumes, networks and services a bundle names (importer.ownership): whose
they are, and what a bundle of another app may do with them. Pure: no engine."""

from __future__ import annotations

import pytest

from bundlecore.refusals import OwnershipRefused
from bundlecore.release import target_from_json
from importer.hostpolicy import HostPolicy, Setting
from importer.ownership import APP_LABEL, Resource, Use, decide, named_resources, owner_of


@pytest.mark.parametrize("labels,holders,owner", [
    ({APP_LABEL: "a"}, set(), "a"),           # created by bundle for app a
    ({APP_LABEL: "a"}, {"b"}, "a"),           # the label wins over who mounts it (b: shared with it)
    ({}, {"b", "c"}, "b"),                    # no label: an installed app's container uses it
    ({}, {"a", "b"}, "a"),                    # ... this app's own container first
    (None, set(), None),                      # an admin's volume no app uses
])
def test_a_resource_belongs_to_its_label_else_to_the_installed_app_that_uses_it(labels, holders, owner):
    assert owner_of("a", labels, holders) == owner


def _decide(owner, *, exists=True, granted_by=None, adopt=False):
    return decide("b", Resource.VOLUME, "data", owner, exists=exists, granted_by=granted_by, adopt=adopt,
                  policy_path="/keys/host-policy.toml")


def test_another_apps_volume_is_refused_naming_the_owner_and_the_grant_that_would_share_it():
    with pytest.raises(OwnershipRefused) as e:
        _decide("a")
    assert str(e.value) == ('volume data belongs to app a: a bundle of app b may not use it '
                            '(to share it: [apps.b] shared_volumes = ["data"] in /keys/host-policy.toml)')
    with pytest.raises(OwnershipRefused):
        _decide("a", adopt=True)  # --adopt takes only what no app owns


def test_a_volume_no_app_owns_needs_adopt_and_then_the_plan_says_so():
    with pytest.raises(OwnershipRefused, match="volume data exists and no app owns it: .* only with --adopt"):
        _decide(None)
    claim = _decide(None, adopt=True)
    assert claim.use is Use.ADOPT and claim.line().startswith("adopt volume data")


def test_own_new_and_shared_volumes_are_allowed():
    assert _decide("b").use is Use.OWN and _decide("b").line() is None
    assert _decide(None, exists=False).use is Use.CREATE
    shared = _decide("a", granted_by="[apps.b] shared_volumes")
    assert shared.use is Use.SHARED
    assert shared.line() == ("use volume data of app a (granted by [apps.b] shared_volumes; never backed up, "
                             "restored or removed by this app)")


def test_a_service_of_another_app_cannot_be_shared_or_adopted():
    with pytest.raises(OwnershipRefused, match="service web belongs to app a: a bundle of app b may not use it$"):
        decide("b", Resource.SERVICE, "web", "a", exists=True, granted_by=None, adopt=True, policy_path="")


def test_the_resources_a_target_names_leave_the_defaults_and_joined_namespaces_aside():
    container = target_from_json({"kind": "container", "name": "c", "image": "i:1",
                                  "run": {"volumes": ["data:/d", "/srv:/s", "/anon", "data:/again"],
                                          "network": "backend"}})
    assert named_resources(container) == [(Resource.VOLUME, "data"), (Resource.NETWORK, "backend")]
    for network in ("bridge", "host", "none", "container:db"):
        t = target_from_json({"kind": "container", "name": "c", "image": "i:1", "run": {"network": network}})
        assert named_resources(t) == []
    service = target_from_json({"kind": "service", "name": "web", "image": "i:1", "registry": "r:5000",
                                "run": {"networks": ["front"]},
                                "stages": [{"services": ["web-canary"], "soak": 0}, {"services": ["web"], "soak": 0}]})
    assert named_resources(service) == [(Resource.NETWORK, "front"), (Resource.SERVICE, "web-canary"),
                                        (Resource.SERVICE, "web")]


def test_sharing_is_granted_per_app_or_for_every_app(tmp_path):
    (tmp_path / "host-policy.toml").write_text('[host]\nshared_networks = ["front"]\n'
                                               '[apps.shop]\nshared_volumes = ["media"]\n')
    policy = HostPolicy.load(tmp_path)
    assert policy.shares("shop", Setting.SHARED_VOLUMES, "media") == "[apps.shop] shared_volumes"
    assert policy.shares("blog", Setting.SHARED_VOLUMES, "media") is None
    assert policy.shares("blog", Setting.SHARED_NETWORKS, "front") == "[host] shared_networks"
