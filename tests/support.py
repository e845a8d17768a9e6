"""Test support shared by the suites: the installed `bundle` command run as a user would, and the
demo app's images built from busybox. A plain module (tests import it by name); fixtures live in
conftest.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


APP_CONTEXT = REPO / "examples" / "demo" / "app"


BUNDLE = Path(os.environ.get("BUNDLE_BIN") or Path(sys.executable).parent / "bundle")


def _build_context(extra_files: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in APP_CONTEXT.iterdir():
            tar.add(p, arcname=p.name)
        tar.add("/bin/busybox", arcname="bin/busybox")
        for name, text in (extra_files or {}).items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_app_image(client, tag: str, version: str, broken: bool = False, dockerfile_extra: str = "") -> str:
    """Build the demo app (examples/demo/app) as `tag`; returns the image ID.

    `dockerfile_extra` lines are appended to the Dockerfile (e.g. a HEALTHCHECK or VOLUME)."""
    extra = {}
    if dockerfile_extra:
        extra["Dockerfile"] = (APP_CONTEXT / "Dockerfile").read_text() + dockerfile_extra + "\n"
    ctx = _build_context(extra)
    image, _ = client.images.build(
        fileobj=io.BytesIO(ctx), custom_context=True, tag=tag, rm=True, forcerm=True,
        buildargs={"APP_VERSION": version, "APP_BROKEN": "1" if broken else "0"},
    )
    return image.id


def child_image(client, parent: str, tag: str, run: str = "echo two > /two.txt") -> str:
    """An image FROM `parent` with one more layer (a release that changed one layer); returns its ID."""
    dockerfile = f"FROM {parent}\nRUN {run}\n".encode()
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    image, _ = client.images.build(fileobj=io.BytesIO(ctx.getvalue()), custom_context=True, tag=tag, rm=True)
    return image.id


@dataclass
class CliResult:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    maxrss_mib: float
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def returncode(self) -> int:  # as subprocess.CompletedProcess names it
        return self.code

    def __str__(self) -> str:
        return (f"`bundle {' '.join(self.args)}` exited {self.code}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


def run_bundle(*args, timeout: float = 600, env: dict | None = None) -> CliResult:
    """Run the installed `bundle` command; returns exit code, output, and the child's own peak RSS
    (os.wait4 gives the rusage of exactly this child)."""
    args = [str(a) for a in args]
    environ = {k: v for k, v in os.environ.items() if k not in ("BUNDLE_KEYS", "BUNDLE_STATE_DIR")}
    environ.update(env or {})
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen([str(BUNDLE), *args], stdin=devnull, stdout=out, stderr=err, env=environ)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return CliResult(args, proc.returncode, out.read().decode(errors="replace"),
                         err.read().decode(errors="replace"), usage.ru_maxrss / 1024, time.monotonic() - started)


def one_line(stderr: str) -> str:
    """The single line a user-caused error must print (no traceback)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]
