"""The Prometheus textfile metrics against real daemons: the file `--metrics-file` writes into
node_exporter's textfile directory is scraped by a real Prometheus, and PromQL answers what an
operator asks (installed sequence, last result, rollbacks after a failed update, refusals by
check). Also what a careless operator or an attacker does with the metrics path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import one_line, run_bundle
from tests.test_health import _build, _spec


@pytest.fixture
def prom_file(node_exporter, uniq):
    """This test's file in node_exporter's textfile directory, removed after the test (two files
    with the same series would fail the whole scrape)."""
    path = Path(node_exporter.textfile_dir) / f"bundle-{uniq}.prom"
    yield path
    path.unlink(missing_ok=True)


def _families(path: Path) -> dict:
    return {f.name: f for f in text_string_to_metric_families(path.read_text())}


@pytest.fixture
def refused_import(tmp_path, pgp_keys, trust_store_of):
    """`bundle import` of a file that is no bundle (refused: exit 3) into a fresh state dir."""
    keys = trust_store_of([pgp_keys.builder])
    bundle = tmp_path / "garbage.bundle.zst"
    bundle.write_bytes(b"not a bundle at all")
    return lambda *args: run_bundle("import", bundle, "--keys", keys, "--state-dir", tmp_path / "state", "--yes", *args)


def test_promql_answers_sequence_result_rollbacks_and_refusals(docker_client, swap_env, demo_images, pgp_keys,
                                                               trust_store_of, tmp_path, prometheus, prom_file):
    name, port, key = swap_env["name"], swap_env["port"], pgp_keys.builder
    keys, state = trust_store_of([key]), swap_env["state"].root

    def imp(image, sequence, signer=key):
        bundle = _build(tmp_path, _spec(tmp_path, name, demo_images[image], sequence, port), signer)
        return run_bundle("import", bundle, "--keys", keys, "--state-dir", state, "--yes", "--metrics-file", prom_file)

    r = imp("v1", 1)
    assert r.code == 0, str(r)
    fams = _families(prom_file)
    (seq,) = fams["bundle_installed_sequence"].samples
    assert seq.labels == {"app": name, "version": "1.0.0"} and seq.value == 1
    assert stat_mode(prom_file) == 0o644
    found = prometheus.wait_for(f'bundle_installed_sequence{{job="node",app="{name}"}}')
    assert [(labels["version"], value) for labels, value in found] == [("1.0.0", 1)]
    prometheus.wait_for(f'bundle_last_run_result{{app="{name}",result="done"}} == 1')

    r = imp("v3", 3)  # the broken release: rolled back
    assert r.code == 4, str(r)
    found = prometheus.wait_for(f'bundle_rollbacks_total{{app="{name}"}}', lambda v: v and v[0][1] == 1)
    assert found[0][1] == 1
    prometheus.wait_for(f'bundle_last_run_result{{app="{name}",result="rolled_back"}} == 1')
    assert prometheus.values(f'bundle_last_run_exit_code{{app="{name}"}}')[0][1] in (0, 4)  # scraped or not yet
    prometheus.wait_for(f'bundle_last_run_exit_code{{app="{name}"}} == 4')
    phases = {s.labels["phase"] for s in _families(prom_file)["bundle_last_run_phase_seconds"].samples
              if s.labels["app"] == name}
    assert {"verify", "load", "backup", "health", "restore"} <= phases
    assert prometheus.values(f'bundle_installed_sequence{{app="{name}"}}')[0][0]["version"] == "1.0.0"

    r = imp("v4", 4, signer=pgp_keys.outsider)
    assert r.code == 3 and one_line(r.stderr).startswith("refused: signature: ")
    prometheus.wait_for('bundle_refusals_total{check="signature"} == 1')
    prometheus.wait_for('bundle_imports_total{result="refused"} == 1')
    # the untrusted bundle names no app: the app's last run is still the failed update
    assert prometheus.values(f'bundle_last_run_result{{app="{name}",result="rolled_back"}}')[0][1] == 1
    assert not prometheus.values('bundle_last_run_result{app=""}')
    # the temp file is never left in the collector's directory
    assert not [p for p in prom_file.parent.iterdir() if p.name.startswith(f".{prom_file.name}")]


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


@pytest.mark.parametrize("where", ["missing", "unwritable"])
def test_a_metrics_path_that_cannot_be_written_is_a_warning_and_the_exit_code_is_the_commands(
        tmp_path, uniq, where, refused_import):
    path = tmp_path / "nosuch" / "bundle.prom" if where == "missing" else Path(f"/sys/bundle-{uniq}.prom")
    r = refused_import("--metrics-file", path)
    assert r.code == 3, str(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"warning: metrics not written to {path}: ")
    assert lines[1].startswith("refused: ")
    assert not path.exists() and not path.parent.exists() if where == "missing" else not path.exists()
    # the refusal itself is still logged: the next run with a writable path counts both
    r = refused_import("--metrics-file", tmp_path / "m.prom")
    assert r.code == 3 and one_line(r.stderr).startswith("refused: ")
    assert [s.value for s in _families(tmp_path / "m.prom")["bundle_imports"].samples
            if s.labels == {"result": "refused"}] == [2]


def test_a_command_that_changed_nothing_leaves_the_metrics_file_alone(tmp_path, refused_import):
    assert refused_import().code == 3
    prom = tmp_path / "state" / "metrics" / "bundle.prom"
    prom.write_text("# as the operator left it\n")
    r = run_bundle("recover", "--state-dir", tmp_path / "state", "--yes")
    assert r.code == 0 and "no interrupted swap" in r.stdout
    r = run_bundle("rollback", "nosuch", "--state-dir", tmp_path / "state", "--yes")
    assert r.code != 0
    assert prom.read_text() == "# as the operator left it\n"


def test_a_symlink_at_the_metrics_path_is_replaced_not_followed(tmp_path, refused_import):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "bundle.prom"
    link.symlink_to(victim)
    r = refused_import("--metrics-file", link)
    assert r.code == 3, str(r)
    assert victim.read_text() == "precious" and not link.is_symlink()
    assert "bundle_refusals_total" in link.read_text() and stat_mode(link) == 0o644


def test_the_default_metrics_file_is_in_the_state_dir_after_a_refusal(tmp_path, refused_import):
    r = refused_import()
    assert r.code == 3 and one_line(r.stderr).startswith("refused: ")
    fams = _families(tmp_path / "state" / "metrics" / "bundle.prom")
    assert [s.value for s in fams["bundle_imports"].samples if s.labels == {"result": "refused"}] == [1]
    assert sorted(p.name for p in (tmp_path / "state" / "metrics").iterdir()) == ["bundle.prom"]
