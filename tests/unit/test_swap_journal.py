"""The journal's typed records read and write the JSON the previous code wrote, key for key, so a
journal left by a crash of the old version is recovered by this one (importer.kinds.container.journal)."""

import copy
import json

import pytest

from bundlecore.release import Result
from importer.kinds.container.journal import (FORWARD_STEPS, UNDO_STEPS, DisplacedContainer, IncomingContainer, JournalRecord,
                                   PreexistingData, Step, SwapJournal, SwapKind)

MOUNTS = [{"type": "volume", "name": "demo-data", "source": "/var/lib/docker/volumes/demo-data/_data",
           "destination": "/data"}]
BUNDLE = {"name": "demo", "version": "2.0.0", "sequence": 2, "sha256": "ab" * 32, "signers": ["F" * 40],
          "images": {"demo:2": "sha256:" + "2" * 64}}
COMMON = {
    "keep": 2, "health": {"http": "http://127.0.0.1:8080/health", "timeout": 5, "attempts": 2},
    "bundle": BUNDLE, "helper_image": "sha256:" + "1" * 64, "t0": 1764460000.25,
    "installed_before": {"name": "demo", "version": "1.0.0", "sequence": 1, "highest_sequence": 1},
    "generations_before": {"next": 3, "current": 1, "items": {"1": {"generation": 1, "container_id": "c1"}}},
    "direction": "forward", "started_at": "2026-11-30T00:00:00Z", "pid": 4242,
    "history": [{"step": "begin", "phase": "started", "at": "2026-11-30T00:00:00Z"},
                {"step": "begin", "phase": "done", "at": "2026-11-30T00:00:00Z"},
                {"step": "stop_old", "phase": "started", "at": "2026-11-30T00:00:01Z"}],
    "step": "stop_old", "phase": "started",
}
OLD = {"id": "c1" * 32, "generation": 1, "parked_name": "demo.previous-1", "image_id": "sha256:" + "1" * 64,
       "image_ref": "demo:1", "version": "1.0.0", "sequence": 1, "was_running": True,
       "restart_policy": {"Name": "unless-stopped", "MaximumRetryCount": 0}, "mounts": MOUNTS,
       "backup_dir": "generations/1"}
UPGRADE = {**COMMON, "kind": "upgrade", "name": "demo", "steps": [s.value for s in FORWARD_STEPS["upgrade"]],
           "old": OLD,
           "new": {"image_id": "sha256:" + "2" * 64, "image_ref": "demo:2", "generation": 2, "version": "2.0.0",
                   "sequence": 2, "bundle": {"sha256": "ab" * 32, "signers": ["F" * 40], "images": {}}, "id": None,
                   "create": {"config": {"Image": "demo:2"}, "extra_networks": {}}}}
INSTALL = {**COMMON, "kind": "install", "name": "demo", "steps": [s.value for s in FORWARD_STEPS["install"]],
           "old": None, "created_volumes": ["demo-data"],
           "preexisting": {"named_volumes": ["demo-data"], "mounts": [], "backup_dir": "generations/1-before-install",
                           "container_id": "c2" * 32},
           "new": UPGRADE["new"] | {"generation": 1}}
ROLLBACK = {**COMMON, "kind": "rollback", "name": "demo", "steps": [s.value for s in FORWARD_STEPS["rollback"]],
            "old": OLD | {"generation": 2, "parked_name": "demo.previous-2", "bundle": {"sha256": "cd" * 32}},
            "new": {"id": "c0" * 32, "generation": 1, "parked_name": "demo.previous-1", "image_id": "sha256:" + "0" * 64,
                    "image_ref": "demo:1", "version": "1.0.0", "sequence": 1, "backup_dir": "generations/1",
                    "restart_policy": {"Name": "no"}, "bundle": None}}
FINISHED_AFTER_UNDO = UPGRADE | {"direction": "undo", "failure": "demo 2.0.0 did not become healthy",
                                 "data_restored": True, "result": "rolled back", "message": "...",
                                 "finished_at": "2026-11-30T00:01:00Z", "step": "start_old", "phase": "done"}
STUCK = UPGRADE | {"direction": "undo", "failure": "x", "operator_needed": "the previous container is gone",
                   "data_restored": False}


@pytest.mark.parametrize("written_by_old_code", [UPGRADE, INSTALL, ROLLBACK, FINISHED_AFTER_UNDO, STUCK],
                         ids=["upgrade", "install", "rollback", "finished-after-undo", "operator-needed"])
def test_a_journal_written_by_the_old_code_reads_and_writes_back_identically(written_by_old_code):
    original = copy.deepcopy(written_by_old_code)
    record = JournalRecord.from_json(json.loads(json.dumps(written_by_old_code)))
    assert json.dumps(record.to_json(), sort_keys=True) == json.dumps(original, sort_keys=True)


def test_the_records_are_typed_after_reading():
    r = JournalRecord.from_json(copy.deepcopy(UPGRADE))
    assert r.kind is SwapKind.UPGRADE and r.step is Step.STOP_OLD and r.steps[1] is Step.STOP_OLD
    assert isinstance(r.old, DisplacedContainer) and r.old.parked_name == "demo.previous-1"
    assert isinstance(r.new, IncomingContainer) and r.new.id is None and r.preexisting is None
    assert r.data_side is r.old and r.data_side.backup_source == OLD["id"]
    i = JournalRecord.from_json(copy.deepcopy(INSTALL))
    assert isinstance(i.data_side, PreexistingData) and i.data_side.backup_source == "c2" * 32


def test_recovery_reads_a_crashed_journal_from_disk_and_sees_where_it_stopped(tmp_path):
    (tmp_path / SwapJournal.FILE).write_text(json.dumps(UPGRADE))
    j = SwapJournal.load(tmp_path)
    assert j.reached(Step.STOP_OLD) and not j.reached(Step.STOP_OLD, "done") and not j.reached(Step.COMMIT)
    j.mark(Step.STOP_OLD, "done")
    on_disk = json.loads((tmp_path / SwapJournal.FILE).read_text())
    assert on_disk["step"] == "stop_old" and on_disk["phase"] == "done" and on_disk["history"][-1]["step"] == "stop_old"


def test_finishing_moves_the_record_to_last_swap_and_removes_the_journal(tmp_path):
    j = SwapJournal.start(tmp_path, JournalRecord.from_json(copy.deepcopy(UPGRADE)))
    j.save()
    j.finish(Result.DONE, "demo 2.0.0 is running")
    assert not (tmp_path / SwapJournal.FILE).exists()
    assert SwapJournal.last(tmp_path)["result"] == "installed"


def test_every_step_of_every_path_is_a_step_and_commit_comes_after_the_health_gate_and_probation():
    for steps in FORWARD_STEPS.values():
        assert all(isinstance(s, Step) for s in steps)
        assert steps.index(Step.PROBATION) == steps.index(Step.START_NEW) + 1
        assert steps.index(Step.COMMIT) == steps.index(Step.PROBATION) + 1 and steps[-1] is Step.PRUNE
    assert UNDO_STEPS == ["remove_new", "restore_data", "rename_back", "start_old"]
