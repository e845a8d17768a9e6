"""The state dir is not trusted blindly (issue 8, findings 7 and 8), on a real engine with the real CLI.

Whoever can write the state dir would decide what root's `bundle recover` removes and restores.
So a state dir that someone else could have written is refused before anything in it is read
(exit 1, one line naming the path and the problem), planted links are never followed, a journal
is acted on only where the engine matches it (exit 5, nothing touched otherwise), and recovery
removes only the helpers of its own state dir and swap.

`status` refuses an unsafe state dir too, although it only reads: what it prints (which version
runs, which generations can be rolled back to, whether a swap is pending) is what the operator
acts on next, and a state dir someone else can write could make it say anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import docker
import pytest

from bundlecore.engine import Engine
from importer.state import StateDir
from importer.backup import data as swap_data
from importer.kinds.container.journal import (FORWARD_STEPS, IncomingContainer, JournalRecord, PreexistingData, Step,
                                              SwapJournal, SwapKind)
from importer.steps import pending
from importer.kinds import recover_all
from tests.support import one_line, run_bundle
from tests.craft import snapshot_dir
from tests.swap_fixtures import data_files, digest, served_version
from tests.test_swap_crash import _swap_killed, _with_v1

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534


# -- an unsafe state dir is refused before anything in it is read ------------------------------

def _world_writable(tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    state.chmod(0o777)
    return state, f"unsafe state dir {state}: writable by group or others (mode 0777)"


def _owned_by_nobody(tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    return state, f"unsafe state dir {state}: owned by uid {NOBODY}, not by uid 0 or root"


def _group_writable_parent(tmp_path: Path) -> tuple[Path, str]:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o770)
    state = parent / "state"
    state.mkdir(mode=0o700)
    return state, f"unsafe state dir {state} (its ancestor {parent}): writable by group or others (mode 0770)"


UNSAFE = {"chmod-0777": _world_writable, "owned-by-nobody": _owned_by_nobody,
          "group-writable-parent": _group_writable_parent}
COMMANDS = {
    "import": lambda state, bundle: ["import", bundle, "--yes", "--keys", REPO / "keys", "--state-dir", state],
    "recover": lambda state, bundle: ["recover", "--yes", "--state-dir", state],
    "rollback": lambda state, bundle: ["rollback", "demo", "--yes", "--state-dir", state],
    "status": lambda state, bundle: ["status", "--state-dir", state],
}


def _plant_journal(state: Path, name: str) -> None:
    """What an attacker would leave: a journal (and a lock link) in the state dir."""
    (state / "apps" / name).mkdir(parents=True)
    (state / "apps" / name / SwapJournal.FILE).write_text('{"kind": "install", "name": "%s"}' % name)
    (state / "lock").symlink_to("/etc/hostname")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("unsafe", UNSAFE)
def test_an_unsafe_state_dir_is_refused_before_anything_is_read(tmp_path, unsafe, command):
    state, problem = UNSAFE[unsafe](tmp_path)
    _plant_journal(state, "demo")
    before = snapshot_dir(state)
    st = os.stat(state)
    bundle = tmp_path / "app.bundle"
    bundle.write_bytes(b"not looked at")
    r = run_bundle(*COMMANDS[command](state, bundle))
    assert r.returncode == 1, r
    assert one_line(r.stderr) == f"error: {problem}"
    assert snapshot_dir(state) == before  # no lock taken, no audit line, the journal untouched
    assert (os.stat(state).st_mode, os.stat(state).st_uid) == (st.st_mode, st.st_uid)


# -- planted links are not followed -----------------------------------------------------------

def _link_lock(state: Path, outside: Path) -> str:
    (state / "lock").symlink_to(outside)
    return f"unsafe state file {state / 'lock'}: it is a symlink; refusing to follow it"


def _hardlink_lock(state: Path, outside: Path) -> str:
    os.link(outside, state / "lock")
    return f"unsafe state file {state / 'lock'}: not a plain file of this user"


def _link_journal(state: Path, outside: Path) -> str:
    app = state / "apps" / "demo"
    app.mkdir(parents=True)
    (app / SwapJournal.FILE).symlink_to(outside)
    return f"unsafe state file {app / SwapJournal.FILE}: it is a symlink; refusing to follow it"


@pytest.mark.parametrize("plant", [_link_lock, _hardlink_lock, _link_journal], ids=lambda f: f.__name__[1:])
def test_a_planted_link_in_the_state_dir_is_refused_and_its_target_unchanged(tmp_path, plant):
    state = StateDir(tmp_path / "state").ensure().root
    outside = tmp_path / "precious.conf"
    outside.write_text('{"kind": "install"}\n')
    message = plant(state, outside)
    r = run_bundle("recover", "--yes", "--state-dir", state)
    assert r.returncode == 1, r
    assert one_line(r.stderr) == f"error: {message}"
    assert outside.read_text() == '{"kind": "install"}\n'


# -- a journal is acted on only where the engine matches it ------------------------------------

@pytest.fixture
def victim(docker_client, demo_images, uniq, tmp_path):
    """An unrelated running container with a named volume holding data and a bind-mounted host dir."""
    api = docker_client.api
    name, volume, host = f"victim-{uniq}", f"victim-{uniq}-data", tmp_path / "hostdir"
    host.mkdir()
    (host / "keep.txt").write_text("host data\n")
    cid = api.create_container(demo_images["v1"]["id"], name=name, volumes=["/data", "/host"],
                               host_config=api.create_host_config(binds=[f"{volume}:/data", f"{host}:/host"]))["Id"]
    api.start(cid)
    api.exec_start(api.exec_create(cid, ["sh", "-c", "echo 'victim data' > /data/victim.txt"]))
    yield {"name": name, "id": cid, "volume": volume, "host": host, "info": api.inspect_container(cid),
           "data": digest(data_files(docker_client, cid))}
    for remove in (lambda: api.remove_container(cid, force=True, v=True), lambda: api.remove_volume(volume, force=True)):
        try:
            remove()
        except docker.errors.NotFound:
            pass


def _planted_install_journal(state: StateDir, victim: dict, *, new_id: str | None, swap_id: str | None) -> Path:
    """An install journal interrupted after its new container started: undoing it would remove the
    new container and the volumes the install created, and restore the bind mounts' old content."""
    name, info = victim["name"], victim["info"]
    steps = [Step.BEGIN, Step.CREATE_NEW, Step.BACKUP]
    record = JournalRecord(
        kind=SwapKind.INSTALL, name=name, steps=FORWARD_STEPS[SwapKind.INSTALL], keep=2, health=None, bundle={},
        helper_image=None, t0=0.0, installed_before=None, generations_before={"next": 2, "items": {}},
        new=IncomingContainer(id=new_id, image_id=info["Image"], image_ref=None, generation=1, version="6.6.6",
                              sequence=1, bundle=None),
        preexisting=PreexistingData(named_volumes=[victim["volume"]], mounts=swap_data.backed_up_mounts(info),
                                    backup_dir="generations/1-before-install", container_id=new_id),
        created_volumes=[victim["volume"]],
        history=[{"step": s, "phase": p, "at": "2026-11-30T00:00:00Z"} for s in steps for p in ("started", "done")]
        + [{"step": Step.START_NEW, "phase": "started", "at": "2026-11-30T00:00:00Z"}],
        step=Step.START_NEW, phase="started")
    planted = record.to_json()
    if swap_id:
        planted["swap_id"] = swap_id
    path = state.ensure_app_dir(name) / SwapJournal.FILE
    path.write_text(json.dumps(planted))
    return path


PLANTED = {
    "names-it-by-id": dict(new_id="victim", swap_id="f" * 32),
    "names-it-by-name-only": dict(new_id=None, swap_id="f" * 32),
    "has-no-swap-id": dict(new_id="victim", swap_id=None),
}


@pytest.mark.parametrize("planted", PLANTED)
def test_a_planted_journal_naming_an_unrelated_container_leaves_it_and_its_data_alone(
        docker_client, tmp_path, victim, planted):
    state = StateDir(tmp_path / "state")
    kw = dict(PLANTED[planted])
    kw["new_id"] = victim["id"] if kw["new_id"] else None
    journal = _planted_install_journal(state, victim, **kw)
    journal_before = journal.read_bytes()
    r = run_bundle("recover", "--yes", "--state-dir", state.root)
    assert r.returncode == 5, r
    line = one_line(r.stderr)
    assert line.startswith(f"operator needed: the swap journal of {victim['name']} does not match the engine: ")
    assert line.endswith("; nothing was changed")
    info = docker_client.api.inspect_container(victim["name"])
    assert info["Id"] == victim["id"] and info["State"]["Running"]
    assert docker_client.api.inspect_volume(victim["volume"])["Name"] == victim["volume"]
    assert digest(data_files(docker_client, victim["id"])) == victim["data"]
    assert sorted(p.name for p in victim["host"].iterdir()) == ["keep.txt"]
    assert (victim["host"] / "keep.txt").read_text() == "host data\n"
    assert journal.read_bytes() == journal_before and pending(state) == [victim["name"]]


# -- recover removes only its own helpers (finding 8) ------------------------------------------

class _RecordingEngine:
    """The real client, noting which containers bundle asks the engine to remove. Other test runs on
    the shared engine (with code before this fix) remove every helper-labelled container, so the
    proof that recovery spared a container is that it never asked for its removal."""

    class _Api:
        def __init__(self, api):
            self._api, self.removed = api, []

        def remove_container(self, container, **kw):
            self.removed.append(container)
            return self._api.remove_container(container, **kw)

        def __getattr__(self, name):
            return getattr(self._api, name)

    def __init__(self, client):
        self._client, self.api = client, self._Api(client.api)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_recover_removes_only_the_helpers_of_its_own_state_dir_and_swap(docker_client, swap_env, demo_images):
    api = docker_client.api
    _with_v1(docker_client, swap_env, demo_images)
    _swap_killed(swap_env, demo_images["v2"], 2, "backup", "after")
    state, uniq = swap_env["state"], swap_env["uniq"]
    swap_id = SwapJournal.load(state.app_dir(swap_env["name"])).record.swap_id
    image = demo_images["v1"]["id"]
    # An app container whose signed run spec merely set the helper label.
    app = api.create_container(image, name=f"labelled-app-{uniq}", labels={swap_data.HELPER_LABEL: "restore"})["Id"]
    other_state = hashlib.sha256(b"/some/other/state").hexdigest()
    others = api.create_container(image, name=f"other-helper-{uniq}", labels={
        swap_data.HELPER_LABEL: "restore", swap_data.STATE_LABEL: other_state, swap_data.SWAP_LABEL: swap_id})["Id"]
    earlier = api.create_container(image, name=f"earlier-swap-helper-{uniq}", labels={
        swap_data.HELPER_LABEL: "restore", swap_data.STATE_LABEL: state.identity, swap_data.SWAP_LABEL: "0" * 32})["Id"]
    # What a crash in the middle of a restore leaves: a helper of this state dir and this swap.
    ours = api.create_container(image, name=f"own-helper-{uniq}", labels={
        swap_data.HELPER_LABEL: "restore", swap_data.STATE_LABEL: state.identity, swap_data.SWAP_LABEL: swap_id})["Id"]
    engine = _RecordingEngine(docker_client)
    with state.lock():
        lines = recover_all(Engine(engine), state, out=lambda s: None)
    assert lines == [f"{swap_env['name']}: undid the interrupted upgrade: the upgrade of {swap_env['name']} was "
                     "interrupted at backup:done; the previous version 1.0.0 is running again"]
    assert not {app, others, earlier} & set(engine.api.removed)
    assert ours in engine.api.removed and not [c for c in api.containers(all=True) if c["Id"] == ours]
    assert pending(state) == [] and served_version(swap_env) == "1.0.0"
