"""The trust store's pure rules: how SHA256SUMS.asc is cut into signature blocks and how policy.toml
is read. No gpg: fingerprints are given as a set, the blocks are not verified here."""

from __future__ import annotations

import pytest

from bundlecore.errors import EnvironmentProblem
from bundlecore.format import MAX_SIGNATURE_BLOCKS
from bundlecore.refusals import Check, SignatureRefused
from bundlecore.trust import Role, _split_signature_blocks, load_policy

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
], ids=["toml", "top-level", "roles-not-table", "role-not-table", "no-keys", "keys-not-list", "unknown-field",
        "short-fpr", "not-hex", "unknown-key", "zero", "too-high", "string", "no-key-at-all"])
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
