"""Test support shared by the suites: the installed `bundle` command run as a user would, and the
demo app's images built from busybox. A plain module (tests import it by name); fixtures live in
conftest.py."""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import docker

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
    return _build(client, _build_context(extra), tag,
                  buildargs={"APP_VERSION": version, "APP_BROKEN": "1" if broken else "0"})


def _build(client, ctx: bytes, tag: str, **kw) -> str:
    """`docker build` of a context tar as `tag`; returns the image ID."""
    for attempt in range(3):
        try:
            image, _ = client.images.build(fileobj=io.BytesIO(ctx), custom_context=True, tag=tag, rm=True,
                                           forcerm=True, **kw)
            return image.id
        except docker.errors.BuildError as e:
            # the builder's cache is the engine's untagged intermediate images, shared by every build
            # of the demo app: a test removing its own image at that moment prunes them (noprune=False)
            # under a build that had just chosen one ("unable to find image sha256:..."): build again
            if "unable to find image" not in str(e) or attempt == 2:
                raise
    raise AssertionError("unreachable")


HELPER_IMAGE = "bundle-tests/helper:1"


def build_helper_image(client) -> str:
    """The engine's labelled helper image (importer.backup.data HELPER_IMAGE_LABEL): busybox and
    its applets, as an admin would keep one. Without it, a swap whose app cannot run the helper
    tries the engine's other images, smallest first: on the tests' shared engine those are other
    tests' fresh images, and each try holds one against its test's removal for a moment."""
    from importer.backup.data import HELPER_IMAGE_LABEL
    dockerfile = (f'FROM scratch\nCOPY bin/ /bin/\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                  f'LABEL {HELPER_IMAGE_LABEL}="tests"\n')
    return _build(client, _build_context({"Dockerfile": dockerfile}), HELPER_IMAGE)


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
    maxrss_kib: int | None  # measured only with run_bundle(measure_rss=True)
    seconds: float

    @property
    def maxrss_mib(self) -> float:
        assert self.maxrss_kib is not None, "peak RSS is measured only by run_bundle(..., measure_rss=True)"
        return self.maxrss_kib / 1024

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    @property
    def returncode(self) -> int:  # as subprocess.CompletedProcess names it
        return self.code

    def __str__(self) -> str:
        return (f"`bundle {' '.join(self.args)}` exited {self.code}\n--- stdout\n{self.stdout}"
                f"--- stderr\n{self.stderr}")


# Runs the command in a grandchild and reports its exit code and peak RSS on a pipe. Linux counts the
# parent's memory at fork+exec in a child's ru_maxrss, so a test process that grew (an in-process
# build, a big fixture) would make every child it starts look as big; this small launcher forks it
# from its own few MiB, so the figure is the command's own.
_LAUNCHER = """
import os, sys
report = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(report)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
os.write(report, b"%d %d" % (os.waitstatus_to_exitcode(status), usage.ru_maxrss))
"""


class _ForkServer:
    """The worker's tests/zygote.py: `bundle` commands forked from one process that imported the
    product once (see there). One command at a time; a second one at the same moment (a test's own
    threads), or a server that is gone, runs the command the plain way."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen | None = None

    def _start(self) -> socket.socket:
        if self.sock is None:
            ours, theirs = socket.socketpair()
            log = open(Path(tempfile.gettempdir()) / f"bundle-zygote-{os.getpid()}.log", "w")
            self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "zygote.py"), str(theirs.fileno()),
                                          str(BUNDLE)], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
            theirs.close()
            log.close()
            self.sock = ours
        return self.sock

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, args: list[str], environ: dict, fds: tuple[int, int, int], timeout: float) -> tuple[int, int] | None:
        """(exit code, peak RSS KiB) of the command, or None when it could not be forked here."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            sock = self._start()
            request = json.dumps({"args": args, "env": environ, "cwd": os.getcwd(), "umask": _umask()}).encode()
            try:
                sock.settimeout(60)  # a server that neither forks nor fails within a minute is wedged
                sock.sendall(struct.pack("!I", len(request)))
                socket.send_fds(sock, [request], list(fds))
                reader = sock.makefile("r")
                first = reader.readline()
            except OSError:
                self.stop()
                return None
            if not first.startswith("pid "):  # the server died before forking (its log says why)
                self.stop()
                return None
            pid = int(first.split()[1])
            timer = threading.Timer(timeout, lambda: _kill_group(pid))
            timer.start()
            try:
                sock.settimeout(timeout + 60)  # killed at `timeout`; a kill that does not end it fails the test
                last = reader.readline().split()
            except OSError as e:
                self.stop()
                raise AssertionError(f"`bundle {' '.join(args)}` still not ended 60 s after its kill at {timeout} s") from e
            finally:
                timer.cancel()
            assert len(last) == 3 and last[0] == "exit", f"the fork server answered {last!r}"
            return int(last[1]), int(last[2])
        finally:
            self.lock.release()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_FORK_SERVER = _ForkServer()
# the fork server runs this checkout's product: a BUNDLE_BIN of another installation runs as itself
FORKABLE = BUNDLE == Path(sys.executable).parent / "bundle"
atexit.register(_FORK_SERVER.stop)


def run_bundle(*args, timeout: float = 600, env: dict | None = None, measure_rss: bool = False) -> CliResult:
    """Run the `bundle` command as its own process; returns exit code, output, and (measure_rss) the
    command's own peak RSS. By default the process is forked from the worker's fork server (the
    product imported once: tests/zygote.py); measure_rss or BUNDLE_TESTS_FORK=0 start the installed
    console script instead, through a launcher whose wait4 gives the command's own peak RSS (see
    _LAUNCHER), as a forked child's would count the server's memory too."""
    args = [str(a) for a in args]
    environ = {k: v for k, v in os.environ.items() if k not in ("BUNDLE_KEYS", "BUNDLE_STATE_DIR")}
    # no timed progress lines in a log unless a test asks for them (env): a step that took over 10 s
    # on a loaded machine would add one to the stderr a test reads as the one-line error
    environ.setdefault("BUNDLE_PROGRESS_INTERVAL", "3600")
    environ.update(env or {})
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, open(os.devnull, "rb") as devnull:
        forked = None
        if not measure_rss and FORKABLE and os.environ.get("BUNDLE_TESTS_FORK", "1") != "0":
            forked = _FORK_SERVER.run(args, environ, (devnull.fileno(), out.fileno(), err.fileno()), timeout)
        if forked is not None:
            code, maxrss_kib = forked[0], None
        else:
            code, maxrss_kib = _launch(args, environ, (devnull, out, err), timeout)
        out.seek(0)
        err.seek(0)
        return CliResult(args, code, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                         maxrss_kib, time.monotonic() - started)


def _launch(args: list[str], environ: dict, files, timeout: float) -> tuple[int, int]:
    devnull, out, err = files
    report_r, report_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(report_w), str(BUNDLE), *args], stdin=devnull,
                            stdout=out, stderr=err, env=environ, pass_fds=(report_w,), start_new_session=True)
    os.close(report_w)
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        with os.fdopen(report_r, "rb") as report:
            reported = report.read().split()
        proc.wait()
    finally:
        timer.cancel()
    assert len(reported) == 2, f"the launcher reported nothing (exit {proc.returncode}): {err.read()!r}"
    return int(reported[0]), int(reported[1])


def set_up(script: str, timeout: float = 300) -> tuple[int, str]:
    """Run scripts/SCRIPT (an ensure-*.sh that starts a service): (exit code, its stdout, or its
    stderr when it failed). Its output goes to files, not pipes: a service it leaves running keeps
    no pipe of ours open, and a script still running after `timeout` is a failure, not a hang."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            code = subprocess.run(["bash", str(REPO / "scripts" / script)], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=err, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = -1
            err.write(f"\n{script} still running after {timeout:g} s".encode())
        out.seek(0)
        err.seek(0)
        text = (out if code == 0 else err).read().decode(errors="replace").strip()
        return code, text or out.read().decode(errors="replace").strip()


# a progress note (bundlecore.progress: an engine retry, a long step) starts with its UTC time stamp
_NOTE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def one_line(stderr: str) -> str:
    """The single line a user-caused error must print (no traceback). Progress notes beside it (an
    engine busy for a moment and retried) are not part of the error: a loaded machine decides them."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not _NOTE.match(ln)]
    assert len(lines) == 1 and "Traceback" not in stderr, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]
