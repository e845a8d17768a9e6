"""Real helper daemons on loopback for the scenario tests: the registry, Prometheus, node_exporter.

Each is Debian's own binary started on a free 127.0.0.1 port with its state in a test directory,
waited for until its ready URL answers, and stopped at the end. Nothing here imitates a daemon.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests



def free_port() -> int:
    """A high port free on 127.0.0.1 (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackDaemon:
    """A started daemon: its address ('127.0.0.1:PORT'), its process and its log."""

    address: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_daemon(exe_name: str, argv: list[str], port: int, ready_path: str, workdir: Path,
                 timeout: float = 30) -> LoopbackDaemon:
    """Start `exe_name argv...` (listening on 127.0.0.1:port) and wait until GET ready_path answers 200;
    a missing binary or a daemon that does not come up fails the test with its log's tail."""
    exe = shutil.which(exe_name)
    if not exe:
        pytest.fail(f"{exe_name} is missing: run scripts/ensure-docker.sh", pytrace=False)
    log = workdir / f"{Path(exe_name).name}.log"
    proc = subprocess.Popen([exe, *argv], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"http://{address}{ready_path}", timeout=1).status_code == 200:
                return LoopbackDaemon(address, proc, log)
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{exe_name} did not start: {log.read_text()[-800:]}", pytrace=False)
        time.sleep(0.1)


def start_registry(root: Path, extra_config: str = "") -> LoopbackDaemon:
    """Debian's docker-registry (the reference registry 2.8) storing under root; `extra_config` is
    YAML appended to its config (e.g. an `auth:` section)."""
    port = free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: warn\n{extra_config}")
    # /v2/ answers 401 when auth is on: any answer from the registry's own root means it is up
    return start_daemon("docker-registry", ["serve", str(config)], port, "/", root)


class Prometheus(LoopbackDaemon):
    """A real Prometheus (Debian's 2.42) scraping every second whatever `scrape()` adds.

    Targets are file-based service discovery files, which Prometheus watches: a test adds its
    own target (an app container's address, a node_exporter) while the server keeps running."""

    sd_dir: Path

    def scrape(self, job: str, address: str, labels: dict | None = None) -> None:
        """Start scraping http://address/metrics as job `job` (written to a temp name, then renamed)."""
        tmp = self.sd_dir / f".{job}.tmp"
        tmp.write_text(json.dumps([{"targets": [address], "labels": labels or {}}]))
        tmp.rename(self.sd_dir / f"{job}.json")

    def query(self, expr: str) -> dict:
        """The HTTP API's answer to an instant query (the whole JSON document)."""
        return requests.get(f"http://{self.address}/api/v1/query", params={"query": expr}, timeout=5).json()

    def values(self, expr: str) -> list[tuple[dict, float]]:
        """(labels, value) of every series an instant query returns."""
        doc = self.query(expr)
        assert doc["status"] == "success", doc
        return [(r["metric"], float(r["value"][1])) for r in doc["data"]["result"]]

    def wait_for(self, expr: str, accept=bool, timeout: float = 30) -> list[tuple[dict, float]]:
        """Poll `expr` until accept(values) holds (default: any series); fail with the last answer."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.values(expr)
            if accept(found):
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus: {expr} never matched; last answer {found}", pytrace=False)
            time.sleep(0.5)


def start_prometheus(root: Path) -> Prometheus:
    port = free_port()
    sd_dir = root / "targets"
    sd_dir.mkdir()
    config = root / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: bundle-tests\n    scrape_timeout: 900ms\n"
        f"    file_sd_configs:\n      - files: ['{sd_dir}/*.json']\n        refresh_interval: 1s\n"
        "    relabel_configs:\n      - source_labels: [__meta_filepath]\n"
        "        regex: '.*/([^/]+)\\.json'\n        target_label: job\n")
    daemon = start_daemon("prometheus", [
        f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], port, "/-/ready", root, timeout=60)
    prom = Prometheus(daemon.address, daemon.proc, daemon.log)
    prom.sd_dir = sd_dir
    return prom


def start_node_exporter(root: Path, textfile_dir: Path) -> LoopbackDaemon:
    """node_exporter with only its textfile collector, reading *.prom files from textfile_dir."""
    port = free_port()
    return start_daemon("prometheus-node-exporter", [
        "--collector.disable-defaults", "--collector.textfile",
        f"--collector.textfile.directory={textfile_dir}",
        f"--web.listen-address=127.0.0.1:{port}"], port, "/metrics", root)
