"""What a failed update does to the data when the restore or the disk is the problem (issue 8,
findings 5, 6, 9), on a real engine with real filesystems: a symlink that climbs out of its volume,
a sparse file bigger than the volume's filesystem, a state dir on a full tmpfs. In every case the
previous version ends running with its data byte-identical (exit 4), or the operator is told
exactly what the data holds (exit 5); nothing is ever half-emptied."""

from __future__ import annotations

import errno
import hashlib
import io
import subprocess
import tarfile
import time
from contextlib import contextmanager

import pytest
import zstandard

from bundlecore.engine import Engine
from bundlecore.errors import OperatorNeeded, UpdateFailed
from importer.state import StateDir
from importer.backup import data as swap_data
from importer.kinds.container.journal import JournalRecord, SwapJournal, SwapKind
from importer.steps import pending
from tests.support import run_bundle
from importer.kinds.container.plan import plan_swap
from importer.kinds.container.run import run_swap
from tests.swap_fixtures import (bundle_for, containers_named, data_files, digest, install, seed_data,
                                 served_version, target_for, typed, delivery)


def _sh(client, container: str, script: str) -> str:
    api = client.api
    ex = api.exec_create(container, ["sh", "-c", script])
    out = api.exec_start(ex).decode()
    assert api.exec_inspect(ex["Id"])["ExitCode"] == 0, out
    return out


def _listing(client, container: str, path: str = "/data") -> str:
    """Every entry with its type, owner, mode, size, and link target: what tar bytes do not show."""
    return _sh(client, container, f"find {path} | sort | while read -r f; do stat -c '%n %F %u:%g %a %s %N' \"$f\"; done")


def _allocated_kib(client, container: str, path: str) -> int:
    return int(_sh(client, container, f"du -k {path}").split()[0])


@contextmanager
def _small_tmpfs(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _assert_old_version_back(client, swap_env, old_id, tree, files):
    name = swap_env["name"]
    assert served_version(swap_env) == "1.0.0"
    assert client.api.inspect_container(name)["Id"] == old_id and len(containers_named(client, name)) == 1
    assert _listing(client, name) == tree
    assert digest(data_files(client, name)) == digest(files)
    assert pending(swap_env["state"]) == []
    assert not [c for c in client.api.containers(all=True, filters={"label": swap_data.HELPER_LABEL})
                if any(m.get("Source") == swap_env["volume"] or m.get("Name") == swap_env["volume"]
                       for m in c.get("Mounts") or [])]


def test_a_symlink_climbing_out_of_the_volume_is_restored_and_the_old_version_runs(
        docker_client, swap_env, demo_images):
    """Finding 5: the engine's archive upload refuses `link -> ../../srv/shared`; the helper's tar does not."""
    name = swap_env["name"]
    install(docker_client, swap_env, demo_images["v1"], 1)
    seed_data(docker_client, name)
    _sh(docker_client, name, "ln -s ../../srv/shared /data/link-out && chown -h 123:456 /data/link-out;"
                             "ln -s /etc/shadow /data/abs-link; chown 77:88 /data/notes.txt; chmod 604 /data/notes.txt;"
                             "chown 5:6 /data/docs; chmod 2750 /data/docs; chmod 751 /data")
    old_id = docker_client.api.inspect_container(name)["Id"]
    tree, files = _listing(docker_client, name), data_files(docker_client, name)
    assert "'/data/link-out' -> '../../srv/shared'" in tree and " 123:456 " in tree
    with pytest.raises(UpdateFailed) as e:
        install(docker_client, swap_env, demo_images["v3"], 3, timeout=3, attempts=1)  # its migration rewrites /data
    assert e.value.exit_code == 4 and "1.0.0 is running again" in e.value.line()
    _assert_old_version_back(docker_client, swap_env, old_id, tree, files)
    r = run_bundle("recover", "--yes", "--state-dir", swap_env["state"].root)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert _listing(docker_client, name) == tree and served_version(swap_env) == "1.0.0"


def _tar_through_a_file(top: str) -> bytes:
    """Readable by Python, not extractable: `top/x` is a file, then `top/x/y` needs it to be a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        d = tarfile.TarInfo(top)
        d.type = tarfile.DIRTYPE
        t.addfile(d)
        for name in ("x", "x/y"):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = 2
            t.addfile(info, io.BytesIO(b"z\n"))
    return buf.getvalue()


@pytest.mark.parametrize("bad", ["garbage", "does not extract"])
def test_a_backup_that_does_not_unpack_is_refused_before_anything_live_moves(docker_client, swap_env, demo_images,
                                                                           tmp_path, bad):
    """A corrupt archive (sha256 rewritten to match, as a bad disk could not, but a bug could): refused
    by the reader, or by the helper's tar in the scratch directory: exit 5 saying the data was not
    touched; every live entry still there, no scratch directory left."""
    api, u = docker_client.api, swap_env["uniq"]
    cid = api.create_container_from_config({"Image": demo_images["v1"]["ref"], "Cmd": ["sleep", "300"],
                                            "HostConfig": {"Binds": [f"{swap_env['volume']}:/data"]}},
                                           name=f"bad-{u}")["Id"]
    api.start(cid)
    seed_data(docker_client, cid)
    api.stop(cid, timeout=0)
    mounts = [m for m in swap_data.backed_up_mounts(api.inspect_container(cid)) if m["destination"] == "/data"]
    bdir = tmp_path / "backup"
    manifest = swap_data.backup_mounts(Engine(docker_client), cid, mounts, bdir)
    api.start(cid)
    _sh(docker_client, cid, "echo changed > /data/notes.txt")
    tree, files = _listing(docker_client, cid), data_files(docker_client, cid)
    raw = b"\x00garbage, not a tar" * 100 if bad == "garbage" else _tar_through_a_file("data")
    junk = zstandard.ZstdCompressor().compress(raw)
    (bdir / manifest["mounts"][0]["file"]).write_bytes(junk)
    manifest["mounts"][0].update(sha256=hashlib.sha256(junk).hexdigest(), tar_bytes=len(raw))
    api.stop(cid, timeout=0)
    helper = swap_data.find_helper_image(Engine(docker_client), [demo_images["v1"]["id"]])
    with pytest.raises(OperatorNeeded) as e:
        swap_data.restore_mounts(Engine(docker_client), bdir, manifest, helper)
    assert e.value.exit_code == 5
    assert "the backup of /data does not unpack" in str(e.value)
    assert "nothing in the mounts was removed or changed by the restore" in str(e.value) and str(bdir) in str(e.value)
    api.start(cid)
    assert _listing(docker_client, cid) == tree and data_files(docker_client, cid) == files


def test_a_sparse_file_bigger_than_its_filesystem_is_refused_before_the_swap_and_never_materialized(
        docker_client, swap_env, demo_images, tmp_path):
    """Finding 9: a 256 MiB sparse file in a 64 MiB filesystem (a host tmpfs bind-mounted at /data; a
    tmpfs *volume* would lose its content whenever the container stops). The engine's archive stream
    is not sparse, so a restore would write 256 MiB: the swap refuses right after the backup (exit 4,
    old version back), and a restore asked for anyway is refused (exit 5) with the data untouched."""
    api, name = docker_client.api, swap_env["name"]
    with _small_tmpfs(tmp_path / "fs64", "64m") as fs:
        swap_env["volume"] = str(fs)  # target_for mounts it at /data
        _sparse_refusal(docker_client, swap_env, demo_images, tmp_path, api, name)


def _sparse_refusal(docker_client, swap_env, demo_images, tmp_path, api, name):
    install(docker_client, swap_env, demo_images["v1"], 1)
    seed_data(docker_client, name)
    _sh(docker_client, name, "truncate -s 256M /data/sparse.img && echo tail >> /data/sparse.img")
    old_id = api.inspect_container(name)["Id"]
    tree, files = _listing(docker_client, name), data_files(docker_client, name)
    assert _allocated_kib(docker_client, name, "/data/sparse.img") < 1024
    with pytest.raises(UpdateFailed) as e:
        install(docker_client, swap_env, demo_images["v2"], 2)
    line = e.value.line()
    assert e.value.exit_code == 4 and "\n" not in line
    assert "not enough space to restore the data: the filesystem of /data has" in line and "restoring needs" in line
    assert "1.0.0 is running again" in line
    _assert_old_version_back(docker_client, swap_env, old_id, tree, files)
    assert _allocated_kib(docker_client, name, "/data/sparse.img") < 1024
    # The restore itself refuses the same way, before it writes anything.
    api.stop(name, timeout=0)
    bdir = tmp_path / "backup"
    mounts = [m for m in swap_data.backed_up_mounts(api.inspect_container(name)) if m["destination"] == "/data"]
    manifest = swap_data.backup_mounts(Engine(docker_client), name, mounts, bdir)
    helper = swap_data.find_helper_image(Engine(docker_client), [demo_images["v1"]["id"]])
    with pytest.raises(swap_data.RestoreSpaceShort) as e:
        swap_data.restore_mounts(Engine(docker_client), bdir, manifest, helper)
    assert e.value.exit_code == 5 and "nothing in the mounts was removed or changed by the restore" in str(e.value)
    api.start(name)
    assert _listing(docker_client, name) == tree
    assert _allocated_kib(docker_client, name, "/data/sparse.img") < 1024


def test_disk_full_during_the_backup_puts_the_old_version_back(docker_client, swap_env, demo_images, tmp_path):
    """Finding 6: the state dir on an 80 MiB tmpfs, 100 MiB of incompressible data in the volume that
    arrived after the preflight's estimate (as a busy app's data does; the estimate is zeroed to say
    so): the backup fails after the old version was stopped; it is started again (exit 4, not exit 1)."""
    name, state = swap_env["name"], None
    with _small_tmpfs(tmp_path / "small", "80m") as small:
        swap_env["state"] = state = StateDir(small / "state")
        install(docker_client, swap_env, demo_images["v1"], 1)
        seed_data(docker_client, name)
        _sh(docker_client, name, "head -c 104857600 /dev/urandom > /data/big.bin")
        old_id = docker_client.api.inspect_container(name)["Id"]
        tree, files = _listing(docker_client, name), data_files(docker_client, name)
        plan = plan_swap(Engine(docker_client), state, typed(target_for(swap_env, demo_images["v2"])), demo_images["v2"]["id"])
        plan.backup_estimate = 0
        with state.lock(), pytest.raises(UpdateFailed) as e:
            run_swap(Engine(docker_client), state, plan, delivery(bundle_for(demo_images["v2"], 2)), out=lambda s: None)
        line = e.value.line()
        assert e.value.exit_code == 4 and "\n" not in line
        assert "at step backup" in line and "backing up the data into" in line and "No space left on device" in line
        assert "1.0.0 is running again" in line
        _assert_old_version_back(docker_client, swap_env, old_id, tree, files)
        gens = swap_env["state"].app_dir(name) / "generations"
        assert not any(p.name.endswith(".tar.zst") for p in gens.rglob("*"))  # the partial backup was dropped
        assert not (swap_env["state"].app_dir(name) / SwapJournal.RESERVE).exists()
        assert swap_env["state"].installed(name)["version"] == "1.0.0"


def test_the_journal_reserve_lets_the_undo_be_recorded_on_a_full_disk(tmp_path):
    """The reserve is written before the swap acts; a journal write that finds the disk full gets it."""
    with _small_tmpfs(tmp_path / "small", "4m") as small:
        record = JournalRecord(kind=SwapKind.UPGRADE, name="x", steps=[], keep=2, health=None, bundle={},
                               helper_image=None, t0=0.0, installed_before=None, generations_before={})
        j = SwapJournal.start(small, record)
        assert (small / SwapJournal.RESERVE).stat().st_blocks * 512 >= SwapJournal.RESERVE_BYTES
        with open(small / "filler", "wb") as f:  # the backup (or anything) fills the disk
            with pytest.raises(OSError) as full:
                while True:
                    f.write(b"\xff" * 65536)
                    f.flush()
        assert full.value.errno == errno.ENOSPC
        j.record.failure = "x" * 20000
        j.save()  # would fail without the reserve
        assert not (small / SwapJournal.RESERVE).exists()
        assert SwapJournal.load(small).record.failure == "x" * 20000


def test_a_sparse_file_comes_back_sparse_after_a_rollback(docker_client, swap_env, demo_images):
    """Issue 18, finding 9: a 2 GiB sparse file (a few bytes of data at its start, middle and end) in
    the volume; a failed update's rollback restores it with its holes, not as 2 GiB of allocated
    zeros: the same bytes (compared with a copy made the same way outside the volume) and apparent
    size, its allocation no bigger than before."""
    name = swap_env["name"]
    install(docker_client, swap_env, demo_images["v1"], 1)
    seed_data(docker_client, name)
    make = ("truncate -s 2G {f} && echo head | dd of={f} conv=notrunc 2>/dev/null && echo middle | "
            "dd of={f} bs=1M seek=1024 conv=notrunc 2>/dev/null && echo tail >> {f}")
    _sh(docker_client, name, "mkdir -p /tmp && " + make.format(f="/data/sparse.img") + " && "
        + make.format(f="/tmp/reference.img"))
    tree = _listing(docker_client, name)
    before_kib = _allocated_kib(docker_client, name, "/data/sparse.img")
    assert before_kib < 1024 and " 2147483653 " in tree
    old_id = docker_client.api.inspect_container(name)["Id"]
    with pytest.raises(UpdateFailed) as e:
        install(docker_client, swap_env, demo_images["v3"], 3, timeout=3, attempts=1)  # its migration rewrites /data
    assert e.value.exit_code == 4 and "1.0.0 is running again" in e.value.line()
    assert served_version(swap_env) == "1.0.0" and docker_client.api.inspect_container(name)["Id"] == old_id
    assert _listing(docker_client, name) == tree
    _sh(docker_client, name, "cmp /data/sparse.img /tmp/reference.img")
    assert _allocated_kib(docker_client, name, "/data/sparse.img") <= before_kib + 64


def test_an_app_without_a_shell_gets_the_labelled_helper_image_not_another_apps(docker_client, uniq):
    """The app's own image cannot run the helper (no /bin/sh in it): the helper is an image the
    engine's admin labelled for it (tests: support.HELPER_IMAGE), tried before any other app's
    image, even one smaller than it."""
    def image_of(files: dict[str, bytes], tag: str) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
        repo, tag_ = tag.split(":")
        docker_client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag_)
        return docker_client.images.get(tag).id

    no_shell = image_of({"app": b"not a shell"}, f"swaptest/noshell-{uniq}:1")
    tiny = image_of({"bin/sh": b"#!x"}, f"swaptest/tiny-{uniq}:1")  # another app's, smaller than the helper
    since = int(time.time()) - 1
    try:
        helper = docker_client.images.get(swap_data.find_helper_image(Engine(docker_client), [no_shell]))
        assert swap_data.HELPER_IMAGE_LABEL in helper.labels, helper.tags  # HELPER_IMAGE, or a twin a parallel worker built
        tried = {ev["Actor"]["Attributes"].get("image") for ev in docker_client.events(
            since=since, until=int(time.time()) + 1, decode=True, filters={"type": "container", "event": "create"})}
        assert no_shell in tried and tiny not in tried, "another app's image was tried"
    finally:
        for ref in (no_shell, tiny):
            docker_client.images.remove(ref, force=True)
