"""The one parser of docker's -v and -p syntax (bundlecore.runspec): what each spec means."""

import pytest

from bundlecore.errors import UsageProblem
from bundlecore.runspec import PortSpec, VolumeKind, VolumeSpec, named_volumes, parse_port, parse_volume


@pytest.mark.parametrize("spec,expected", [
    ("/data", VolumeSpec(VolumeKind.ANONYMOUS, None, "/data")),
    ("/data:ro", VolumeSpec(VolumeKind.ANONYMOUS, None, "/data", "ro")),
    ("/data:rw", VolumeSpec(VolumeKind.ANONYMOUS, None, "/data", "rw")),
    ("app-data:/data", VolumeSpec(VolumeKind.NAMED, "app-data", "/data")),
    ("app-data:/data:ro", VolumeSpec(VolumeKind.NAMED, "app-data", "/data", "ro")),
    ("/srv/app:/data", VolumeSpec(VolumeKind.BIND, "/srv/app", "/data")),
    ("/srv/app:/data:ro,z", VolumeSpec(VolumeKind.BIND, "/srv/app", "/data", "ro,z")),
])
def test_each_volume_spec_is_read_as_the_engine_reads_it(spec, expected):
    assert parse_volume(spec) == expected


def test_a_volume_spec_with_too_many_colons_is_a_usage_error_that_shows_the_syntax():
    with pytest.raises(UsageProblem, match=r"cannot parse volume 'a:/b:ro:x' \(name:/path"):
        parse_volume("a:/b:ro:x")


def test_only_named_volumes_are_named():
    assert named_volumes(["db:/var/lib/db", "/srv:/srv", "/cache", "/x:ro", "logs:/logs:ro"]) == ["db", "logs"]


@pytest.mark.parametrize("spec,expected", [
    ("8080", PortSpec("8080/tcp", "", "")),
    ("80:8080", PortSpec("8080/tcp", "", "80")),
    ("127.0.0.1:80:8080", PortSpec("8080/tcp", "127.0.0.1", "80")),
    ("127.0.0.1::8080", PortSpec("8080/tcp", "127.0.0.1", "")),
    ("53:53/udp", PortSpec("53/udp", "", "53")),
    (8080, PortSpec("8080/tcp", "", "")),
])
def test_each_port_spec_gives_the_engine_port_key_and_host_binding(spec, expected):
    assert parse_port(spec) == expected


@pytest.mark.parametrize("spec", ["http", "80:http", "x:80:8080:1", "80:", "abc:8080", "::1:80:8080"])
def test_a_bad_port_spec_is_a_usage_error_that_shows_the_syntax(spec):
    with pytest.raises(UsageProblem, match=r"cannot parse port .*\[ip:\]hostport:containerport"):
        parse_port(spec)
