"""The audit record's one schema and the Prometheus text derived from the audit log (pure: no engine).
The text is read back with prometheus_client's parser, the reference reader of the format."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bundlecore.refusals import Check
from bundlecore.schema import AUDIT_EVENT, _registry, first_error, validator
from importer.audit import AuditEvent, BundleRef, EventKind, Result, Signer, format1_result, read_events, write_event
from importer.metrics import escape_label, render, update, write_file
from importer.state import StateDir

HOSTILE = 'v1"} evil 1\n# TYPE x counter\\'


def ev(event, result, app="shop", run="r1", version=None, sequence=None, check=None, phases=None, **kw):
    return AuditEvent(EventKind(event), Result(result), Result(result).exit_code, app=app, run=run, check=check,
                      bundle=BundleRef("ab" * 32, app, version, sequence), version_to=version,
                      phases=phases or {}, finished="2026-11-30T01:02:03Z", **kw)


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of every sample, through the reference parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# -- the record and its schema ---------------------------------------------------------------------

def test_the_audit_schema_is_shipped_with_the_others_and_its_enums_are_the_codes():
    assert AUDIT_EVENT in {uri.rsplit("/", 1)[-1] for uri in _registry()}
    props = validator(AUDIT_EVENT).schema["properties"]
    assert props["event"]["enum"] == [k.value for k in EventKind]
    assert props["result"]["enum"] == [r.value for r in Result]
    assert props["check"]["enum"] == [None] + [c.value for c in Check]


@pytest.mark.parametrize("result,code", [("done", 0), ("unchanged", 0), ("dry-run", 0), ("refused", 3),
                                         ("rolled-back", 4), ("operator-needed", 5), ("install-undone", 9),
                                         ("not-done", 1), ("failed", 1)])
def test_each_result_has_the_exit_code_of_the_contract(result, code):
    assert Result(result).exit_code == code


@pytest.mark.parametrize("text,kind,result", [
    ("installed", "upgrade", "done"), ("rolled back", "upgrade", "rolled-back"),
    ("rolled back", "install", "install-undone"), ("operator needed", "rollback", "operator-needed"),
    ("uninstalled", "uninstall", "done"), ("not uninstalled", "uninstall", "not-done"),
    ("refused: signature: no good signature", "import", "refused"), ("error: engine gone", "import", "failed")])
def test_older_result_texts_map_to_one_result(text, kind, result):
    assert format1_result(text, kind)[0] == Result(result)


def test_a_written_event_validates_and_reads_back_the_same(tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    event = ev("import", "refused", check="signature", signers=(Signer("F" * 40, None, ("release",)),),
               phases={"verify": 0.25})
    write_event(state, event)
    line = json.loads((state.root / "audit.log").read_text())
    assert first_error(AUDIT_EVENT, line) is None
    assert line["versions"] == {"from": None, "to": None} and line["operator"]["uid"] == os.getuid()
    assert read_events(state) == [event]


def test_older_lines_are_read_into_the_record_and_the_log_is_not_rewritten(tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    old = [{"event": "import", "user": "ops", "uid": 0, "at": "2026-01-01T00:00:10Z", "started": "2026-01-01T00:00:00Z",
            "name": "shop", "version": "1.0", "sequence": 1, "signers": ["F" * 40], "sha256": "ab" * 32,
            "result": "refused: sequence: 1 is not above 2", "duration": 1.5},
           {"event": "rollback", "name": "web", "app": "shop", "result": "installed", "at": "2026-01-01T00:01:00Z",
            "started_at": "2026-01-01T00:00:50Z", "duration_s": 9.5, "old_version": "2.0", "new_version": "1.0",
            "new_sequence": 1, "bundle_sha256": "cd" * 32, "user": "ops", "uid": 0, "logs": None}]
    raw = "".join(json.dumps(o) + "\n" for o in old)
    (state.root / "audit.log").write_text(raw)
    refused, rolled = read_events(state)
    assert (refused.event, refused.result, refused.check, refused.exit_code) == ("import", "refused", "sequence", 3)
    assert refused.phases == {"total": 1.5} and refused.signers == (Signer("F" * 40),)
    assert (rolled.event, rolled.result, rolled.version_from, rolled.version_to) == ("rollback", "done", "2.0", "1.0")
    assert rolled.finished == "2026-01-01T00:01:00Z" and rolled.phases == {"total": 9.5}
    assert rolled.bundle.sha256 == "cd" * 32 and (rolled.operator.user, rolled.operator.uid) == ("ops", 0)
    for e in (refused, rolled):
        assert first_error(AUDIT_EVENT, e.to_json()) is None
    assert (state.root / "audit.log").read_text() == raw


# -- the metrics -------------------------------------------------------------------------------------

def test_metrics_of_a_history_read_back_by_the_reference_parser():
    events = [ev("install", "done", version="1.0", sequence=1, run="a", phases={"backup": 0.5, "health": 2}),
              ev("import", "done", version="1.0", sequence=1, run="a", phases={"verify": 1, "load": 3}),
              ev("upgrade", "rolled-back", version="2.0", sequence=2, run="b", phases={"health": 4, "restore": 1}),
              ev("import", "rolled-back", version="2.0", sequence=2, run="b", phases={"verify": 1}),
              ev("import", "refused", app=None, check="signature", run="c"),
              ev("import", "refused", check="sequence", run="d", version="0.9", sequence=0),
              ev("rollback", "done", app="other", version="0.1", sequence=1, run="e")]
    got = samples(render(events))
    assert got[("bundle_installed_sequence", (("app", "shop"), ("version", "1.0")))] == 1
    assert got[("bundle_rollbacks_total", (("app", "shop"),))] == 1  # the swap counts, not the import again
    assert got[("bundle_rollbacks_total", (("app", "other"),))] == 1
    assert got[("bundle_refusals_total", (("check", "signature"),))] == 1
    assert got[("bundle_refusals_total", (("check", "sequence"),))] == 1
    assert got[("bundle_refusals_total", (("check", "payload"),))] == 0
    assert got[("bundle_imports_total", (("result", "done"),))] == 1
    assert got[("bundle_imports_total", (("result", "refused"),))] == 2
    assert got[("bundle_imports_total", (("result", "rolled_back"),))] == 1
    # the last run of shop is the refused import "d": its result, exit code and phases (none) only
    assert got[("bundle_last_run_result", (("app", "shop"), ("result", "refused")))] == 1
    assert got[("bundle_last_run_result", (("app", "shop"), ("result", "done")))] == 0
    assert got[("bundle_last_run_exit_code", (("app", "shop"),))] == 3
    finished = datetime(2026, 11, 30, 1, 2, 3, tzinfo=timezone.utc).timestamp()
    assert got[("bundle_last_run_timestamp_seconds", (("app", "shop"),))] == finished
    # a refusal before the manifest was trusted names no app anywhere
    assert all(dict(labels).get("app") != "" for _, labels in got)


def test_phases_of_the_last_run_add_up_its_events():
    events = [ev("upgrade", "rolled-back", run="b", phases={"health": 4, "restore": 1}),
              ev("import", "rolled-back", run="b", phases={"verify": 1.25, "load": 3})]
    got = samples(render(events))
    assert {dict(k[1])["phase"]: v for k, v in got.items() if k[0] == "bundle_last_run_phase_seconds"} == {
        "health": 4, "restore": 1, "verify": 1.25, "load": 3}


def test_uninstall_removes_the_installed_series_and_help_and_type_lines_are_there():
    text = render([ev("install", "done", version="1.0", sequence=1, run="a"), ev("uninstall", "done", run="b")])
    assert not [k for k in samples(text) if k[0] == "bundle_installed_sequence"]
    assert "# TYPE bundle_rollbacks_total counter" in text and "# HELP bundle_installed_sequence " in text
    for family in text_string_to_metric_families(text):
        assert family.type in ("gauge", "counter") and family.documentation


def test_a_hostile_version_is_escaped_and_reads_back_exactly():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    text = render([ev("install", "done", version=HOSTILE, sequence=7, app='we"ird\\app\n')])
    assert "\n# TYPE x counter" not in text and "evil 1" not in text.replace('evil 1\\n', '')
    got = samples(text)
    assert got[("bundle_installed_sequence", (("app", 'we"ird\\app\n'), ("version", HOSTILE)))] == 7
    assert {k[0] for k in got} <= {"bundle_installed_sequence", "bundle_last_run_timestamp_seconds",
                                   "bundle_last_run_result", "bundle_last_run_exit_code", "bundle_rollbacks_total",
                                   "bundle_refusals_total", "bundle_imports_total"}


def test_an_empty_log_gives_zero_totals():
    got = samples(render([]))
    assert got[("bundle_imports_total", (("result", "done"),))] == 0 and len(got) == len(Check) + len(Result)


# -- the file -----------------------------------------------------------------------------------------

def test_the_file_is_written_0644_whatever_the_umask_and_no_temp_is_left(tmp_path):
    old = os.umask(0o077)
    try:
        write_file(tmp_path / "bundle.prom", "x 1\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "bundle.prom").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.prom"]


def test_a_symlink_at_the_path_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "bundle.prom").symlink_to(victim)
    write_file(tmp_path / "bundle.prom", "x 1\n")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "bundle.prom").is_symlink() and (tmp_path / "bundle.prom").read_text() == "x 1\n"


def test_a_symlink_planted_at_the_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / f".bundle.prom.{os.getpid()}.tmp").symlink_to(victim)
    write_file(tmp_path / "bundle.prom", "x 1\n")
    assert victim.read_text() == "precious" and (tmp_path / "bundle.prom").read_text() == "x 1\n"


def test_a_missing_directory_is_a_warning_not_an_error(tmp_path, capsys):
    StateDir(tmp_path / "state").ensure()
    update(tmp_path / "state", tmp_path / "nosuch" / "bundle.prom")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"warning: metrics not written to {tmp_path / 'nosuch'}")
    assert not (tmp_path / "nosuch").exists()


def test_the_default_file_is_in_the_state_dir(tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    write_event(state, ev("import", "refused", app=None, check="signature"))
    update(tmp_path / "state", None)
    got = samples((tmp_path / "state" / "metrics" / "bundle.prom").read_text())
    assert got[("bundle_refusals_total", (("check", "signature"),))] == 1


def test_the_docs_name_every_field_event_result_and_metric():
    from importer.metrics import METRICS
    from tests.support import REPO
    audit = (REPO / "docs" / "audit.md").read_text()
    for name in validator(AUDIT_EVENT).schema["properties"]:
        assert f"| `{name}`" in audit or f"`{name}`, `" in audit or f", `{name}` |" in audit, name
    for value in [*EventKind, *Result]:
        assert f"`{value}`" in audit, value
    metrics = (REPO / "docs" / "metrics.md").read_text()
    for m in METRICS:
        assert f"| `{m.name}` | {m.kind} |" in metrics, m.name
