"""Table tests of the pure parts of preflight (importer.kinds.container.plan: host ports, bind sources,
networks) and of the data fingerprint (importer.backup.data): no engine."""

from __future__ import annotations

import pytest

from importer.backup.data import changed_mounts, describe, fingerprint_script
from importer.kinds.container.plan import HostPort, bind_sources, networks_needed, port_holder, wanted_ports


@pytest.mark.parametrize("bindings,expected", [
    ({}, []),
    ({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18093"}]}, [HostPort("127.0.0.1", 18093, "tcp")]),
    ({"53/udp": [{"HostIp": "", "HostPort": "5353"}]}, [HostPort("", 5353, "udp")]),
    ({"8080/tcp": [{"HostIp": "", "HostPort": ""}]}, []),          # a random port: the engine's choice
    ({"8080/tcp": [{"HostIp": "", "HostPort": "8000-8010"}]}, []),  # a range: the engine's choice
    ({"8080/tcp": None}, []),
])
def test_wanted_ports_are_the_fixed_host_ports(bindings, expected):
    assert wanted_ports({"PortBindings": bindings}) == expected


PUBLISHED = {HostPort("127.0.0.1", 8080, "tcp"): "a", HostPort("", 9090, "tcp"): "b", HostPort("::", 53, "udp"): "c"}


@pytest.mark.parametrize("want,holder", [
    (HostPort("127.0.0.1", 8080, "tcp"), "a"),
    (HostPort("", 8080, "tcp"), "a"),               # every address includes 127.0.0.1
    (HostPort("0.0.0.0", 8080, "tcp"), "a"),
    (HostPort("127.0.0.2", 8080, "tcp"), None),     # another address: no clash
    (HostPort("127.0.0.1", 8080, "udp"), None),     # another protocol
    (HostPort("127.0.0.1", 9090, "tcp"), "b"),      # held on every address
    (HostPort("10.0.0.1", 53, "udp"), "c"),
    (HostPort("127.0.0.1", 8081, "tcp"), None),
])
def test_a_port_clashes_with_a_published_one_on_an_overlapping_address(want, holder):
    assert port_holder(want, PUBLISHED) == holder


def test_bind_sources_are_host_paths_only():
    hc = {"Binds": ["vol:/data", "/srv/app:/app:ro", "/anon"],
          "Mounts": [{"Type": "bind", "Source": "/etc/app.conf"}, {"Type": "volume", "Source": "v2"}]}
    assert bind_sources(hc) == ["/srv/app", "/etc/app.conf"]


@pytest.mark.parametrize("mode,extra,expected", [
    (None, {}, []), ("default", {}, []), ("bridge", {}, []), ("host", {}, []), ("none", {}, []),
    ("container:db", {}, []), ("appnet", {}, ["appnet"]), ("appnet", {"appnet": {}, "other": {}}, ["appnet", "other"]),
    ("bridge", {"bridge": {}, "backend": {}}, ["backend"]),
])
def test_only_user_defined_networks_are_needed(mode, extra, expected):
    body = {"config": {"HostConfig": {"NetworkMode": mode} if mode else {}}, "extra_networks": extra}
    assert networks_needed(body) == expected


MOUNTS = [{"type": "volume", "name": "app-data", "destination": "/data"},
          {"type": "bind", "source": "/srv/conf", "destination": "/conf"}]


@pytest.mark.parametrize("before,now,expected", [
    (None, {"/data": "x"}, []),                                  # an older journal: nothing to compare
    ({"/data": "a", "/conf": "b"}, {"/data": "a", "/conf": "b"}, []),
    ({"/data": "a", "/conf": "b"}, {"/data": "z", "/conf": "b"}, ["volume app-data"]),
    ({"/data": "a", "/conf": "b"}, {"/data": "a", "/conf": "z"}, ["bind mount /srv/conf"]),
    ({"/data": "a"}, {"/data": "a", "/conf": "b"}, ["bind mount /srv/conf"]),
])
def test_changed_mounts_names_each_mount_whose_fingerprint_moved(before, now, expected):
    assert changed_mounts(before, now, MOUNTS) == expected
    assert [describe(m) for m in MOUNTS] == ["volume app-data", "bind mount /srv/conf"]


def test_the_fingerprint_leaves_out_the_mount_roots_times_and_the_restore_scratch():
    script = fingerprint_script([{"destination": "/data"}, {"destination": "/it's/x.conf"}], root="/r")
    lines = script.splitlines()
    assert len(lines) == 2 and lines[0].endswith('echo 0 "${h%% *}"') and lines[1].endswith('echo 1 "${h%% *}"')
    assert "stat -c '%F|%a|%u|%g' ." in lines[0]           # the root: no times (the scratch dir touches them)
    assert "-path './.bundle-restore-*' -prune" in lines[0]
    assert "! -path ." in lines[0] and "%y|%z" in lines[0]  # every other entry with mtime and ctime
    assert "'/r/it'\"'\"'s/x.conf'" in lines[1]             # quoted


def test_the_helper_is_sought_in_the_apps_images_then_labelled_ones_then_any_smallest_first():
    """A labelled image comes before other apps' images (trying one runs a container of it, which
    holds it against its removal for that moment); each image is tried once."""
    from importer.backup.data import HELPER_IMAGE_LABEL, helper_search_order
    local = [{"Id": "other-big", "Size": 900}, {"Id": "old", "Size": 50},
             {"Id": "tools", "Size": 700, "Labels": {HELPER_IMAGE_LABEL: "1"}},
             {"Id": "other-small", "Size": 10, "Labels": None},
             {"Id": "tools-small", "Size": 600, "Labels": {HELPER_IMAGE_LABEL: ""}}]
    assert helper_search_order(["old", None, "new"], local) == [
        "old", "new", "tools-small", "tools", "other-small", "other-big"]
    assert helper_search_order([], []) == []
