"""The documents `--json` prints: one envelope for every command, one shape per concept.

Every document carries `command`, `ok` and `exit_code`; a failure (any exit a command ends with
on an error, and `bundle status` 6/7/8) adds `error` {kind, message, check} and whatever partial
result the error carried. Signers, images and an application's status are built here only, so
`verify`, `inspect`, `import`, `approve` and `history` cannot drift apart again. Each shape is
described once in schemas/cli/common.schema.json; each command's document in
schemas/cli/COMMAND.schema.json (a test validates real output against them).
"""

from __future__ import annotations

import click
from typing import Any, Iterable

from bundlecore.errors import BundleError, ExitCode

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print a JSON document on stdout, also on failure (docs/cli.md).")

# error.kind by exit code: the contract of bundlecore.errors, never read from display text
ERROR_KINDS: dict[int, str] = {code: code.label for code in ExitCode
                               if code not in (ExitCode.DONE, ExitCode.NEWER, ExitCode.PAUSED)}


def signer(fingerprint: str, roles: Iterable[str] = (), uid: str | None = None) -> dict[str, Any]:
    """A key that signed: its fingerprint (or key ID, when unverified), its user ID when known, and
    the trust-store roles it counted for (empty when unverified or not recorded). The audit log's
    signers (bundlecore.release.Signer, `to_json`) have exactly these keys."""
    return {"fingerprint": fingerprint, "uid": uid, "roles": list(roles)}


def image(ref: str, image_id: str, size: int | None = None) -> dict[str, Any]:
    """An image of a bundle: its pinned ref and image ID (and its payload bytes, when known)."""
    return {"ref": ref, "id": image_id, **({"size": size} if size is not None else {})}


def app_status(st: dict[str, Any]) -> dict[str, Any]:
    """One application as `status`, `list` and `import` show it, from a target kind's status report
    (importer.kinds.container.status / importer.kinds.service.status); the whole report stays under `detail`."""
    rec = st.get("installed") or {}
    return {"name": st["name"], "kind": st.get("kind", "container"), "state": st["state"],
            "exit_code": st["exit_code"], "installed": bool(rec), "version": rec.get("version"),
            "sequence": rec.get("sequence"), "generation": rec.get("generation"),
            "previous": [p["generation"] for p in st.get("previous") or []],
            "pending_swap": bool(st.get("pending_swap")), "operation": st.get("operation"), "detail": st}


def document(command: str | None, body: dict[str, Any], exit_code: int = 0,
             error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The envelope around a command's own fields."""
    return {**body, "command": command, "ok": error is None, "exit_code": exit_code,
            **({"error": error} if error else {})}


def error(exit_code: int, message: str, check: str | None = None) -> dict[str, Any]:
    return {"kind": ERROR_KINDS.get(exit_code, "error"), "message": message, "check": check}


def failure(command: str | None, exit_code: int, message: str, *, check: str | None = None,
            partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document of a command that ended on an error: `message` is the stderr line."""
    return document(command, partial or {}, exit_code, error(exit_code, message, check))


def of_error(command: str | None, e: BundleError, message: str) -> dict[str, Any]:
    """The failure document of a BundleError: its check (a Check value) and partial result, if any."""
    check = getattr(e, "check", "")
    return failure(command, e.exit_code, message, check=str(check) if check else None, partial=e.partial)
