"""Site settings per service of a compose project (importer.site `[services.NAME.run]`) and the
three-way merge of each service's settings (importer.kinds.compose.project `merged_service`,
importer.merge `run_with`): the table of what the release, the recorded install and this host decide."""

import pytest

from bundlecore.errors import EnvironmentProblem
from bundlecore.refusals import SettingsConflict
from bundlecore.release import ComposeService, ComposeTarget, RunSettings, target_from_json
from importer.kinds.compose.project import create_body, merged_service, shown_record
from importer.masking import MASK
from importer.merge import Side, run_with, settings_of_run
from importer.site import SiteSettings

RUN = {"env": {"A": "1"}, "restart": "always", "volumes": ["p_data:/data:ro"], "ports": ["8080:80"]}


def _svc(run=None, **kw) -> ComposeService:
    base = {"name": "web", "image": "demo/web:1", "run": RunSettings.from_json(RUN if run is None else run),
            "depends_on": {}, "networks": {"default": {}}}
    return ComposeService(**{**base, **kw})


def _live(svc: ComposeService) -> dict:
    """The container the engine reports for a service created from its create body."""
    cfg = create_body("p", svc, "sha256:img", {"com.docker.compose.project": "p"})["config"]
    hc = cfg["HostConfig"]
    return {"Config": {"Env": ["PATH=/bin", *cfg.get("Env", [])], "Labels": cfg["Labels"], "Cmd": cfg.get("Cmd")},
            "HostConfig": {"Binds": hc.get("Binds"), "PortBindings": hc.get("PortBindings"),
                           "RestartPolicy": hc.get("RestartPolicy") or {"Name": "no"}, "NetworkMode": hc["NetworkMode"],
                           "Tmpfs": hc.get("Tmpfs")}}


IMAGE = {"Config": {"Env": ["PATH=/bin"]}}


def _recorded(svc: ComposeService) -> dict:
    return {"settings": svc.to_json()}


def _with(run: dict, **changes) -> dict:
    return {**run, **changes}


# the merge table: (recorded install, the release now, what runs) -> what the new container gets
@pytest.mark.parametrize("base,theirs,ours,want", [
    # nothing changed anywhere: the service as the release has it, untouched (same config hash)
    (RUN, RUN, RUN, RUN),
    # the release (or the site file) changed a secret: applied
    (RUN, _with(RUN, env={"A": "2"}), RUN, _with(RUN, env={"A": "2"})),
    # this host changed the restart policy on the running container: kept
    (RUN, RUN, _with(RUN, restart="unless-stopped"), _with(RUN, restart="unless-stopped")),
    # this host published one more port; the release changed env: both
    (RUN, _with(RUN, env={"A": "2"}), _with(RUN, ports=["8080:80", "9090:90"]),
     _with(RUN, env={"A": "2"}, ports=["8080:80", "9090:90"])),
    # the release removed a bind this host never touched: removed
    (RUN, _with(RUN, volumes=[]), RUN, {k: v for k, v in RUN.items() if k != "volumes"}),
])
def test_each_services_settings_merge_three_ways(base, theirs, ours, want):
    svc, result = merged_service(_svc(theirs), _recorded(_svc(base)), _live(_svc(ours)), IMAGE)
    assert settings_of_run(svc.run.as_mapping()) == settings_of_run(want)
    assert not result.conflicts
    if base == theirs == ours:
        assert svc == _svc(theirs)


def test_a_service_adopted_keeps_its_own_settings_as_this_hosts():
    """No record (--adopt): what the release names is compared to the running container; what only
    the container has (an env var the admin set with `docker run -e`) is kept."""
    running = _with(RUN, env={"A": "1", "ADMIN": "yes"})
    svc, result = merged_service(_svc(RUN), None, _live(_svc(running)), IMAGE)
    assert svc.run.as_mapping()["env"] == {"A": "1", "ADMIN": "yes"}
    assert [str(d.key) for d in result.decisions] == ["env ADMIN"]


def test_a_setting_changed_on_both_sides_differently_is_refused_naming_the_service_unless_preferred():
    base, theirs, ours = RUN, _with(RUN, env={"A": "2"}), _with(RUN, env={"A": "3"})
    with pytest.raises(SettingsConflict) as e:
        merged_service(_svc(theirs), _recorded(_svc(base)), _live(_svc(ours)), IMAGE, masked=frozenset({"A"}))
    assert str(e.value).startswith("services.web: env A was changed on this host") and e.value.exit_code == 3
    assert "2" not in str(e.value) and MASK in str(e.value)  # a secret's values are never shown
    svc, _ = merged_service(_svc(theirs), _recorded(_svc(base)), _live(_svc(ours)), IMAGE, Side.LOCAL)
    assert svc.run.as_mapping()["env"] == {"A": "3"}


def test_a_bind_kept_from_the_running_container_that_nests_with_the_releases_is_refused():
    from bundlecore.refusals import HostPolicyRefused
    release = _with(RUN, volumes=["/srv/app:/data"])
    with pytest.raises(HostPolicyRefused) as e:
        merged_service(_svc(release), None, _live(_svc(_with(release, volumes=["/srv/app:/data", "/srv/app/sub:/x"]))),
                       IMAGE)
    assert "services.web" in str(e.value) and e.value.exit_code == 3


def test_the_project_network_and_tmpfs_are_not_settings_of_this_host():
    svc = _svc(tmpfs=("/tmp:size=1m",))
    merged, result = merged_service(svc, _recorded(svc), _live(svc), IMAGE)
    assert merged == svc and result.decisions == []


def test_run_with_keeps_the_releases_order_and_spelling_when_nothing_is_kept():
    run = {"volumes": ["b:/b", "a:/a:rw"], "env": {"Z": "1", "A": "2"}}
    theirs = settings_of_run(run)
    assert run_with(run, theirs, dict(theirs)) is run
    kept = {**theirs, **settings_of_run({"volumes": ["c:/c"]})}
    assert run_with(run, theirs, kept)["volumes"] == ["b:/b", "a:/a:rw", "c:/c"]


# -- the site file's [services.NAME.run] ------------------------------------------------------------

def _target() -> ComposeTarget:
    svc = {"image": "demo/web:1", "run": {"env": {"A": "1"}, "ports": ["8080:80"]}, "depends_on": {}, "networks": {}}
    t = target_from_json({"kind": "compose", "name": "p", "image": "demo/web:1", "run": {},
                          "compose": {"project": "p", "services": {"web": svc, "db": {**svc, "image": "demo/db:1"}},
                                      "volumes": {}, "networks": {}}})
    assert isinstance(t, ComposeTarget)
    return t


def _site(tmp_path, text: str) -> SiteSettings:
    path = tmp_path / "p.toml"
    path.write_text(text)
    path.chmod(0o600)
    return SiteSettings.load("p", path)


def test_a_services_site_table_goes_over_that_service_only_and_its_env_is_secret(tmp_path):
    site = _site(tmp_path, '[services.web.run]\nenv = { DB_PASSWORD = "hunter2" }\nports = ["9090:80"]\n')
    t = site.over_target(_target())
    assert isinstance(t, ComposeTarget)
    web, db = t.project.services["web"].run.as_mapping(), t.project.services["db"].run.as_mapping()
    assert web["env"] == {"A": "1", "DB_PASSWORD": "hunter2"} and web["ports"] == ["9090:80"]
    assert db == {"env": {"A": "1"}, "ports": ["8080:80"]}
    assert site.masked == {"DB_PASSWORD"}
    lines = site.plan_lines()
    assert f"  services.web env DB_PASSWORD={MASK}" in lines and not any("hunter2" in line for line in lines)


@pytest.mark.parametrize("text,message", [
    ('[services.cache.run]\nenv = { A = "1" }\n', "services.cache names no service of the compose project p (web, db)"),
    ('[run]\nenv = { A = "1" }\n', "[run] is not applied to a compose project"),
])
def test_a_site_table_the_project_cannot_take_is_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(EnvironmentProblem) as e:
        _site(tmp_path, text).over_target(_target())
    assert message in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 1


def test_a_services_table_for_a_container_target_is_refused(tmp_path):
    t = target_from_json({"kind": "container", "name": "c", "image": "demo/web:1", "run": {}})
    with pytest.raises(EnvironmentProblem) as e:
        _site(tmp_path, '[services.web.run]\nenv = { A = "1" }\n').over_target(t)
    assert "[services] tables are for a compose project" in str(e.value)


def test_an_installed_record_is_shown_with_its_secrets_masked():
    t = _target()
    rec = {"site_env": ["TOKEN_X", "B"], "target": t.to_json(),
           "services": {"web": {"container": "p-web-1", "settings": {"run": {"env": {"B": "s3cret", "A": "1"}}}}}}
    rec["target"]["compose"]["services"]["web"]["run"]["env"]["B"] = "s3cret"
    shown = shown_record(rec)
    assert shown is not None and "s3cret" not in str(shown)
    assert shown["services"]["web"]["settings"]["run"]["env"] == {"B": MASK, "A": "1"}
    assert rec["services"]["web"]["settings"]["run"]["env"]["B"] == "s3cret"  # the record itself is left alone


def test_a_kept_generations_record_is_shown_with_its_secrets_masked_too():
    t = _target()
    kept = {"site_env": ["B"], "target": t.to_json(),
            "services": {"web": {"container": "p-web-1", "settings": {"run": {"env": {"B": "old-s3cret"}}}}}}
    kept["target"]["compose"]["services"]["web"]["run"]["env"]["B"] = "old-s3cret"
    shown = shown_record({"services": {}, "previous": [{"generation": 1, "record": kept}]})
    assert shown is not None and "old-s3cret" not in str(shown)  # what `bundle rollback` would put back


def test_the_anythingllm_stack_site_example_goes_over_its_services_under_its_policy():
    from pathlib import Path

    from bundler.spec import load_spec
    from importer.hostpolicy import HostPolicy
    example = Path(__file__).resolve().parents[2] / "examples" / "anythingllm-stack"
    spec = load_spec(example / "bundle.toml")
    site = SiteSettings.load(spec.name, example / "site.toml")
    target = site.over_target(target_from_json(spec.target))
    assert isinstance(target, ComposeTarget)
    app = target.project.services["anythingllm"].run.as_mapping()
    assert app["env"]["JWT_SECRET"] == "change-me" and app["ports"] == ["10.0.0.5:3001:3001"]
    assert "JWT_SECRET" in site.masked and not any("change-me" in line for line in site.plan_lines())
    HostPolicy.load(example).check_target(spec.name, target)  # nothing the site file adds is refused
