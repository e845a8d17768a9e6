"""What a bundle is made of: its member names, the caps on every size, the tar and zstd
parameters, and FormatError (docs/format.md)."""

from __future__ import annotations

FORMAT_VERSION = 1

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
SIGNATURES = "SHA256SUMS.asc"
HEAD_MEMBERS = (MANIFEST, SUMS, SIGNATURES)
PAYLOAD_PREFIX = "images/"
DOCKER_ARCHIVE_MANIFEST = PAYLOAD_PREFIX + "manifest.json"

# Caps, enforced before the bytes they bound are used.
MAX_MANIFEST = 4 << 20
MAX_SUMS = 4 << 20
MAX_SIGNATURES = 256 << 10
MAX_SIGNATURE_BLOCKS = 16
MAX_HEAD_TAR = MAX_MANIFEST + MAX_SUMS + MAX_SIGNATURES + 6 * 512
MAX_HEAD_FRAME = MAX_HEAD_TAR + (64 << 10)  # compressed head is never larger than this
MAX_WINDOW = 1 << 25  # decoder memory bound; the writer stays well under it

BLOCK = 512
TAR_END = b"\0" * (2 * BLOCK)

COMPRESSION_LEVEL = 3
# zstd's multi-threaded job size: each worker buffers about a job in and out, so it sets the build's
# peak RSS (measured on the 107 MB bench image, 2 workers: 4 MiB 97 MB, 2 MiB 78 MB, 1 MiB 66 MB);
# 2 MiB keeps the build under 100 MB and costs 0.01% in size, still under `zstd -T0 -3`'s file.
JOB_SIZE = 2 << 20
CHUNK = 1 << 20


class FormatError(ValueError):
    """The bytes are not a well-formed bundle; `check` names the rule they broke."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check
