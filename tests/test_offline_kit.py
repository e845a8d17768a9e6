"""The offline kit as the intranet admin meets it: built here with `make offline-kit` (which needs
PyPI), checked with `sha256sum -c`, installed with NO network at all (a fresh network namespace,
pip's index disabled, this host's pip configuration ignored), then used: `bundle --version` and
`bundle verify` of a real signed bundle. Also what goes wrong: a tampered kit, the wrong Python,
no gpg, a bad KIT_PYTHON."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO, one_line

VERSION = subprocess.run(["python3", "-c", "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))"
                          "['project']['version'])"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def make_kit(dist: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "offline-kit", *(f"{k}={v}" for k, v in env.items())], cwd=REPO,
                          env={**os.environ, "DIST": str(dist)}, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    """This machine's kit, built once: the path of the .tar.gz."""
    dist = tmp_path_factory.mktemp("dist")
    r = make_kit(dist)
    assert r.returncode == 0, r.stderr
    [tarball] = dist.glob("bundle-offline-kit-*.tar.gz")
    return tarball


def unpack(tarball: Path, where: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(where, filter="data")
    return where / tarball.name.removesuffix(".tar.gz")


def install(kit_dir: Path, root: Path, env: dict | None = None, offline: bool = True) -> subprocess.CompletedProcess:
    """install.sh into root/{opt,bin,keys}, in a network namespace of its own (no network at all)."""
    environ = {**os.environ, "PREFIX": str(root / "opt"), "BINDIR": str(root / "bin"), "KEYS_DIR": str(root / "keys"),
               "MANDIR": str(root / "man"), "PIP_NO_INDEX": "1", "CREATE_USER": "0", **(env or {})}
    cmd = ["bash", str(kit_dir / "install.sh")]
    return subprocess.run(([shutil.which("unshare"), "-n"] if offline else []) + cmd, env=environ, capture_output=True, text=True,
                          timeout=600)


def test_the_kit_is_named_for_its_python_and_platform_and_checks_with_sha256sum(kit):
    import sysconfig
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert kit.name == f"bundle-offline-kit-{VERSION}-py311-{plat}.tar.gz"
    r = subprocess.run(["sha256sum", "-c", kit.name + ".sha256"], cwd=kit.parent, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"{kit.name}: OK"
    with tarfile.open(kit) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"install.sh", "SHA256SUMS", "PYTHON_VERSION", "VERSION", f"bundle-{VERSION}-py3-none-any.whl",
            "bundle.1", "cli.md", "metrics.md", "README.md", "bundle-check.service", "bundle-status.timer"} <= names
    for dep in ("click", "python_gnupg", "docker", "zstandard", "jsonschema", "requests"):
        assert any(n.startswith(dep + "-") and n.endswith(".whl") for n in names), dep


def test_the_kit_installs_with_no_network_and_verifies_a_real_bundle(kit, tmp_path, base_bundle, pgp_keys):
    kit_dir = unpack(kit, tmp_path / "unpacked")
    r = install(kit_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    bundle = tmp_path / "bin" / "bundle"
    assert bundle.is_symlink() and (tmp_path / "keys").is_dir() and not list((tmp_path / "keys").iterdir())
    assert Path(os.readlink(bundle)) == tmp_path / "opt" / "venv" / "bin" / "bundle"

    version = subprocess.run([bundle, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"bundle, version {VERSION}\n")
    # the installed code, not this checkout, and its trust store is outside site-packages
    where = subprocess.run([tmp_path / "opt" / "venv" / "bin" / "python", "-c",
                            "import bundlecore, bundlecore.trust as t; print(bundlecore.__file__); "
                            "print(t.default_store_dir())"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                           cwd=tmp_path)
    module, store = where.stdout.split()
    assert module.startswith(str(tmp_path / "opt")) and store == "/etc/bundle/keys"

    pgp_keys.builder.store_file(tmp_path / "keys")   # what the admin does next
    env = {k: v for k, v in os.environ.items() if k != "BUNDLE_KEYS"}
    ok = subprocess.run([bundle, "verify", base_bundle.path, "--keys", tmp_path / "keys", "--state-dir", tmp_path / "s"],
                        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1].startswith(f"trusted: {base_bundle.name} 2.0.0 sequence 5")


def test_a_tampered_kit_is_not_installed(kit, tmp_path):
    kit_dir = unpack(kit, tmp_path / "unpacked")
    wheel = next((kit_dir / "wheels").glob("click-*.whl"))
    with zipfile.ZipFile(wheel, "a") as z:
        z.writestr("click/evil.py", "print('owned')\n")
    r = install(kit_dir, tmp_path)
    assert r.returncode == 1
    assert one_line(r.stderr) == (f"install.sh: the kit's file wheels/{wheel.name} does not match its SHA256SUMS: "
                                  "get the kit again")
    assert not (tmp_path / "opt").exists() and not (tmp_path / "bin").exists()


def _resum(kit_dir: Path) -> None:
    files = sorted(str(p.relative_to(kit_dir)) for p in kit_dir.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    sums = subprocess.run(["sha256sum", *files], cwd=kit_dir, capture_output=True, text=True, check=True).stdout
    (kit_dir / "SHA256SUMS").write_text(sums)


def test_a_kit_for_another_python_says_which_python_it_needs(kit, tmp_path):
    kit_dir = unpack(kit, tmp_path / "unpacked")
    (kit_dir / "PYTHON_VERSION").write_text("3.99\n")   # as a kit built with KIT_PYTHON=3.99 says
    _resum(kit_dir)
    r = install(kit_dir, tmp_path)
    assert r.returncode == 1
    assert one_line(r.stderr) == ("install.sh: this kit holds wheels for Python 3.99 but python3 is 3.11: pass "
                                  "PYTHON=/path/to/python3.99, or build a kit with KIT_PYTHON=3.11")
    assert not (tmp_path / "opt").exists()


def test_a_host_without_gpg_is_told_to_install_it(kit, tmp_path):
    kit_dir = unpack(kit, tmp_path / "unpacked")
    bare = tmp_path / "path"
    bare.mkdir()
    for tool in ("bash", "dirname", "cat", "sha256sum", "sed", "env", "mkdir", "ln", "install", "head"):
        os.symlink(shutil.which(tool), bare / tool)
    os.symlink(sys._base_executable, bare / "python3")   # the real interpreter, not a pyenv shim
    r = install(kit_dir, tmp_path, env={"PATH": str(bare)})
    assert r.returncode == 1
    assert one_line(r.stderr) == ("install.sh: gpg not found: install the gnupg package "
                                  "(bundle checks every signature with gpg)")
    assert not (tmp_path / "opt").exists()


def test_kit_python_selects_binary_wheels_for_that_python(tmp_path):
    r = make_kit(tmp_path, KIT_PYTHON="3.12")
    assert r.returncode == 0, r.stderr
    [tarball] = tmp_path.glob("*.tar.gz")
    assert tarball.name == f"bundle-offline-kit-{VERSION}-py312-manylinux2014_{os.uname().machine}.tar.gz"
    with tarfile.open(tarball) as tar:
        wheels = [Path(n).name for n in tar.getnames() if n.endswith(".whl")]
    binary = [w for w in wheels if "-none-any" not in w]
    assert {w.split("-")[0] for w in binary} >= {"zstandard", "rpds_py"}
    assert all("-cp312-" in w for w in binary), binary


@pytest.mark.parametrize("bad", ["banana", "3", "3.12.1"])
def test_a_bad_kit_python_is_a_usage_error(tmp_path, bad):
    r = make_kit(tmp_path, KIT_PYTHON=bad)
    assert r.returncode != 0
    assert f"offline-kit: KIT_PYTHON must look like 3.12, not '{bad}'" in r.stderr
    assert not list(tmp_path.iterdir())


def test_the_kit_installs_the_man_page_the_docs_and_the_user_contrib_runs_as(kit, tmp_path, uniq):
    kit_dir = unpack(kit, tmp_path / "unpacked")
    user = f"bt-{uniq}"[:31]
    check_dir = tmp_path / "check"
    try:
        r = install(kit_dir, tmp_path, env={"CREATE_USER": "1", "BUNDLE_USER": user, "CHECK_DIR": str(check_dir)})
        assert r.returncode == 0, r.stderr
        page = tmp_path / "man" / "man1" / "bundle.1"
        assert page.read_text() == (REPO / "docs" / "bundle.1").read_text()
        man = subprocess.run(["man", "-l", "-P", "cat", str(page)], capture_output=True, text=True,
                             env={**os.environ, "MANWIDTH": "200"}) if shutil.which("man") else None
        assert man is None or ("EXIT STATUS" in man.stdout and "FILES" in man.stdout)
        docs = tmp_path / "opt" / "share" / "doc" / "bundle"
        assert (docs / "cli.md").is_file() and (docs / "contrib" / "bundle-status.timer").is_file()
        pw = subprocess.run(["getent", "passwd", user], capture_output=True, text=True).stdout.split(":")
        assert pw[0] == user and pw[6].strip() == "/usr/sbin/nologin"
        st = check_dir.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (int(pw[2]), 0o700)
        again = install(kit_dir, tmp_path, env={"CREATE_USER": "1", "BUNDLE_USER": user, "CHECK_DIR": str(check_dir)})
        assert again.returncode == 0, again.stderr  # a second run finds the user and changes nothing
    finally:
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", user], capture_output=True)
