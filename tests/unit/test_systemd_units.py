"""The systemd unit of a Podman container (importer.units), without an engine or systemd: written
under a temp name with the unit it replaces kept, put back by an undo, renamed by uninstall, never
deleted; replayed writes change nothing; systemctl never runs where systemd does not read the unit."""

import pytest

from importer import units

TEXT = "[Unit]\nDescription=Podman container-web.service\n[Service]\nExecStart=/usr/bin/podman start web\n"


@pytest.fixture
def unit_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BUNDLE_SYSTEMD_DIR", str(tmp_path / "units"))
    return tmp_path / "units"


def _unit(container_id: str, version: str = "1.0.0") -> units.UnitWrite:
    return units.UnitWrite(units.unit_path("web"), units.mark_for("web", version, "demo/web:1", "sha256:" + "a" * 64,
                                                                  container_id))


def test_the_unit_is_named_as_podman_names_it_in_the_configured_directory(unit_dir):
    assert units.unit_path("web") == unit_dir / "container-web.service"


def test_a_first_write_makes_the_directory_and_marks_the_unit_as_bundles(unit_dir):
    u = _unit("c1" * 32)
    assert units.write(u, TEXT) is False
    text = u.path.read_text()
    assert text == f"{u.mark}\n{TEXT}" and u.mark.startswith("# written by bundle: app web 1.0.0 image demo/web:1 ")
    assert units.header(u.path) == u.mark and units.ours("web")
    assert oct(u.path.stat().st_mode & 0o777) == "0o644"


def test_a_replaced_unit_is_kept_and_put_back_by_an_undo(unit_dir):
    first, second = _unit("c1" * 32), _unit("c2" * 32, "2.0.0")
    units.write(first, TEXT)
    assert units.write(second, TEXT.replace("web.service", "web.service v2")) is True
    assert units.header(unit_dir / "container-web.service.previous") == first.mark
    assert units.write(second, "a replayed commit's text") is True  # already written: left as it is
    assert "v2" in second.path.read_text()
    units.put_back(second)
    assert units.header(second.path) == first.mark and not (unit_dir / "container-web.service.previous").exists()
    units.put_back(second)  # a replayed undo: nothing more
    assert units.header(second.path) == first.mark


def test_an_undone_first_unit_is_renamed_not_deleted(unit_dir):
    u = _unit("c1" * 32)
    units.write(u, TEXT)
    units.put_back(u)
    assert not u.path.exists() and units.header(unit_dir / "container-web.service.undone") == u.mark


def test_uninstall_renames_only_a_unit_bundle_wrote(unit_dir):
    unit_dir.mkdir()
    theirs = unit_dir / "container-web.service"
    theirs.write_text(TEXT)
    assert units.retire(theirs) is None and theirs.read_text() == TEXT and not units.ours("web")
    theirs.unlink()
    u = _unit("c1" * 32)
    units.write(u, TEXT)
    assert units.retire(u.path) == unit_dir / "container-web.service.removed"
    assert not u.path.exists() and units.retire(u.path) is None


@pytest.mark.parametrize("policy, restart", [("always", "always"), ("unless-stopped", "on-failure"),
                                             ("on-failure", "on-failure"), ("no", "no"), ("", "no"), (None, "no")])
def test_the_restart_policy_becomes_the_units_restart(policy, restart):
    assert units.systemd_restart(policy) == restart


def test_without_systemd_nothing_is_enabled_and_the_output_says_what_to_run(unit_dir, monkeypatch):
    said = []
    monkeypatch.setattr(units, "systemd_running", lambda: False)
    units.activate(unit_dir / "container-web.service", said.append)
    assert said == [f"  {unit_dir}/container-web.service written, not enabled: systemd is not running here; "
                    "then `systemctl daemon-reload && systemctl enable container-web.service`"]


def test_systemctl_is_not_run_for_a_unit_outside_systemds_directory(unit_dir, monkeypatch):
    said = []
    monkeypatch.setattr(units, "systemd_running", lambda: True)
    monkeypatch.setattr(units.subprocess, "run", lambda *a, **k: pytest.fail("systemctl ran"))
    units.activate(unit_dir / "container-web.service", said.append)
    assert f"written, not enabled: {unit_dir} is not /etc/systemd/system (BUNDLE_SYSTEMD_DIR" in said[0]


def test_the_systemd_unit_option_reaches_only_the_container_kind():
    from bundlecore.errors import UsageProblem
    from importer.kinds import compose, container, service
    from importer.pipeline import plan_options
    assert plan_options(container, systemd_unit=True, resume=False)["systemd_unit"] is True
    for kind in (service, compose):
        assert "systemd_unit" not in plan_options(kind, systemd_unit=False, resume=False)
        with pytest.raises(UsageProblem, match="^--systemd-unit writes the unit of a container target; this target "
                                               "is not one$"):
            plan_options(kind, systemd_unit=True, resume=False)
