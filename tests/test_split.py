"""Split bundles on the real engine: `bundle build --split` writes parts that verify and import
as one stream, a bad part is refused by name with nothing changed, `bundle join` gives the whole
file, and standard tools still check and unpack it."""

from __future__ import annotations

import hashlib
import os
import json
import subprocess
from pathlib import Path

import docker
import pytest

from bundlecore import format as fmt
from tests.support import one_line, run_bundle
from tests.craft import _remove_image

PART = "128K"


@pytest.fixture
def split_scene(tmp_path, app_image, uniq, pgp_keys, trust_store_of, docker_client):
    """A split bundle of a fresh local image (then removed from the engine) and what it takes to import it."""
    ref, name = f"splittest/app-{uniq}:1.0.0", f"splittest-{uniq}"
    image_id = app_image(ref, "1.0.0", dockerfile_extra=f"LABEL bundle.split-test={uniq}")
    spec = tmp_path / "bundle.toml"
    spec.write_text(f'name = "{name}"\nversion = "1.0.0"\nsequence = 1\nimages = ["{ref}"]\n\n'
                    f'[target]\nkind = "container"\nname = "{name}"\nimage = "{ref}"\n\n'
                    '[target.health]\ncmd = ["/bin/true"]\ntimeout = "20s"\nattempts = 1\n')
    out = tmp_path / "out" / "app.bundle.zst"
    out.parent.mkdir()
    key = pgp_keys.builder
    r = run_bundle("build", spec, "-o", out, "--sign-key", key.fpr, "--gnupghome", key.home, "--local", "--split", PART)
    assert r.code == 0, str(r)
    docker_client.images.remove(ref)
    scene = {"out": out, "ref": ref, "name": name, "id": image_id, "keys": trust_store_of([key]),
             "state": tmp_path / "state", "spec": spec, "key": key, "stdout": r.stdout}
    yield scene
    for c in docker_client.containers.list(all=True, filters={"name": name}):
        c.remove(force=True)
    _remove_image(docker_client, image_id)


def _parts(out: Path) -> list[Path]:
    return sorted(out.parent.glob(out.name + ".part*"))


def test_build_split_writes_parts_with_a_line_each_and_one_for_the_whole(split_scene):
    out = split_scene["out"]
    parts = _parts(out)
    assert len(parts) >= 3 and not out.exists(), "only parts, no joined copy"
    assert [p.name for p in parts] == [f"app.bundle.zst.part{n:03d}" for n in range(1, len(parts) + 1)]
    assert all(p.stat().st_size == 128 << 10 for p in parts[:-1]) and 0 < parts[-1].stat().st_size <= 128 << 10
    lines = fmt.sums_path(out).read_text().splitlines()
    assert [ln.split("  ")[1] for ln in lines] == [p.name for p in parts] + [out.name]
    whole = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    assert lines[-1].split("  ")[0] == whole
    assert f"split into {len(parts)} parts" in split_scene["stdout"]
    assert fmt.read_head(parts[0]).frame_size < parts[0].stat().st_size, "the head frame is in the first part"
    assert not list(out.parent.glob(".*")), "no temp files left"


def test_standard_tools_check_and_unpack_the_parts(split_scene, tmp_path):
    out = split_scene["out"]
    # the per-part lines check the copy; the whole's line needs the joined file, so it is left out here
    parts_only = tmp_path / "parts.sha256"
    parts_only.write_text("".join(ln + "\n" for ln in fmt.sums_path(out).read_text().splitlines()[:-1]))
    r = subprocess.run(["sha256sum", "-c", parts_only], cwd=out.parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    unpacked = tmp_path / "x"
    unpacked.mkdir()
    r = subprocess.run(f"cat {out}.part* | zstd -dc | tar -x -C {unpacked}", shell=True, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=unpacked, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", ["app.bundle.zst.part001", "app.bundle.zst"])
def test_a_split_bundle_verifies_from_its_first_part_or_its_prefix(split_scene, name):
    s = split_scene
    r = run_bundle("verify", s["out"].parent / name, "--keys", s["keys"], "--state-dir", s["state"], "--json")
    assert r.code == 0, str(r)
    assert json.loads(r.stdout)["checks"][0] == "parts"


def test_a_split_bundle_imports_and_the_app_runs(split_scene, docker_client):
    s = split_scene
    r = run_bundle("import", s["out"], "--keys", s["keys"], "--state-dir", s["state"], "--yes")
    assert r.code == 0, str(r)
    container = docker_client.containers.get(s["name"])
    assert container.attrs["Image"] == s["id"] and container.status == "running"


def _break(parts: list[Path], how: str) -> str:
    """Damage the third part (or swap the second and third); returns the part the refusal must name."""
    third = parts[2]
    if how == "missing":
        third.rename(third.with_name(".hidden"))
    elif how == "swapped":
        a, b = parts[1].read_bytes(), third.read_bytes()
        parts[1].write_bytes(b)
        third.write_bytes(a)
        return parts[1].name
    elif how == "truncated":
        third.write_bytes(third.read_bytes()[:-1])
    elif how == "corrupted":
        data = bytearray(third.read_bytes())
        data[len(data) // 2] ^= 0x01
        third.write_bytes(bytes(data))
    return third.name


@pytest.mark.parametrize("how", ["missing", "swapped", "truncated", "corrupted"])
def test_a_bad_part_is_refused_by_name_and_nothing_changes(split_scene, docker_client, how):
    s = split_scene
    named = _break(_parts(s["out"]), how)
    for verb in ("verify", "import"):
        r = run_bundle(verb, s["out"].parent / "app.bundle.zst.part001", "--keys", s["keys"], "--state-dir", s["state"],
                       *(["--yes"] if verb == "import" else []))
        assert r.code == 3, str(r)
        line = one_line(r.stderr)
        assert line.startswith("refused: parts: ") and named in line, line
    assert not docker_client.containers.list(all=True, filters={"name": s["name"]})
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(s["id"])
    assert not list((s["state"] / "installed").glob("*")) if (s["state"] / "installed").exists() else True


def test_a_corrupted_part_without_the_sidecar_is_refused_naming_where_the_stream_broke(split_scene, docker_client):
    s = split_scene
    fmt.sums_path(s["out"]).unlink()
    parts = _parts(s["out"])
    data = bytearray(parts[1].read_bytes())
    data[100:4000] = bytes(3900)
    parts[1].write_bytes(bytes(data))
    r = run_bundle("import", s["out"], "--keys", s["keys"], "--state-dir", s["state"], "--yes")
    assert r.code == 3, str(r)
    assert "app.bundle.zst.part00" in one_line(r.stderr)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(s["id"])


def test_join_writes_the_whole_file_that_the_sidecar_names_and_it_verifies(split_scene, tmp_path):
    s = split_scene
    joined = tmp_path / "joined.bundle.zst"
    r = run_bundle("join", s["out"].parent / "app.bundle.zst.part002", "-o", joined)
    assert r.code == 0, str(r)
    whole_line = fmt.sums_path(s["out"]).read_text().splitlines()[-1].split("  ")[0]
    # builds are not reproducible (creation time, signature), so join is compared with the split build's
    # own line for the whole file and with the verifier, not with a second unsplit build
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == whole_line
    r = run_bundle("verify", joined, "--keys", s["keys"], "--state-dir", s["state"])
    assert r.code == 0, str(r)
    before = joined.read_bytes()
    r = run_bundle("join", s["out"], "-o", joined)
    assert r.code == 2 and "exists" in one_line(r.stderr) and joined.read_bytes() == before


def test_join_refuses_a_bad_part_and_leaves_no_file(split_scene, tmp_path):
    s = split_scene
    named = _break(_parts(s["out"]), "corrupted")
    r = run_bundle("join", s["out"], "-o", tmp_path / "joined")
    assert r.code == 3 and named in one_line(r.stderr), str(r)
    assert not (tmp_path / "joined").exists() and not list(tmp_path.glob(".joined*"))


def test_careless_split_requests_are_usage_errors_and_write_nothing(split_scene, tmp_path):
    s = split_scene
    key = s["key"]
    out = s["out"]
    before = {p: p.read_bytes() for p in _parts(out)}
    # old parts in the way: never mixed with new ones, never removed
    r = run_bundle("build", s["spec"], "-o", out, "--sign-key", key.fpr, "--gnupghome", key.home, "--local",
                   "--split", PART)
    assert r.code == 2 and "in the way" in one_line(r.stderr), str(r)
    assert {p: p.read_bytes() for p in _parts(out)} == before
    # an unsplit bundle of that name: the prefix would name it, not the new parts
    single = tmp_path / "single.bundle.zst"
    single.write_bytes(b"an older bundle")
    r = run_bundle("build", s["spec"], "-o", single, "--sign-key", key.fpr, "--gnupghome", key.home, "--local",
                   "--split", PART)
    assert r.code == 2 and "in the way" in one_line(r.stderr), str(r)
    assert single.read_bytes() == b"an older bundle" and not list(tmp_path.glob("single.bundle.zst.part*"))
    r = run_bundle("build", s["spec"], "-o", tmp_path / "small", "--sign-key", key.fpr, "--gnupghome", key.home,
                   "--local", "--split", "1K")
    assert r.code == 2 and "minimum" in one_line(r.stderr), str(r)
    assert not list(tmp_path.glob("small*"))
    r = run_bundle("verify", tmp_path / "nothing.bundle.zst", "--keys", s["keys"], "--state-dir", s["state"])
    assert r.code == 2 and "not found" in one_line(r.stderr), str(r)


@pytest.mark.parametrize("name", ["app.bundle.zst.part001", "app.bundle.zst"])
def test_approving_a_split_bundle_rewrites_only_its_first_part_and_the_sums(split_scene, pgp_keys, trust_store_of,
                                                                            tmp_path, name):
    s, approver = split_scene, pgp_keys.approver
    parts = _parts(s["out"])
    rest = {p.name: p.read_bytes() for p in parts[1:]}
    intranet = trust_store_of([s["key"], approver], name="intranet",
                              roles={"builder": ([s["key"]], 1), "approver": ([approver], 1)})
    r = run_bundle("verify", s["out"], "--keys", intranet, "--state-dir", s["state"])
    assert r.code == 3 and "role approver needs 1" in one_line(r.stderr), str(r)

    r = run_bundle("approve", s["out"].parent / name, "--sign-key", approver.fpr, "--gnupghome", approver.home,
                   "--keys", s["keys"])
    assert r.code == 0, str(r)
    assert _parts(s["out"]) == parts and {p.name: p.read_bytes() for p in parts[1:]} == rest, "only part001 changes"
    assert not s["out"].exists() and not list(s["out"].parent.glob(".*")), "no joined copy, no temp files"
    check = subprocess.run(["sha256sum", "-c", "--ignore-missing", fmt.sums_path(s["out"]).name], cwd=s["out"].parent,
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(parts), check.stdout + check.stderr
    whole = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    assert fmt.sums_path(s["out"]).read_text().splitlines()[-1] == f"{whole}  {s['out'].name}"
    assert whole in r.stdout
    r = run_bundle("verify", s["out"].parent / name, "--keys", intranet, "--state-dir", s["state"], "--json")
    assert r.code == 0, str(r)
    assert {x["fingerprint"] for x in json.loads(r.stdout)["signers"]} == {s["key"].fpr, approver.fpr}


def test_approving_a_split_bundle_with_a_bad_part_or_twice_changes_nothing(split_scene, pgp_keys, trust_store_of):
    s, approver = split_scene, pgp_keys.approver
    approve = ("approve", s["out"], "--sign-key", approver.fpr, "--gnupghome", approver.home, "--keys")
    assert run_bundle(*approve, s["keys"]).code == 0
    parts = _parts(s["out"])
    snapshot = lambda: {p.name: p.read_bytes() for p in s["out"].parent.iterdir()}  # noqa: E731
    before = snapshot()
    r = run_bundle(*approve, trust_store_of([s["key"], approver], name="both"))
    assert r.code == 2 and f"already signed by {approver.fpr}" in one_line(r.stderr), str(r)
    assert snapshot() == before
    named = _break(parts, "corrupted")
    before = snapshot()
    other = pgp_keys.approver2
    r = run_bundle("approve", s["out"], "--sign-key", other.fpr, "--gnupghome", other.home, "--keys", s["keys"])
    assert r.code == 3 and one_line(r.stderr).startswith("refused: parts: ") and named in one_line(r.stderr), str(r)
    assert snapshot() == before


def _guessable_names(out: Path, pid: int) -> list[Path]:
    """Every temp name a writer of `out` could be expected to use (the ones this code used before
    issue 18, with this process's pid, and the obvious others)."""
    names = [f".{out.name}.tmp-{pid}", f".{out.name}.payload-{pid}", f".{out.name}.sha256.tmp-{pid}",
             f".{out.name}.join-{pid}", f".{out.name}.approve-{pid}", f".{out.name}.sha256.approve-{pid}",
             f".{out.name}.tmp", f"{out.name}.tmp", f".{out.name}.sha256.tmp", f".{out.name}.{pid}.tmp"]
    for n in range(1, 40):
        part = f"{out.name}.part{n:03d}"
        names += [f".{part}.tmp-{pid}", f".{part}.tmp", f".{part}.approve-{pid}", f"{part}.tmp"]
    return [out.with_name(n) for n in names]


def _plant(paths: list[Path], victim: Path) -> None:
    for p in dict.fromkeys(paths):
        p.symlink_to(victim)


def test_links_planted_at_every_guessable_temp_name_are_never_written_through(
        split_scene, tmp_path, app_image, uniq, pgp_keys, trust_store_of):
    """Finding 8: in a shared output directory, `build --split`, `join` and `approve` create every
    file fresh under an unpredictable name (O_CREAT|O_EXCL|O_NOFOLLOW): a link planted at any name
    they used to use (`.OUT.join-PID`, `.OUT.partNNN.tmp-PID`...) is not followed. They run in this
    process, so PID is the pid they see."""
    from bundler.approve import approve
    from bundler.build import build

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    shared = tmp_path / "shared"
    shared.mkdir()
    pid = os.getpid()
    key = split_scene["key"]

    # build --split (the real engine, a local image)
    ref = f"splittest/links-{uniq}:1.0.0"
    app_image(ref, "1.0.0", dockerfile_extra=f"LABEL bundle.split-test={uniq}-links")
    spec = tmp_path / "links.toml"
    spec.write_text(split_scene["spec"].read_text().replace(split_scene["ref"], ref))
    out = shared / "links.bundle.zst"
    _plant(_guessable_names(out, pid) + _guessable_names(fmt.sums_path(out), pid), victim)
    result = build(spec, out, key.fpr, key.home, local=True, show_progress=False, split=fmt.parse_part_size(PART))
    assert victim.read_bytes() == b"precious"
    parts = sorted(shared.glob(out.name + ".part[0-9][0-9][0-9]"))
    assert len(parts) >= 3 and result.parts == parts
    assert all(p.is_file() and not p.is_symlink() for p in parts + [fmt.sums_path(out)])
    r = run_bundle("verify", out, "--keys", split_scene["keys"], "--state-dir", split_scene["state"])
    assert r.code == 0, str(r)

    # join (of the scene's bundle) into the shared directory
    joined = shared / "joined.bundle.zst"
    _plant(_guessable_names(joined, pid), victim)
    digest = fmt.join_parts(split_scene["out"], joined)
    assert victim.read_bytes() == b"precious" and not joined.is_symlink()
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == digest
    assert digest == fmt.sums_path(split_scene["out"]).read_text().splitlines()[-1].split("  ")[0]

    # approve rewrites the first part and the sidecar in place (through temp names too)
    approver = pgp_keys.approver
    approve(out, approver.fpr, approver.home, str(split_scene["keys"]))
    assert victim.read_bytes() == b"precious"
    intranet = trust_store_of([key, approver], name="links",
                              roles={"builder": ([key], 1), "approver": ([approver], 1)})
    r = run_bundle("verify", out, "--keys", intranet, "--state-dir", split_scene["state"])
    assert r.code == 0, str(r)
    # the planted links are still there, untouched, and nothing else was left behind
    left = sorted(p.name for p in shared.iterdir() if not p.is_symlink())
    assert left == sorted([p.name for p in parts] + [fmt.sums_path(out).name, joined.name]), left
