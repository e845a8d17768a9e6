"""A fork server for the suite's `bundle` commands: a Python process that imports the whole product
once, then forks one child per command. The child is still its own process (own session, pid, exit
status, signals, kill -9, peak RSS from wait4), started with the caller's argv, environment, working
directory, umask and stdin/stdout/stderr, and runs `bundle` exactly as the console script does; only
the ~0.5 CPU-second import of the product and its libraries is paid once per test worker instead of
once per command (thousands of commands on a 2-core machine).

Protocol on the socket (fd in argv[1]), one command at a time: the caller sends a length-prefixed
JSON request {args, env, cwd, umask} with three fds (stdin, stdout, stderr); the server answers one
line "pid N", then, when the child has ended, one line "exit CODE MAXRSS_KIB".
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import pkgutil
import signal
import socket
import struct
import sys
import traceback

PACKAGES = ("bundlecli", "bundlecore", "bundler", "importer")


def preload() -> None:
    """Import every module of the product (commands import theirs lazily, inside the verb)."""
    for name in PACKAGES:
        pkg = importlib.import_module(name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{name}."):
            importlib.import_module(info.name)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def run_child(request: dict, fds: list[int], bundle: str) -> None:
    """In the forked child: become the command, then exit as the interpreter would."""
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = [bundle, *request["args"]]
    code = 0
    try:
        from bundlecli.main import main
        main()
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def serve(sock: socket.socket, bundle: str) -> None:
    while True:
        try:
            (size,) = struct.unpack("!I", recv_exact(sock, 4))
            msg, fds, _, _ = socket.recv_fds(sock, size, 3)
            while len(msg) < size:
                msg += recv_exact(sock, size - len(msg))
        except (EOFError, ConnectionError):
            return
        request = json.loads(msg)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sock.close()
            run_child(request, fds, bundle)
        for fd in fds:
            os.close(fd)
        sock.sendall(f"pid {pid}\n".encode())
        _, status, usage = os.wait4(pid, 0)
        sock.sendall(f"exit {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}\n".encode())


if __name__ == "__main__":
    preload()
    serve(socket.socket(fileno=int(sys.argv[1])), sys.argv[2])
