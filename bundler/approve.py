"""`bundle approve`: an approver checks a bundle completely, then adds a signature to its first frame.

Only the head frame is rewritten (payload frames are copied as they are), into a temp file
renamed over the bundle; BUNDLE.sha256 is rewritten next to it when present. A split bundle
(`OUT.part001` or the prefix `OUT`) keeps its head in the first part: only that part is rewritten
(it grows by the signature, a few hundred bytes), the other parts are left byte for byte, and the
first part's line and the whole's line in `OUT.sha256` are updated (written to a temp name first,
renamed right after the part).
"""

from __future__ import annotations

import os
from pathlib import Path

from bundlecore import format as fmt
from bundlecore.errors import UsageProblem
from bundlecore.fsutil import create_fresh, temp_name
from bundlecore.gpg import gpg_for, sign_detached, signing_key
from bundlecore.trust import TrustStore
from bundlecore.verify import BundleVerifier


def approve(bundle: Path, sign_key: str, gnupghome: str | None, keys_dir: str | None) -> tuple[str, list[str]]:
    """Returns (new sha256 of the bundle, fingerprints that had signed before)."""
    bundle = Path(bundle)
    if not fmt.BundleFiles.exists(bundle):
        raise UsageProblem(f"bundle {bundle} not found")
    files = fmt.BundleFiles.of(bundle)
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
    target = files.first
    tmp = temp_name(target, "approve")  # fresh, unpredictable names (bundlecore.fsutil)
    sidecar = fmt.sums_path(files.stem)
    tmp_sidecar = temp_name(sidecar, "approve")
    try:
        if files.split:
            first, digest = fmt.rewrite_split_head(files, tmp, verified.head, signatures)
            lines = [(first if p == target else files.part_sums.get(p.name), p.name) for p in files.parts]
        else:
            digest, lines = fmt.rewrite_head(target, tmp, verified.head, signatures), []
        if sidecar.exists():
            with create_fresh(tmp_sidecar, 0o666) as f:
                f.write(("".join(f"{h}  {n}\n" for h, n in lines if h) + f"{digest}  {files.stem.name}\n").encode())
        os.replace(tmp, target)
        if sidecar.exists():
            os.replace(tmp_sidecar, sidecar)
    finally:
        for t in (tmp, tmp_sidecar):
            if t.exists():
                t.unlink()
    return digest, before
