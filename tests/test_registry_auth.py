"""Pushing to a registry that wants credentials: Debian's docker-registry with htpasswd (Basic)
auth on loopback, the credentials in a temp DOCKER_CONFIG as `docker login` writes them (an `auths`
entry, or a credential helper program), a real single-node swarm and the real `bundle` command.
What a user relies on: with the right credentials the push and the digest check pass and the
service runs the pinned digest; without them, or with a wrong password, one line naming the
registry, exit 1, and nothing loaded, tagged, pushed or created; the password is never printed."""

from __future__ import annotations

import base64
import json
import subprocess

import docker
import pytest
import requests

from tests.daemons import start_registry
from tests.support import one_line
from tests.test_fleet import MANIFEST_V2, bundle_of, do_import, fleet, running, services, spec_image, swarm  # noqa: F401

USER, PASSWORD = "fleet", "s3cret-Pa55word"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True)
    (root / "htpasswd").write_text(htpasswd.stdout)
    daemon = start_registry(root, f"auth:\n  htpasswd:\n    realm: bundle-test\n    path: {root / 'htpasswd'}\n")
    yield daemon.address
    daemon.stop()


def docker_config(tmp_path, doc: dict) -> dict:
    """A temp DOCKER_CONFIG holding `doc` as its config.json; the env for `bundle`."""
    d = tmp_path / "docker-config"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(doc))
    return {"DOCKER_CONFIG": str(d)}


def auths(registry: str, password: str = PASSWORD) -> dict:
    return {"auths": {registry: {"auth": base64.b64encode(f"{USER}:{password}".encode()).decode()}}}


def served_digest(registry: str, repo: str, tag: str) -> str | None:
    r = requests.head(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_V2},
                      auth=(USER, PASSWORD), timeout=10)
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


def no_secret_in(state, *outputs: str) -> None:
    assert all(PASSWORD not in o for o in outputs)
    for f in state.rglob("*"):
        if f.is_file():
            assert PASSWORD.encode() not in f.read_bytes(), f"the password is in {f}"


def test_push_and_digest_check_authenticate_with_the_auths_entry_of_docker_config(
        fleet, services, swarm, auth_registry, tmp_path):
    r = do_import(fleet, bundle_of(fleet, "1.0.0", 1), services, registry=auth_registry,
                  env=docker_config(tmp_path, auths(auth_registry)))
    assert r.code == 0, str(r)
    digest = served_digest(auth_registry, fleet["repo"], "1.0.0")
    assert digest and "confirmed by the registry" in r.stdout
    pinned = f"{auth_registry}/{fleet['repo']}:1.0.0@{digest}"
    assert spec_image(swarm, fleet["web"]) == pinned and running(swarm, fleet["web"]) == {pinned: 2}
    no_secret_in(services, r.stdout, r.stderr)


def test_credentials_from_a_credential_helper_program_are_used_as_docker_does(
        fleet, services, swarm, auth_registry, tmp_path):
    helper = tmp_path / "bin" / "docker-credential-bundletest"
    helper.parent.mkdir()
    helper.write_text(f'#!/bin/sh\nread server\n[ "$1" = get ] && [ "$server" = "{auth_registry}" ] && '
                      f'printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\' "$server"\n')
    helper.chmod(0o755)
    env = docker_config(tmp_path, {"credHelpers": {auth_registry: "bundletest"}, "auths": {auth_registry: {}}})
    env["PATH"] = f"{helper.parent}:/usr/local/bin:/usr/bin:/bin"
    r = do_import(fleet, bundle_of(fleet, "1.0.0", 1), services, registry=auth_registry, env=env)
    assert r.code == 0, str(r)
    assert running(swarm, fleet["web"]) == {f"{auth_registry}/{fleet['repo']}:1.0.0@"
                                            f"{served_digest(auth_registry, fleet['repo'], '1.0.0')}": 2}
    no_secret_in(services, r.stdout, r.stderr)


@pytest.mark.parametrize("config, says", [
    (None, "needs credentials: no credentials"),
    ({"auths": {}}, "needs credentials: no credentials for it in"),
    ("wrong", "refused the credentials from the auths entry in"),
    ({"credsStore": "bundle-absent-helper"}, "docker-credential-bundle-absent-helper, which is not installed"),
])
def test_missing_or_wrong_credentials_are_one_line_and_nothing_is_loaded_pushed_or_created(
        fleet, services, swarm, auth_registry, tmp_path, config, says):
    version = "2.0.0"  # never pushed to this registry by any test
    if config == "wrong":
        config = auths(auth_registry, password="not-" + PASSWORD)
    env = docker_config(tmp_path, config) if config is not None else {"DOCKER_CONFIG": str(tmp_path / "none")}
    ours = lambda: sorted(t for i in swarm.api.images() for t in i.get("RepoTags") or [] if fleet["tok"] in t)  # noqa: E731
    tags_before = ours()
    r = do_import(fleet, bundle_of(fleet, version, 2), services, registry=auth_registry, env=env)
    assert r.code == 1, str(r)
    line = one_line(r.stderr)
    assert line.startswith(f"error: registry {auth_registry}") and says in line, line
    assert "loaded" not in r.stdout, "checked before the load"
    assert ours() == tags_before, "nothing tagged"
    assert served_digest(auth_registry, fleet["repo"], version) is None, "nothing pushed"
    with pytest.raises(docker.errors.NotFound):
        swarm.api.inspect_service(fleet["web"])
    assert not (services / "installed").exists() or not list((services / "installed").iterdir())
    no_secret_in(services, r.stdout, r.stderr)
