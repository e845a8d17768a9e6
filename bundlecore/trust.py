"""The trust store: pinned public keys plus an optional policy of roles, and signature checks under it.

Shared by both sides: the importer's gate and `bundle approve` judge signatures the same way.

Where the store is: --keys DIR, else $BUNDLE_KEYS, else /etc/bundle/keys (the offline kit's
install.sh creates it; keys/ in the source tree is documentation only). Its public keys (*.asc,
*.gpg, *.pub, *.key) are imported into a fresh private GNUPGHOME for each check: never the user's
keyring, never a key carried inside a bundle.

policy.toml (optional) names roles, each a list of primary-key fingerprints and a threshold of
distinct keys that must have signed; without it, any one key of the store is enough. A policy
file that defines no role at all is an error, never "anyone".

A revocation certificate `FPR.rev` in the store (as gpg writes it to openpgp-revocs.d/, with or
without the ':' guard before its armor) revokes key FPR: its signatures are refused as revoked.
A `.rev` for no key of the store, or that is no revocation of FPR, is an environment error.

A signature counts only if gpg calls it good with a SHA-256-or-stronger hash, it is not expired,
and it is dated no more than MAX_CLOCK_SKEW in the future.

Scope of a signature (like TUF delegations). A role may carry `apps` (bundle names) and/or
`repos` (image repositories, exact, or `prefix/*` for everything under prefix/); such a role is
*scoped*. The rules:
1. A role covers a bundle when the bundle's name is in its `apps` (if given) and the repository
   of every image ref of the bundle is in its `repos` (if given). An unscoped role covers all.
   When the importer pushes the images to a registry, the repository each is pushed to
   (bundlecore.registrypath: the path with the registry host stripped) must be in `repos` too,
   with or without that registry's HOST:PORT: `evil.example/*` does not cover
   `evil.example/victim/web`, which lands in the registry as `victim/web`.
2. Every role that covers the bundle must be met by its threshold of distinct keys.
3. If the policy has scoped roles, at least one of them must cover the bundle: a bundle that no
   scoped role covers is refused, whoever signed it.
Unscoped roles are judged right after the signatures (before manifest.json is parsed); scoped
roles once the signed manifest is known (`check_scope`).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import gnupg

from bundlecore.errors import EnvironmentProblem
from bundlecore.fsutil import read_toml
from bundlecore.format import MAX_SIGNATURE_BLOCKS
from bundlecore.gpg import STRONG_HASH_ALGOS, gpg_for, key_problem, throwaway_gnupghome, validsig_hash_algo
from bundlecore.refusals import SignatureRefused
from bundlecore.registrypath import PushDestination

SYSTEM_STORE = Path("/etc/bundle/keys")
KEY_SUFFIXES = (".asc", ".gpg", ".pub", ".key")
REVOCATION_SUFFIX = ".rev"
MAX_CLOCK_SKEW = timedelta(minutes=5)
_FPR = re.compile(r"^[0-9A-F]{40}$")
_SIG_BLOCK = re.compile(rb"-----BEGIN PGP SIGNATURE-----\r?\n.*?-----END PGP SIGNATURE-----\r?\n?", re.S)


def default_store_dir() -> Path:
    """$BUNDLE_KEYS, else /etc/bundle/keys. Never a directory inside the installed package: a pip
    or wheel install puts the package in site-packages, where an admin's keys would be lost on the
    next upgrade (and the shipped keys/ is empty on purpose anyway)."""
    env = os.environ.get("BUNDLE_KEYS")
    return Path(env) if env else SYSTEM_STORE


@dataclass
class Role:
    name: str
    keys: list[str]
    threshold: int
    apps: list[str] | None = None      # bundle names this role may sign; None: any
    repos: list[str] | None = None     # image repositories ('repo' or 'prefix/*'); None: any

    @property
    def scoped(self) -> bool:
        return self.apps is not None or self.repos is not None

    def out_of_scope(self, app: str, refs: list[str], pushed: Sequence[PushDestination] = ()) -> str | None:
        """What of the bundle this role may not sign (`app evil`, `image x/y:1`, `push of x/y:1 to
        R/y:1`), or None. A push is in scope when its destination repository, with or without the
        registry host, is in `repos`: what the registry is written to, not the ref as signed."""
        if self.apps is not None and app not in self.apps:
            return f"app {app}"
        if self.repos is not None:
            for ref in refs:
                if not self._covers(image_repository(ref)):
                    return f"image {ref}"
            for d in pushed:
                if not (self._covers(d.repository) or self._covers(d.path)):
                    return f"push of {d.source} to {d.ref}"
        return None

    def _covers(self, repo: str) -> bool:
        return any(repo == r or (r.endswith("/*") and repo.startswith(r[:-1])) for r in self.repos or ())


def image_repository(ref: str) -> str:
    """'registry:5000/team/app' of 'registry:5000/team/app:1.0' or '...@sha256:...', as written."""
    name = ref.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


@dataclass
class Signer:
    """One good signature: the primary key it counts for and the roles that key holds."""

    fingerprint: str
    roles: list[str] = field(default_factory=list)


@dataclass
class TrustStore:
    directory: Path
    key_files: list[Path]
    fingerprints: set[str]          # primary fingerprints of every key in the store
    roles: list[Role]               # empty: any one key of the store is enough

    @classmethod
    def load(cls, directory: Path | str | None = None) -> "TrustStore":
        d = Path(directory) if directory else default_store_dir()
        if not d.is_dir():
            raise EnvironmentProblem(f"trust store {d} is not a directory")
        files = sorted(p for p in d.iterdir() if p.suffix in KEY_SUFFIXES and p.is_file())
        if not files:
            raise EnvironmentProblem(f"trust store {d} holds no public keys ({', '.join(KEY_SUFFIXES)})")
        files += sorted(p for p in d.iterdir() if p.suffix == REVOCATION_SUFFIX and p.is_file())
        with throwaway_gnupghome() as home:
            gpg = _import_keys(home, files)
            fingerprints = {k["fingerprint"] for k in gpg.list_keys()}
        roles = load_policy(d / "policy.toml", fingerprints)
        return cls(d, files, fingerprints, roles)

    def verify(self, signed: bytes, signatures: bytes) -> list[Signer]:
        """Check every signature block over `signed`; returns the signers if the policy is met.

        A signature counts only if gpg calls it valid, exits 0, reports no problem, the key is
        neither expired nor revoked, and its primary fingerprint is in the store. Each armored
        block is checked on its own, so one block's result never stands for another's."""
        blocks = _split_signature_blocks(signatures)
        good: dict[str, Signer] = {}
        reasons: list[str] = []
        with throwaway_gnupghome() as home:
            gpg = _import_keys(home, self.key_files)
            keys = {k["fingerprint"]: k for k in gpg.list_keys()}
            for block in blocks:
                fpr, why = _judge_block(gpg, home, block, signed, keys, self)
                if fpr:
                    good.setdefault(fpr, Signer(fpr, [r.name for r in self.roles if fpr in r.keys]))
                else:
                    reasons.append(why)
        self._check_policy(list(good.values()), reasons)
        return list(good.values())

    def _check_policy(self, signers: list[Signer], reasons: list[str]) -> None:
        """Rule 2 for the unscoped roles (the scoped ones wait for the manifest: check_scope)."""
        if not signers:
            raise SignatureRefused(reasons[0] if reasons else f"no valid signature from the trust store {self.directory}")
        _check_thresholds([r for r in self.roles if not r.scoped], signers, f" ({reasons[0]})" if reasons else "")

    def check_scope(self, signers: list[Signer], app: str, refs: list[str],
                    pushed: Sequence[PushDestination] = ()) -> None:
        """Rules 1-3 for the scoped roles, for the bundle named `app` with images `refs` (and, once
        the importer knows its registry, the destinations they are `pushed` to)."""
        scoped = [r for r in self.roles if r.scoped]
        if not scoped:
            return
        covering = [r for r in scoped if r.out_of_scope(app, refs, pushed) is None]
        if not covering:
            for s in signers:
                for role in (r for r in scoped if r.name in s.roles):
                    raise SignatureRefused(f"key {s.fingerprint} (role {role.name}) may not sign "
                                           f"{role.out_of_scope(app, refs, pushed)}")
            raise SignatureRefused(f"no role of the policy may sign app {app}")
        _check_thresholds(covering, signers, "")


def _check_thresholds(roles: list[Role], signers: list[Signer], why: str) -> None:
    for role in roles:
        have = sum(1 for s in signers if role.name in s.roles)
        if have < role.threshold:
            raise SignatureRefused(f"role {role.name} needs {role.threshold} distinct signing keys, found {have}{why}")


def _import_keys(home: Path, files: list[Path]) -> gnupg.GPG:
    gpg = gpg_for(home)
    for f in files:
        if f.suffix == REVOCATION_SUFFIX:
            _import_revocation(gpg, f)
            continue
        result = gpg.import_keys(f.read_bytes())
        if getattr(result, "sec_imported", 0):
            raise EnvironmentProblem(f"trust store file {f} holds a secret key; keep only public keys there")
        if not result.fingerprints:
            raise EnvironmentProblem(f"trust store file {f} holds no OpenPGP public key")
    return gpg


def _import_revocation(gpg: gnupg.GPG, f: Path) -> None:
    """`FPR.rev` must revoke key FPR of the store; anything else is refused loudly."""
    fpr = f.stem.upper()
    if not _FPR.match(fpr) or fpr not in {k["fingerprint"] for k in gpg.list_keys()}:
        raise EnvironmentProblem(f"trust store file {f}: a revocation must be named FPR.rev after a key of the store")
    # gpg guards the certificate it writes against accidental import with a ':' before the armor
    raw = f.read_bytes().replace(b":-----BEGIN PGP PUBLIC KEY BLOCK", b"-----BEGIN PGP PUBLIC KEY BLOCK")
    gpg.import_keys(raw)
    key = next((k for k in gpg.list_keys(keys=[fpr]) if k["fingerprint"] == fpr), None)
    if key is None or key_problem(key) != "revoked":
        raise EnvironmentProblem(f"trust store file {f} is not a revocation certificate of key {fpr}")


def load_policy(path: Path, fingerprints: set[str]) -> list[Role]:
    if not path.exists():
        return []
    try:
        raw = read_toml(path)
    except ValueError as e:
        raise EnvironmentProblem(f"policy {path} is {e}") from None
    if set(raw) - {"roles"} or not isinstance(raw.get("roles", {}), dict):
        raise EnvironmentProblem(f"policy {path}: only a [roles.NAME] table is allowed")
    if not raw.get("roles"):
        raise EnvironmentProblem(f"policy {path}: a policy must define at least one role ([roles.NAME] with keys)")
    roles = []
    for name, spec in raw["roles"].items():
        if not isinstance(spec, dict) or set(spec) - {"keys", "threshold", "apps", "repos"} \
                or not isinstance(spec.get("keys"), list):
            raise EnvironmentProblem(
                f"policy {path}: role {name} needs keys = [...] and optional threshold, apps, repos")
        keys = [str(k).replace(" ", "").upper() for k in spec["keys"]]
        for k in keys:
            if not _FPR.match(k):
                raise EnvironmentProblem(f"policy {path}: role {name}: {k} is not a 40-hex fingerprint")
            if k not in fingerprints:
                raise EnvironmentProblem(f"policy {path}: role {name}: key {k} is not in the trust store")
        threshold = spec.get("threshold", 1)
        if not isinstance(threshold, int) or not 1 <= threshold <= len(keys):
            raise EnvironmentProblem(f"policy {path}: role {name}: threshold must be 1..{len(keys)}")
        scope = {}
        for field_ in ("apps", "repos"):
            if field_ in spec:
                names = spec[field_]
                if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                    raise EnvironmentProblem(f"policy {path}: role {name}: {field_} must be a non-empty list of names")
                scope[field_] = list(names)
        roles.append(Role(name, keys, threshold, **scope))
    return roles


def _split_signature_blocks(signatures: bytes) -> list[bytes]:
    """The armored signature blocks of SHA256SUMS.asc; anything else in the file is refused."""
    blocks = _SIG_BLOCK.findall(signatures)
    rest = _SIG_BLOCK.sub(b"", signatures)
    if rest.strip():
        raise SignatureRefused("SHA256SUMS.asc holds something other than armored signatures")
    if not blocks:
        raise SignatureRefused("the bundle is unsigned (SHA256SUMS.asc holds no signature)")
    if len(blocks) > MAX_SIGNATURE_BLOCKS:
        raise SignatureRefused(f"SHA256SUMS.asc holds more than {MAX_SIGNATURE_BLOCKS} signatures")
    return blocks


def _judge_block(gpg: gnupg.GPG, home: Path, block: bytes, signed: bytes, keys: dict[str, Any],
                 store: TrustStore) -> tuple[str | None, str]:
    """(primary fingerprint, '') for a signature that counts, else (None, why not)."""
    fd, sig_path = tempfile.mkstemp(dir=home, suffix=".asc")
    with os.fdopen(fd, "wb") as f:
        f.write(block)
    v = gpg.verify_data(sig_path, signed)
    if len(v.sig_info) > 1:
        return None, "a signature block holds more than one signature"
    primary = (v.pubkey_fingerprint or "").upper()
    who = primary or (v.fingerprint or v.key_id or "an unknown key")
    if v.status == "no public key" or (v.key_id and not primary and not v.valid and v.status != "signature bad"):
        return None, f"signed by {who}, which is not in the trust store {store.directory}"
    if v.key_status:
        return None, f"signed by {who}, whose key {v.key_status.replace('signing key ', '')}"
    if any(p.get("status") == "signature expired" for p in v.problems):
        return None, f"signature by {who} expired"
    if not v.valid or v.returncode != 0 or v.problems:
        return None, f"signature by {who} does not match SHA256SUMS ({v.status or 'no valid signature'})"
    algo = validsig_hash_algo(v.stderr)
    if algo not in STRONG_HASH_ALGOS:
        return None, f"signature by {who} uses a weak hash (gpg hash algorithm {algo}); SHA-256 or stronger is required"
    if int(v.sig_timestamp or 0) > time.time() + MAX_CLOCK_SKEW.total_seconds():
        return None, f"signature by {who} is dated in the future ({v.creation_date})"
    if primary not in store.fingerprints or primary not in keys:
        return None, f"signed by {who}, which is not in the trust store {store.directory}"
    problem = key_problem(keys[primary])
    if problem:
        return None, f"signed by {who}, whose key is {problem}"
    return primary, ""


def signature_key_ids(signatures: bytes) -> list[str]:
    """Who claims to have signed (fingerprints or key IDs), read with an EMPTY keyring: not verified."""
    try:
        blocks = _split_signature_blocks(signatures)
    except SignatureRefused:
        return []
    found = []
    with throwaway_gnupghome() as home:
        gpg = gpg_for(home)
        for block in blocks:
            fd, sig_path = tempfile.mkstemp(dir=home, suffix=".asc")
            with os.fdopen(fd, "wb") as f:
                f.write(block)
            v = gpg.verify_data(sig_path, b"")
            found.append((v.fingerprint or v.key_id or "unreadable signature").upper())
    return found
