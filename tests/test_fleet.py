"""The fleet: verified images pushed to the intranet registry and rolled out as Swarm services.

Real parts only: a single-node swarm on the shared engine (initialised here if the engine is in
none; never left), Debian's registry on loopback (`registry` fixture), bundles built and signed
by `bundle build` with real keys, the real `bundle` command. Availability is measured the way a
client on the service's network sees it: a poller container on the dnsrr overlay network resolves
`tasks.<service>` for every request and asks one task for /version with nc, every 50 ms.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import signal
import socketserver
import subprocess
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest
import requests

from bundlecore.registrypath import registry_address
from bundlecore.timeutil import parse_ts, utc_now
from tests.support import build_app_image, one_line, run_bundle
from tests.swap_fixtures import wait_until

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
SOAK_LONG = "20s"  # above the inline soak of this test's imports: the import ends after the stage
# importer.kinds.service.release.INLINE_SOAK (30 s) lowered for the test (never by a bundle): the same path, no 30 s wait
SHORT_INLINE_SOAK = {"BUNDLE_INLINE_SOAK": "5"}


@pytest.fixture(scope="module")
def swarm(docker_client):
    """The engine as a Swarm manager. Initialised only if it is in no swarm; never left (other
    engineers' plain containers do not mind swarm mode)."""
    if docker_client.info()["Swarm"].get("LocalNodeState") != "active":
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True)
    assert docker_client.info()["Swarm"].get("ControlAvailable"), "this engine is not a swarm manager"
    return docker_client


@pytest.fixture(scope="module")
def fleet(swarm, registry, pgp_keys, tmp_path_factory):
    """Images v1, v2, v3 (broken: exits at start) and an attachable overlay network, all named with
    one module token; every service, network and tag made here is removed at the end."""
    tok = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("fleet")
    repo = f"fleettest-{tok}/web"
    images = {v: build_app_image(swarm, f"{repo}:{v}", v, broken=(v == "3.0.0")) for v in ("1.0.0", "2.0.0", "3.0.0")}
    net = f"fl-{tok}-net"
    swarm.networks.create(net, driver="overlay", attachable=True)
    env = {"tok": tok, "root": root, "repo": repo, "images": images, "net": net, "registry": registry,
           "key": pgp_keys.builder, "web": f"fl-{tok}-web", "canary": f"fl-{tok}-canary", "built": {}}
    yield env
    _remove_services(swarm, tok)
    for c in swarm.api.containers(all=True, filters={"name": f"fl-{tok}"}):
        swarm.api.remove_container(c["Id"], force=True)
    for n in swarm.networks.list(names=[net]):
        wait_until(lambda n=n: _try_remove(n), timeout=30, every=1)
    for img in swarm.api.images():
        for t in img.get("RepoTags") or []:
            if tok in t:
                swarm.api.remove_image(t, force=True)


def _try_remove(net) -> bool:
    try:
        net.remove()
        return True
    except docker.errors.APIError:
        return False


def _remove_services(client, tok: str) -> None:
    for s in client.api.services():
        if tok in s["Spec"]["Name"]:
            client.api.remove_service(s["ID"])
    wait_until(lambda: not [c for c in client.api.containers(all=True, filters={"label": "com.docker.swarm.service.name"})
                            if tok in c["Labels"]["com.docker.swarm.service.name"]], timeout=60, every=1)


@pytest.fixture
def services(fleet, docker_client, tmp_path):
    """A fresh state dir per test; the module's services removed after it."""
    yield tmp_path / "state"
    _remove_services(docker_client, fleet["tok"])


def bundle_of(fleet, version: str, sequence: int, stages: list[tuple] | None = None,
              name: str = "fleet", rollout: dict | None = None, volume: str | None = None) -> Path:
    """A signed bundle (bundle build --local) of `version` as a service target (or a staged release;
    `volume`: a named volume mounted at the app's /data)."""
    key = (version, sequence, json.dumps(stages), name, json.dumps(rollout), volume)
    r = {"parallelism": 1, "order": "start-first", "failure_action": "rollback"} | (rollout or {})
    if key in fleet["built"]:
        return fleet["built"][key]
    ref = f"{fleet['repo']}:{version}"
    spec = fleet["root"] / f"{name}-{version}-{sequence}-{len(fleet['built'])}.toml"
    text = (f'name = "{name}-{fleet["tok"]}"\nversion = "{version}"\nsequence = {sequence}\nimages = ["{ref}"]\n\n'
            f'[target]\nkind = "service"\nname = "{fleet["web"]}"\nimage = "{ref}"\n\n'
            f'[target.run]\nreplicas = 2\nendpoint_mode = "dnsrr"\nnetworks = ["{fleet["net"]}"]\n'
            f'stop_timeout = 1\n' + (f'volumes = ["{volume}:/data"]\n' if volume else '') + '\n'
            '[target.rollout]\n'
            f'parallelism = {r["parallelism"]}\ndelay = "0s"\norder = "{r["order"]}"\nmonitor = "3s"\n'
            f'max_failure_ratio = 0\nfailure_action = "{r["failure_action"]}"\n\n'
            '[target.health]\ntcp = "127.0.0.1:8080"\ntimeout = "10s"\nattempts = 2\n')
    for services, soak, *more in stages or []:  # (services, soak[, pause][, {other stage keys}])
        text += "\n[[stage]]\nservices = [" + ", ".join(f'"{s}"' for s in services) + f']\nsoak = "{soak}"\n'
        keys = {k: v for m in more for k, v in (m.items() if isinstance(m, dict) else [("pause", m)])}
        text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    spec.write_text(text)
    out = spec.with_suffix(".bundle.zst")
    k = fleet["key"]
    r = run_bundle("build", spec, "-o", out, "--sign-key", k.fpr, "--gnupghome", k.home, "--local")
    assert r.code == 0, str(r)
    fleet["built"][key] = out
    return out


def do_import(fleet, bundle: Path, state: Path, *more, registry: str | None = None, env=None):
    from tests.keys import trust_store
    store = fleet["root"] / "store"
    if not store.exists():
        trust_store(store, [fleet["key"]])
    grant_registry(fleet, store, registry or fleet["registry"])
    return run_bundle("import", bundle, "--keys", store, "--state-dir", state, "--yes",
                      "--registry", registry or fleet["registry"], *more, env=env)


def grant_registry(fleet, store: Path, registry: str) -> None:
    """The store's host policy grants `registry` too (registries are the host's choice, deny by
    default; an address that is not HOST:PORT is left to the import to refuse), and shares the
    admin's overlay network with every app of this host (importer.ownership)."""
    granted = fleet.setdefault("granted", set())
    if registry_address(registry) is not None:
        granted.add(registry)
    (store / "host-policy.toml").write_text("[host]\nregistries = [" + ", ".join(f'"{r}"' for r in sorted(granted))
                                            + f']\nshared_networks = ["{fleet["net"]}"]\n')


def spec_image(client, name: str) -> str:
    return client.api.inspect_service(name)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def running(client, name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in client.api.tasks(filters={"service": name, "desired-state": "running"}):
        if t["Status"]["State"] == "running":
            img = t["Spec"]["ContainerSpec"]["Image"]
            counts[img] = counts.get(img, 0) + 1
    return counts


def registry_digest(registry: str, repo: str, tag: str) -> str:
    r = requests.head(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_V2}, timeout=10)
    return r.headers["Docker-Content-Digest"]


def pinned(fleet, version: str) -> str:
    """The reference every node pulls: registry/repo:tag@<the digest the registry serves>."""
    return (f"{fleet['registry']}/{fleet['repo']}:{version}@"
            f"{registry_digest(fleet['registry'], fleet['repo'], version)}")


# -- registry push --------------------------------------------------------------------------------

def test_first_install_creates_a_two_replica_service_pulled_by_digest_from_the_registry(fleet, services, swarm):
    r = do_import(fleet, bundle_of(fleet, "1.0.0", 1), services, "--json")
    assert r.code == 0, str(r)
    ref = pinned(fleet, "1.0.0")
    assert spec_image(swarm, fleet["web"]) == ref
    assert running(swarm, fleet["web"]) == {ref: 2}
    doc = json.loads(r.stdout)
    assert doc["pushed"] == [{"ref": f"{fleet['repo']}:1.0.0", "pushed": f"{fleet['registry']}/{fleet['repo']}:1.0.0",
                              "digest": ref.rsplit("@", 1)[1], "by_digest": ref}]
    st = run_bundle("status", fleet["web"], "--state-dir", services)
    assert st.code == 0, str(st)
    assert "replicas 2/2 running" in st.stdout and st.stdout.count(f"running {ref}") == 2, st.stdout
    assert f"pushed {fleet['repo']}:1.0.0 -> {ref}" in st.stdout
    js = json.loads(run_bundle("status", fleet["web"], "--state-dir", services, "--json").stdout)["apps"][0]["detail"]
    assert js["kind"] == "service" and js["installed"]["pushed"] == doc["pushed"]
    assert js["service"]["replicas"] == 2 and {t["image"] for t in js["service"]["tasks"]} == {ref}


class DigestRewritingProxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A loopback 'registry' that forwards everything to the real one but lies about manifest
    digests on HEAD: what a tampering cache or a compromised registry front would do."""

    daemon_threads = True


def _proxy_handler(upstream: str):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _forward(self):
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(size)
                    self.rfile.readline()
            else:
                body = self.rfile.read(int(length)) if length else None
            conn = http.client.HTTPConnection(upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() in ("transfer-encoding", "content-length", "connection"):
                    continue
                if k.lower() == "docker-content-digest" and self.command == "HEAD" and "/manifests/" in self.path:
                    v = "sha256:" + "0" * 64
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    return Handler


def test_a_registry_serving_another_digest_than_was_pushed_is_refused_and_no_service_is_made(
        fleet, services, swarm):
    proxy = DigestRewritingProxy(("127.0.0.1", 0), _proxy_handler(fleet["registry"]))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        r = do_import(fleet, bundle_of(fleet, "1.0.0", 1), services, registry=f"127.0.0.1:{proxy.server_port}")
    finally:
        proxy.shutdown()
    assert r.code == 3, str(r)
    line = one_line(r.stderr)
    assert line.startswith("refused: registry digest: image " + f"{fleet['repo']}:1.0.0"), line
    assert "sha256:" + "0" * 64 in line
    assert not [s for s in swarm.api.services() if s["Spec"]["Name"] == fleet["web"]]  # nothing rolled out
    assert not (services / "installed" / f"{fleet['web']}.json").exists()


@pytest.mark.parametrize("address", ["http://127.0.0.1:5000", "127.0.0.1", "reg:99999", "a/b:5000"])
def test_a_registry_that_is_not_host_port_is_a_usage_error_before_anything_runs(fleet, services, address):
    r = do_import(fleet, bundle_of(fleet, "1.0.0", 1), services, registry=address)
    assert r.code == 2, str(r)
    assert "is not HOST:PORT" in one_line(r.stderr)
    assert not services.exists()


def test_a_service_target_without_a_registry_is_a_usage_error_and_nothing_changes(fleet, services, swarm):
    from tests.keys import trust_store
    store = fleet["root"] / "store-noreg"
    trust_store(store, [fleet["key"]])
    r = run_bundle("import", bundle_of(fleet, "1.0.0", 1), "--keys", store, "--state-dir", services, "--yes")
    assert r.code == 2, str(r)
    assert "needs a registry" in one_line(r.stderr)
    assert not [s for s in swarm.api.services() if s["Spec"]["Name"] == fleet["web"]]


# -- rollout --------------------------------------------------------------------------------------

POLLER = r"""
while true; do
  addrs=$(nslookup tasks.$SVC 127.0.0.11 2>/dev/null | awk '/^Address/ && !/:53$/ && !/#53$/ {print $NF}')
  n=$(echo "$addrs" | grep -c .)
  if [ "$n" -gt 0 ]; then
    ip=$(echo "$addrs" | sed -n "$(( (RANDOM % n) + 1 ))p")
    if printf 'GET /version HTTP/1.0\r\n\r\n' | nc -w 1 "$ip" 8080 2>/dev/null | grep -q ' 200 '; then
      echo ok; else echo fail; fi
  else
    echo fail
  fi
  usleep 50000
done
"""


def start_poller(client, fleet, service: str):
    return client.containers.run(f"{fleet['repo']}:1.0.0", ["sh", "-c", POLLER],
                                 name=f"fl-{fleet['tok']}-poll-{uuid.uuid4().hex[:4]}",
                                 network=fleet["net"], environment={"SVC": service}, detach=True)


def poll_counts(container) -> tuple[int, int]:
    lines = container.logs().decode().split()
    return lines.count("ok"), lines.count("fail")


def update_under_poller(fleet, swarm, services, bundle: Path):
    """Install v1, start the poller, import `bundle` while it polls: (result, ok, failed, seconds)
    counted during the import only."""
    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1), services).code == 0
    poller = start_poller(swarm, fleet, fleet["web"])
    try:
        assert wait_until(lambda: poll_counts(poller)[0] >= 20, timeout=30), poller.logs()[-500:]
        before = poll_counts(poller)
        assert before[1] == 0, f"failures before the update: {before}"
        started = time.monotonic()
        r = do_import(fleet, bundle, services)
        seconds = time.monotonic() - started
        time.sleep(1)
        ok, fail = poll_counts(poller)
    finally:
        poller.remove(force=True)
    assert r.code == 0, str(r)
    assert running(swarm, fleet["web"]) == {pinned(fleet, "2.0.0"): 2}
    return r, ok - before[0], fail - before[1], seconds


def test_start_first_update_to_v2_drops_no_request_of_a_poller_on_the_service_network(fleet, services, swarm):
    _, ok, fail, seconds = update_under_poller(fleet, swarm, services, bundle_of(fleet, "2.0.0", 2))
    print(f"\nstart-first update of 2 replicas: {ok + fail} polls during {seconds:.1f}s, {fail} failed")
    assert ok > 20
    assert fail == 0, f"{fail} failed requests during a start-first rollout"


def test_a_stop_first_update_of_both_replicas_at_once_is_seen_failing_by_the_same_poller(fleet, services, swarm):
    """The measurement discriminates: the outage a careless rollout setting causes is counted."""
    careless = bundle_of(fleet, "2.0.0", 2, rollout={"order": "stop-first", "parallelism": 2})
    _, ok, fail, seconds = update_under_poller(fleet, swarm, services, careless)
    print(f"\nstop-first update of 2 replicas at once: {fail} of {ok + fail} polls failed in {seconds:.1f}s")
    assert fail > 0


def test_a_broken_first_install_is_removed_again_with_exit_4(fleet, services, swarm):
    r = do_import(fleet, bundle_of(fleet, "3.0.0", 3), services)
    assert r.code == 4, str(r)
    assert f"service {fleet['web']} did not get healthy" in one_line(r.stderr)
    assert not [s for s in swarm.api.services() if s["Spec"]["Name"] == fleet["web"]]
    assert not (services / "installed" / f"{fleet['web']}.json").exists()


# -- ownership (issue 18, finding 4) -------------------------------------------------------------

def test_an_admins_service_named_in_a_stage_is_refused_and_keeps_its_image(fleet, services, swarm):
    """A bundle may update only the services its app created (label or record), or adopt one no app
    owns with --adopt (and the plan says so); refused before anything is pushed or changed."""
    admin = f"fl-{fleet['tok']}-admin"
    swarm.api.create_service(docker.types.TaskTemplate(docker.types.ContainerSpec(
        f"{fleet['repo']}:1.0.0", ["sleep", "600"])), name=admin)
    before = swarm.api.inspect_service(admin)
    evil = bundle_of(fleet, "2.0.0", 2, stages=[([admin], "0s")], name="evil")
    r = do_import(fleet, evil, services)
    assert r.code == 3, str(r)
    assert one_line(r.stderr) == (f"refused: ownership: service {admin} exists and no app owns it: a bundle of app "
                                  f"evil-{fleet['tok']} may take it only with --adopt")
    after = swarm.api.inspect_service(admin)
    assert (after["Version"], after["Spec"]) == (before["Version"], before["Spec"]), "the admin's service changed"
    assert not (services / "installed" / f"{admin}.json").exists()
    plan = do_import(fleet, evil, services, "--adopt", "--dry-run")
    assert plan.code == 0, str(plan)
    assert f"adopt service {admin} (no app owns it" in plan.stdout, plan.stdout
    assert swarm.api.inspect_service(admin)["Version"] == before["Version"]


def test_a_service_bind_inside_another_containers_writable_bind_is_refused_before_anything_changes(
        fleet, services, swarm, tmp_path):
    """The nested-bind rule across containers, for a Swarm service as for a container: a container on
    this node mounts G writable, so it could plant a symlink at G/app; a release binding G/app is
    refused (exit 3) naming both, before anything is pushed or created."""
    from tests.keys import trust_store
    shared = tmp_path / "granted"
    (shared / "app").mkdir(parents=True)
    agent = f"fl-{fleet['tok']}-agent"
    cid = swarm.api.create_container_from_config({"Image": f"{fleet['repo']}:1.0.0", "Cmd": ["true"],
                                                  "HostConfig": {"Binds": [f"{shared}:/all"]}}, name=agent)["Id"]
    try:
        store = trust_store(tmp_path / "store", [fleet["key"]])
        (store / "host-policy.toml").write_text(f'[host]\nregistries = ["{fleet["registry"]}"]\nshared_networks = '
                                                f'["{fleet["net"]}"]\nbind_prefixes = ["{shared}"]\n')
        r = run_bundle("import", bundle_of(fleet, "1.0.0", 1, volume=f"{shared}/app"), "--keys", store,
                       "--state-dir", services, "--yes", "--registry", fleet["registry"])
        assert r.code == 3, str(r)
        assert one_line(r.stderr) == (
            f"refused: host policy: target.run.volumes.0 binds host path {shared}/app inside {shared} (container "
            f"{agent}'s mount at /all), and container {agent}'s mount at /all is writable: a container could put a "
            f"symlink in its place that a restart would mount; nested binds are never allowed (bind {shared} once "
            f"and use the subdirectory inside the container)")
        assert not [s for s in swarm.api.services() if s["Spec"]["Name"] == fleet["web"]]
        assert not (services / "installed" / f"{fleet['web']}.json").exists() and os.listdir(shared / "app") == []
    finally:
        swarm.api.remove_container(cid, force=True)


def test_a_service_another_app_created_is_refused_even_with_adopt(fleet, services, swarm):
    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1), services).code == 0
    spec = swarm.api.inspect_service(fleet["web"])
    assert spec["Spec"]["Labels"]["io.bundle.app"] == f"fleet-{fleet['tok']}"
    evil = bundle_of(fleet, "2.0.0", 2, stages=[([fleet["web"]], "0s")], name="evil")
    for extra in ((), ("--adopt",)):
        r = do_import(fleet, evil, services, *extra)
        assert r.code == 3, str(r)
        assert one_line(r.stderr) == (f"refused: ownership: service {fleet['web']} belongs to app fleet-{fleet['tok']}: "
                                      f"a bundle of app evil-{fleet['tok']} may not use it")
    assert swarm.api.inspect_service(fleet["web"])["Version"] == spec["Version"]
    assert running(swarm, fleet["web"]) == {pinned(fleet, "1.0.0"): 2}


def test_a_failure_action_pause_leaves_swarm_paused_and_exits_5_for_an_operator(fleet, services, swarm):
    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1), services).code == 0
    r = do_import(fleet, bundle_of(fleet, "3.0.0", 3, rollout={"failure_action": "pause"}), services)
    assert r.code == 5, str(r)
    line = one_line(r.stderr)
    assert line.startswith(f"operator needed: service {fleet['web']}: Swarm left the update paused"), line
    assert swarm.api.inspect_service(fleet["web"])["UpdateStatus"]["State"] == "paused"
    rec = json.loads((services / "installed" / f"{fleet['web']}.json").read_text())
    assert rec["version"] == "1.0.0"  # the record never claims the paused version
    r = run_bundle("rollback", fleet["web"], "--state-dir", services, "--yes")  # the operator's way out
    assert r.code == 0, str(r)
    assert wait_until(lambda: running(swarm, fleet["web"]) == {pinned(fleet, "1.0.0"): 2}, timeout=30)


def test_a_broken_v3_is_rolled_back_by_swarm_to_v2_with_exit_4_and_the_task_errors(fleet, services, swarm):
    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1), services).code == 0
    assert do_import(fleet, bundle_of(fleet, "2.0.0", 2), services).code == 0
    v2 = pinned(fleet, "2.0.0")
    r = do_import(fleet, bundle_of(fleet, "3.0.0", 3), services)
    assert r.code == 4, str(r)
    line = one_line(r.stderr)
    assert line.startswith(f"update failed: stage 1 of 1: service {fleet['web']}: Swarm rolled the update back to {v2}")
    assert "task " in line and "exit" in line, line  # the failing tasks' errors
    assert spec_image(swarm, fleet["web"]) == v2
    assert wait_until(lambda: running(swarm, fleet["web"]) == {v2: 2}, timeout=30)
    rec = json.loads((services / "installed" / f"{fleet['web']}.json").read_text())
    assert rec["version"] == "2.0.0" and rec["image"] == v2
    st = run_bundle("status", fleet["web"], "--state-dir", services)
    assert "last update: rollback_completed" in st.stdout, st.stdout
    # the failed task's own output is kept, as for the container kind
    h = run_bundle("history", fleet["web"], "--state-dir", services)
    (path,) = [ln.split(": ", 1)[1] for ln in h.stdout.splitlines() if "logs of the failed container: " in ln]
    assert "migration failed" in Path(path).read_text(), path


def test_bundle_rollback_of_a_service_uses_swarms_rollback_to_the_previous_image(fleet, services, swarm):
    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1), services).code == 0
    assert do_import(fleet, bundle_of(fleet, "2.0.0", 2), services).code == 0
    r = run_bundle("rollback", fleet["web"], "--state-dir", services, "--yes")
    assert r.code == 0, str(r)
    v1 = pinned(fleet, "1.0.0")
    assert spec_image(swarm, fleet["web"]) == v1
    assert running(swarm, fleet["web"]) == {v1: 2}
    assert swarm.api.inspect_service(fleet["web"])["UpdateStatus"]["State"] == "rollback_completed"


def test_rollback_of_a_service_never_updated_is_a_usage_error_and_changes_nothing(fleet, services, swarm):
    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1), services).code == 0
    version = swarm.api.inspect_service(fleet["web"])["Version"]["Index"]
    r = run_bundle("rollback", fleet["web"], "--state-dir", services, "--yes")
    assert r.code == 2, str(r)
    assert "no previous version" in one_line(r.stderr)
    assert swarm.api.inspect_service(fleet["web"])["Version"]["Index"] == version


# -- gray release ---------------------------------------------------------------------------------

def test_a_failing_first_stage_is_rolled_back_and_the_second_service_is_untouched(fleet, services, swarm):
    def stages(soak):
        return [([fleet["canary"]], soak), ([fleet["web"]], "0s")]

    r = do_import(fleet, bundle_of(fleet, "1.0.0", 1, stages("2s"), name="gray"), services)
    assert r.code == 0, str(r)
    v1 = pinned(fleet, "1.0.0")
    assert running(swarm, fleet["canary"]) == {v1: 2} and running(swarm, fleet["web"]) == {v1: 2}
    web_version = swarm.api.inspect_service(fleet["web"])["Version"]["Index"]
    r = do_import(fleet, bundle_of(fleet, "3.0.0", 3, stages("2s"), name="gray"), services)
    assert r.code == 4, str(r)
    line = one_line(r.stderr)
    assert line.startswith(f"update failed: stage 1 of 2: service {fleet['canary']}: Swarm rolled the update back")
    assert line.endswith("later stage(s) not started"), line
    assert wait_until(lambda: running(swarm, fleet["canary"]) == {v1: 2}, timeout=30)
    assert swarm.api.inspect_service(fleet["web"])["Version"]["Index"] == web_version  # not even touched
    assert running(swarm, fleet["web"]) == {v1: 2}


def test_a_long_soak_ends_the_import_after_stage_1_and_resume_finishes_stage_2(fleet, services, swarm):
    def stages(soak):
        return [([fleet["canary"]], soak), ([fleet["web"]], "0s")]

    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1, stages("0s"), name="gray"), services).code == 0
    v1, bundle = pinned(fleet, "1.0.0"), bundle_of(fleet, "2.0.0", 2, stages(SOAK_LONG), name="gray")
    r = do_import(fleet, bundle, services, env=SHORT_INLINE_SOAK)
    assert r.code == 0, str(r)
    v2 = pinned(fleet, "2.0.0")
    m = re.search(r"stage 1 of 2 done; continue with --resume after (\S+)", r.stdout)
    assert m, r.stdout
    h = run_bundle("history", f"gray-{fleet['tok']}", "--state-dir", services).stdout
    assert h.count("result: partial") == 1 and "2.0.0  result: partial" in h, h  # not "done": a stage is left
    assert f"  services: {fleet['canary']} 2.0.0, {fleet['web']} 1.0.0" in h, h
    assert running(swarm, fleet["canary"]) == {v2: 2} and running(swarm, fleet["web"]) == {v1: 2}
    # a careless operator: the same import again without --resume, then --resume too early
    again = do_import(fleet, bundle, services)
    assert again.code == 2 and "continue it with --resume" in one_line(again.stderr), str(again)
    early = do_import(fleet, bundle, services, "--resume")
    assert early.code == 1 and f"soaks until {m.group(1)}" in one_line(early.stderr), str(early)
    assert running(swarm, fleet["web"]) == {v1: 2}
    st = run_bundle("status", fleet["web"], "--state-dir", services)
    time.sleep(max(0.0, (parse_ts(m.group(1)) - utc_now()).total_seconds()) + 1)  # the soak is over
    r = do_import(fleet, bundle, services, "--resume")
    assert r.code == 0, str(r)
    assert "stage 2 of 2 done" in r.stdout
    assert running(swarm, fleet["web"]) == {v2: 2} and running(swarm, fleet["canary"]) == {v2: 2}
    # the release is done: the same bundle again is a replay
    replay = do_import(fleet, bundle, services, "--resume")
    assert replay.code in (2, 3), str(replay)
    assert st.code == 0


# -- crash ----------------------------------------------------------------------------------------

def test_kill_9_during_a_first_install_then_recover_leaves_a_healthy_service(fleet, services, swarm):
    r = do_import(fleet, bundle_of(fleet, "1.0.0", 1), services, env={"BUNDLE_CRASH_AT": "service_update"})
    assert r.code == -signal.SIGKILL, str(r)
    rec = run_bundle("recover", "--state-dir", services, "--yes")
    assert rec.code == 0, str(rec)
    assert running(swarm, fleet["web"]) == {pinned(fleet, "1.0.0"): 2}
    assert json.loads((services / "installed" / f"{fleet['web']}.json").read_text())["version"] == "1.0.0"


# every journal step of a service rollout, and the version recover must leave running
@pytest.mark.parametrize("step,when,left", [("service_begin", "after", "1.0.0"),
                                            ("service_update", "before", "1.0.0"),
                                            ("service_update", "after", "2.0.0"),  # Swarm rolls on its own
                                            ("service_commit", "ahead", "2.0.0"),
                                            ("service_commit", "before", "2.0.0")])
def test_kill_9_during_a_rollout_then_recover_leaves_one_healthy_version(fleet, services, swarm, step, when, left):
    assert do_import(fleet, bundle_of(fleet, "1.0.0", 1), services).code == 0
    r = do_import(fleet, bundle_of(fleet, "2.0.0", 2), services,
                  env={"BUNDLE_CRASH_AT": step, "BUNDLE_CRASH_WHEN": when})
    assert r.code == -signal.SIGKILL, str(r)
    assert (services / "apps" / fleet["web"] / "journal.json").exists()
    st = run_bundle("status", fleet["web"], "--state-dir", services)
    assert "an interrupted rollout is pending" in st.stdout, st.stdout
    rec = run_bundle("recover", "--state-dir", services, "--yes")
    assert rec.code == 0, str(rec)
    images = running(swarm, fleet["web"])
    assert len(images) == 1 and sum(images.values()) == 2, images  # one version, every replica running
    (image,) = images
    assert spec_image(swarm, fleet["web"]) == image
    assert not (services / "apps" / fleet["web"] / "journal.json").exists()
    installed = json.loads((services / "installed" / f"{fleet['web']}.json").read_text())
    assert image == pinned(fleet, left) and installed["version"] == left
