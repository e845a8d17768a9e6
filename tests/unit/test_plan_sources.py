"""Issue 20, point 2: every plan line names where its value comes from (the bundle, the site file,
this host), and the signed health check follows its container port to where this host publishes it
(or the import is refused before anything is loaded when that port is not published any more)."""

from __future__ import annotations

import pytest

from bundlecore.refusals import HealthTargetGone
from bundlecore.release import ContainerTarget, RunSettings
from importer.health import follow_published
from importer.merge import Key, Kind, merge, site_keys
from importer.kinds.container.plan import PlanKind, SwapPlan, _follow_ports

SIGNED = ["127.0.0.1:18900:8080"]
HTTP = {"http": "http://127.0.0.1:18900/healthz", "timeout": 5, "attempts": 1}
PORT = Key(Kind.PORT, "8080/tcp")


@pytest.mark.parametrize("health,ports,moved", [
    (HTTP, ["127.0.0.1:18901:8080"], {"http": "http://127.0.0.1:18901/healthz"}),
    ({"tcp": "127.0.0.1:18900"}, ["10.1.2.3:18901:8080"], {"tcp": "10.1.2.3:18901"}),  # a fixed address is followed
    ({"http": "http://localhost:18900/x?y=1"}, ["18902:8080"], {"http": "http://localhost:18902/x?y=1"}),
    (HTTP, ["127.0.0.1:18900:8080"], None),                     # published as signed
    (HTTP, ["0.0.0.0:18900:8080"], None),                       # on every address: the signed one too
    ({"http": "http://10.9.9.9:9000/"}, ["127.0.0.1:18901:8080"], None),  # not at a port the bundle publishes
    ({"cmd": "true"}, [], None), (None, [], None),
])
def test_the_signed_probe_follows_its_container_port(health, ports, moved):
    followed = follow_published(health, SIGNED, ports)
    if moved is None:
        assert followed is None
    else:
        assert {k: followed.health[k] for k in moved} == moved and followed.port_key == "8080/tcp"


@pytest.mark.parametrize("ports", [[], ["127.0.0.1::8080"], ["127.0.0.1:18901:9090"]])
def test_a_probe_whose_container_port_is_no_longer_published_is_refused(ports):
    with pytest.raises(HealthTargetGone) as e:
        follow_published(HTTP, SIGNED, ports)
    assert e.value.exit_code == 3 and e.value.line().startswith("refused: settings: the health check probes "
                                                                "127.0.0.1:18900")


def test_the_settings_a_site_file_decides_are_those_it_changes_over_the_signed_ones():
    signed = {"ports": SIGNED, "env": {"A": "1", "B": "2"}}
    over = {"ports": ["127.0.0.1:18901:8080"], "env": {"A": "1", "B": "3", "C": "4"}}
    assert site_keys(signed, over) == {PORT, Key(Kind.ENV, "B"), Key(Kind.ENV, "C")}


def test_a_change_is_labelled_by_who_made_it():
    base = {PORT: ("127.0.0.1:18900:8080",), Key(Kind.ENV, "G"): "hello", Key(Kind.ENV, "X"): "1"}
    theirs = {PORT: ("127.0.0.1:18901:8080",), Key(Kind.ENV, "G"): "hi", Key(Kind.ENV, "X"): "1"}
    ours = {**base, Key(Kind.ENV, "X"): "2"}
    lines = [d.line(site=frozenset({PORT})) for d in merge(base, theirs, ours).decisions]
    assert lines == ["env G: hello -> hi (from the bundle)", "env X=2 kept (set on this host)",
                     "port 8080/tcp: 127.0.0.1:18900:8080 -> 127.0.0.1:18901:8080 (from the site file)"]


def test_an_install_plan_names_the_site_file_for_its_port_and_the_health_check_that_follows_it():
    signed = ContainerTarget("app", "app:1", RunSettings.from_json({"ports": SIGNED, "volumes": ["data:/data"]}))
    target = ContainerTarget("app", "app:1", RunSettings.from_json({"ports": ["127.0.0.1:18901:8080"],
                                                                    "volumes": ["data:/data"]}))
    plan = SwapPlan(PlanKind.INSTALL, "app", target, "sha256:" + "a" * 64, "app:1", gate=HTTP,
                    site_keys=site_keys(signed.run.as_mapping(), target.run.as_mapping()))
    _follow_ports(plan, signed, target.run.ports)
    assert plan.gate["http"] == "http://127.0.0.1:18901/healthz"
    lines = plan.lines()
    assert "  publish port 127.0.0.1:18901:8080 (from the site file)" in lines
    assert "  mount data:/data (from the bundle)" in lines
    assert ("  the health check follows container port 8080/tcp: the bundle probes 127.0.0.1:18900, published "
            "here as 127.0.0.1:18901 (from the site file)") in lines


@pytest.mark.parametrize("site,health,want", [
    ('http = "http://10.0.0.5:8443/ok"\ntimeout = 30', {"tcp": "127.0.0.1:18900", "timeout": 5, "attempts": 2},
     {"http": "http://10.0.0.5:8443/ok", "timeout": 30, "attempts": 2}),          # the probe kind changes too
    ('attempts = 4', HTTP, {**HTTP, "attempts": 4}),                               # the signed probe kept
    ('cmd = ["true"]', None, {"cmd": ["true"]}),                                   # a probe where none was signed
    ('prometheus = { url = "http://prom:9090" }', HTTP, None),                     # no metrics gate signed: nothing
])
def test_the_site_file_may_set_the_probe_its_timeout_and_attempts(tmp_path, site, health, want):
    from importer.site import SiteSettings
    f = tmp_path / "app.toml"
    f.write_text(f"[health]\n{site}\n")
    assert SiteSettings.load("app", f).over_health(health).get("health") == want


def test_a_site_file_with_two_probes_is_refused(tmp_path):
    from bundlecore.errors import EnvironmentProblem
    from importer.site import SiteSettings
    f = tmp_path / "app.toml"
    f.write_text('[health]\nhttp = "http://a:1/"\ntcp = "a:1"\n')
    with pytest.raises(EnvironmentProblem) as e:
        SiteSettings.load("app", f)
    assert "at health" in str(e.value)


def test_a_probe_the_site_file_set_is_not_moved_and_the_plan_says_whose_it_is():
    signed = ContainerTarget("app", "app:1", RunSettings.from_json({"ports": SIGNED}))
    target = ContainerTarget("app", "app:1", RunSettings.from_json({"ports": ["127.0.0.1:18901:8080"]}))
    gate = {"tcp": "127.0.0.1:18901", "timeout": 5, "attempts": 1}
    plan = SwapPlan(PlanKind.INSTALL, "app", target, "sha256:" + "a" * 64, "app:1", gate=gate, health_by_site=True,
                    health="tcp connect to 127.0.0.1:18901")
    _follow_ports(plan, signed, target.run.ports)
    assert plan.gate == gate and plan.followed is None
    assert "  health check (from the site file): tcp connect to 127.0.0.1:18901" in plan.lines()
