"""`bundle import` of a release whose run settings changed, on a real engine with signed bundles:
the three-way merge (the release's changes applied, the host's kept, conflicts refused before
anything is loaded or stopped unless --prefer decides) and site settings (merged over the
bundle's, under the host policy); no secret env value is ever printed (importer.masking)."""

from __future__ import annotations

import json
import socket

import docker
import pytest

from importer.kinds.container.journal import SwapJournal
from tests.support import one_line, run_bundle
from tests.swap_fixtures import free_port, served_version, wait_until


def _spec(path, env: dict, image: dict, *, port: int, sequence: int, greeting: str = "hello",
          extra_env: dict | None = None, volumes: list[str] | None = None,
          secret_env: tuple[str, ...] = ()) -> object:
    volumes = [f"{env['volume']}:/data"] if volumes is None else volumes
    run_env = ", ".join(f'{k} = "{v}"' for k, v in {"GREETING": greeting, **(extra_env or {})}.items())
    secret = f"secret_env = {list(secret_env)!r}\n".replace("'", '"') if secret_env else ""
    path.write_text(
        f'name = "{env["name"]}"\nversion = "{image["version"]}"\nsequence = {sequence}\nimages = ["{image["ref"]}"]\n\n'
        f'[target]\nkind = "container"\nname = "{env["name"]}"\nimage = "{image["ref"]}"\n\n'
        f'[target.run]\nports = ["127.0.0.1:{port}:8080"]\nvolumes = {json.dumps(volumes)}\n'
        f'env = {{ {run_env} }}\n{secret}stop_timeout = 0\n\n'
        f'[target.health]\nhttp = "http://127.0.0.1:{port}/health"\ntimeout = "5s"\nattempts = 2\n')
    return path


class Site:
    """One test's signed releases of the demo app, imported with the real CLI."""

    def __init__(self, env, key, keys_dir, tmp_path):
        self.env, self.key, self.keys, self.tmp = env, key, keys_dir, tmp_path
        self.no_site_dir = {"BUNDLE_SITE_DIR": str(tmp_path / "no-site-files")}

    def build(self, image: dict, sequence: int, *, port: int, greeting: str = "hello", extra_env: dict | None = None,
              volumes: list[str] | None = None, secret_env: tuple[str, ...] = ()):
        spec = _spec(self.tmp / f"bundle-{sequence}.toml", self.env, image, port=port, sequence=sequence,
                     greeting=greeting, extra_env=extra_env, volumes=volumes, secret_env=secret_env)
        out = self.tmp / f"app-{sequence}.bundle.zst"
        r = run_bundle("build", spec, "-o", out, "--sign-key", self.key.fpr, "--gnupghome", self.key.home, "--local")
        assert r.code == 0, str(r)
        return out

    def import_(self, bundle, *extra):
        return run_bundle("import", bundle, "--keys", self.keys, "--state-dir", self.env["state"].root, "--yes",
                          *extra, env=self.no_site_dir)

    def container(self) -> dict:
        return self.env["client"].api.inspect_container(self.env["name"])

    def env_of(self) -> dict:
        return dict(e.split("=", 1) for e in self.container()["Config"]["Env"])

    def recreate_by_hand(self, image: dict, port: int, **extra_env):
        """What an admin does: remove the container and `docker run` it again with other env."""
        api, name = self.env["client"].api, self.env["name"]
        api.remove_container(name, force=True)
        cid = api.create_container_from_config({
            "Image": image["ref"], "Env": [f"{k}={v}" for k, v in {"GREETING": "hello", **extra_env}.items()],
            "ExposedPorts": {"8080/tcp": {}}, "StopTimeout": 0,
            "HostConfig": {"Binds": [f"{self.env['volume']}:/data"],
                           "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}}},
            name=name)["Id"]
        api.start(cid)
        assert wait_until(lambda: served_version({"port": port}) == image["version"])
        return cid


@pytest.fixture
def site(docker_client, swap_env, pgp_keys, trust_store_of, tmp_path):
    swap_env["client"] = docker_client
    return Site(swap_env, pgp_keys.builder, trust_store_of([pgp_keys.builder]), tmp_path)


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_release_that_moves_its_port_ends_on_the_new_port(site, demo_images):
    p1, p2 = site.env["port"], free_port()
    assert site.import_(site.build(demo_images["v1"], 1, port=p1)).code == 0
    assert served_version({"port": p1}) == "1.0.0"

    r = site.import_(site.build(demo_images["v2"], 2, port=p2))
    assert r.code == 0, str(r)
    assert f"port 8080/tcp: 127.0.0.1:{p1}:8080 -> 127.0.0.1:{p2}:8080 (from the bundle)" in r.stdout
    assert served_version({"port": p2}) == "2.0.0"
    assert _port_is_free(p1)
    bindings = site.container()["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(p2)}]}


def test_an_env_change_of_the_release_is_applied_and_an_env_the_admin_added_is_kept(site, demo_images):
    port = site.env["port"]
    assert site.import_(site.build(demo_images["v1"], 1, port=port)).code == 0
    site.recreate_by_hand(demo_images["v1"], port, EXTRA="1")

    r = site.import_(site.build(demo_images["v2"], 2, port=port, greeting="hi"), "--adopt")
    assert r.code == 0, str(r)
    assert "env GREETING: hello -> hi (from the bundle)" in r.stdout
    assert "env EXTRA=1 kept (set on this host)" in r.stdout
    env = site.env_of()
    assert env["GREETING"] == "hi" and env["EXTRA"] == "1" and env["APP_VERSION"] == "2.0.0"
    assert served_version(site.env) == "2.0.0"


def test_an_upgrade_with_unchanged_settings_says_so(site, demo_images):
    port = site.env["port"]
    assert site.import_(site.build(demo_images["v1"], 1, port=port)).code == 0
    r = site.import_(site.build(demo_images["v2"], 2, port=port))
    assert r.code == 0, str(r)
    assert "then create the new container with the same settings, networks and mounts" in r.stdout
    assert "except:" not in r.stdout and site.env_of()["GREETING"] == "hello"


@pytest.mark.parametrize("prefer,greeting", [("bundle", "hi"), ("local", "local")])
def test_a_setting_changed_on_the_host_and_by_the_release_is_refused_before_anything_stops(
        site, demo_images, app_image, docker_client, uniq, prefer, greeting):
    port = site.env["port"]
    v2 = {"ref": f"mergetest/app-{uniq}:2.0.0", "version": "2.0.0"}
    v2["id"] = app_image(v2["ref"], "2.0.0")
    assert site.import_(site.build(demo_images["v1"], 1, port=port)).code == 0
    cid = site.recreate_by_hand(demo_images["v1"], port, GREETING="local")
    bundle = site.build(v2, 2, port=port, greeting="hi")
    docker_client.images.remove(v2["ref"])  # the intranet does not have the release yet

    r = site.import_(bundle, "--adopt")
    assert r.code == 3, str(r)
    assert one_line(r.stderr) == ("refused: settings: env GREETING was changed on this host (hello -> local) and "
                                  "by the bundle (hello -> hi): choose with --prefer bundle or --prefer local")
    # nothing stopped, nothing loaded, no swap begun
    info = site.container()
    assert info["Id"] == cid and info["State"]["Running"] and served_version(site.env) == "1.0.0"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(v2["ref"])
    assert SwapJournal.load(site.env["state"].app_dir(site.env["name"])) is None

    r = site.import_(bundle, "--adopt", "--prefer", prefer)
    assert r.code == 0, str(r)
    assert f"--prefer {prefer}" in r.stdout
    assert site.env_of()["GREETING"] == greeting and served_version(site.env) == "2.0.0"


def test_a_port_the_site_file_moves_is_followed_by_the_signed_health_check(site, demo_images, tmp_path):
    """Issue 20, point 2: the bundle publishes and probes P1; the site file moves the port to P2. The
    upgrade is healthy on P2 (not rolled back), and the plan says the site file moved it."""
    p1, p2, site_file = site.env["port"], free_port(), tmp_path / "site.toml"
    assert site.import_(site.build(demo_images["v1"], 1, port=p1)).code == 0
    site_file.write_text(f'[run]\nports = ["127.0.0.1:{p2}:8080"]\n')
    r = site.import_(site.build(demo_images["v2"], 2, port=p1), "--site", site_file)
    assert r.code == 0, str(r)
    assert f"port 8080/tcp: 127.0.0.1:{p1}:8080 -> 127.0.0.1:{p2}:8080 (from the site file)" in r.stdout
    assert (f"the health check follows container port 8080/tcp: the bundle probes 127.0.0.1:{p1}, published here "
            f"as 127.0.0.1:{p2} (from the site file)") in r.stdout
    assert f"GET http://127.0.0.1:{p2}/health answers" in r.stdout
    assert served_version({"port": p2}) == "2.0.0" and _port_is_free(p1)
    assert site.env["state"].installed(site.env["name"])["health"]["http"] == f"http://127.0.0.1:{p2}/health"


def test_the_site_file_may_set_the_health_check_this_host_reaches(site, demo_images, tmp_path):
    """The site file's `[health]` probe replaces the signed one (its kind too): the bundle probes http at
    P1, this host publishes P2 and checks it by tcp; the plan says the check is the site file's."""
    p1, p2, site_file = site.env["port"], free_port(), tmp_path / "site.toml"
    assert site.import_(site.build(demo_images["v1"], 1, port=p1)).code == 0
    site_file.write_text(f'[run]\nports = ["127.0.0.1:{p2}:8080"]\n\n[health]\ntcp = "127.0.0.1:{p2}"\nattempts = 1\n')
    r = site.import_(site.build(demo_images["v2"], 2, port=p1), "--site", site_file)
    assert r.code == 0, str(r)
    assert f"health check (from the site file): tcp connect to 127.0.0.1:{p2}" in r.stdout
    assert "1 attempts" in r.stdout and "the health check follows" not in r.stdout
    assert f"  health.tcp 127.0.0.1:{p2}" in r.stdout  # the site settings' own lines
    assert served_version({"port": p2}) == "2.0.0"


def test_a_port_no_longer_published_is_refused_and_one_moved_by_hand_is_followed(site, demo_images, tmp_path,
                                                                                  docker_client):
    p1, p2, site_file = site.env["port"], free_port(), tmp_path / "site.toml"
    bundle = site.build(demo_images["v1"], 1, port=p1)
    site_file.write_text('[run]\nports = ["127.0.0.1::8080"]\n')  # no fixed host port: nothing to probe
    r = site.import_(bundle, "--site", site_file)
    assert r.code == 3, str(r)
    assert one_line(r.stderr) == (f"refused: settings: the health check probes 127.0.0.1:{p1}, where the bundle "
                                  f"publishes container port 8080/tcp, which this container would no longer publish "
                                  f"at a fixed host port; nothing was changed")
    with pytest.raises(docker.errors.NotFound):
        site.container()
    assert site.env["state"].installed(site.env["name"]) is None

    assert site.import_(bundle).code == 0
    site.recreate_by_hand(demo_images["v1"], p2)  # the admin moved the port by hand
    r = site.import_(site.build(demo_images["v2"], 2, port=p1), "--adopt")
    assert r.code == 0, str(r)
    assert f"port 8080/tcp 127.0.0.1:{p2}:8080 kept (set on this host)" in r.stdout
    assert f"published here as 127.0.0.1:{p2} (set on this host)" in r.stdout
    assert served_version({"port": p2}) == "2.0.0"


def test_site_settings_reach_the_container_masked_in_the_plan_and_under_the_host_policy(
        site, demo_images, tmp_path):
    port, secret = site.env["port"], "s3cr3t-value-for-test"
    hostdir = tmp_path / "site-files"
    hostdir.mkdir()
    (hostdir / "app.env").write_text("SIG_KEY=abc\n")
    site_file = tmp_path / "site.toml"
    site_file.write_text(f'[run]\nenv = {{ TOKEN = "{secret}" }}\nvolumes = ["{hostdir}/app.env:/app.env"]\n')
    bundle = site.build(demo_images["v1"], 1, port=port)

    # a bind mount in the site file is host access like any other: refused without a grant
    r = site.import_(bundle, "--site", site_file)
    assert r.code == 3, str(r)
    assert one_line(r.stderr).startswith(f"refused: host policy: target.run.volumes.1 asks for bind mount of host "
                                         f"path {hostdir}/app.env")
    with pytest.raises(docker.errors.NotFound):
        site.container()

    (site.keys / "host-policy.toml").write_text(f'[apps.{site.env["name"]}]\nbind_prefixes = ["{hostdir}"]\n')
    r = site.import_(bundle, "--site", site_file)
    assert r.code == 0, str(r)
    assert f"site settings {site_file} (over the bundle's):" in r.stdout and "  env TOKEN=***" in r.stdout
    assert secret not in r.stdout + r.stderr
    assert site.env_of()["TOKEN"] == secret and site.env_of()["GREETING"] == "hello"
    api = site.env["client"].api
    out = api.exec_start(api.exec_create(site.env["name"], ["cat", "/app.env"]))
    assert out == b"SIG_KEY=abc\n"

    # the next release with the same site file: nothing reported as changed on the host
    r = site.import_(site.build(demo_images["v2"], 2, port=port), "--site", site_file)
    assert r.code == 0, str(r)
    assert "except:" not in r.stdout and secret not in r.stdout + r.stderr
    assert site.env_of()["TOKEN"] == secret and served_version(site.env) == "2.0.0"


def test_a_site_secret_removed_or_changed_is_never_printed_and_its_removal_is_shown(site, demo_images, tmp_path):
    """Issue 20: the site file had DB_PASSWORD (and DSN, whose name does not say secret) and drops them;
    the bundle changes API_TOKEN. Neither the plan, the --json run nor the audit log prints a value."""
    port, site_file = site.env["port"], tmp_path / "site.toml"
    secrets = ("hunter2", "pg-s3cr3t-dsn", "tok-one", "tok-two", "eu-west-9", "salt-one", "salt-two")
    site_file.write_text('[run]\nenv = { DB_PASSWORD = "hunter2", DSN = "pg-s3cr3t-dsn" }\n')
    r = site.import_(site.build(demo_images["v1"], 1, port=port, extra_env={"API_TOKEN": "tok-one", "API_SALT": "salt-one"},
                                secret_env=("API_SALT",)), "--site", site_file)
    assert r.code == 0, str(r)
    assert "  env DB_PASSWORD=***" in r.stdout and "  env DSN=***" in r.stdout
    assert not any(secret in r.stdout + r.stderr for secret in secrets)
    assert site.env_of()["DB_PASSWORD"] == "hunter2" and site.env_of()["API_TOKEN"] == "tok-one"

    site_file.write_text('[run]\nenv = { REGION = "eu-west-9" }\n')
    r = site.import_(site.build(demo_images["v2"], 2, port=port, extra_env={"API_TOKEN": "tok-two", "API_SALT": "salt-two"},
                                secret_env=("API_SALT",)), "--site", site_file, "--json")
    assert r.code == 0, str(r)
    for line in ("env API_TOKEN: *** -> *** (from the bundle)", "env API_SALT: *** -> *** (from the bundle)",
                 "env DB_PASSWORD: *** -> (unset) (from the site file)",
                 "env DSN: *** -> (unset) (from the site file)", "env REGION: (unset) -> *** (from the site file)",
                 "  env REGION=***"):
        assert line in r.stderr, r.stderr  # --json: the plan goes to stderr
    audit = (site.env["state"].root / "audit.log").read_text()
    history = run_bundle("history", site.env["name"], "--state-dir", site.env["state"].root)
    assert history.code == 0, str(history)
    for secret in secrets:
        assert secret not in r.stdout + r.stderr + audit + history.stdout + history.stderr, secret
    env = site.env_of()
    assert "DB_PASSWORD" not in env and "DSN" not in env and env["API_TOKEN"] == "tok-two"
    assert env["API_SALT"] == "salt-two"
    assert env["REGION"] == "eu-west-9" and served_version(site.env) == "2.0.0"


def test_a_broken_site_file_changes_nothing(site, demo_images, tmp_path):
    site_file = tmp_path / "site.toml"
    site_file.write_text('[run]\nprivileged = true\n')
    r = site.import_(site.build(demo_images["v1"], 1, port=site.env["port"]), "--site", site_file)
    assert r.code == 1, str(r)
    assert one_line(r.stderr).startswith(f"error: site settings {site_file}: at run: ")
    with pytest.raises(docker.errors.NotFound):
        site.container()


def _admin_container_with_mounts(site, image: dict, hostdir, port: int) -> str:
    """What an admin runs by hand: `docker run --mount type=bind,src=HOSTDIR,dst=/data --mount
    type=tmpfs,dst=/scratch` (HostConfig.Mounts, not Binds)."""
    api, name = site.env["client"].api, site.env["name"]
    mounts = [docker.types.Mount("/data", str(hostdir), type="bind"), docker.types.Mount("/scratch", None, type="tmpfs")]
    cid = api.create_container_from_config({
        "Image": image["ref"], "Env": ["GREETING=hello"], "ExposedPorts": {"8080/tcp": {}}, "StopTimeout": 0,
        "HostConfig": {"Mounts": mounts, "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}}},
        name=name)["Id"]
    api.start(cid)
    assert wait_until(lambda: served_version({"port": port}) == image["version"])
    return cid


def _files(hostdir) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(hostdir.iterdir())}


def test_adopting_a_container_with_a_mount_bind_keeps_the_admins_data(site, demo_images, tmp_path):
    """Issue 18, finding 6: the admin's `--mount type=bind` at /data is a mount like `-v`: a bundle
    naming another volume at /data is a settings conflict (not `(unset) -> ...` onto an empty
    volume); with --prefer local the app comes back on the admin's directory, its tmpfs kept, and
    that directory is backed up and restored exactly when a later release fails."""
    port, api, name = site.env["port"], site.env["client"].api, site.env["name"]
    hostdir = tmp_path / "admin-data"
    hostdir.mkdir()
    (hostdir / "important.txt").write_text("the admin's data\n")
    (hostdir / "notes.txt").write_text("notes\n")
    cid = _admin_container_with_mounts(site, demo_images["v1"], hostdir, port)
    before = _files(hostdir)

    r = site.import_(site.build(demo_images["v2"], 2, port=port), "--adopt")
    assert r.code == 3, str(r)
    assert one_line(r.stderr) == (
        f"refused: settings: volume /data was changed on this host ((unset) -> {hostdir}:/data) and by the bundle "
        f"((unset) -> {site.env['volume']}:/data): choose with --prefer bundle or --prefer local")
    info = site.container()
    assert info["Id"] == cid and info["State"]["Running"] and served_version(site.env) == "1.0.0"
    assert _files(hostdir) == before and not api.volumes(filters={"name": site.env["volume"]})["Volumes"]

    r = site.import_(site.build(demo_images["v2"], 2, port=port), "--adopt", "--prefer", "local")
    assert r.code == 0, str(r)
    assert f"    bind {hostdir} -> /data [" in r.stdout  # backed up like a -v bind
    assert (f"volume /data {hostdir}:/data kept (set on this host; the bundle's change is dropped by --prefer local)"
            in r.stdout), r.stdout
    assert served_version(site.env) == "2.0.0"
    mounts = {m["Destination"]: m for m in site.container()["Mounts"]}
    assert mounts["/data"]["Type"] == "bind" and mounts["/data"]["Source"] == str(hostdir)
    assert [m["Target"] for m in site.container()["HostConfig"]["Mounts"] if m["Type"] == "tmpfs"] == ["/scratch"]
    out = api.exec_start(api.exec_create(name, ["cat", "/data/important.txt"]))
    assert out == b"the admin's data\n"
    assert not api.volumes(filters={"name": site.env["volume"]})["Volumes"]

    # the bind the merge kept is what the data steps back up and restore: a broken release's migration
    # rewrites and deletes files there, the rollback puts them back exactly
    kept = _files(hostdir)
    r = site.import_(site.build(demo_images["v3"], 3, port=port))
    assert r.code == 4, str(r)
    assert _files(hostdir) == kept and served_version(site.env) == "2.0.0"


def test_a_bundle_bind_nested_in_a_writable_bind_kept_from_the_host_is_refused(site, demo_images, tmp_path):
    """Issue 18, finding 2, on upgrade: the bundle's own binds do not nest, but the container it makes
    also keeps the admin's writable `G/app:/data`; the bundle's `G/app/sub:/x` inside it is refused
    (exit 3, host policy) before anything stops."""
    port, api = site.env["port"], site.env["client"].api
    granted = tmp_path / "granted"
    (granted / "app").mkdir(parents=True)
    (site.keys / "host-policy.toml").write_text(f'[host]\nbind_prefixes = ["{granted}"]\n')
    cid = api.create_container_from_config({
        "Image": demo_images["v1"]["ref"], "Env": ["GREETING=hello"], "ExposedPorts": {"8080/tcp": {}}, "StopTimeout": 0,
        "HostConfig": {"Binds": [f"{granted}/app:/data"],
                       "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}}},
        name=site.env["name"])["Id"]
    api.start(cid)
    assert wait_until(lambda: served_version({"port": port}) == "1.0.0")
    bundle = site.build(demo_images["v2"], 2, port=port, volumes=[f"{granted}/app/sub:/x"])
    r = site.import_(bundle, "--adopt")
    assert r.code == 3, str(r)
    assert one_line(r.stderr).startswith(
        f"refused: host policy: the bundle mount at /x binds host path {granted}/app/sub inside {granted}/app "
        f"(the kept mount at /data), and the kept mount at /data is writable")
    info = site.container()
    assert info["Id"] == cid and info["State"]["Running"] and served_version(site.env) == "1.0.0"
    assert SwapJournal.load(site.env["state"].app_dir(site.env["name"])) is None
    assert sorted(p.name for p in (granted / "app").iterdir()) == ["migrations.log", "schema-version"]
