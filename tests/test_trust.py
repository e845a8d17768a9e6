"""The trust store (bundlecore.trust) with real gpg and real keys: loading a store and its policy,
and judging every armored signature block over SHA256SUMS on its own.

No Docker here; the end-to-end runs of the same rules through the CLI are in test_gate.py."""

from __future__ import annotations

import time

import pytest

from bundlecore.errors import EnvironmentProblem, Refused
from bundlecore.refusals import SignatureRefused
from bundlecore.trust import Signer, TrustStore, signature_key_ids

pytest.register_assert_rewrite("tests.keys")

from tests.keys import gpg, gpg_time  # noqa: E402


SUMS = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef  manifest.json\n"
OTHER_SUMS = b"fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210  manifest.json\n"


def refused(store: TrustStore, signatures: bytes, *, match: str, signed: bytes = SUMS) -> SignatureRefused:
    with pytest.raises(SignatureRefused) as e:
        store.verify(signed, signatures)
    err = e.value
    assert err.check == "signature" and err.exit_code == 3
    assert match in str(err), str(err)
    assert err.line() == f"refused: signature: {err}" and "\n" not in err.line()
    return err


def two_of(k, role="signers"):
    return {role: (k, 2)}


# =============================================================================================
# loading the store and its policy
# =============================================================================================

def test_store_that_is_not_a_directory_is_an_environment_problem(tmp_path):
    with pytest.raises(EnvironmentProblem, match="is not a directory"):
        TrustStore.load(tmp_path / "nowhere")


def test_store_without_public_keys_is_an_environment_problem(tmp_path):
    (tmp_path / "README.txt").write_text("keys go here\n")
    with pytest.raises(EnvironmentProblem, match="holds no public keys"):
        TrustStore.load(tmp_path)


def test_store_file_holding_a_secret_key_is_refused(pgp_keys, tmp_path):
    k = pgp_keys.builder
    (tmp_path / "oops.asc").write_bytes(gpg(k.home, "--armor", "--export-secret-keys", k.fpr))
    with pytest.raises(EnvironmentProblem, match="holds a secret key"):
        TrustStore.load(tmp_path)


def test_store_file_that_is_no_key_is_refused(tmp_path):
    (tmp_path / "notes.asc").write_text("not a key\n")
    with pytest.raises(EnvironmentProblem, match="holds no OpenPGP public key"):
        TrustStore.load(tmp_path)


def test_store_loads_primary_fingerprints_and_roles(pgp_keys, trust_store_of):
    d = trust_store_of([pgp_keys.builder, pgp_keys.approver, pgp_keys.subkeyed],
                       {"builders": ([pgp_keys.builder], 1), "approvers": ([pgp_keys.approver, pgp_keys.subkeyed], 2)})
    store = TrustStore.load(d)
    assert store.fingerprints == {pgp_keys.builder.fpr, pgp_keys.approver.fpr, pgp_keys.subkeyed.fpr}
    assert pgp_keys.subkeyed.signing_fpr not in store.fingerprints
    assert [(r.name, r.keys, r.threshold) for r in store.roles] == [
        ("builders", [pgp_keys.builder.fpr], 1),
        ("approvers", [pgp_keys.approver.fpr, pgp_keys.subkeyed.fpr], 2)]


def test_policy_fingerprints_may_be_written_with_spaces_and_lowercase(pgp_keys, trust_store_of):
    d = trust_store_of([pgp_keys.builder])
    spaced = " ".join(pgp_keys.builder.fpr[i:i + 4] for i in range(0, 40, 4)).lower()
    (d / "policy.toml").write_text(f'[roles.builders]\nkeys = ["{spaced}"]\n')
    assert TrustStore.load(d).roles[0].keys == [pgp_keys.builder.fpr]


@pytest.mark.parametrize("policy, match", [
    ("[roles.builders\n", "is not valid TOML"),
    ('trust_everyone = true\n', "only a [roles.NAME] table is allowed"),
    ('[roles.builders]\nthreshold = 1\n', "needs keys = [...]"),
    ('[roles.builders]\nkeys = ["{fpr}"]\nweight = 2\n', "needs keys = [...]"),
    ('[roles.builders]\nkeys = ["{short}"]\n', "is not a 40-hex fingerprint"),
    ('[roles.builders]\nkeys = ["{outsider}"]\n', "is not in the trust store"),
    ('[roles.builders]\nkeys = ["{fpr}"]\nthreshold = 0\n', "threshold must be 1..1"),
    ('[roles.builders]\nkeys = ["{fpr}"]\nthreshold = 2\n', "threshold must be 1..1"),
    ('[roles.builders]\nkeys = ["{fpr}"]\nthreshold = "1"\n', "threshold must be 1..1"),
], ids=["toml", "top-level", "no-keys", "unknown-field", "short-fpr", "unknown-key", "zero", "too-high", "string"])
def test_policy_that_is_wrong_is_an_environment_problem(pgp_keys, trust_store_of, policy, match):
    d = trust_store_of([pgp_keys.builder])
    (d / "policy.toml").write_text(policy.format(fpr=pgp_keys.builder.fpr, short=pgp_keys.builder.fpr[-16:],
                                                 outsider=pgp_keys.outsider.fpr))
    with pytest.raises(EnvironmentProblem, match=match.replace("[", r"\[").replace(".", r"\.")):
        TrustStore.load(d)


# =============================================================================================
# one signature
# =============================================================================================

@pytest.fixture
def store(pgp_keys, trust_store_of) -> TrustStore:
    """builder, approver, expired, revoked and subkeyed in the store; no policy (any one key)."""
    return TrustStore.load(trust_store_of([pgp_keys.builder, pgp_keys.approver, pgp_keys.expired,
                                           pgp_keys.revoked, pgp_keys.subkeyed]))


def test_good_signature_by_a_store_key_is_accepted(store, pgp_keys):
    assert store.verify(SUMS, pgp_keys.builder.sign(SUMS)) == [Signer(pgp_keys.builder.fpr, [])]


def test_signature_by_a_signing_subkey_counts_for_its_primary(store, pgp_keys):
    k = pgp_keys.subkeyed
    assert store.verify(SUMS, k.sign(SUMS)) == [Signer(k.fpr, [])]


def test_signature_by_key_outside_the_store_is_refused(store, pgp_keys):
    refused(store, pgp_keys.outsider.sign(SUMS), match=f"signed by {pgp_keys.outsider.fpr}, which is not in the trust store")


def test_signature_by_expired_key_is_refused(store, pgp_keys):
    refused(store, pgp_keys.expired.sign(SUMS), match=f"signed by {pgp_keys.expired.fpr}, whose key has expired")


def test_signature_by_revoked_key_is_refused(store, pgp_keys):
    refused(store, pgp_keys.revoked.sign(SUMS), match=f"signed by {pgp_keys.revoked.fpr}, whose key was revoked")


@pytest.mark.parametrize("which, why", [("revoked_subkey", "was revoked"), ("expired_subkey", "has expired")])
def test_signature_by_a_revoked_or_expired_subkey_of_a_good_primary_is_refused(pgp_keys, trust_store_of, which, why):
    k = getattr(pgp_keys, which)
    store = TrustStore.load(trust_store_of([k]))
    assert k.fpr in store.fingerprints
    refused(store, k.sign(SUMS), match=f"signed by {k.fpr}, whose key {why}")


def test_signature_over_other_bytes_by_a_store_key_is_refused_as_not_matching(store, pgp_keys):
    """A trusted key's signature over another SHA256SUMS (an old bundle's, say) proves nothing here;
    the reason must say the signature does not match, not that the key is unknown."""
    refused(store, pgp_keys.builder.sign(OTHER_SUMS), match="does not match SHA256SUMS")


def test_unsigned_sums_are_refused(store):
    refused(store, b"", match="the bundle is unsigned")
    refused(store, b"\n \n", match="the bundle is unsigned")


def test_empty_armored_signature_block_is_refused(store):
    refused(store, b"-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n", match="does not match SHA256SUMS")


def test_text_around_the_signature_blocks_is_refused(store, pgp_keys):
    refused(store, b"Comment: trust me\n" + pgp_keys.builder.sign(SUMS), match="something other than armored signatures")


def test_binary_signature_is_refused(store, pgp_keys):
    k = pgp_keys.builder
    binary = gpg(k.home, "--detach-sign", "--local-user", k.fpr + "!", input=SUMS)
    refused(store, binary, match="something other than armored signatures")


def test_clearsigned_text_is_refused(store, pgp_keys):
    k = pgp_keys.builder
    clear = gpg(k.home, "--clearsign", "--local-user", k.fpr + "!", input=SUMS)
    refused(store, clear, match="something other than armored signatures")


def test_signed_message_disguised_as_a_detached_signature_is_refused(store, pgp_keys):
    """An inline-signed message carries its own data; gpg must not verify THAT instead of SHA256SUMS."""
    k = pgp_keys.builder
    message = gpg(k.home, "--armor", "--sign", "--local-user", k.fpr + "!", input=OTHER_SUMS)
    disguised = message.replace(b"PGP MESSAGE", b"PGP SIGNATURE")
    refused(store, disguised, match="does not match SHA256SUMS")


def test_one_block_carrying_two_signatures_is_not_counted(store, pgp_keys):
    """Each block must hold ONE signature, so one block's verdict never stands for another's."""
    both = gpg(pgp_keys.builder.home, "--armor", "--detach-sign", "--local-user", pgp_keys.builder.fpr + "!",
               "--local-user", pgp_keys.approver.fpr + "!", input=SUMS)
    assert both.count(b"BEGIN PGP SIGNATURE") == 1
    refused(store, both, match="a signature block holds more than one signature")


def test_more_signature_blocks_than_the_cap_are_refused(store, pgp_keys):
    good = pgp_keys.builder.sign(SUMS)
    assert store.verify(SUMS, good * 16)  # 16 is the cap ...
    refused(store, good * 17, match="more than 16 signatures")  # ... and one more is refused before gpg runs


def test_verification_never_touches_the_users_keyring(pgp_keys, trust_store_of, isolated_gnupghome):
    store = TrustStore.load(trust_store_of([pgp_keys.builder]))
    store.verify(SUMS, pgp_keys.builder.sign(SUMS))
    assert list(isolated_gnupghome.iterdir()) == []


def test_inspect_lists_claimed_signers_without_verifying(pgp_keys):
    claimed = signature_key_ids(pgp_keys.outsider.sign(SUMS) + pgp_keys.builder.sign(OTHER_SUMS))
    assert claimed == [pgp_keys.outsider.fpr, pgp_keys.builder.fpr]
    assert signature_key_ids(b"garbage") == []


# =============================================================================================
# several signatures under a policy
# =============================================================================================

def test_same_key_signing_twice_counts_once(pgp_keys, trust_store_of):
    b, a = pgp_keys.builder, pgp_keys.approver
    store = TrustStore.load(trust_store_of([b, a], two_of([b, a])))
    refused(store, b.sign(SUMS) + b.sign(SUMS), match="role signers needs 2 distinct signing keys, found 1")


def test_subkey_and_its_primary_count_as_one_key(pgp_keys, trust_store_of):
    k, a = pgp_keys.subkeyed, pgp_keys.approver
    store = TrustStore.load(trust_store_of([k, a], two_of([k, a])))
    refused(store, k.sign(SUMS, by=k.fpr) + k.sign(SUMS), match="found 1")


@pytest.mark.parametrize("order", ["bad-good", "good-bad"])
def test_bad_and_good_signature_do_not_meet_a_threshold_of_two(pgp_keys, trust_store_of, order):
    b, a = pgp_keys.builder, pgp_keys.approver
    store = TrustStore.load(trust_store_of([b, a], two_of([b, a])))
    bad, good = a.sign(OTHER_SUMS), b.sign(SUMS)
    sigs = bad + good if order == "bad-good" else good + bad
    err = refused(store, sigs, match="role signers needs 2 distinct signing keys, found 1")
    assert "does not match SHA256SUMS" in str(err)  # and says why the other one did not count


@pytest.mark.parametrize("signer", ["expired", "revoked", "outsider"])
def test_signature_that_does_not_count_cannot_make_up_a_threshold(pgp_keys, trust_store_of, signer):
    b, other = pgp_keys.builder, getattr(pgp_keys, signer)
    members = [b, other] if signer != "outsider" else [b, pgp_keys.approver]
    store = TrustStore.load(trust_store_of(members, two_of(members)))
    refused(store, b.sign(SUMS) + other.sign(SUMS), match="found 1")


def test_two_distinct_keys_meet_a_threshold_of_two(pgp_keys, trust_store_of):
    b, a = pgp_keys.builder, pgp_keys.approver
    store = TrustStore.load(trust_store_of([b, a], two_of([b, a])))
    signers = store.verify(SUMS, a.sign(SUMS) + b.sign(SUMS))
    assert sorted(s.fingerprint for s in signers) == sorted([a.fpr, b.fpr])
    assert all(s.roles == ["signers"] for s in signers)


def test_builders_and_approvers_met_by_two_keys(pgp_keys, trust_store_of):
    b, a, a2 = pgp_keys.builder, pgp_keys.approver, pgp_keys.approver2
    store = TrustStore.load(trust_store_of([b, a, a2], {"builders": ([b], 1), "approvers": ([a, a2], 1)}))
    signers = store.verify(SUMS, b.sign(SUMS) + a2.sign(SUMS))
    assert {s.fingerprint: s.roles for s in signers} == {b.fpr: ["builders"], a2.fpr: ["approvers"]}


def test_a_store_key_outside_the_role_does_not_count_for_it(pgp_keys, trust_store_of):
    b, a, a2 = pgp_keys.builder, pgp_keys.approver, pgp_keys.approver2
    store = TrustStore.load(trust_store_of([b, a, a2], {"builders": ([b], 1), "approvers": ([a], 1)}))
    refused(store, b.sign(SUMS) + a2.sign(SUMS), match="role approvers needs 1 distinct signing keys, found 0")


def test_one_key_in_two_roles_counts_for_both(pgp_keys, trust_store_of):
    b, a = pgp_keys.builder, pgp_keys.approver
    store = TrustStore.load(trust_store_of([b, a], {"builders": ([b], 1), "approvers": ([b, a], 1)}))
    assert store.verify(SUMS, b.sign(SUMS)) == [Signer(b.fpr, ["builders", "approvers"])]


def test_unknown_extra_signature_is_ignored_once_the_policy_is_met(pgp_keys, trust_store_of):
    """Decided: a stranger's signature next to the required ones neither breaks the bundle nor is
    reported as a signer."""
    b, a = pgp_keys.builder, pgp_keys.approver
    store = TrustStore.load(trust_store_of([b, a], {"builders": ([b], 1), "approvers": ([a], 1)}))
    signers = store.verify(SUMS, pgp_keys.outsider.sign(SUMS) + b.sign(SUMS) + a.sign(SUMS))
    assert {s.fingerprint for s in signers} == {b.fpr, a.fpr}


def test_without_a_policy_one_good_signature_is_enough_among_bad_ones(store, pgp_keys):
    signers = store.verify(SUMS, pgp_keys.revoked.sign(SUMS) + pgp_keys.approver.sign(SUMS)
                           + pgp_keys.outsider.sign(SUMS))
    assert signers == [Signer(pgp_keys.approver.fpr, [])]


def test_refusal_is_a_refused_error_with_exit_code_3(store):
    with pytest.raises(Refused) as e:
        store.verify(SUMS, b"")
    assert e.value.exit_code == 3


# =============================================================================================
# a policy file must say something (finding 11)
# =============================================================================================

@pytest.mark.parametrize("policy", ["", "[roles]\n"], ids=["empty-file", "lone-roles-table"])
def test_policy_file_without_roles_is_an_error_not_anyone(pgp_keys, trust_store_of, policy):
    """An empty policy.toml used to mean "no roles": any one key of the store was enough."""
    d = trust_store_of([pgp_keys.builder, pgp_keys.approver])
    (d / "policy.toml").write_text(policy)
    with pytest.raises(EnvironmentProblem) as e:
        TrustStore.load(d)
    assert str(e.value) == (f"policy {d / 'policy.toml'}: "
                            "a policy must define at least one role ([roles.NAME] with keys)")
    assert e.value.exit_code == 1


# =============================================================================================
# what a good signature must also be (finding 13): strong hash, not from the future, not expired
# =============================================================================================

@pytest.mark.parametrize("algo", ["SHA1", "RIPEMD160"])
def test_signature_with_a_weak_hash_is_refused(store, pgp_keys, algo):
    sig = pgp_keys.builder.sign(SUMS, gpg_args=("--digest-algo", algo))
    refused(store, sig, match=f"signature by {pgp_keys.builder.fpr} uses a weak hash")


@pytest.mark.parametrize("algo", ["SHA224", "SHA256", "SHA384", "SHA512"])
def test_signature_with_sha2_is_accepted(store, pgp_keys, algo):
    assert store.verify(SUMS, pgp_keys.builder.sign(SUMS, gpg_args=("--digest-algo", algo))) == \
        [Signer(pgp_keys.builder.fpr, [])]


def test_signature_dated_beyond_the_clock_skew_is_refused(store, pgp_keys):
    sig = pgp_keys.builder.sign(SUMS, gpg_args=("--faked-system-time", gpg_time(3600)))
    refused(store, sig, match=f"signature by {pgp_keys.builder.fpr} is dated in the future")


def test_signature_dated_within_the_clock_skew_is_accepted(store, pgp_keys):
    sig = pgp_keys.builder.sign(SUMS, gpg_args=("--faked-system-time", gpg_time(120)))
    assert store.verify(SUMS, sig) == [Signer(pgp_keys.builder.fpr, [])]


def test_expired_signature_is_reported_as_expired(store, pgp_keys):
    sig = pgp_keys.builder.sign(SUMS, gpg_args=("--default-sig-expire", "seconds=2"))
    assert store.verify(SUMS, sig)  # good while it lasts
    time.sleep(3)
    err = refused(store, sig, match=f"signature by {pgp_keys.builder.fpr} expired")
    assert "does not match" not in str(err) and "signature valid" not in str(err)


# =============================================================================================
# a revocation certificate dropped in the store revokes its key (finding 13)
# =============================================================================================

@pytest.mark.parametrize("guarded", [True, False], ids=["as-gpg-wrote-it", "guard-removed"])
def test_revocation_certificate_in_the_store_revokes_its_key(pgp_keys, trust_store_of, tmp_path, guarded):
    k = pgp_keys.approver2
    d = trust_store_of([pgp_keys.builder, k])
    sig = k.sign(SUMS)
    assert TrustStore.load(d).verify(SUMS, sig)
    cert = k.revocation_cert()
    assert b":-----BEGIN PGP PUBLIC KEY BLOCK" in cert
    (d / f"{k.fpr}.rev").write_bytes(cert if guarded else cert.replace(b":-----BEGIN", b"-----BEGIN"))
    store = TrustStore.load(d)
    refused(store, sig, match=f"signed by {k.fpr}, whose key was revoked")
    assert store.verify(SUMS, pgp_keys.builder.sign(SUMS)) == [Signer(pgp_keys.builder.fpr, [])]


@pytest.mark.parametrize("name, content, match", [
    ("{outsider}.rev", lambda k, out: out.revocation_cert(), "must be named FPR.rev after a key of the store"),
    ("revoked.rev", lambda k, out: k.revocation_cert(), "must be named FPR.rev after a key of the store"),
    ("{fpr}.rev", lambda k, out: b"not a certificate\n", "is not a revocation certificate of key"),
    ("{fpr}.rev", lambda k, out: out.revocation_cert(), "is not a revocation certificate of key"),
], ids=["key-not-in-store", "not-named-by-fpr", "garbage", "another-keys-certificate"])
def test_revocation_file_that_revokes_no_key_of_the_store_is_refused_loudly(pgp_keys, trust_store_of, name,
                                                                            content, match):
    k, out = pgp_keys.approver2, pgp_keys.outsider
    d = trust_store_of([pgp_keys.builder, k])
    (d / name.format(fpr=k.fpr, outsider=out.fpr)).write_bytes(content(k, out))
    with pytest.raises(EnvironmentProblem, match=match):
        TrustStore.load(d)


# =============================================================================================
# scope of a signature: roles bound to apps and image repositories
# =============================================================================================

def scoped_store(pgp_keys, trust_store_of, extra: str = "") -> TrustStore:
    d = trust_store_of([pgp_keys.builder, pgp_keys.approver])
    (d / "policy.toml").write_text(f'[roles.builders]\nkeys = ["{pgp_keys.builder.fpr}"]\napps = ["demo"]\n'
                                   f'repos = ["demo/app"]\n' + extra)
    return TrustStore.load(d)


def scope_refused(store, signers, app, refs, match):
    with pytest.raises(SignatureRefused) as e:
        store.check_scope(signers, app, refs)
    assert e.value.line() == f"refused: signature: {match}", e.value.line()


def test_builder_scoped_to_demo_may_not_sign_another_app(pgp_keys, trust_store_of):
    store = scoped_store(pgp_keys, trust_store_of)
    signers = store.verify(SUMS, pgp_keys.builder.sign(SUMS))
    scope_refused(store, signers, "evil", ["demo/app:1"],
                  f"key {pgp_keys.builder.fpr} (role builders) may not sign app evil")


def test_builder_scoped_to_demo_may_not_sign_an_image_outside_its_repositories(pgp_keys, trust_store_of):
    store = scoped_store(pgp_keys, trust_store_of)
    signers = store.verify(SUMS, pgp_keys.builder.sign(SUMS))
    scope_refused(store, signers, "demo", ["demo/app:1", "victim/db:15"],
                  f"key {pgp_keys.builder.fpr} (role builders) may not sign image victim/db:15")


def test_builder_in_scope_is_accepted(pgp_keys, trust_store_of):
    store = scoped_store(pgp_keys, trust_store_of)
    signers = store.verify(SUMS, pgp_keys.builder.sign(SUMS))
    store.check_scope(signers, "demo", ["demo/app:1", "demo/app:1.0"])


def test_a_key_with_no_scoped_role_cannot_sign_what_no_scoped_role_covers(pgp_keys, trust_store_of):
    """An unscoped approver next to a scoped builder does not open the store to other apps."""
    store = scoped_store(pgp_keys, trust_store_of, f'\n[roles.approvers]\nkeys = ["{pgp_keys.approver.fpr}"]\n')
    signers = store.verify(SUMS, pgp_keys.approver.sign(SUMS))
    scope_refused(store, signers, "evil", ["evil/app:1"], "no role of the policy may sign app evil")
    scope_refused(store, signers, "demo", ["demo/app:1"], "role builders needs 1 distinct signing keys, found 0")
    store.check_scope(store.verify(SUMS, pgp_keys.approver.sign(SUMS) + pgp_keys.builder.sign(SUMS)),
                      "demo", ["demo/app:1"])


def test_unscoped_roles_are_still_judged_before_the_manifest(pgp_keys, trust_store_of):
    store = scoped_store(pgp_keys, trust_store_of, f'\n[roles.approvers]\nkeys = ["{pgp_keys.approver.fpr}"]\n')
    refused(store, pgp_keys.builder.sign(SUMS), match="role approvers needs 1 distinct signing keys, found 0")
