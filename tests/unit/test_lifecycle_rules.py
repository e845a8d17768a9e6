"""Pure rules of the lifecycle: the layout-1 migration of the state dir (atomic, idempotent,
resumable), the `bundle status` verdict and exit code, and which audit events are an app's."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from bundlecore.engine import seconds_up
from bundlecore.errors import AppState, EnvironmentProblem
from importer.audit import events_of
from importer.state import MIGRATION_PLAN, StateDir, migrate_layout, needs_migration
from importer.kinds.container.status import app_state, overall

REC = {"name": "web", "version": "1.0.0", "sequence": 3, "container_id": "c" * 64, "image_id": "sha256:i"}


def write(path, obj):
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def layout_1(root, container="web", app="shop", *, owner=True, journal_app=None):
    """What the previous code wrote for app `app` installed as container `container`."""
    root.mkdir(mode=0o700, exist_ok=True)
    write(root / "installed" / f"{container}.json", REC)
    write(root / "apps" / container / "generations.json", {"next": 2, "current": 1, "items": {}})
    write(root / "apps" / container / "last-swap.json", {"name": container, "bundle": {"name": journal_app or app}})
    if owner:
        write(root / "owners" / f"{container}.json", {"container": container, "app": app})
    write(root / "sequences" / f"{app}.json", {"name": app, "highest_sequence": 3})


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


@pytest.mark.parametrize("owner, journal_app, expected", [
    (True, None, "shop"),          # from owners/<container>.json
    (False, None, "shop"),         # from the bundle named in the last swap's journal
    (False, "web", "web"),         # unknown: the container name is the app name
])
def test_a_layout_1_state_dir_is_rekeyed_by_app_name(tmp_path, owner, journal_app, expected):
    root = tmp_path / "state"
    layout_1(root, owner=owner, journal_app=journal_app)
    state = StateDir(root)  # first use migrates
    assert state.installed(expected) == {**REC, "app": expected, "container": "web"}
    assert state.container_of(expected) == "web" and state.app_of_container("web") == expected
    assert sorted(p.name for p in (root / "installed").iterdir()) == [f"{expected}.json"]
    assert sorted(p.name for p in (root / "apps").iterdir()) == [expected]
    assert (root / "apps" / expected / "generations.json").exists()  # the working area moved with it
    assert not (root / "owners").exists() and not (root / MIGRATION_PLAN).exists()
    assert state.highest_sequence("shop") == 3  # the anti-rollback mark was keyed by app already
    after = tree(root)
    assert not needs_migration(root) and migrate_layout(root) == {} and tree(root) == after  # idempotent


def test_a_migration_killed_midway_is_finished_by_the_next_use(tmp_path):
    root = tmp_path / "state"
    layout_1(root)
    # As if killed after the plan and the new record were written, before anything else moved.
    write(root / MIGRATION_PLAN, {"web": "shop"})
    write(root / "installed" / "shop.json", {**REC, "app": "shop", "container": "web"})
    (root / "owners" / "web.json").unlink()  # the plan, not the owner file, now says which app
    state = StateDir(root)
    assert state.installed("shop")["container"] == "web" and state.installed("web") is None
    assert (root / "apps" / "shop" / "generations.json").exists() and not (root / MIGRATION_PLAN).exists()


def test_a_migration_that_would_overwrite_another_apps_state_is_refused_untouched(tmp_path):
    root = tmp_path / "state"
    layout_1(root, container="web", app="shop")
    write(root / "installed" / "shop.json", {**REC, "app": "shop", "container": "other"})  # layout 2 already
    before = tree(root)
    with pytest.raises(EnvironmentProblem, match="cannot migrate state dir .*shop"):
        StateDir(root)
    assert tree(root) == before


def test_a_fresh_or_current_state_dir_is_not_touched(tmp_path):
    root = tmp_path / "state"
    StateDir(root).ensure().record_installed("shop", {**REC, "app": "shop", "container": "web"})
    before = tree(root)
    StateDir(root)
    assert tree(root) == before and not needs_migration(root)


LIVE = {"status": "running", "health": None, "image_id": "sha256:i", "restarting": False}


@pytest.mark.parametrize("installed, live, engine, verdict", [
    (REC, LIVE, True, AppState.ACTIVE),
    (REC, {**LIVE, "health": "healthy"}, True, AppState.ACTIVE),
    (None, None, True, AppState.NOT_INSTALLED),
    (None, None, False, AppState.NOT_INSTALLED),        # the state dir alone knows it
    (REC, None, False, AppState.ENGINE_UNREACHABLE),
    (REC, None, True, AppState.INACTIVE),               # container missing
    (REC, {**LIVE, "status": "exited"}, True, AppState.INACTIVE),
    (REC, {**LIVE, "restarting": True}, True, AppState.INACTIVE),
    # restarted by its policy: a crash loop caught between two crashes is not active ...
    (REC, {**LIVE, "restart_count": 2, "up_seconds": 1.5}, True, AppState.INACTIVE),
    # ... one that has run FLAP_WINDOW since (Docker's own back-off reset) is
    (REC, {**LIVE, "restart_count": 2, "up_seconds": 10.0}, True, AppState.ACTIVE),
    (REC, {**LIVE, "restart_count": 0, "up_seconds": 0.5}, True, AppState.ACTIVE),  # just started by hand
    (REC, {**LIVE, "health": "unhealthy"}, True, AppState.INACTIVE),
    (REC, {**LIVE, "health": "starting"}, True, AppState.INACTIVE),
    (REC, {**LIVE, "image_id": "sha256:other"}, True, AppState.INACTIVE),  # not the installed image
])
def test_status_verdict(installed, live, engine, verdict):
    assert app_state({"installed": installed, "container": live}, engine_answers=engine) is verdict


@pytest.mark.parametrize("states, code", [
    ([], 6), ([AppState.ACTIVE], 0), ([AppState.ACTIVE, AppState.INACTIVE], 7),
    ([AppState.INACTIVE, AppState.NOT_INSTALLED], 6), ([AppState.NOT_INSTALLED, AppState.ENGINE_UNREACHABLE], 8),
])
def test_status_exit_code_of_several_apps_is_the_worst(states, code):
    assert overall(states) == code


def test_status_codes_do_not_collide_with_the_shared_contract():
    assert {int(s) for s in AppState} == {0, 6, 7, 8}


def test_history_reads_an_apps_events_old_and_new_and_skips_garbage(tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    lines = [{"event": "import", "name": "shop", "result": "installed"},
             {"event": "install", "name": "web", "app": "shop", "result": "installed"},
             {"event": "upgrade", "name": "web", "result": "installed"},            # before the re-keying
             {"event": "import", "name": "web", "result": "refused"},               # an app called web
             {"event": "install", "name": "other", "app": "other", "result": "installed"}]
    (state.root / "audit.log").write_text("\n".join(map(json.dumps, lines)) + "\nnot json\n[1]\n")
    seen = lambda events: [(str(e.event), e.app, str(e.result)) for e in events]  # noqa: E731
    assert seen(events_of(state, "shop", "web")) == [("import", "shop", "done"), ("install", "shop", "done"),
                                                     ("upgrade", "web", "done")]
    assert seen(events_of(state, "web")) == [("upgrade", "web", "done"), ("import", "web", "refused")]


def test_a_pending_journal_of_the_previous_layout_moves_with_its_app_and_is_keyed_by_it(tmp_path):
    from importer.kinds.container.journal import SwapJournal
    from importer.steps import pending
    from tests.unit.test_swap_journal import UPGRADE
    root = tmp_path / "state"
    layout_1(root)
    write(root / "apps" / "web" / "journal.json", {**UPGRADE, "name": "web"})
    state = StateDir(root)
    assert pending(state) == ["shop"]
    r = SwapJournal.load(state.app_dir("shop")).record
    assert r.key == "shop" and r.name == "web"
    assert "app" not in json.loads((root / "apps" / "shop" / "journal.json").read_text())  # not rewritten


@pytest.mark.parametrize("state, up", [
    ({"Running": True, "StartedAt": "2026-12-06T19:00:00.250000000Z"}, 9.75),
    ({"Running": True, "StartedAt": "2026-12-06T19:00:00Z"}, 10.0),
    ({"Running": False, "StartedAt": "2026-12-06T19:00:00Z"}, None),   # not running: no uptime
    ({"Running": True, "StartedAt": "garbage"}, None),
])
def test_seconds_up_reads_the_engine_s_nanosecond_timestamps(state, up):
    now = datetime(2026, 12, 6, 19, 0, 10, tzinfo=timezone.utc).timestamp()
    assert seconds_up({"State": state}, now) == (None if up is None else pytest.approx(up, abs=1e-3))
