"""Registry authentication rules (importer.registry): the WWW-Authenticate challenge parser, the
Bearer token request it leads to, and the Docker config lookup. Pure: no engine, no registry."""

from __future__ import annotations

import base64
import json

import pytest

from bundlecore.errors import EnvironmentProblem
from importer.registry import RegistryLogin, parse_challenges, token_request

BEARER = ('Bearer realm="https://auth.example/token",service="registry.example",'
          'scope="repository:acme/web:pull,push"')


@pytest.mark.parametrize("header, want", [
    (BEARER, [("bearer", {"realm": "https://auth.example/token", "service": "registry.example",
                          "scope": "repository:acme/web:pull,push"})]),
    ('Basic realm="basic-realm"', [("basic", {"realm": "basic-realm"})]),
    ('basic realm=unquoted', [("basic", {"realm": "unquoted"})]),
    ('Bearer realm = "https://a/t" , service="s"', [("bearer", {"realm": "https://a/t", "service": "s"})]),
    ('Bearer REALM="https://a/t"', [("bearer", {"realm": "https://a/t"})]),
    ('Bearer realm="https://a/t",error="insufficient_scope",scope="repository:a:pull"',
     [("bearer", {"realm": "https://a/t", "error": "insufficient_scope", "scope": "repository:a:pull"})]),
    ('Basic realm="a \\"quoted\\" realm"', [("basic", {"realm": 'a "quoted" realm'})]),
    ('Basic realm="x", Bearer realm="https://a/t"', [("basic", {"realm": "x"}), ("bearer", {"realm": "https://a/t"})]),
    ("Bearer", [("bearer", {})]),
    ("", []),
    ('="no scheme"', []),
])
def test_www_authenticate_challenges_are_parsed(header, want):
    assert parse_challenges(header) == want


@pytest.mark.parametrize("challenge, want", [
    ({"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull"},
     ("https://auth.example/token", {"service": "reg", "scope": "repository:a/b:pull"})),
    ({"realm": "http://127.0.0.1:5001/token"}, ("http://127.0.0.1:5001/token", {})),
    ({"realm": "https://a/t", "service": "", "scope": "x"}, ("https://a/t", {"scope": "x"})),
    ({"realm": "file:///etc/passwd"}, None),       # only http(s): a registry cannot send us elsewhere
    ({"realm": "https://a/t x"}, None),
    ({}, None),
])
def test_a_bearer_challenge_becomes_a_token_request_only_to_an_http_realm(challenge, want):
    assert token_request(challenge) == want


def _config(tmp_path, monkeypatch, doc) -> None:
    (tmp_path / "config.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))


def _auth(user_pass: str) -> str:
    return base64.b64encode(user_pass.encode()).decode()


@pytest.mark.parametrize("key", ["127.0.0.1:5000", "http://127.0.0.1:5000", "https://127.0.0.1:5000/v2/"])
def test_the_auths_entry_of_the_registry_gives_user_and_password(tmp_path, monkeypatch, key):
    _config(tmp_path, monkeypatch, {"auths": {"other:1": {"auth": _auth("x:y")}, key: {"auth": _auth("u:p:w")}}})
    login = RegistryLogin.of("127.0.0.1:5000")
    assert (login.username, login.password) == ("u", "p:w")
    assert login.auth_config == {"username": "u", "password": "p:w"}
    assert "p:w" not in repr(login) and "p:w" not in login.source


@pytest.mark.parametrize("doc", [{}, {"auths": {"other:1": {"auth": _auth("x:y")}}}, {"auths": {"127.0.0.1:5000": {}}}])
def test_no_entry_for_the_registry_means_no_credentials(tmp_path, monkeypatch, doc):
    _config(tmp_path, monkeypatch, doc)
    login = RegistryLogin.of("127.0.0.1:5000")
    assert login.username is None and login.auth_config is None and "no credentials" in login.source


def test_a_missing_config_means_no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    assert RegistryLogin.of("127.0.0.1:5000").username is None


@pytest.mark.parametrize("doc, says", [
    ("{not json", "cannot read the Docker config"),
    ("[]", "is not a JSON object"),
    ({"auths": {"127.0.0.1:5000": {"auth": "!!notbase64"}}}, "is not base64 user:password"),
    ({"auths": {"127.0.0.1:5000": {"auth": _auth("nocolon")}}}, "is not base64 user:password"),
    ({"credsStore": "bundle-test-absent-helper"}, "docker-credential-bundle-test-absent-helper, which is not installed"),
    ({"credHelpers": {"127.0.0.1:5000": "../evil"}}, "which is not installed"),
])
def test_a_broken_config_or_absent_helper_is_one_line_naming_the_registry(tmp_path, monkeypatch, doc, says):
    _config(tmp_path, monkeypatch, doc)
    with pytest.raises(EnvironmentProblem) as e:
        RegistryLogin.of("127.0.0.1:5000")
    assert str(e.value).startswith("registry 127.0.0.1:5000: ") and says in str(e.value)


def test_cred_helpers_win_over_creds_store_and_auths_as_in_docker(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-unit"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread server\n[ "$1" = get ] && printf \'{"ServerURL":"%s","Username":"hu","Secret":"hs"}\' '
                      '"$server"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:/usr/bin:/bin")
    _config(tmp_path, monkeypatch, {"credsStore": "absent-store", "credHelpers": {"127.0.0.1:5000": "unit"},
                                    "auths": {"127.0.0.1:5000": {"auth": _auth("au:ap")}}})
    login = RegistryLogin.of("127.0.0.1:5000")
    assert (login.username, login.password, login.source) == ("hu", "hs", "docker-credential-unit")
