"""The --json shapes (bundlecore.jsondoc) against their one description (schemas/cli/)."""

import pytest

from bundlecore import jsondoc
from bundlecli.main import verb_and_json
from bundlecore.errors import AppState, EnvironmentProblem, UpdateFailed, UsageProblem
from bundlecore.refusals import Check, SignatureRefused
from bundlecore.schema import cli_schema_name, first_error

REPORT = {"name": "web", "container_name": "web", "installed": {"version": "2.0.0", "sequence": 2, "generation": 2},
          "container": None, "previous": [{"generation": 1}], "pending_swap": False, "last_swap": None,
          "state": "inactive", "exit_code": 7}


@pytest.mark.parametrize("verb, doc", [
    ("version", jsondoc.document("version", {"version": "1"})),
    ("join", jsondoc.document("join", {"path": "b", "size": 1, "sha256": "ab"})),
    ("approve", jsondoc.document("approve", {"bundle": "b", "sha256": "ab", "approved_by": jsondoc.signer("F" * 40),
                                             "signed_before": [jsondoc.signer("E" * 40, ["builders"])]})),
    ("status", jsondoc.document("status", {"engine_answers": True, "apps": [jsondoc.app_status(REPORT)]}, 7,
                                jsondoc.error(7, "inactive: web"))),
    ("list", jsondoc.document("list", {"engine_answers": False, "apps": []})),
    ("recover", jsondoc.document("recover", {"pending": [], "recovered": []})),
    ("import", jsondoc.failure("import", 4, "update failed: x", partial={"name": "web", "version": "3", "sequence": 3,
                                                                       "running_version": "2"})),
    ("verify", jsondoc.of_error("verify", SignatureRefused("no trusted signature"), "refused: signature: ...")),
    ("inventory", jsondoc.of_error("inventory", EnvironmentProblem("engine down"), "error: engine down")),
])
def test_documents_built_by_jsondoc_validate_against_their_command_schema(verb, doc):
    assert first_error(cli_schema_name(verb), doc) is None


@pytest.mark.parametrize("verb, doc, where", [
    ("version", {"version": "1", "command": "version", "ok": True, "exit_code": 0,
                 "error": jsondoc.error(1, "x")}, "ok true with an error"),
    ("version", {"version": "1", "command": "version", "ok": False, "exit_code": 1}, "ok false without an error"),
    ("version", jsondoc.document("join", {"version": "1"}), "another command's document"),
    ("approve", jsondoc.document("approve", {"bundle": "b", "sha256": "ab", "approved_by": "F" * 40,
                                             "signed_before": []}), "a signer as a bare string"),
    ("status", jsondoc.document("status", {"engine_answers": True, "apps": [REPORT]}), "a raw report, not app_status"),
    ("verify", jsondoc.failure("verify", 0, "x"), "a failure with exit 0"),
    ("verify", {**jsondoc.failure("verify", 3, "x"), "error": {"kind": "refused", "message": "x"}}, "error without check"),
])
def test_documents_that_break_a_shape_do_not_validate(verb, doc, where):
    assert first_error(cli_schema_name(verb), doc) is not None, where


@pytest.mark.parametrize("error, kind, check", [
    (SignatureRefused("x"), "refused", "signature"),
    (UpdateFailed("x"), "update-failed", None),
    (UsageProblem("x"), "usage", None),
    (EnvironmentProblem("x"), "environment", None),
])
def test_a_failure_document_names_the_kind_by_exit_code_and_the_check_from_the_enum(error, kind, check):
    doc = jsondoc.of_error("import", error, "line")
    assert doc["ok"] is False and doc["exit_code"] == error.exit_code
    assert doc["error"] == {"kind": kind, "message": "line", "check": check}
    if check:
        assert Check(doc["error"]["check"])


def test_a_partial_result_carried_by_the_error_sits_beside_the_error():
    e = UpdateFailed("health")
    e.partial = {"name": "web", "version": "3", "running_version": "2"}
    doc = jsondoc.of_error("import", e, "update failed: health")
    assert (doc["name"], doc["version"], doc["running_version"], doc["exit_code"]) == ("web", "3", "2", 4)


def test_status_kinds_are_the_app_state_labels():
    assert {jsondoc.ERROR_KINDS[int(s)] for s in AppState if s} == {"not-installed", "inactive", "engine-unreachable"}


@pytest.mark.parametrize("argv, expected", [
    (["status", "--json"], ("status", True)),
    (["--debug", "import", "x", "--json"], ("import", True)),
    (["import", "x"], ("import", False)),
    (["bogus", "--json"], (None, True)),
    (["import", "x", "--", "--json"], ("import", False)),   # after --, an argument, not the flag
    (["--json"], (None, True)),
])
def test_the_verb_and_json_flag_are_read_from_the_line(argv, expected):
    assert verb_and_json(argv) == expected
