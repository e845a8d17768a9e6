"""`bundle show` of a compose project (importer.kinds.compose.show): the compose file as applied is
one the build reads back into the same signed project (every supported key, `$` escaped), with its
images the loaded IDs and its secrets masked."""

import json

import yaml

from bundlecore.release import ComposeProject
from bundler.compose import ComposeFile
from importer.kinds.compose.show import compose_service
from importer.masking import MASK

RAW = {"services": {
    "db": {"image": "demo/db:1", "command": ["sh", "-c", "echo $$HOME; exec sleep 1"], "volumes": ["data:/data"],
           "healthcheck": {"test": "test -f /ready", "interval": "500ms", "retries": 3}, "stop_grace_period": "0s",
           "restart": "unless-stopped", "tmpfs": ["/run"], "ulimits": {"nofile": {"soft": 10, "hard": 20}},
           "environment": {"DB_PASSWORD": "hunter2"}},
    "web": {"image": "demo/web:1", "ports": ["127.0.0.1:8080:80"], "volumes": ["data:/srv:ro", "/srv/x:/x"],
            "environment": {"A": "1"}, "depends_on": {"db": {"condition": "service_healthy"}},
            "networks": {"front": {"aliases": ["www"]}}, "labels": {"t": "w"}, "cap_add": ["NET_ADMIN"],
            "user": "1000", "working_dir": "/w", "extra_hosts": ["h:1.2.3.4"], "entrypoint": ["/bin/sh"]}},
    "volumes": {"data": None}, "networks": {"front": None}}
IMAGES = ["demo/db:1", "demo/web:1"]


def _shown(tmp_path, ids: dict[str, str | None], marked=frozenset()) -> dict:
    (tmp_path / "c.yaml").write_text(json.dumps(RAW))
    project = ComposeProject.from_json(ComposeFile(tmp_path / "c.yaml", "p", IMAGES).load())
    return {"name": "p", "services": {n: compose_service("p", s, ids.get(n), marked) for n, s in project.services.items()},
            "volumes": {v: {} for v in project.volumes}, "networks": {n: {} for n in project.networks}}


def test_the_compose_file_as_applied_reads_back_into_the_same_project(tmp_path):
    doc = _shown(tmp_path, {})
    doc["services"]["db"]["environment"] = RAW["services"]["db"]["environment"]  # unmasked, to compare
    (tmp_path / "back.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert (ComposeFile(tmp_path / "back.yaml", "p", IMAGES).load()
            == ComposeFile(tmp_path / "c.yaml", "p", IMAGES).load())


def test_images_are_the_loaded_ids_and_secrets_are_masked(tmp_path):
    doc = _shown(tmp_path, {"db": "sha256:" + "a" * 64}, marked=frozenset({"A"}))
    db, web = doc["services"]["db"], doc["services"]["web"]
    assert db["image"] == "sha256:" + "a" * 64 and db["x-bundle-image"] == "demo/db:1"
    assert db["environment"] == {"DB_PASSWORD": MASK} and web["environment"] == {"A": MASK}
    assert db["command"] == ["sh", "-c", "echo $$HOME; exec sleep 1"]  # Compose's escape, as written
