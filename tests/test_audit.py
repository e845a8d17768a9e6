"""The audit log against a real engine: every event kind a user can cause (an import, a refused
import, a failed update rolled back, a manual rollback, a recover after kill -9, an uninstall) is
one line in the one schema (schemas/audit-event.schema.json), and `bundle history` still reads a
log written before that schema without rewriting it."""

from __future__ import annotations

import json
import os

from bundlecore.schema import AUDIT_EVENT, first_error
from importer.steps import pending
from tests.support import one_line, run_bundle
from tests.swap_fixtures import served_version
from tests.test_health import _build, _spec


def _lines(state) -> list[dict]:
    return [json.loads(line) for line in (state.root / "audit.log").read_text().splitlines()]


def test_every_event_kind_is_one_line_of_the_one_schema(docker_client, swap_env, demo_images, pgp_keys,
                                                        trust_store_of, tmp_path):
    name, port, key = swap_env["name"], swap_env["port"], pgp_keys.builder
    keys, state = trust_store_of([key]), swap_env["state"]

    def imp(image, sequence, signer=key, env=None):
        bundle = _build(tmp_path, _spec(tmp_path, name, demo_images[image], sequence, port), signer)
        return run_bundle("import", bundle, "--keys", keys, "--state-dir", state.root, "--yes", env=env)

    def new_lines(action):
        before = len(_lines(state)) if (state.root / "audit.log").exists() else 0
        r = action()
        return r, _lines(state)[before:]

    r, (install, imported) = new_lines(lambda: imp("v1", 1))
    assert r.code == 0, str(r)
    assert (install["event"], install["result"], install["exit_code"]) == ("install", "done", 0)
    assert (imported["event"], imported["result"], imported["app"]) == ("import", "done", name)
    assert imported["bundle"]["sequence"] == 1 and imported["bundle"]["sha256"] == install["bundle"]["sha256"]
    assert imported["signers"] == install["signers"] == [{"fingerprint": key.fpr, "uid": None, "roles": []}]
    assert imported["run"] == install["run"] and {"verify", "load"} <= set(imported["phases"])
    assert {"backup", "health"} <= set(install["phases"])
    assert imported["operator"] == {"user": os.environ.get("SUDO_USER") or imported["operator"]["user"],
                                    "uid": os.getuid()}
    assert imp("v2", 2).code == 0

    # refused: signed by a key this host does not trust; no app, the check named, nothing else logged
    r, (refused,) = new_lines(lambda: imp("v4", 4, signer=pgp_keys.outsider))
    assert r.code == 3 and one_line(r.stderr).startswith("refused: signature: ")
    assert (refused["result"], refused["check"], refused["exit_code"], refused["app"]) == ("refused", "signature", 3,
                                                                                          None)
    assert refused["message"] == one_line(r.stderr) and refused["bundle"]["version"] is None

    # a failed update: rolled back (exit 4), the swap's phases and the import's
    r, (swap, imported) = new_lines(lambda: imp("v3", 3))
    assert r.code == 4, str(r)
    assert served_version(swap_env) == "2.0.0"
    assert (swap["event"], swap["result"], swap["exit_code"]) == ("upgrade", "rolled-back", 4)
    assert swap["versions"] == {"from": "2.0.0", "to": "3.0.0"}
    assert {"backup", "health", "restore"} <= set(swap["phases"])
    assert (imported["result"], imported["exit_code"], imported["versions"]) == ("rolled-back", 4,
                                                                                  {"from": "2.0.0", "to": "3.0.0"})

    # a manual rollback to 1.0.0
    r, (rolled,) = new_lines(lambda: run_bundle("rollback", name, "--state-dir", state.root, "--yes"))
    assert r.code == 0, str(r)
    assert (rolled["event"], rolled["result"], rolled["versions"]) == ("rollback", "done",
                                                                       {"from": "2.0.0", "to": "1.0.0"})
    assert rolled["bundle"]["sequence"] == 1 and rolled["signers"][0]["fingerprint"] == key.fpr

    # kill -9 in the middle of an upgrade, then `bundle recover`
    r = imp("v4", 4, env={"BUNDLE_CRASH_AT": "start_new", "BUNDLE_CRASH_WHEN": "before"})
    assert r.code == -9 and pending(state) == [name]
    r, (recovered,) = new_lines(lambda: run_bundle("recover", "--state-dir", state.root, "--yes"))
    assert r.code == 0, str(r)
    assert (recovered["event"], recovered["result"], recovered["exit_code"]) == ("recover", "rolled-back", 0)
    assert recovered["details"]["swap"] == "upgrade" and recovered["versions"] == {"from": "1.0.0", "to": "4.0.0"}
    assert served_version(swap_env) == "1.0.0"

    r, (removed,) = new_lines(lambda: run_bundle("uninstall", name, "--state-dir", state.root, "--yes"))
    assert r.code == 0, str(r)
    assert (removed["event"], removed["result"], removed["versions"]["from"]) == ("uninstall", "done", "1.0.0")

    every = _lines(state)
    assert {e["event"] for e in every} == {"import", "install", "upgrade", "rollback", "recover", "uninstall"}
    for e in every:
        assert first_error(AUDIT_EVENT, e) is None, e
        assert e["format"] == 2 and e["finished"] >= (e["started"] or "")

    # `bundle history` reads the same records
    h = run_bundle("history", name, "--state-dir", state.root, "--json")
    # each operation once: an import that swapped is its swap's event (issue 20)
    swapped = {e["run"] for e in every if e["event"] in ("install", "upgrade")}
    assert h.code == 0 and [e["event"] for e in json.loads(h.stdout)["events"]] == [
        e["event"] for e in every if e["app"] == name and not (e["event"] == "import" and e["run"] in swapped)]


OLD_LOG = [  # as bundle wrote it before the one schema: imports `started`/`duration`, swaps `at`/`duration_s`
    {"event": "import", "user": "ops", "uid": 0, "at": "2026-01-01T00:00:09Z", "started": "2026-01-01T00:00:00Z",
     "bundle": "/srv/shop-1.bundle.zst", "name": "shop", "version": "1.0.0", "sequence": 1,
     "signers": ["F" * 40], "sha256": "ab" * 32, "result": "installed", "duration": 9.1},
    {"event": "upgrade", "name": "shop", "app": "shop", "result": "rolled back", "message": "not healthy",
     "started_at": "2026-01-02T00:00:00Z", "at": "2026-01-02T00:00:30Z", "duration_s": 30.2, "logs": None,
     "bundle_sha256": "cd" * 32, "signers": ["F" * 40], "old_version": "1.0.0", "new_version": "2.0.0",
     "old_sequence": 1, "new_sequence": 2, "user": "ops", "uid": 0, "steps": ["begin:started"]},
    {"event": "import", "user": "ops", "uid": 0, "at": "2026-01-03T00:00:01Z", "started": "2026-01-03T00:00:00Z",
     "bundle": "/srv/x.zst", "result": "refused: signature: no good signature from a trusted key", "duration": 0.2},
]


def test_history_reads_a_log_written_before_the_schema_and_leaves_it_as_it_was(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    raw = "".join(json.dumps(e) + "\n" for e in OLD_LOG)
    (state / "audit.log").write_text(raw)
    r = run_bundle("history", "shop", "--state-dir", state, "--json")
    assert r.code == 0, str(r)
    events = json.loads(r.stdout)["events"]
    assert [(e["event"], e["result"], e["exit_code"]) for e in events] == [("import", "done", 0),
                                                                          ("upgrade", "rolled-back", 4)]
    for e in events:
        assert first_error(AUDIT_EVENT, e) is None, e
    assert events[1]["phases"] == {"total": 30.2} and events[1]["finished"] == "2026-01-02T00:00:30Z"
    assert events[1]["versions"] == {"from": "1.0.0", "to": "2.0.0"} and events[0]["bundle"]["sequence"] == 1
    text = run_bundle("history", "shop", "--state-dir", state).stdout
    assert "2026-01-02T00:00:30Z  upgrade  1.0.0 -> 2.0.0  result: rolled-back" in text
    assert (state / "audit.log").read_text() == raw  # read on the fly, never rewritten
