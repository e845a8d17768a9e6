"""The bundle format, defined once: the writer (`bundle build`) and the reader (`bundle verify/import`).

A bundle is ONE zstd file that decompresses to ONE tar stream (docs/format.md):

  frame 1 (the head):  manifest.json, SHA256SUMS, SHA256SUMS.asc      -- no tar end marker
  frame 2 (payload):   images/... payload files, in the manifest's order, then the tar end
                       (exactly two zero blocks) and nothing after it, not even another frame

So a reader can check the signature over SHA256SUMS before it decompresses a byte of payload,
and a signature can be added by rewriting the first frame only. Every tar member is a regular
file with a fixed, plain name; the reader accepts nothing else.

The reader trusts nothing: the head frame is located by walking the zstd frame structure
(`ZstdFrameScanner`), with caps on every size; payload decompression uses a bounded window;
the tar headers are parsed here (no tarfile, no extraction) and checked against an exact
member list; bytes after the tar end, skippable frames and trailing garbage are errors.

A bundle may be split into parts (`OUT.part001`, `OUT.part002`, ... for removable media): the
reader takes them in order as ONE stream (`BundleFiles`, `PartsReader`), never joined on disk.
The head frame must lie inside the first part. When `OUT.sha256` lists the parts, the set of
parts is checked against it before anything is read and each part's sha256 as its last byte
passes; otherwise a broken stream names the part it broke in. Those per-part lines only name
the bad part: the signed SHA256SUMS still decides.

The package, by concern (one public API: import the names from `bundlecore.format`):

  layout.py     member names, size caps, tar/zstd parameters, FormatError
  tar.py        tar headers written and parsed strictly (ustar + a pax size record)
  frames.py     zstd frame structure walked without decompressing; frame padding
  encoding.py   SHA256SUMS and strict/canonical JSON
  writer.py     the payload frame, the head frame, the two assembled
  placement.py  the head put in front of the payload in place; a head rewritten (approve)
  reader.py     the head cut out and capped; the payload members streamed strictly
  parts.py      split bundles: written, read as one stream, joined
"""

from __future__ import annotations

from bundlecore.format.layout import (BLOCK, CHUNK, COMPRESSION_LEVEL, DOCKER_ARCHIVE_MANIFEST, FORMAT_VERSION,
                                      HEAD_MEMBERS, JOB_SIZE, MANIFEST, MAX_HEAD_FRAME, MAX_HEAD_TAR, MAX_MANIFEST,
                                      MAX_SIGNATURES, MAX_SIGNATURE_BLOCKS, MAX_SUMS, MAX_WINDOW, PAYLOAD_PREFIX,
                                      SIGNATURES, SUMS, TAR_END, FormatError)
from bundlecore.format.tar import (TarMember, pad, parse_pax_size, parse_tar_header, tar_member, tar_member_header,
                                   tar_member_size)
from bundlecore.format.frames import ZSTD_MAGIC, ZstdFrameScanner, pad_frame
from bundlecore.format.encoding import dumps_canonical, format_sha256sums, loads_strict_json, parse_sha256sums
from bundlecore.format.writer import PayloadFile, PayloadWriter, assemble, compress_head
from bundlecore.format.placement import FS_BLOCK, PAYLOAD_OFFSET, place_head, rewrite_head, rewrite_split_head
from bundlecore.format.reader import Head, PayloadReader, read_exact, read_head
from bundlecore.format.parts import (MAX_PARTS, MIN_PART_SIZE, BundleFiles, PartsReader, join_parts, parse_part_size,
                                     part_path, sums_path, write_parts)

__all__ = [
    "BLOCK", "CHUNK", "COMPRESSION_LEVEL", "DOCKER_ARCHIVE_MANIFEST", "FORMAT_VERSION", "HEAD_MEMBERS",
    "JOB_SIZE", "MANIFEST", "MAX_HEAD_FRAME", "MAX_HEAD_TAR", "MAX_MANIFEST", "MAX_SIGNATURES",
    "MAX_SIGNATURE_BLOCKS", "MAX_SUMS", "MAX_WINDOW", "PAYLOAD_PREFIX", "SIGNATURES", "SUMS", "TAR_END",
    "FormatError", "TarMember", "pad", "parse_pax_size", "parse_tar_header", "tar_member",
    "tar_member_header", "tar_member_size", "ZSTD_MAGIC", "ZstdFrameScanner", "pad_frame", "dumps_canonical", "format_sha256sums",
    "loads_strict_json", "parse_sha256sums", "PayloadFile", "PayloadWriter", "assemble", "compress_head",
    "FS_BLOCK", "PAYLOAD_OFFSET", "place_head", "rewrite_head", "rewrite_split_head", "Head",
    "PayloadReader", "read_exact", "read_head", "MAX_PARTS", "MIN_PART_SIZE", "BundleFiles", "PartsReader",
    "join_parts", "parse_part_size", "part_path", "sums_path", "write_parts",
]
