"""`bundle doctor` on real hosts: a ready one, and each way a host can stop an import (a dead
engine socket, an empty trust store, a read-only or full state dir, no gpg), made for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import run_bundle
from tests.keys import trust_store

ENGINE_DOWN = "Docker engine unreachable at unix:///nonexistent; is dockerd running?"


def rows(result) -> dict[str, dict]:
    doc = json.loads(result.stdout)
    return {row["check"]: row for row in doc["checks"]}


def doctor(keys: Path, state: Path, *extra, env=None):
    return run_bundle("doctor", "--json", "--keys", keys, "--state-dir", state, *extra, env=env)


@pytest.fixture
def ready_store(tmp_path, pgp_keys) -> Path:
    store = trust_store(tmp_path / "keys", [pgp_keys.builder, pgp_keys.approver],
                        roles={"builders": ([pgp_keys.builder], 1), "approvers": ([pgp_keys.approver], 1)})
    (store / "host-policy.toml").write_text('[apps.demo]\nbind_prefixes = ["/srv/demo"]\n')
    return store


@pytest.fixture
def tmpfs(tmp_path):
    """Factory: tmpfs(options) -> a fresh tmpfs mount point (unmounted afterwards)."""
    mounts = []

    def make(options: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounts)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs (tests run as root): {r.stderr.strip()}", pytrace=False)
        mounts.append(point)
        return point

    yield make
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


def test_a_ready_host_passes_every_row_and_names_its_keys_roles_and_grants(docker_client, ready_store, tmp_path,
                                                                           pgp_keys):
    r = doctor(ready_store, tmp_path / "state")
    assert r.code == 0, str(r)
    found = rows(r)
    assert [c for c in found] == ["engine", "storage", "gpg", "state dir", "trust store", "clock"]
    assert all(row["verdict"] == "ok" for row in found.values()), found
    api = docker_client.version()["ApiVersion"]
    assert f"API {api}" in found["engine"]["detail"]
    assert docker_client.info()["Driver"] in found["storage"]["detail"]
    store = found["trust store"]["detail"]
    assert pgp_keys.builder.fpr in store and pgp_keys.approver.fpr in store
    assert "builders: 1 key(s), threshold 1" in store and "demo: bind /srv/demo" in store
    assert not (tmp_path / "state").exists()  # doctor only looks
    human = run_bundle("doctor", "--keys", ready_store, "--state-dir", tmp_path / "state")
    assert human.code == 0 and human.stdout.splitlines()[-1] == "ready for an import"


def test_a_dead_engine_socket_fails_the_engine_row_with_the_engine_down_line(ready_store, tmp_path):
    r = doctor(ready_store, tmp_path / "state", env={"DOCKER_HOST": "unix:///nonexistent"})
    assert r.code == 1, str(r)
    found = rows(r)
    assert found["engine"] == {"check": "engine", "verdict": "FAIL", "detail": ENGINE_DOWN}
    assert found["trust store"]["verdict"] == "ok"
    human = run_bundle("doctor", "--keys", ready_store, "--state-dir", tmp_path / "state",
                       env={"DOCKER_HOST": "unix:///nonexistent"})
    assert human.code == 1 and human.stdout.splitlines()[-1] == "NOT ready: fix the FAIL rows first"


def test_an_empty_trust_store_fails(docker_client, tmp_path):
    empty = tmp_path / "keys"
    empty.mkdir()
    (empty / "README.txt").write_text("a key here, please")
    r = doctor(empty, tmp_path / "state")
    assert r.code == 1, str(r)
    assert rows(r)["trust store"]["verdict"] == "FAIL"
    assert "holds no public keys" in rows(r)["trust store"]["detail"]


def test_a_secret_key_in_the_trust_store_fails_that_row(docker_client, tmp_path, pgp_keys):
    """A careless admin copies the builder's secret key into the store."""
    store = tmp_path / "keys"
    store.mkdir()
    secret = subprocess.run(["gpg", "--batch", "--homedir", str(pgp_keys.builder.home), "--pinentry-mode", "loopback",
                             "--passphrase", "", "--armor", "--export-secret-keys", pgp_keys.builder.fpr],
                            capture_output=True, check=True).stdout
    (store / "builder.asc").write_bytes(secret)
    r = doctor(store, tmp_path / "state")
    assert r.code == 1, str(r)
    assert rows(r)["trust store"]["verdict"] == "FAIL"


@pytest.mark.parametrize("mount, below, says", [
    ("size=1m,ro,mode=0700", "", "not writable"),
    ("size=1m,mode=0700", "bundle", "free"),                         # no room for an import
    ("size=8m,mode=1777", "", "writable by group or others"),       # a tmpfs root is world-writable
], ids=["read-only", "without-room", "others-can-write"])
def test_a_state_dir_that_would_stop_an_import_fails_and_is_left_untouched(docker_client, ready_store, tmpfs,
                                                                          mount, below, says):
    state = tmpfs(mount)
    r = doctor(ready_store, state / below if below else state)
    assert r.code == 1, str(r)
    row = rows(r)["state dir"]
    assert row["verdict"] == "FAIL" and says in row["detail"], row
    assert os.listdir(state) == []  # not even the state dir was created


def test_no_gpg_on_path_fails(docker_client, ready_store, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh",):
        os.symlink(shutil.which(tool), bare / tool)
    r = doctor(ready_store, tmp_path / "state", env={"PATH": str(bare)})
    assert r.code == 1, str(r)
    found = rows(r)
    assert found["gpg"] == {"check": "gpg", "verdict": "FAIL", "detail": "gpg not found on PATH (install gnupg)"}
    assert found["trust store"]["verdict"] == "FAIL"  # its keys cannot be read without gpg either
