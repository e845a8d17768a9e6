"""Issue 18, finding 3: the registry is the host's choice, and one app's key reaches no other app's
repository in it. Real parts only: Debian's registry on loopback, bundles built and signed by
`bundle build` with real gpg keys under a policy.toml of scoped roles, the real `bundle` command
on the real engine (container targets naming the registry in `[target] registry`).

What a user relies on: a registry is pushed to only when host-policy.toml grants it; a role's
repository scope holds for the path the image lands on in the registry (the host stripped); a tag
in the registry (and the engine's local tag of that name) that another app pushed is never
overwritten; every push is in the plan and in --json. A refusal is one line, exit 3, and the
registry still serves what it served, the engine's tags did not move, nothing was loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from tests.keys import trust_store
from tests.support import build_app_image, one_line, run_bundle

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def served(registry: str, path: str, tag: str) -> str | None:
    """The manifest digest the registry serves for path:tag (None: no such tag)."""
    r = requests.head(f"http://{registry}/v2/{path}/manifests/{tag}", headers={"Accept": MANIFEST_V2}, timeout=10)
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


def image_of(client, ref: str) -> str | None:
    try:
        return client.api.inspect_image(ref)["Id"]
    except docker.errors.ImageNotFound:
        return None


@dataclass
class Host:
    """One intranet host: its trust store (scoped roles, host policy), state dir and the registry."""

    client: object
    keys: object                 # tests.keys.Keys
    registry: str
    tmp: Path
    uniq: str
    store: Path
    state: Path

    @property
    def victim(self) -> str:
        return f"victim-{self.uniq}"

    @property
    def victim_ref(self) -> str:
        return f"victim-{self.uniq}/web:1.0"

    def bundle(self, app: str, ref: str, key, *, sequence: int = 1, version: str = "1.0.0",
               registry: str | None = None, keep_image: bool = False) -> Path:
        """A signed bundle (bundle build --local) of a fresh image under `ref` for a container target
        named after `app` whose `[target] registry` is `registry` (default: the test registry). The
        image is removed from the engine afterwards unless `keep_image`: an import must load it."""
        image_id = build_app_image(self.client, ref, version,
                                   dockerfile_extra=f"LABEL bundle.registry-test={self.uniq}-{app}-{sequence}")
        spec = self.tmp / f"{app}-{sequence}.toml"
        spec.write_text(f'name = "{app}"\nversion = "{version}"\nsequence = {sequence}\nimages = ["{ref}"]\n\n'
                        f'[target]\nkind = "container"\nname = "{app}"\nimage = "{ref}"\n'
                        f'registry = "{registry or self.registry}"\n\n'
                        '[target.health]\ncmd = ["/bin/true"]\ntimeout = "20s"\nattempts = 1\n')
        out = self.tmp / f"{app}-{sequence}.bundle"
        r = run_bundle("build", spec, "-o", out, "--sign-key", key.fpr, "--gnupghome", key.home, "--local")
        assert r.code == 0, str(r)
        if not keep_image:
            self.client.api.remove_image(image_id, force=True)
        return out

    def import_(self, bundle: Path, *extra):
        return run_bundle("import", bundle, "--keys", self.store, "--state-dir", self.state, "--yes", *extra)

    def install_victim(self) -> tuple[str, str]:
        """The victim app's release 1.0 imported and pushed: (its image ID, the digest the registry serves)."""
        r = self.import_(self.bundle(self.victim, self.victim_ref, self.keys.approver))
        assert r.code == 0, str(r)
        digest = served(self.registry, f"victim-{self.uniq}/web", "1.0")
        assert digest, "the victim's push is in the registry"
        return image_of(self.client, self.victim_ref), digest

    def pushed_tag(self, path: str = "", tag: str = "1.0") -> str:
        return f"{self.registry}/{path or f'victim-{self.uniq}/web'}:{tag}"


@pytest.fixture
def host(docker_client, pgp_keys, registry, tmp_path, uniq):
    """Roles: `victim` (approver key) for the victim app's repositories; `evil` (builder key) scoped,
    as in the finding, to `evil.example/*`; `neighbour` (approver2 key) whose scope does cover the
    victim's repository path (so that only the registry tag's owner stands between them). The host
    policy grants the test registry to every app."""
    store = trust_store(tmp_path / "keys", [pgp_keys.builder, pgp_keys.approver, pgp_keys.approver2])
    (store / "policy.toml").write_text(
        f'[roles.victim]\nkeys = ["{pgp_keys.approver.fpr}"]\napps = ["victim-{uniq}"]\nrepos = ["victim-{uniq}/*"]\n\n'
        f'[roles.evil]\nkeys = ["{pgp_keys.builder.fpr}"]\napps = ["evil-{uniq}"]\nrepos = ["evil.example/*"]\n\n'
        f'[roles.neighbour]\nkeys = ["{pgp_keys.approver2.fpr}"]\napps = ["neighbour-{uniq}"]\n'
        f'repos = ["neighbour.example/victim-{uniq}/*", "victim-{uniq}/*"]\n')
    (store / "host-policy.toml").write_text(f'[host]\nregistries = ["{registry}"]\n')
    yield Host(docker_client, pgp_keys, registry, tmp_path, uniq, store, tmp_path / "state")
    for c in docker_client.api.containers(all=True):
        if any(uniq in n for n in c.get("Names") or []):
            docker_client.api.remove_container(c["Id"], force=True)
    for img in docker_client.api.images():
        for t in img.get("RepoTags") or []:
            if uniq in t:
                try:
                    docker_client.api.remove_image(t, force=True)
                except docker.errors.APIError:
                    pass


def refused(r, check: str, line: str) -> None:
    assert r.code == 3, str(r)
    assert one_line(r.stderr) == f"refused: {check}: {line}", str(r)


def test_a_role_scoped_to_one_namespace_cannot_overwrite_another_repository_in_the_registry(host):
    """The finding: `evil.example/victim/web:1.0` is in the scope `evil.example/*` as written, but it
    is pushed to `victim/web:1.0`; before, the victim's tag then served the attacker's digest."""
    victim_id, victim_digest = host.install_victim()
    evil_ref = f"evil.example/victim-{host.uniq}/web:1.0"
    bundle = host.bundle(f"evil-{host.uniq}", evil_ref, host.keys.builder)
    for extra in ((), ("--dry-run",), ("--adopt",)):
        r = host.import_(bundle, *extra)
        refused(r, "signature", f"key {host.keys.builder.fpr} (role evil) may not sign push of {evil_ref} to "
                                f"{host.pushed_tag()}")
        assert "loaded" not in r.stdout and "pushed" not in r.stdout, str(r)
    assert served(host.registry, f"victim-{host.uniq}/web", "1.0") == victim_digest, "the registry tag did not move"
    assert image_of(host.client, host.pushed_tag()) == victim_id, "the engine's local tag did not move"
    assert image_of(host.client, evil_ref) is None, "nothing was loaded"
    assert not host.client.api.containers(all=True, filters={"name": f"evil-{host.uniq}"})


@pytest.mark.parametrize("named_by", ["target.registry", "--registry"])
def test_a_registry_the_host_policy_does_not_grant_is_refused_before_anything_is_loaded(host, registry, named_by):
    (host.store / "host-policy.toml").write_text('[host]\nregistries = ["registry.intranet:5000"]\n')
    ref = host.victim_ref
    if named_by == "--registry":
        bundle, extra = host.bundle(host.victim, ref, host.keys.approver, registry="registry.intranet:5000"), \
            ("--registry", registry)
    else:
        bundle, extra = host.bundle(host.victim, ref, host.keys.approver), ()
    r = host.import_(bundle, *extra)
    refused(r, "host policy", f"{named_by} asks for pushes to registry {registry}, which this host does not allow "
                              f'(to grant it: [apps.{host.victim}] registries = ["{registry}"] in '
                              f"{host.store / 'host-policy.toml'})")
    assert "loaded" not in r.stdout, str(r)
    assert image_of(host.client, ref) is None, "nothing was loaded"
    assert image_of(host.client, host.pushed_tag()) is None, "nothing was tagged"
    assert served(registry, f"victim-{host.uniq}/web", "1.0") is None, "nothing was pushed"
    assert not (host.state / "installed" / f"{host.victim}.json").exists()


def test_a_granted_registry_is_pushed_to_and_every_push_is_in_the_plan_and_the_json(host):
    bundle = host.bundle(host.victim, host.victim_ref, host.keys.approver)
    dry = host.import_(bundle, "--dry-run")
    assert dry.code == 0, str(dry)
    lines = dry.stdout.splitlines()
    assert f"host access: pushes to registry {host.registry} (granted by [host] registries)" in lines, str(dry)
    plan = [ln for ln in lines if ln.startswith("push ")]
    assert len(plan) == 1 and plan[0].startswith(f"push {host.victim_ref} (sha256:") \
        and plan[0].endswith(f"to {host.registry}/victim-{host.uniq}/web tag 1.0 (new tag)"), str(dry)
    dry_json = host.import_(bundle, "--dry-run", "--json")
    assert dry_json.code == 0, str(dry_json)
    assert plan[0] in json.loads(dry_json.stdout)["plan"]["lines"], "the --json plan lists the push too"
    assert served(host.registry, f"victim-{host.uniq}/web", "1.0") is None, "a dry run pushes nothing"

    r = host.import_(bundle, "--json")
    assert r.code == 0, str(r)
    doc = json.loads(r.stdout)
    image_id = image_of(host.client, host.victim_ref)
    assert doc["pushes"] == [{"source": host.victim_ref, "image_id": image_id, "repository":
                              f"{host.registry}/victim-{host.uniq}/web", "tag": "1.0", "replaces": None, "owner": None}]
    digest = served(host.registry, f"victim-{host.uniq}/web", "1.0")
    assert doc["pushed"] == [{"ref": host.victim_ref, "pushed": host.pushed_tag(), "digest": digest,
                              "by_digest": f"{host.pushed_tag()}@{digest}"}]
    assert plan[0] in r.stderr, "the --json run shows the same plan on stderr"
    record = json.loads((host.state / "registry-tags.json").read_text())
    assert record["tags"][host.pushed_tag()] == {"app": host.victim, "image_id": image_id, "digest": digest}


def test_an_app_cannot_push_over_a_registry_tag_another_app_pushed(host):
    """The neighbour's role covers the victim's repository path, and its own local ref is new: only
    the owner of the registry tag stands between them, with or without --adopt."""
    victim_id, victim_digest = host.install_victim()
    ref = f"neighbour.example/victim-{host.uniq}/web:1.0"
    bundle = host.bundle(f"neighbour-{host.uniq}", ref, host.keys.approver2)
    for extra in ((), ("--adopt",), ("--dry-run",)):
        r = host.import_(bundle, *extra)
        refused(r, "tags", f"registry tag {host.pushed_tag()} holds {victim_digest[:19]}…, pushed by app "
                           f"{host.victim}: app neighbour-{host.uniq} may not push {ref} over it")
    assert served(host.registry, f"victim-{host.uniq}/web", "1.0") == victim_digest
    assert image_of(host.client, host.pushed_tag()) == victim_id
    assert image_of(host.client, ref) is None, "nothing was loaded"


def test_the_engines_local_tag_of_that_name_is_not_moved_either(host):
    """The registry has no such tag, but the engine's tag `HOST:PORT/path:tag` (which the push
    would retag) names an image no app pushed: refused like a registry tag."""
    mine = build_app_image(host.client, f"{host.pushed_tag()}", "0.9.0",
                           dockerfile_extra=f"LABEL bundle.registry-test={host.uniq}-local")
    r = host.import_(host.bundle(host.victim, host.victim_ref, host.keys.approver))
    refused(r, "tags", f"the engine's tag {host.pushed_tag()} names {mine[:19]}…, which no app pushed from this "
                       f"host: app {host.victim} may not push {host.victim_ref} over it (--adopt overrides)")
    assert image_of(host.client, host.pushed_tag()) == mine
    assert image_of(host.client, host.victim_ref) is None, "nothing was loaded"
    assert served(host.registry, f"victim-{host.uniq}/web", "1.0") is None, "nothing was pushed"


def test_a_tag_no_app_pushed_is_overwritten_only_with_adopt_and_the_plan_says_so(host):
    """Pushed by hand (`docker push`), not by bundle: refused, then adopted with --adopt."""
    by_hand = build_app_image(host.client, host.victim_ref, "0.9.0",
                              dockerfile_extra=f"LABEL bundle.registry-test={host.uniq}-by-hand")
    host.client.api.tag(by_hand, f"{host.registry}/victim-{host.uniq}/web", "1.0")
    for ev in host.client.api.push(f"{host.registry}/victim-{host.uniq}/web", "1.0", stream=True, decode=True):
        assert "error" not in ev, ev
    host.client.api.remove_image(host.victim_ref)  # the tag only: the engine's registry tag keeps the image
    by_hand_digest = served(host.registry, f"victim-{host.uniq}/web", "1.0")
    bundle = host.bundle(host.victim, host.victim_ref, host.keys.approver)
    r = host.import_(bundle)
    refused(r, "tags", f"registry tag {host.pushed_tag()} holds {by_hand_digest[:19]}…, which no app pushed from "
                       f"this host: app {host.victim} may not push {host.victim_ref} over it (--adopt overrides)")
    assert served(host.registry, f"victim-{host.uniq}/web", "1.0") == by_hand_digest
    assert image_of(host.client, host.pushed_tag()) == by_hand

    r = host.import_(bundle, "--adopt")
    assert r.code == 0, str(r)
    assert f"to {host.registry}/victim-{host.uniq}/web tag 1.0 (over {by_hand_digest[:19]}…, adopted)" in r.stdout
    assert served(host.registry, f"victim-{host.uniq}/web", "1.0") not in (None, by_hand_digest)


def test_an_app_updates_its_own_registry_tag_and_the_plan_says_what_it_replaces(host):
    victim_id, victim_digest = host.install_victim()
    bundle = host.bundle(host.victim, host.victim_ref, host.keys.approver, sequence=2, version="1.0.1")
    r = host.import_(bundle)
    assert r.code == 0, str(r)
    assert (f"to {host.registry}/victim-{host.uniq}/web tag 1.0 (over {victim_digest[:19]}…, pushed by app "
            f"{host.victim})") in r.stdout, str(r)
    new_id = image_of(host.client, host.victim_ref)
    assert new_id != victim_id and image_of(host.client, host.pushed_tag()) == new_id
    new_digest = served(host.registry, f"victim-{host.uniq}/web", "1.0")
    assert new_digest not in (None, victim_digest)
    record = json.loads((host.state / "registry-tags.json").read_text())
    assert record["tags"][host.pushed_tag()] == {"app": host.victim, "image_id": new_id, "digest": new_digest}
