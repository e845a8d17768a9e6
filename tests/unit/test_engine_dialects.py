"""What differs between Docker and Podman behind the same API, without an engine: which engine
answers, how a loaded image's name maps back to the signed ref, Podman's errors, the engine-down line."""

import pytest

from bundlecore.engine.dialects import (PODMAN_IMPLICIT_REGISTRIES, EngineKind, describe, engine_kind, has_registry,
                                        podman_container, podman_error, signed_ref_of, unreachable_line)
from bundlecore.engine.errors import EngineConflict, EngineError, EngineNotFound

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


def test_the_engine_down_line_names_the_engine_the_address_is_for():
    assert unreachable_line("unix:///var/run/docker.sock") == \
        "Docker engine unreachable at unix:///var/run/docker.sock; is dockerd running?"
    assert unreachable_line("unix:///run/podman/podman.sock") == ("Podman engine unreachable at "
                                                                  "unix:///run/podman/podman.sock; is `podman system "
                                                                  "service` (podman.socket) running?")


def test_podmans_inspect_record_reads_as_dockers():
    info = {"State": {"Running": True, "Health": {"Status": "", "FailingStreak": 0, "Log": None}},
            "HostConfig": {"Ulimits": [{"Name": "RLIMIT_NOFILE", "Soft": 20000, "Hard": 20000},
                                       {"Name": "nproc", "Soft": 1, "Hard": 2}]}}
    assert podman_container(info) == {"State": {"Running": True},
                                      "HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 20000, "Hard": 20000},
                                                                 {"Name": "nproc", "Soft": 1, "Hard": 2}]}}
    declared = {"State": {"Health": {"Status": "starting"}}, "HostConfig": {"Ulimits": None}}
    assert podman_container(declared) == {"State": {"Health": {"Status": "starting"}}, "HostConfig": {"Ulimits": None}}
