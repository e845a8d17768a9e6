"""Which mounts of a Swarm service spec this node backs up (importer.kinds.service.volumes.local_volumes)."""

from __future__ import annotations

import pytest

from importer.kinds.service.volumes import local_volumes


def spec(*mounts: dict) -> dict:
    return {"TaskTemplate": {"ContainerSpec": {"Image": "x", "Mounts": list(mounts)}}}


def vol(source: str, target: str) -> dict:
    return {"type": "volume", "name": source, "source": None, "destination": target}


@pytest.mark.parametrize("mounts, want", [
    ([{"Type": "volume", "Source": "data", "Target": "/data"}], [vol("data", "/data")]),
    ([{"Type": "volume", "Source": "b", "Target": "/z"}, {"Type": "volume", "Source": "a", "Target": "/a"}],
     [vol("a", "/a"), vol("b", "/z")]),
    ([{"Type": "volume", "Source": "d", "Target": "/d",
       "VolumeOptions": {"DriverConfig": {"Name": "local"}}}], [vol("d", "/d")]),
    ([{"Type": "volume", "Source": "d", "Target": "/d", "ReadOnly": True}], []),          # cannot change
    ([{"Type": "volume", "Target": "/anon"}], []),                                       # one per task
    ([{"Type": "bind", "Source": "/srv/d", "Target": "/d"}], []),                        # a path on any node
    ([{"Type": "tmpfs", "Target": "/tmp"}], []),
    ([{"Type": "volume", "Source": "nfs", "Target": "/d",
       "VolumeOptions": {"DriverConfig": {"Name": "rexray/ebs"}}}], []),                 # shared storage
    ([], []),
])
def test_only_writable_named_local_volumes_are_backed_up(mounts, want):
    assert local_volumes(spec(*mounts)) == want


def test_a_spec_without_mounts_has_nothing_to_back_up():
    assert local_volumes({"TaskTemplate": {"ContainerSpec": {"Image": "x"}}}) == []
    assert local_volumes({}) == []
