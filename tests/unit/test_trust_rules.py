"""The trust store's pure rules: how SHA256SUMS.asc is cut into signature blocks and how policy.toml
is read. No gpg: fingerprints are given as a set, the blocks are not verified here."""

from __future__ import annotations

import pytest

from bundlecore.errors import EnvironmentProblem
from bundlecore.format import MAX_SIGNATURE_BLOCKS
from bundlecore.refusals import Check, SignatureRefused
from bundlecore.gpg import STRONG_HASH_ALGOS, validsig_hash_algo
from bundlecore.trust import Role, _split_signature_blocks, image_repository, load_policy

BLOCK = b"-----BEGIN PGP SIGNATURE-----\n\niHUEABYKAB0WIQQ=\n=abcd\n-----END PGP SIGNATURE-----\n"
CRLF_BLOCK = BLOCK.replace(b"\n", b"\r\n")
A, B, C = "A" * 40, "B" * 40, "C" * 40


@pytest.mark.parametrize("raw, count", [
    (BLOCK, 1),
    (BLOCK + BLOCK, 2),
    (BLOCK + b"\n\n" + BLOCK + b"\n", 2),           # whitespace between and after blocks is fine
    (CRLF_BLOCK, 1),
    (BLOCK.rstrip(b"\n"), 1),                       # no newline after the last block
    (BLOCK * MAX_SIGNATURE_BLOCKS, MAX_SIGNATURE_BLOCKS),
], ids=["one", "two", "whitespace", "crlf", "no-final-newline", "at-the-cap"])
def test_signature_blocks_are_split_one_per_armor(raw, count):
    blocks = _split_signature_blocks(raw)
    assert len(blocks) == count
    assert all(b.startswith(b"-----BEGIN PGP SIGNATURE-----") for b in blocks)


@pytest.mark.parametrize("raw, why", [
    (b"", "is unsigned"),
    (b"\n  \n", "is unsigned"),
    (b"hello " + BLOCK, "something other than armored signatures"),
    (BLOCK + b"trailing junk\n", "something other than armored signatures"),
    (BLOCK + b"-----BEGIN PGP SIGNATURE-----\nnot ended\n", "something other than armored signatures"),
    (b"-----BEGIN PGP MESSAGE-----\nx\n-----END PGP MESSAGE-----\n", "something other than armored signatures"),
    (BLOCK * (MAX_SIGNATURE_BLOCKS + 1), f"more than {MAX_SIGNATURE_BLOCKS} signatures"),
], ids=["empty", "blank", "junk-before", "junk-after", "unterminated", "message", "too-many"])
def test_signature_files_that_are_not_only_armored_blocks_are_refused(raw, why):
    with pytest.raises(SignatureRefused, match=why) as e:
        _split_signature_blocks(raw)
    assert e.value.check is Check.SIGNATURE and e.value.exit_code == 3


def write(tmp_path, text: str):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_no_policy_file_means_no_roles(tmp_path):
    assert load_policy(tmp_path / "policy.toml", {A}) == []


def test_policy_roles_are_read_with_normalised_fingerprints_and_default_threshold(tmp_path):
    spaced = " ".join(A.lower()[i:i + 4] for i in range(0, 40, 4))
    path = write(tmp_path, f'[roles.builder]\nkeys = ["{spaced}"]\n\n'
                           f'[roles.approver]\nkeys = ["{B}", "{C}"]\nthreshold = 2\n')
    assert load_policy(path, {A, B, C}) == [Role("builder", [A], 1), Role("approver", [B, C], 2)]


@pytest.mark.parametrize("text, why", [
    ("[roles.builder\n", "is not valid TOML"),
    ("trust_everyone = true\n", "only a [roles.NAME] table is allowed"),
    ("roles = 1\n", "only a [roles.NAME] table is allowed"),
    ("[roles]\nbuilder = 1\n", "role builder needs keys = [...]"),
    ("[roles.builder]\nthreshold = 1\n", "role builder needs keys = [...]"),
    (f'[roles.builder]\nkeys = "{A}"\n', "role builder needs keys = [...]"),
    (f'[roles.builder]\nkeys = ["{A}"]\nweight = 2\n', "role builder needs keys = [...]"),
    (f'[roles.builder]\nkeys = ["{A[-16:]}"]\n', "is not a 40-hex fingerprint"),
    (f'[roles.builder]\nkeys = ["{"G" * 40}"]\n', "is not a 40-hex fingerprint"),
    (f'[roles.builder]\nkeys = ["{C}"]\n', f"key {C} is not in the trust store"),
    (f'[roles.builder]\nkeys = ["{A}"]\nthreshold = 0\n', "threshold must be 1..1"),
    (f'[roles.builder]\nkeys = ["{A}", "{B}"]\nthreshold = 3\n', "threshold must be 1..2"),
    (f'[roles.builder]\nkeys = ["{A}"]\nthreshold = "1"\n', "threshold must be 1..1"),
    ("[roles.builder]\nkeys = []\n", "threshold must be 1..0"),
    ("", "a policy must define at least one role"),
    ("# nobody yet\n", "a policy must define at least one role"),
    ("[roles]\n", "a policy must define at least one role"),
    (f'[roles.builder]\nkeys = ["{A}"]\napps = []\n', "apps must be a non-empty list of names"),
    (f'[roles.builder]\nkeys = ["{A}"]\napps = "demo"\n', "apps must be a non-empty list of names"),
    (f'[roles.builder]\nkeys = ["{A}"]\nrepos = ["demo/app", 1]\n', "repos must be a non-empty list of names"),
    (f'[roles.builder]\nkeys = ["{A}"]\nrepos = [""]\n', "repos must be a non-empty list of names"),
], ids=["toml", "top-level", "roles-not-table", "role-not-table", "no-keys", "keys-not-list", "unknown-field",
        "short-fpr", "not-hex", "unknown-key", "zero", "too-high", "string", "no-key-at-all", "empty-file",
        "only-a-comment", "lone-roles-table", "empty-apps", "apps-not-list", "repo-not-string", "empty-repo"])
def test_a_wrong_policy_is_one_environment_error_naming_the_file(tmp_path, text, why):
    path = write(tmp_path, text)
    with pytest.raises(EnvironmentProblem) as e:
        load_policy(path, {A, B})
    assert str(e.value).startswith(f"policy {path}") and why in str(e.value)
    assert e.value.exit_code == 1


def test_a_policy_that_is_not_utf8_is_an_environment_error(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_bytes(b"[roles.builder]\nkeys = [\"\xff\"]\n")
    with pytest.raises(EnvironmentProblem, match="is not valid TOML"):
        load_policy(path, {A})


def test_policy_roles_may_be_scoped_to_apps_and_repositories(tmp_path):
    path = write(tmp_path, f'[roles.builders]\nkeys = ["{A}"]\napps = ["demo", "anythingllm"]\n'
                           f'repos = ["demo/app", "mintplexlabs/*"]\n\n[roles.approvers]\nkeys = ["{B}"]\n')
    assert load_policy(path, {A, B}) == [
        Role("builders", [A], 1, apps=["demo", "anythingllm"], repos=["demo/app", "mintplexlabs/*"]),
        Role("approvers", [B], 1)]


@pytest.mark.parametrize("ref, repo", [
    ("demo/app:1.0", "demo/app"),
    ("demo/app", "demo/app"),
    ("registry.local:5000/team/app:2", "registry.local:5000/team/app"),
    ("registry.local:5000/app", "registry.local:5000/app"),
    ("demo/app@sha256:" + "0" * 64, "demo/app"),
    ("demo/app:1@sha256:" + "0" * 64, "demo/app"),
    ("busybox:1.36", "busybox"),
])
def test_the_repository_of_an_image_ref_is_the_ref_without_tag_or_digest(ref, repo):
    assert image_repository(ref) == repo


SCOPED = Role("builders", [A], 1, apps=["demo"], repos=["demo/app", "vendor/*"])


@pytest.mark.parametrize("app, refs, outside", [
    ("demo", ["demo/app:1"], None),
    ("demo", ["demo/app:1", "vendor/db:15", "vendor/sub/x:1"], None),
    ("evil", ["demo/app:1"], "app evil"),
    ("demo", ["demo/app:1", "victim/db:15"], "image victim/db:15"),
    ("demo", ["demo/application:1"], "image demo/application:1"),   # exact, not a prefix
    ("demo", ["vendorx/db:1"], "image vendorx/db:1"),                 # 'vendor/*' is vendor/ only
    ("demo", ["vendor:1"], "image vendor:1"),
], ids=["in-scope", "prefix", "other-app", "other-repo", "longer-name", "prefix-boundary", "prefix-itself"])
def test_a_scoped_role_covers_only_its_apps_and_repositories(app, refs, outside):
    assert SCOPED.out_of_scope(app, refs) == outside


def test_an_unscoped_role_covers_every_bundle():
    assert not Role("any", [A], 1).scoped
    assert Role("any", [A], 1).out_of_scope("evil", ["victim/db:15"]) is None
    assert Role("apps", [A], 1, apps=["demo"]).out_of_scope("demo", ["victim/db:15"]) is None


def status(algo: int) -> str:
    return ("[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 631F2089AEE111D7 T <t@x>\n"
            f"[GNUPG:] VALIDSIG {A} 2026-11-30 1795998529 0 4 0 22 {algo} 00 {A}\n[GNUPG:] TRUST_ULTIMATE 0 pgp\n")


@pytest.mark.parametrize("algo, strong", [(1, False), (2, False), (3, False), (8, True), (9, True), (10, True),
                                          (11, True)], ids=["MD5", "SHA1", "RIPEMD160", "SHA256", "SHA384",
                                                            "SHA512", "SHA224"])
def test_the_hash_algorithm_is_read_from_validsig_and_only_sha2_is_strong(algo, strong):
    assert validsig_hash_algo(status(algo)) == algo
    assert (algo in STRONG_HASH_ALGOS) is strong


def test_no_validsig_line_means_no_hash_algorithm():
    assert validsig_hash_algo("[GNUPG:] BADSIG 631F2089AEE111D7 T <t@x>\n") is None
    assert validsig_hash_algo("") is None
