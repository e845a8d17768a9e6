"""What differs between Docker and Podman behind the same API, without an engine: which engine
answers, how a loaded image's name maps back to the signed ref, Podman's errors, the engine-down line."""

import io
import tarfile

import pytest

from bundlecore.engine.dialects import (PODMAN_IMPLICIT_REGISTRIES, EngineKind, archive_member_name, describe,
                                        engine_kind, has_registry,
                                        podman_container, podman_error, podman_rootless, podman_start_outran,
                                        rootless_socket,
                                        signed_ref_of, unreachable_line)
from bundlecore.engine.errors import EngineConflict, EngineError, EngineNotFound
from bundlecore.engine.podman import renamed_tar

# the /version answers of the two engines of this machine (trimmed)
DOCKER_VERSION = {"Platform": {"Name": "Docker Engine - Community"}, "Version": "20.10.24", "ApiVersion": "1.41",
                  "Components": [{"Name": "Engine", "Version": "20.10.24"}, {"Name": "containerd", "Version": "1.6"}]}
PODMAN_VERSION = {"Platform": {"Name": "linux/amd64/debian-12"}, "Version": "4.3.1", "ApiVersion": "1.41",
                  "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}, {"Name": "Conmon"},
                                 {"Name": "OCI Runtime (runc)"}]}


@pytest.mark.parametrize("version, kind", [
    (DOCKER_VERSION, EngineKind.DOCKER),
    (PODMAN_VERSION, EngineKind.PODMAN),
    ({"Version": "19.03"}, EngineKind.DOCKER),              # an old Docker lists no components
    ({"Components": None}, EngineKind.DOCKER),
    ({"Components": ["junk", {"Name": 3}]}, EngineKind.DOCKER),
])
def test_the_engine_is_told_apart_by_its_version_components(version, kind):
    assert engine_kind(version) is kind


def test_the_engine_is_named_with_its_version_and_api():
    assert describe(EngineKind.PODMAN, PODMAN_VERSION) == "Podman 4.3.1, API 1.41"
    assert describe(EngineKind.DOCKER, {}) == "Docker ?, API ?"
    assert describe(EngineKind.PODMAN, PODMAN_VERSION, rootless=True) == "Podman 4.3.1, API 1.41, rootless"


# /libpod/info of the two Podman services of this machine (trimmed): the rootful test service and a
# user's rootless one (`podman system service` run by that user, XDG_RUNTIME_DIR=/run/user/1001)
ROOTFUL_INFO = {"host": {"security": {"rootless": False, "seccompEnabled": True}}}
ROOTLESS_INFO = {"host": {"security": {"rootless": True, "seccompEnabled": True},
                          "remoteSocket": {"path": "unix:///run/user/1001/podman/podman.sock", "exists": True}}}


@pytest.mark.parametrize("info, rootless", [(ROOTLESS_INFO, True), (ROOTFUL_INFO, False), ({}, False),
                                            ({"host": {"security": {"rootless": "yes"}}}, False)])
def test_a_rootless_podman_is_told_by_its_own_info(info, rootless):
    assert podman_rootless(info) is rootless


@pytest.mark.parametrize("address, rootless", [
    ("unix:///run/user/1001/podman/podman.sock", True),
    ("unix:///var/run/user/0/podman/podman.sock", True),
    ("unix:///run/podman/podman.sock", False),
    ("unix:///run/bundle-podman.sock", False),
    ("unix:///run/user/1001/podman/podman.sock.evil", False),
    ("unix:///run/user/me/podman/podman.sock", False),
    ("tcp://127.0.0.1:2375", False),
])
def test_a_rootless_socket_is_the_users_runtime_dir(address, rootless):
    assert rootless_socket(address) is rootless


SIGNED = {"demo/app:1.0.0": "sha256:" + "a" * 64, "busybox:1.36": "sha256:" + "b" * 64,
          "registry.example:5000/team/web:2.0": "sha256:" + "c" * 64, "localhost/own:1": "sha256:" + "d" * 64}


@pytest.mark.parametrize("name, implicit, ref", [
    ("demo/app:1.0.0", (), "demo/app:1.0.0"),
    ("demo/app:1.0.0", PODMAN_IMPLICIT_REGISTRIES, "demo/app:1.0.0"),
    ("localhost/demo/app:1.0.0", PODMAN_IMPLICIT_REGISTRIES, "demo/app:1.0.0"),
    ("docker.io/demo/app:1.0.0", PODMAN_IMPLICIT_REGISTRIES, "demo/app:1.0.0"),
    ("docker.io/library/busybox:1.36", PODMAN_IMPLICIT_REGISTRIES, "busybox:1.36"),
    ("localhost/busybox:1.36", PODMAN_IMPLICIT_REGISTRIES, "busybox:1.36"),
    ("registry.example:5000/team/web:2.0", PODMAN_IMPLICIT_REGISTRIES, "registry.example:5000/team/web:2.0"),
    ("localhost/own:1", PODMAN_IMPLICIT_REGISTRIES, "localhost/own:1"),
    # Docker never adds a registry: the same names are not the signed ones there
    ("localhost/demo/app:1.0.0", (), None),
    ("docker.io/demo/app:1.0.0", (), None),
    # a registry in front of a ref that has one already, another tag, another repository: not signed
    ("localhost/registry.example:5000/team/web:2.0", PODMAN_IMPLICIT_REGISTRIES, None),
    ("localhost/demo/app:1.0.1", PODMAN_IMPLICIT_REGISTRIES, None),
    ("localhost/demo/app2:1.0.0", PODMAN_IMPLICIT_REGISTRIES, None),
    ("quay.io/demo/app:1.0.0", PODMAN_IMPLICIT_REGISTRIES, None),
    ("localhost/localhost/own:1", PODMAN_IMPLICIT_REGISTRIES, None),
])
def test_a_loaded_name_maps_back_to_the_signed_ref_only_through_the_engines_own_prefixes(name, implicit, ref):
    assert signed_ref_of(name, SIGNED, implicit) == ref


@pytest.mark.parametrize("ref, has", [("demo/app:1", False), ("app:1", False), ("localhost/app:1", True),
                                      ("registry.example/app:1", True), ("127.0.0.1:5000/app:1", True),
                                      ("localhost:5000/app:1", True), ("library/busybox", False)])
def test_a_registry_is_a_first_component_with_a_dot_a_port_or_localhost(ref, has):
    assert has_registry(ref) is has


@pytest.mark.parametrize("error, kind", [
    (EngineError(500, 'container create: the container name "demo" is already in use by 475a22. You have to remove '
                      'that container to be able to reuse that name: that name is already in use'), EngineConflict),
    (EngineError(500, 'no container with name or ID "nope" found: no such container'), EngineNotFound),
    (EngineError(500, "failed to find image x: x: No such image"), EngineNotFound),
    (EngineError(500, "something else broke"), EngineError),
    (EngineError(None, "connection reset by peer"), EngineError),
    (EngineNotFound(404, "no such container"), EngineNotFound),
])
def test_podmans_500_answers_become_the_errors_docker_would_give(error, kind):
    got = podman_error(error)
    assert type(got) is kind and got.message == error.message and got.status == error.status


@pytest.mark.parametrize("status, message, outran", [
    (500, "OCI runtime error: runc: read /proc/41523/cgroup: no such process", True),
    (500, "crun: read /proc/7/cgroup: No such process: OCI runtime error", True),
    (500, "OCI runtime error: runc: exec: \"/app\": no such file or directory", False),
    (500, "no such container", False),
    (None, "read /proc/7/cgroup: no such process", False),
])
def test_a_podman_start_that_lost_the_race_with_its_exit_is_told_from_one_that_failed(status, message, outran):
    assert podman_start_outran(EngineError(status, message)) is outran


def test_the_engine_down_line_names_the_engine_the_address_is_for():
    assert unreachable_line("unix:///var/run/docker.sock") == \
        "Docker engine unreachable at unix:///var/run/docker.sock; is dockerd running?"
    assert unreachable_line("unix:///run/podman/podman.sock") == ("Podman engine unreachable at "
                                                                  "unix:///run/podman/podman.sock; is `podman system "
                                                                  "service` (podman.socket) running?")
    assert unreachable_line("unix:///run/user/1001/podman/podman.sock") == (
        "Podman engine unreachable at unix:///run/user/1001/podman/podman.sock; is the rootless `podman system "
        "service` of that user running (`systemctl --user enable --now podman.socket` as that user)?")


def test_podmans_inspect_record_reads_as_dockers():
    info = {"State": {"Running": True, "Health": {"Status": "", "FailingStreak": 0, "Log": None}},
            "HostConfig": {"Ulimits": [{"Name": "RLIMIT_NOFILE", "Soft": 20000, "Hard": 20000},
                                       {"Name": "nproc", "Soft": 1, "Hard": 2}]}}
    assert podman_container(info) == {"State": {"Running": True},
                                      "HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 20000, "Hard": 20000},
                                                                 {"Name": "nproc", "Soft": 1, "Hard": 2}]}}
    declared = {"State": {"Health": {"Status": "starting"}}, "HostConfig": {"Ulimits": None}}
    assert podman_container(declared) == {"State": {"Health": {"Status": "starting"}}, "HostConfig": {"Ulimits": None}}


@pytest.mark.parametrize("name, renamed", [("", "data"), (".", "data"), ("/a.txt", "data/a.txt"),
                                           ("/sub/b", "data/sub/b"), ("data/a.txt", "data/a.txt"), ("data", "data")])
def test_podmans_archive_members_are_named_under_the_paths_base_name(name, renamed):
    assert archive_member_name(name, "data") == renamed


def test_a_renamed_archive_keeps_every_members_content_and_metadata():
    """Podman's archive of a stopped container's mount ("", "/file", Go's PAX for long names) as
    Docker's ("data", "data/file"), streamed in odd-sized chunks."""
    long = "/" + "d" * 120 + "/f.bin"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data, extra in [("", tarfile.DIRTYPE, b"", {}), ("/a.txt", tarfile.REGTYPE, b"hello\n", {}),
                                        (long[:-6], tarfile.DIRTYPE, b"", {}),
                                        (long, tarfile.REGTYPE, bytes(range(256)) * 40, {"uid": 1000, "mode": 0o640}),
                                        ("/hard", tarfile.LNKTYPE, b"", {"linkname": "/a.txt"}),
                                        ("/sym", tarfile.SYMTYPE, b"", {"linkname": "/etc/passwd"})]:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime = kind, len(data), 1_700_000_000
            for k, v in extra.items():
                setattr(info, k, v)
            t.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    out = b"".join(renamed_tar((raw[i:i + 777] for i in range(0, len(raw), 777)),
                               lambda n: archive_member_name(n, "data"), "/data"))
    with tarfile.open(fileobj=io.BytesIO(out)) as t:
        got = {m.name: (m.type, m.mode, m.uid, m.mtime, m.linkname, t.extractfile(m).read() if m.isreg() else None)
               for m in t.getmembers()}
    assert list(got) == ["data", "data/a.txt", "data" + long[:-6], "data" + long, "data/hard", "data/sym"]
    assert got["data" + long] == (tarfile.REGTYPE, 0o640, 1000, 1_700_000_000, "", bytes(range(256)) * 40)
    assert got["data/a.txt"][5] == b"hello\n"
    assert got["data/hard"][4] == "data/a.txt" and got["data/sym"][4] == "/etc/passwd"  # a symlink's target is content


def test_a_stream_that_is_not_tar_is_an_engine_error():
    with pytest.raises(EngineError, match="the engine's archive of /data does not read as tar"):
        b"".join(renamed_tar(iter([b"x" * 1024]), lambda n: n, "/data"))

