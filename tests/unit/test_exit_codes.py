"""Exit codes are a contract (scripts, monitoring, docs/cli.md): one enum defines them, every code
has a meaning, and no number moves."""

from bundlecore import errors, jsondoc
from bundlecore.errors import MEANINGS, AppState, BundleError, ExitCode


def test_the_numbers_do_not_move():
    assert {c.name: int(c) for c in ExitCode} == {
        "DONE": 0, "ENVIRONMENT": 1, "USAGE": 2, "REFUSED": 3, "UPDATE_FAILED": 4, "OPERATOR_NEEDED": 5,
        "NOT_INSTALLED": 6, "INACTIVE": 7, "ENGINE_UNREACHABLE": 8, "INSTALL_UNDONE": 9, "NEWER": 10, "PAUSED": 11,
        "INTERRUPTED": 130}


def test_every_code_has_a_meaning_and_every_error_and_status_one_of_the_codes():
    assert set(MEANINGS) == set(ExitCode)
    errors_ = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, BundleError)]
    assert all(isinstance(c.exit_code, ExitCode) for c in errors_)
    assert all(ExitCode(s) is ExitCode[s.name if s else "DONE"] for s in AppState)


def test_the_json_error_kinds_stay_the_words_they_were():
    assert jsondoc.ERROR_KINDS == {1: "environment", 2: "usage", 3: "refused", 4: "update-failed", 5: "operator-needed",
                                   6: "not-installed", 7: "inactive", 8: "engine-unreachable", 9: "install-undone",
                                   130: "interrupted"}
