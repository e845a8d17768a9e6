"""GnuPG through python-gnupg, the parts both sides share.

Each use runs gpg in a GNUPGHOME it is given: the builder's own keyring for signing, and on
the intranet side a throwaway home holding only the trust store's keys (bundlecore.trust)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import gnupg

from bundlecore.errors import EnvironmentProblem, UsageProblem


def gpg_for(home: Path | str | None) -> gnupg.GPG:
    try:
        return gnupg.GPG(gnupghome=str(home) if home else None)
    except (OSError, ValueError) as e:
        raise EnvironmentProblem(f"cannot run gpg: {e}") from None


@contextlib.contextmanager
def throwaway_gnupghome() -> Iterator[Path]:
    """A fresh private GNUPGHOME (0700) removed afterwards."""
    home = tempfile.mkdtemp(prefix="bundle-gnupg-")
    try:
        yield Path(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


# OpenPGP hash algorithm IDs (RFC 4880 9.4) of SHA-256 and stronger: SHA256, SHA384, SHA512, SHA224
STRONG_HASH_ALGOS = frozenset({8, 9, 10, 11})


def validsig_hash_algo(status: str) -> int | None:
    """The hash algorithm ID of the (one) good signature in gpg's status output, from its line
    `[GNUPG:] VALIDSIG fpr date ts expire version reserved pubkey-algo HASH-ALGO class [primary]`;
    python-gnupg does not keep it."""
    for line in (status or "").splitlines():
        parts = line.split()
        if parts[:2] == ["[GNUPG:]", "VALIDSIG"] and len(parts) >= 10 and parts[9].isdigit():
            return int(parts[9])
    return None


def key_problem(key: dict[str, Any], now: float | None = None) -> str | None:
    """Why a key from gpg.list_keys() cannot sign or be trusted, or None if it can."""
    now = time.time() if now is None else now
    if key.get("trust") == "r" or key.get("revoked"):
        return "revoked"
    expires = key.get("expires")
    if key.get("trust") == "e" or (expires and int(expires) <= now):
        return "expired"
    return None


def signing_key(gpg: gnupg.GPG, fpr: str) -> dict[str, Any]:
    """The secret key `fpr` (fingerprint or key ID) if it exists and can sign now."""
    wanted = fpr.replace(" ", "").upper()
    for key in gpg.list_keys(secret=True):
        if wanted in (key["fingerprint"], key["keyid"]) or key["fingerprint"].endswith(wanted):
            public = [k for k in gpg.list_keys(keys=[key["fingerprint"]])]
            problem = key_problem(public[0] if public else key)
            if problem:
                raise UsageProblem(f"signing key {key['fingerprint']} is {problem}")
            return dict(key)
    raise UsageProblem(f"signing key {fpr} is not in the keyring {gpg.gnupghome or '~/.gnupg'} (or has no secret part)")


def sign_detached(gpg: gnupg.GPG, fpr: str, data: bytes) -> bytes:
    """An armored detached signature over `data` by `fpr`."""
    sig = gpg.sign(data, keyid=fpr, detach=True, clearsign=False, binary=False)
    if not sig.data or getattr(sig, "returncode", 0) != 0:
        raise UsageProblem(f"gpg could not sign with {fpr}: {(sig.stderr or '').strip().splitlines()[-1:] or sig.status}")
    return bytes(sig.data)
