"""Real OpenPGP keys for the trust tests, made once per test session with gpg (ed25519, no passphrase).

Every secret key lives in ONE private GNUPGHOME under the session's tmp dir (one gpg-agent, killed
at the end); what a trust store holds is each key's exported PUBLIC part, exported in the state the
test needs:

  builder, approver, approver2   ordinary signing keys
  outsider                       never put in a trust store
  expired                        created and used "in 2020" through gpg's --faked-system-time,
                                 valid for one day: it signs (as of 2020) whenever a test asks, and
                                 is expired for any verifier running today; no sleeping needed
  revoked                        signs with its (unrevoked) secret part; the public key in the store
                                 carries its revocation certificate (imported from
                                 openpgp-revocs.d/<FPR>.rev, as an administrator would)
  subkeyed                       a primary key with a separate signing subkey: the subkey's
                                 signatures must count for the primary fingerprint (and the
                                 primary and its subkey together for ONE key)
  revoked_subkey, expired_subkey a good primary whose signing subkey is revoked / expired (as of
                                 today) in the public key the store holds

Used as a pytest plugin (`pytest_plugins = ["tests.keys"]`) for the session fixture `pgp_keys`, and
`trust_store()` writes a trust store directory (public keys + optional policy.toml).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

GPG = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
PAST_CREATED = "20200101T000000!"   # '!' freezes gpg's clock at this instant
PAST_SIGNING = "20200101T120000!"   # still inside the expired key's one day of validity


def gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    """Run gpg in `home`; returns stdout, raises with gpg's stderr on failure."""
    r = subprocess.run([*GPG, "--homedir", str(home), *args], input=input, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def gpg_time(seconds_from_now: int) -> str:
    """A --faked-system-time value `seconds_from_now` from now (negative: in the past)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() + seconds_from_now))


def _fingerprints(home: Path, ident: str) -> list[str]:
    """[primary fpr, subkey fprs...] of the key `ident`, from --with-colons output."""
    out = gpg(home, "--with-colons", "--list-keys", ident).decode()
    return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]


@dataclass
class Key:
    """One signing identity: its primary fingerprint and the public key a trust store would hold."""

    name: str
    fpr: str
    home: Path
    public: bytes
    signing_fpr: str
    faked_time: str | None = None

    def sign(self, data: bytes, by: str | None = None, gpg_args: tuple[str, ...] = ()) -> bytes:
        """An armored detached signature over `data` (the way `bundle build` signs SHA256SUMS),
        made by the signing (sub)key, or by the (sub)key fingerprint `by`; `gpg_args` go to gpg
        as well (`--digest-algo SHA1`, `--faked-system-time ...`, `--default-sig-expire ...`)."""
        args = ["--armor", "--detach-sign", "--local-user", (by or self.signing_fpr) + "!"]
        if self.faked_time:
            args = ["--faked-system-time", self.faked_time, *args]
        return gpg(self.home, *gpg_args, *args, input=data)

    def created(self) -> int:
        """When the primary key was made (seconds since the epoch), as gpg lists it."""
        listing = gpg(self.home, "--with-colons", "--list-keys", self.fpr).decode()
        return int(next(line.split(":")[5] for line in listing.splitlines() if line.startswith("pub:")))

    def revocation_cert(self) -> bytes:
        """The revocation certificate gpg wrote when it made the key (openpgp-revocs.d/FPR.rev),
        as is: with the ':' that guards it against accidental import."""
        return (self.home / "openpgp-revocs.d" / f"{self.fpr}.rev").read_bytes()

    def store_file(self, directory: Path) -> Path:
        path = Path(directory) / f"{self.name}.asc"
        path.write_bytes(self.public)
        return path


class KeyFactory:
    """Makes keys in one private GNUPGHOME; `close()` stops its gpg-agent."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.home = self.root / "gnupg"
        if len(str(self.home)) > 60:
            # gpg-agent's socket path must fit in sun_path (108 bytes): a deep pytest tmp dir (more so
            # under pytest -n, which adds popen-gwN/) makes the agent fail to start
            self.root.mkdir(parents=True, exist_ok=True)
            short = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))
            self.home.symlink_to(short)
            self.home = short
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _gen(self, name: str, *, usage: str = "sign", expire: str = "never", faked_time: str | None = None) -> str:
        uid = f"{name.capitalize()} <{name}@example.test>"
        args = ["--quick-gen-key", uid, "ed25519", usage, expire]
        if faked_time:
            args = ["--faked-system-time", faked_time, *args]
        gpg(self.home, *args)
        return _fingerprints(self.home, f"<{name}@example.test>")[0]

    def _export(self, fpr: str, home: Path | None = None) -> bytes:
        public = gpg(home or self.home, "--armor", "--export", fpr)
        assert b"BEGIN PGP PUBLIC KEY BLOCK" in public
        return public

    def generate(self, name: str) -> Key:
        fpr = self._gen(name)
        return Key(name, fpr, self.home, self._export(fpr), fpr)

    def expired(self, name: str) -> Key:
        """Valid for one day in 2020; signs as of that day, so every signature it makes is old."""
        fpr = self._gen(name, expire="1d", faked_time=PAST_CREATED)
        return Key(name, fpr, self.home, self._export(fpr), fpr, faked_time=PAST_SIGNING)

    def revoked(self, name: str) -> Key:
        """Signs normally; its public key as exported for the store carries the revocation."""
        fpr = self._gen(name)
        scratch = self.root / f"revoke-{name}"
        scratch.mkdir(mode=0o700)
        gpg(scratch, "--import", input=self._export(fpr))
        cert = (self.home / "openpgp-revocs.d" / f"{fpr}.rev").read_bytes()
        # gpg guards the stored certificate against accidental import with a ':' before the armor
        gpg(scratch, "--import", input=cert.replace(b":-----BEGIN PGP PUBLIC KEY BLOCK", b"-----BEGIN PGP PUBLIC KEY BLOCK"))
        listing = gpg(scratch, "--with-colons", "--list-keys", fpr).decode()
        assert any(line.startswith("pub:r:") for line in listing.splitlines()), listing
        public = self._export(fpr, scratch)
        subprocess.run(["gpgconf", "--homedir", str(scratch), "--kill", "all"], capture_output=True)
        return Key(name, fpr, self.home, public, fpr)

    def with_signing_subkey(self, name: str) -> Key:
        """A primary key with an ed25519 signing subkey; signatures are made by the subkey unless
        `sign(data, by=key.fpr)` asks for the primary."""
        fpr = self._gen(name)
        gpg(self.home, "--quick-add-key", fpr, "ed25519", "sign", "never")
        fprs = _fingerprints(self.home, fpr)
        assert len(fprs) == 2, fprs
        return Key(name, fpr, self.home, self._export(fpr), fprs[1])

    def with_revoked_subkey(self, name: str) -> Key:
        """A good primary whose signing subkey is revoked in the public key the store holds (the
        revocation is made on a copy, so the subkey still signs here)."""
        k = self.with_signing_subkey(name)
        scratch = self.root / f"revoke-subkey-{name}"
        scratch.mkdir(mode=0o700)
        gpg(scratch, "--import", input=gpg(self.home, "--armor", "--export-secret-keys", k.fpr))
        gpg(scratch, "--command-fd", "0", "--edit-key", k.fpr, input=b"key 1\nrevkey\ny\n0\n\ny\nsave\n")
        listing = gpg(scratch, "--with-colons", "--list-keys", k.fpr).decode()
        assert any(line.startswith("sub:r:") for line in listing.splitlines()), listing
        k.public = self._export(k.fpr, scratch)
        subprocess.run(["gpgconf", "--homedir", str(scratch), "--kill", "all"], capture_output=True)
        return k

    def with_expired_subkey(self, name: str) -> Key:
        """A primary that never expires with a signing subkey valid for one day in 2020."""
        fpr = self._gen(name, faked_time=PAST_CREATED)
        gpg(self.home, "--faked-system-time", PAST_CREATED, "--quick-add-key", fpr, "ed25519", "sign", "1d")
        fprs = _fingerprints(self.home, fpr)
        assert len(fprs) == 2, fprs
        return Key(name, fpr, self.home, self._export(fpr), fprs[1], faked_time=PAST_SIGNING)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True)


@dataclass
class Keys:
    builder: Key
    approver: Key
    approver2: Key
    outsider: Key
    expired: Key
    revoked: Key
    subkeyed: Key
    revoked_subkey: Key
    expired_subkey: Key
    factory: KeyFactory


def make_keys(root: Path) -> Keys:
    f = KeyFactory(root)
    return Keys(builder=f.generate("builder"), approver=f.generate("approver"), approver2=f.generate("approver2"),
                outsider=f.generate("outsider"), expired=f.expired("expired"), revoked=f.revoked("revoked"),
                subkeyed=f.with_signing_subkey("subkeyed"), revoked_subkey=f.with_revoked_subkey("revsub"),
                expired_subkey=f.with_expired_subkey("expsub"), factory=f)


def trust_store(directory: Path, keys: list[Key], roles: dict[str, tuple[list[Key], int]] | None = None) -> Path:
    """A trust store directory: each key's public part as NAME.asc, plus policy.toml if `roles`
    ({role: ([keys], threshold)}) is given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for k in keys:
        k.store_file(directory)
    if roles is not None:
        lines = []
        for role, (members, threshold) in roles.items():
            fprs = ", ".join(f'"{k.fpr}"' for k in members)
            lines += [f"[roles.{role}]", f"keys = [{fprs}]", f"threshold = {threshold}", ""]
        (directory / "policy.toml").write_text("\n".join(lines))
    return directory


@pytest.fixture(scope="session")
def pgp_keys(tmp_path_factory) -> Keys:
    """Every key the trust tests use, generated once per session (well under a second each)."""
    ks = make_keys(tmp_path_factory.mktemp("keys"))
    yield ks
    ks.factory.close()


@pytest.fixture
def trust_store_of(tmp_path):
    """Factory: trust_store_of(keys, roles=None, name="store") -> a trust store directory under tmp_path."""

    def make(keys_: list[Key], roles=None, name: str = "store") -> Path:
        return trust_store(tmp_path / name, keys_, roles)

    return make


@pytest.fixture
def isolated_gnupghome(tmp_path, monkeypatch):
    """An empty GNUPGHOME for the test process, to prove that nothing is imported into it."""
    home = tmp_path / "user-gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    return home


__all__ = ["Key", "KeyFactory", "Keys", "gpg", "gpg_time", "make_keys", "trust_store", "pgp_keys", "trust_store_of",
           "isolated_gnupghome"]

