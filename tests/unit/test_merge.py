"""Table tests of the three-way merge of run settings, of the engine-to-run-spec normalization,
of applying the merged settings over the faithful copy, and of site settings over a bundle's."""

from __future__ import annotations

import pytest

from bundlecore.errors import EnvironmentProblem
from importer.site import SiteSettings
from importer.kinds.container.config import recreate_config
from importer.merge import (Key, Kind, Origin, Side, merge, settings_of_container, settings_of_run)

G = Key(Kind.ENV, "GREETING")
P = Key(Kind.PORT, "8080/tcp")
R = Key(Kind.RESTART)

# (case, base, theirs, ours, merged value, origin or None)
CASES = [
    ("nobody changed it", "a", "a", "a", "a", None),
    ("the release changed it", "a", "b", "a", "b", Origin.BUNDLE),
    ("this host changed it", "a", "a", "c", "c", Origin.LOCAL),
    ("both changed it the same way", "a", "b", "b", "b", None),
    ("both changed it differently", "a", "b", "c", "c", Origin.CONFLICT),
    ("the release removed it", "a", None, "a", None, Origin.BUNDLE),
    ("this host removed it", "a", "a", None, None, Origin.LOCAL),
    ("the release added it", None, "b", None, "b", Origin.BUNDLE),
    ("this host added it", None, None, "c", "c", Origin.LOCAL),
    ("both added it differently", None, "b", "c", "c", Origin.CONFLICT),
    ("release removed it, host changed it", "a", None, "c", "c", Origin.CONFLICT),
    ("release changed it, host removed it", "a", "b", None, None, Origin.CONFLICT),
]


def _side(value):
    return {} if value is None else {G: value}


@pytest.mark.parametrize("case,base,theirs,ours,merged,origin", CASES, ids=[c[0] for c in CASES])
def test_each_setting_is_merged_three_way(case, base, theirs, ours, merged, origin):
    result = merge(_side(base), _side(theirs), _side(ours))
    assert result.merged.get(G) == merged
    assert [d.origin for d in result.decisions] == ([origin] if origin else [])


@pytest.mark.parametrize("prefer,wins", [(Side.BUNDLE, "b"), (Side.LOCAL, "c")])
def test_prefer_decides_a_conflict(prefer, wins):
    result = merge({G: "a"}, {G: "b"}, {G: "c"}, prefer)
    assert result.merged[G] == wins and result.conflicts[0].key == G
    assert f"--prefer {prefer}" in result.decisions[0].line(prefer=prefer)


def test_without_a_base_the_release_applies_to_what_it_names_and_keeps_the_rest():
    extra, port = Key(Kind.ENV, "EXTRA"), ("127.0.0.1:2:8080",)
    result = merge(None, {G: "hi", P: port}, {G: "hello", P: ("127.0.0.1:1:8080",), extra: "1"})
    assert result.merged == {G: "hi", P: port, extra: "1"}
    assert result.conflicts == []


def test_plan_lines_say_where_each_value_comes_from_and_mask_secrets():
    result = merge({G: "hello"}, {G: "hi"}, {G: "hello", Key(Kind.ENV, "EXTRA"): "1", Key(Kind.ENV, "TOKEN"): "s3"})
    lines = [d.line(masked=frozenset({"TOKEN"})) for d in result.decisions]
    assert lines == ["env EXTRA=1 kept (set on this host)", "env GREETING: hello -> hi (from the bundle)",
                     "env TOKEN=*** kept (set on this host)"]
    conflict = merge({G: "a"}, {G: "s1"}, {G: "s2"}).conflicts[0].conflict(frozenset({"GREETING"}))
    assert "s1" not in conflict and "s2" not in conflict and "env GREETING" in conflict


def test_changes_are_only_what_differs_from_the_running_container():
    ours = {G: "hello", R: "always"}
    result = merge({G: "hello", R: "always"}, {G: "hi"}, ours)
    assert result.changes(ours) == {G: "hi", R: None}


RUN = {"ports": ["127.0.0.1:18093:8080"], "volumes": ["data:/data", "/cache", "/srv/x:/x:rw"],
       "env": {"GREETING": "hello", "APP_VERSION": "1.0.0"}, "labels": {"org.user.owner": "ops"},
       "restart": "unless-stopped", "cap_add": ["CAP_SYS_ADMIN"], "command": ["httpd", "-f"], "network": "bridge"}


def _container(image_cfg: dict) -> dict:
    """What `docker inspect` reports for a container created from RUN (after one swap)."""
    return {
        "Config": {"Env": ["GREETING=hello", "APP_VERSION=1.0.0", "PATH=/bin"], "Cmd": ["httpd", "-f"],
                   "Labels": {"org.user.owner": "ops", "org.demo.release": "1", "io.bundle.swap": "x"},
                   "Volumes": {"/cache": {}}},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18093"}]},
                       "Binds": ["data:/data", "/srv/x:/x:rw", "a" * 64 + ":/state"], "CapAdd": ["SYS_ADMIN"],
                       "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}, "NetworkMode": "default"},
    }


def test_a_container_made_from_a_run_spec_reads_back_as_that_run_spec():
    image = {"Config": {"Env": ["PATH=/bin", "APP_VERSION=1.0.0"], "Labels": {"org.demo.release": "1"},
                        "Volumes": {"/state": {}}, "Cmd": ["sh"]}}
    base = settings_of_run(RUN)
    assert settings_of_container(_container(image), image, named=set(base)) == base
    # an env equal to the image's default is not a setting unless the base sets it
    assert Key(Kind.ENV, "APP_VERSION") not in settings_of_container(_container(image), image)


def test_merged_settings_override_their_parts_of_the_faithful_copy():
    image = {"Config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]}}
    old = {"Id": "c" * 64, **_container(image)}
    old["Config"].update(Hostname="h", ExposedPorts={"8080/tcp": {}})
    old["HostConfig"].update(Memory=1 << 28, Binds=["data:/data"])
    changes = {G: "hi", Key(Kind.ENV, "APP_VERSION"): None, P: ("127.0.0.1:18094:8080",),
               Key(Kind.VOLUME, "/data"): "other:/data", Key(Kind.CAP_ADD, "NET_ADMIN"): "added", R: None,
               Key(Kind.COMMAND): ("httpd", "-v")}
    body = recreate_config(old, image, image, "app:2", changes=changes)
    cfg, hc = body["config"], body["config"]["HostConfig"]
    assert sorted(cfg["Env"]) == ["GREETING=hi"]
    assert hc["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18094"}]}
    assert hc["Binds"] == ["other:/data"] and sorted(hc["CapAdd"]) == ["NET_ADMIN", "SYS_ADMIN"]
    assert hc["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0} and cfg["Cmd"] == ["httpd", "-v"]
    assert hc["Memory"] == 1 << 28  # everything the merge does not own is still the copy


def test_site_settings_go_over_the_bundles(tmp_path):
    site = tmp_path / "demo.toml"
    site.write_text('[run]\nenv = { TOKEN = "s3cr3t", GREETING = "site" }\nports = ["127.0.0.1:9:8080"]\n'
                    'volumes = ["/srv/site/.env:/app/.env"]\ncap_add = ["NET_ADMIN"]\nrestart = "always"\n')
    s = SiteSettings.load("demo", site)
    run = s.over(RUN)
    assert run["env"] == {"GREETING": "site", "APP_VERSION": "1.0.0", "TOKEN": "s3cr3t"}
    assert run["ports"] == ["127.0.0.1:9:8080"] and run["restart"] == "always"
    assert run["volumes"] == RUN["volumes"] + ["/srv/site/.env:/app/.env"]
    assert run["cap_add"] == ["CAP_SYS_ADMIN", "NET_ADMIN"]
    assert s.masked == {"TOKEN", "GREETING"}
    assert not any("s3cr3t" in line for line in s.plan_lines()) and "  env TOKEN=***" in s.plan_lines()


@pytest.mark.parametrize("text,why", [
    ('[run]\nprivileged = true\n', "privileged"),            # not in the run vocabulary
    ('[run]\nports = ["0.0.0.0:99999:1"]\n', "port"),
    ('[host]\nx = 1\n', "host"),                              # only [run]
    ('[run\n', "cannot be read"),
    ('[run]\nenv = { A = "' + "x" * (1 << 20) + '" }\n', "cannot be read: over its cap of 1048576 bytes"),
    ("a = " + "[" * 100_000 + "]" * 100_000 + "\n", "cannot be read: nested too deeply to be read"),
])
def test_a_bad_site_file_is_refused_with_its_reason(tmp_path, text, why):
    site = tmp_path / "demo.toml"
    site.write_text(text)
    with pytest.raises(EnvironmentProblem) as e:
        SiteSettings.load("demo", site)
    assert str(site) in str(e.value) and why in str(e.value)


def test_no_site_file_is_no_site_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("BUNDLE_SITE_DIR", str(tmp_path))
    assert SiteSettings.load("demo").run == {} and SiteSettings.load("demo").plan_lines() == []
    (tmp_path / "demo.toml").write_text('[run]\nenv = { A = "1" }\n')
    assert SiteSettings.load("demo").run == {"env": {"A": "1"}}


def test_the_anythingllm_example_persists_its_env_file_through_the_site_settings():
    import tomllib
    from pathlib import Path

    from importer.hostpolicy import HostPolicy, plan_lines
    example = Path(__file__).resolve().parents[2] / "examples/anythingllm"
    spec = tomllib.loads((example / "bundle.toml").read_text())
    run = SiteSettings.load("anythingllm", example / "site.toml").over(spec["target"]["run"])
    assert "/srv/anythingllm/.env:/app/server/.env" in run["volumes"]
    assert "anythingllm-storage:/app/server/storage" in run["volumes"]
    granted = HostPolicy.load(example).check(spec["name"], run)
    assert "host access: bind mount of host path /srv/anythingllm/.env (granted by [apps.anythingllm] bind_prefixes)" \
        in plan_lines(granted)


def test_a_site_file_others_can_write_is_refused(tmp_path):
    site = tmp_path / "demo.toml"
    site.write_text('[run]\nenv = { A = "1" }\n')
    site.chmod(0o666)
    with pytest.raises(EnvironmentProblem, match="writable by group or others"):
        SiteSettings.load("demo", site)


# -- every mount form of the running container (issue 18, finding 6) ---------------------------

def test_every_mount_form_of_the_running_container_is_a_setting():
    image = {"Config": {"Volumes": {"/image-vol": {}}}}
    info = {"Config": {"Volumes": {"/anon": {}}},
            "HostConfig": {"Binds": ["/srv/v:/v:ro"], "Tmpfs": {"/run": "size=1m"},
                           "Mounts": [{"Type": "bind", "Source": "/srv/data", "Target": "/data"},
                                      {"Type": "bind", "Source": "/srv/conf", "Target": "/conf", "ReadOnly": True},
                                      {"Type": "volume", "Source": "cache", "Target": "/cache"},
                                      {"Type": "volume", "Target": "/scratch"},
                                      {"Type": "volume", "Source": "b" * 64, "Target": "/image-vol"},
                                      {"Type": "tmpfs", "Target": "/tmp"}]}}
    volumes = {k.name: v for k, v in settings_of_container(info, image).items() if k.kind is Kind.VOLUME}
    assert volumes == {"/v": "/srv/v:/v:ro", "/run": "tmpfs /run", "/data": "/srv/data:/data",
                       "/conf": "/srv/conf:/conf:ro", "/cache": "cache:/cache", "/scratch": "/scratch",
                       "/tmp": "tmpfs /tmp", "/anon": "/anon"}


V = Key(Kind.VOLUME, "/data")


@pytest.mark.parametrize("ours,theirs,merged,conflict", [
    ("/srv/admin:/data", "appdata:/data", "/srv/admin:/data", True),   # the release would hide the admin's data
    ("tmpfs /data", "appdata:/data", "tmpfs /data", True),
    ("appdata:/data", "appdata:/data", "appdata:/data", False),        # the same mount: nothing to decide
    (None, "appdata:/data", "appdata:/data", False),                   # nothing mounted there: the release's
    ("/srv/admin:/data", None, "/srv/admin:/data", False),             # not named by the release: kept
])
def test_without_a_base_a_release_mount_replacing_the_running_one_is_a_conflict(ours, theirs, merged, conflict):
    result = merge(None, {V: theirs} if theirs else {}, {V: ours} if ours else {})
    assert result.merged.get(V) == merged
    assert bool(result.conflicts) is conflict
    if conflict:
        assert merge(None, {V: theirs}, {V: ours}, Side.BUNDLE).merged[V] == theirs


def test_a_mount_the_merge_replaces_leaves_no_other_form_behind():
    image = {"Config": {}}
    old = {"Id": "c" * 64, "Config": {}, "HostConfig": {"Tmpfs": {"/data": ""}, "Mounts": [
        {"Type": "bind", "Source": "/srv/x", "Target": "/x"}]}}
    body = recreate_config(old, image, image, "app:2", changes={V: "appdata:/data", Key(Kind.VOLUME, "/x"): None})
    hc = body["config"]["HostConfig"]
    assert hc["Binds"] == ["appdata:/data"] and not hc["Tmpfs"] and not hc["Mounts"]
