"""A `compose` target's build side (bundler.compose, bundler.spec): the supported Compose keys
applied exactly, every other key refused with one line naming it, images matched to the bundle's
pinned images, and the normalized project valid against the manifest schema and its typed model."""

import textwrap

import pytest

from bundlecore.errors import UsageProblem
from bundlecore.release import ComposeTarget, target_from_json
from bundlecore.schema import first_error
from bundler.spec import load_spec

IMAGES = ["demo/db:1.0", "demo/web:1.0", "demo/worker:1.0"]
COMPOSE = """\
services:
  db:
    image: demo/db:1.0
    command: ["sh", "-c", "echo up > /data/state; exec sleep 1d"]
    environment:
      MODE: primary
      PORT: 5432
    env_file: db.env
    volumes:
      - data:/data
      - type: bind
        source: /srv/demo/conf
        target: /conf
        read_only: true
      - type: tmpfs
        target: /run/db
    healthcheck:
      test: test -f /data/state
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 500ms
    restart: unless-stopped
    stop_grace_period: 1m30s
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
  web:
    image: demo/web:1.0
    ports: ["127.0.0.1:8080:80", {target: 81, published: 8081}]
    volumes: ["data:/srv:ro"]
    networks:
      front: {aliases: [www]}
      default:
    depends_on:
      db: {condition: service_healthy}
    labels: [org.demo.tier=web]
    user: "1000"
    working_dir: /srv
    cap_add: [NET_ADMIN]
    extra_hosts: ["gw:10.0.0.1"]
    tmpfs: /tmp
  worker:
    image: demo/worker:1.0
    entrypoint: /bin/sh
    depends_on: [db]
volumes:
  data:
networks:
  front: {}
"""


def _spec(tmp_path, compose: str = COMPOSE, extra: str = "", images=IMAGES):
    (tmp_path / "compose.yaml").write_text(compose)
    (tmp_path / "db.env").write_text("# secrets kept by the build\nDB_USER=app\nexport DB_PASS='s3cret'\n")
    (tmp_path / "bundle.toml").write_text(textwrap.dedent(f"""\
        name = "demo"
        version = "1.0"
        images = {images!r}
        [target]
        kind = "compose"
        project = "demo"
        file = "compose.yaml"
        """).replace("'", '"') + extra)
    return tmp_path / "bundle.toml"


def test_compose_project_is_normalized_for_the_manifest(tmp_path):
    spec = load_spec(_spec(tmp_path, extra='[target.health.web]\nhttp = "http://127.0.0.1:8080/"\ntimeout = "5s"\n'))
    t = spec.target
    assert (t["kind"], t["name"], t["image"], t["run"]) == ("compose", "demo", "demo/db:1.0", {})
    db, web, worker = (t["compose"]["services"][n] for n in ("db", "web", "worker"))
    assert db["run"]["env"] == {"DB_USER": "app", "DB_PASS": "s3cret", "MODE": "primary", "PORT": "5432"}
    assert db["run"]["volumes"] == ["demo_data:/data", "/srv/demo/conf:/conf:ro"]
    assert db["tmpfs"] == ["/run/db"]
    assert db["healthcheck"] == {"test": ["CMD-SHELL", "test -f /data/state"], "interval": 1.0, "timeout": 2.0,
                                 "retries": 3, "start_period": 0.5}
    assert db["run"]["stop_timeout"] == 90 and db["run"]["restart"] == "unless-stopped"
    assert db["ulimits"] == {"nofile": {"soft": 1024, "hard": 2048}, "nproc": {"soft": 512, "hard": 512}}
    assert db["networks"] == {"default": {}}
    assert web["run"]["ports"] == ["127.0.0.1:8080:80", "8081:81"]
    assert web["run"]["volumes"] == ["demo_data:/srv:ro"]
    assert web["networks"] == {"front": {"aliases": ["www"]}, "default": {}}
    assert web["depends_on"] == {"db": "service_healthy"} and worker["depends_on"] == {"db": "service_started"}
    assert web["run"]["labels"] == {"org.demo.tier": "web"} and web["tmpfs"] == ["/tmp"]
    assert (web["run"]["user"], web["run"]["workdir"], web["run"]["cap_add"], web["run"]["extra_hosts"]) == \
        ("1000", "/srv", ["NET_ADMIN"], ["gw:10.0.0.1"])
    assert web["health"] == {"http": "http://127.0.0.1:8080/", "timeout": 5, "attempts": 3}
    assert worker["run"]["entrypoint"] == ["/bin/sh"]
    assert t["compose"]["volumes"] == {"data": {}} and t["compose"]["networks"] == {"default": {}, "front": {}}
    assert first_error("manifest.schema.json", _manifest(t)) is None
    typed = target_from_json(t)
    assert isinstance(typed, ComposeTarget) and typed.project.order() == ["db", "web", "worker"]
    assert typed.to_json() == t


def _manifest(target: dict) -> dict:
    return {"format_version": 1, "name": "demo", "version": "1.0", "sequence": 1, "created": "2026-01-01T00:00:00Z",
            "expires": "2026-04-01T00:00:00Z", "builder": {"tool": "t", "host": "h", "engine": "e"},
            "platform": "linux/amd64", "allow_latest": False,
            "images": [{"ref": r, "platform": "linux/amd64", "repo_digest": None, "id": "sha256:" + "a" * 64,
                        "diff_ids": [], "config": "images/c.json", "layers": []} for r in IMAGES],
            "payload": [{"path": "images/c.json", "size": 1, "sha256": "b" * 64}], "target": target}


@pytest.mark.parametrize("compose, says", [
    ("services:\n  db:\n    image: demo/db:1.0\n    privileged: true\n", "services.db: key 'privileged' is not supported"),
    ("services:\n  db:\n    image: demo/db:1.0\n    network_mode: host\n", "key 'network_mode' is not supported"),
    ("services:\n  db:\n    image: demo/db:1.0\nconfigs: {}\n", "the top level: key 'configs' is not supported"),
    ("services:\n  db:\n    build: .\n", "services.db.build: is not supported"),
    ("services:\n  db:\n    image: demo/other:1.0\n",
     "services.db.image: demo/other:1.0 is not one of the bundle's pinned images"),
    ("services:\n  db:\n    image: demo/db:1.0\n    volumes: [data:/d]\n", "volume data is not declared"),
    ("services:\n  db:\n    image: demo/db:1.0\n    volumes: [./d:/d]\n", "relative to the build host"),
    ("services:\n  db:\n    image: demo/db:1.0\n    environment: [TOKEN]\n", "TOKEN has no value"),
    ("services:\n  db:\n    image: demo/db:1.0\n    depends_on: {x: {condition: service_healthy}}\n",
     "names no service of the project: x"),
    ("services:\n  a:\n    image: demo/db:1.0\n    depends_on: [b]\n  b:\n    image: demo/db:1.0\n    depends_on: [a]\n",
     "in a cycle"),
    ("services:\n  db:\n    image: demo/db:1.0\n    depends_on: {db2: {condition: service_ok}}\n  db2:\n    image: demo/db:1.0\n",
     "'service_ok' is not one of"),
    ("services:\n  db:\n    image: demo/db:1.0\n    healthcheck: {test: [WRONG]}\n", "healthcheck.test"),
    ("services:\n  db:\n    image: demo/db:1.0\nvolumes:\n  data: {driver: nfs}\n", "volumes.data: key 'driver'"),
    ("services: [", "is not valid YAML"),
    ("services:\n  db:\n    image: demo/db:1.0\n    environment: {PASS: '${DB_PASS}'}\n",
     "services.db.environment.PASS: variable interpolation ($VAR) is not supported"),
    ("name: other\nservices:\n  db:\n    image: demo/db:1.0\n", "name: 'other' is not the target's project"),
    ("services:\n  db:\n    image: demo/db:1.0\n    restart: sometimes\n", "services.db.restart"),
])
def test_unsupported_or_wrong_compose_is_refused_with_one_line(tmp_path, compose, says):
    with pytest.raises(UsageProblem) as e:
        load_spec(_spec(tmp_path, compose))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_extension_fields_anchors_and_escaped_dollars_are_read_as_compose_reads_them(tmp_path):
    compose = textwrap.dedent("""\
        x-common: &common
          restart: always
          stop_grace_period: 5s
        services:
          db:
            <<: *common
            image: demo/db:1.0
            x-note: kept by the admin
            command: echo $$HOME
        """)
    db = load_spec(_spec(tmp_path, compose)).target["compose"]["services"]["db"]
    assert db["run"] == {"command": ["echo", "$HOME"], "restart": "always", "stop_timeout": 5}


def test_unpinned_service_image_is_refused_even_with_allow_latest(tmp_path):
    with pytest.raises(UsageProblem, match="services.db.image demo/db:latest is not pinned"):
        load_spec(_spec(tmp_path, "services:\n  db:\n    image: demo/db:latest\n", images=["demo/db:latest"]),
                  allow_latest=True)


def test_health_of_a_service_not_in_the_project_is_refused(tmp_path):
    with pytest.raises(UsageProblem, match="target.health.nope names no service"):
        load_spec(_spec(tmp_path, extra='[target.health.nope]\ntcp = "127.0.0.1:1"\n'))


def test_the_anythingllm_stack_example_builds_and_its_policy_grants_what_it_asks():
    from pathlib import Path

    from importer.hostpolicy import HostPolicy
    example = Path(__file__).resolve().parents[2] / "examples" / "anythingllm-stack"
    spec = load_spec(example / "bundle.toml")
    target = target_from_json(spec.target)
    assert isinstance(target, ComposeTarget) and target.project.order() == ["chroma", "ollama", "anythingllm"]
    granted = HostPolicy.load(example).check_target(spec.name, target)
    assert sorted(a.value for a in granted) == ["/srv/anythingllm/.env", "SYS_ADMIN"]
    assert all(a.granted_by and a.granted_by.startswith("[apps.anythingllm-stack]") for a in granted)
