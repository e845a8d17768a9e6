"""`bundle approve`: an approver checks a bundle completely, then adds a signature to its first frame.

Only the head frame is rewritten (payload frames are copied as they are), into a temp file
renamed over the bundle; BUNDLE.sha256 is rewritten next to it when present.
"""

from __future__ import annotations

import os
from pathlib import Path

from bundlecore import format as fmt
from bundlecore.errors import UsageProblem
from bundlecore.gpg import gpg_for, sign_detached, signing_key
from bundlecore.trust import TrustStore
from bundlecore.verify import BundleVerifier


def approve(bundle: Path, sign_key: str, gnupghome: str | None, keys_dir: str | None) -> tuple[str, list[str]]:
    """Returns (new sha256 of the bundle, fingerprints that had signed before)."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise UsageProblem(f"bundle {bundle} not found")
    gpg = gpg_for(gnupghome)
    key = signing_key(gpg, sign_key)
    # The approver vouches for the whole bundle: every check the intranet runs too (minus its
    # engine's platform and install history, the intranet's business) before signing anything.
    verifier = BundleVerifier(TrustStore.load(keys_dir))
    verified = verifier.check_head(bundle)
    verifier.check_payload(bundle, verified)
    before = [s.fingerprint for s in verified.signers]
    if key["fingerprint"] in before:
        raise UsageProblem(f"{bundle} is already signed by {key['fingerprint']}")
    signatures = verified.head.signatures.rstrip(b"\n") + b"\n" + sign_detached(gpg, key["fingerprint"], verified.head.sums)
    tmp = bundle.with_name(f".{bundle.name}.approve-{os.getpid()}")
    try:
        digest = fmt.rewrite_head(bundle, tmp, verified.head, signatures)
        os.replace(tmp, bundle)
    finally:
        if tmp.exists():
            tmp.unlink()
    sidecar = bundle.with_name(bundle.name + ".sha256")
    if sidecar.exists():
        sidecar.write_text(f"{digest}  {bundle.name}\n")
    return digest, before
