#!/usr/bin/env python3
"""`make bench`: how `bundle build`, `bundle verify` and `bundle import` compare with the plain
docker/zstd commands they replace, and what delta and split bundles cost, on this machine, in one
run (issue 11). A benchmark, not a test: it exits 0 when every step ran (goals met or not) and 1
when a step could not run. The project's modules are compiled to bytecode first, as a wheel
install does.

    .venv/bin/python scripts/bench.py [--quick] [--size-mb 1000] [--patch-layer-mb 300] [--repeat 3]
                                      [--only build,split,import,delta,patch] [--json PATH] [--clean]
    make bench BENCH_ARGS="--quick"

Every timed pair runs interleaved (baseline, subject, baseline, ...) so the load of this shared
machine hits both alike; figures are medians and each ratio is of medians from the same run.
CPU-seconds are the command's (GNU time: user + sys of its whole tree) plus the Docker daemon's
(its /proc stat) while it ran.

- build: `bundle build --local` vs `docker save | zstd -T0 -3` (<= 1.10x wall, file no larger,
  peak RSS < 100 MB) and vs the careful manual pipeline `save | zstd -o f && sha256sum f > f.sha256
  && gpg --detach-sign f` (<= 0.80x); when the first ratio is missed, each component (save,
  compress, hash, write) runs alone once and its CPU-seconds are printed.
- split: `bundle verify OUT.part001` (3 parts) vs `bundle verify OUT` (<= 1.05x).
- import: `bundle import --yes` (image absent, first install, `cmd` health check) until it exits 0
  vs `docker load -i T && docker run -d` (<= 1.15x, counted without the health gate's documented
  stable-probe wait, which `docker run -d` does not do) and vs the careful manual pipeline
  `sha256sum -c && gpg --verify && zstd -dc f | docker load && docker run -d && docker exec`
  (<= 0.90x, end to end); peak RSS < 100 MB, peak scratch under the state dir <= 64 MB; the
  import's phases (from its own lines) and CPU-seconds of the process and the engine. For
  reference (no goal): `zstd -dc f | docker load && docker run -d`, what decompressing the same
  file costs before anything is checked.
- delta: a release changing one 1 MiB layer of the big image, full vs `--since` the last (<= 5%).
- patch: a release changing 1% of the files of a --patch-layer-mb layer, full vs `--since` the last
  (<= 3%, met once binary patches are in `--since`), build and import times and peak RSS.

The big image (~60% random bytes, ~40% text-like) and the patch images are built locally from
scratch + /bin/busybox and reused while their labels match; the two app releases on the big image
are rebuilt each run and removed. Keys (a throwaway GNUPGHOME), trust store, specs, bundles and
state dirs live in a temp dir. Progress goes to stderr; stdout gets the table and, last, one line
of JSON with every figure; --json PATH also writes the table and figures as a JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bundlecore.inventory import chain_ids  # noqa: E402  (Docker's layer identity, one rule)
from importer.health import PROBE_SPACING, STABLE_PROBES  # noqa: E402  (the documented wait)
PACKAGES = ("bundlecli", "bundlecore", "bundler", "importer")   # what the bundle command imports
MiB = 1 << 20
PIECE = 64 * MiB
GEN_VERSION = "1"           # bump when the generated image content changes
APPS = ("bench-app", "bench-bin")   # the specs' target containers (bench-app.base: the baseline's)
APP_TAGS = ("bench/app:1", "bench/app:2")        # two releases on the big image (delta section)
PATCH_TAGS = ("bench/patch:1", "bench/patch:2")  # two releases of one big layer (binary delta)
SECTIONS = ("build", "split", "import", "delta", "patch")
# data layers: (kind, fraction of --size-mb); 60% random, 40% text-like, interleaved
LAYERS = [("random", 0.30), ("text", 0.20), ("random", 0.30), ("text", 0.20)]

GOAL_BUILD_RATIO = 1.10
GOAL_BUILD_MANUAL_RATIO = 0.80
GOAL_BUILD_RSS_MB = 100
GOAL_VERIFY_RSS_MB = 100
GOAL_IMPORT_RSS_MB = 100
GOAL_SPLIT_RATIO = 1.05
GOAL_IMPORT_RATIO = 1.15
GOAL_IMPORT_MANUAL_RATIO = 0.90
GOAL_SCRATCH_MB = 64
GOAL_DELTA_SIZE = 0.05
GOAL_PATCH_SIZE = 0.03


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class StepFailed(Exception):
    pass


def run(cmd, *, check=True, capture=True, env=None, input=None, shell=False) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=capture, text=True, env=env, input=input, shell=shell,
                       executable="/bin/bash" if shell else None)
    if check and r.returncode != 0:
        what = cmd if isinstance(cmd, str) else " ".join(map(str, cmd))
        tail = (r.stderr or r.stdout or "").strip().splitlines()[-3:] if capture else []
        raise StepFailed(f"{what} exited {r.returncode}: {' | '.join(tail)}")
    return r


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------

def _gnu_time() -> str | None:
    path = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"
    if os.path.exists(path):
        r = subprocess.run([path, "-v", "true"], capture_output=True, text=True)
        if r.returncode == 0 and "Maximum resident set size" in r.stderr:
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("GNU time not found: apt-get install -y time")
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time",
                       shell=True, capture_output=True)
        if os.path.exists("/usr/bin/time"):
            return "/usr/bin/time"
    return None


# Fallback when GNU time is missing: a tiny parent whose RUSAGE_CHILDREN is the measured command's.
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write('User time (seconds): %.2f\\nSystem time (seconds): %.2f\\n"
    "Maximum resident set size (kbytes): %d\\n' % (u.ru_utime, u.ru_stime, u.ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def parse_time_report(text: str) -> dict:
    """GNU `time -v` (or the wrapper's) report -> {cpu_s: user+sys, maxrss_kb}; None where absent."""
    user = re.search(r"User time \(seconds\): ([0-9.]+)", text)
    system = re.search(r"System time \(seconds\): ([0-9.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"cpu_s": float(user.group(1)) + float(system.group(1)) if user and system else None,
            "maxrss_kb": int(rss.group(1)) if rss else None}


def proc_cpu_seconds(stat: str, hz: int) -> float:
    """utime + stime of /proc/PID/stat (fields 14 and 15; the name in parentheses may hold spaces)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / hz


class EngineCPU:
    """CPU-seconds the Docker daemon spent (its /proc stat), when this host can see its process."""

    def __init__(self):
        r = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True)
        pids = r.stdout.split()
        self.stat = Path(f"/proc/{pids[0]}/stat") if len(pids) == 1 else None
        self.hz = os.sysconf("SC_CLK_TCK")

    def now(self) -> float | None:
        try:
            return proc_cpu_seconds(self.stat.read_text(), self.hz) if self.stat else None
        except OSError:
            return None


class DirPoller:
    """Polls `du -sb DIR` every `interval` s in a thread; keeps the largest figure."""

    def __init__(self, path: Path | None, interval: float = 0.2):
        self.path, self.interval = path, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> int:
        if self.path is None or not self.path.exists():
            return 0
        r = subprocess.run(["du", "-sb", str(self.path)], capture_output=True, text=True)
        try:  # du may complain about files removed under it; its total still counts
            return int(r.stdout.split()[0])
        except (IndexError, ValueError):
            return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.base = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.base)


class Timer:
    """Runs one command: wall time, exit code, its CPU-seconds and peak RSS (the whole command
    tree, via GNU time or the wrapper), the engine's CPU-seconds meanwhile, timestamped stdout."""

    def __init__(self, gnu_time: str | None, tmp: Path, engine: EngineCPU):
        self.gnu_time, self.tmp, self.engine = gnu_time, tmp, engine

    def __call__(self, cmd, *, shell=False, env=None) -> dict:
        rss_file = self.tmp / "rss.txt"
        if rss_file.exists():
            rss_file.unlink()
        argv = ["bash", "-c", cmd] if shell else list(map(str, cmd))
        if self.gnu_time:
            argv = [self.gnu_time, "-v", "-o", str(rss_file)] + argv
        else:
            argv = [sys.executable, "-c", _RSS_WRAPPER, str(rss_file)] + argv
        os.sync()  # earlier steps' dirty pages are not this step's cost
        err_path = self.tmp / "stderr.txt"
        lines: list[tuple[float, str]] = []
        engine0 = self.engine.now()
        with open(err_path, "w") as err:
            start = time.monotonic()
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            for line in p.stdout:
                lines.append((time.monotonic() - start, line.rstrip("\n")))
            rc = p.wait()
            wall = time.monotonic() - start
        engine1 = self.engine.now()
        stderr = err_path.read_text(errors="replace")
        usage = parse_time_report(rss_file.read_text()) if rss_file.exists() else parse_time_report("")
        return {"wall": wall, "rc": rc, "lines": lines, "stderr": stderr, **usage,
                "engine_cpu_s": None if engine0 is None or engine1 is None else engine1 - engine0}


def failure_line(res: dict) -> str:
    text = [ln for ln in res["stderr"].splitlines() if ln.strip() and not ln.startswith(("\t", "Command "))]
    if not text:
        text = [ln for _, ln in res["lines"] if ln.strip()]
    return f"exit {res['rc']}: {text[-1] if text else '(no output)'}"


# --------------------------------------------------------------------------------------------
# the image
# --------------------------------------------------------------------------------------------

_WORDS = (
    "the of and to in is for on that with as by at from this be are was it an or not have has "
    "request response user service error warning info debug started stopped connected timeout "
    "retry cache hit miss GET POST PUT DELETE /api/v1/items /api/v1/users /health status=200 "
    "status=404 status=500 latency_ms= bytes= id= session= host= port=8080 thread-1 thread-2 "
    "worker main pool queue job done failed ok true false null { } [ ] : , ; = - _ "
    "2024-05-01T12:00:00Z 2024-05-01T12:00:01Z INFO WARN ERROR DEBUG TRACE java.lang "
    "org.example.Service com.acme.handler def class return import self value key name "
    "config data file path line column message event trace span parent child node cluster"
).split()


def _token_table() -> list[bytes]:
    """256 tokens, common words repeated (a skewed distribution, like real text), newlines among them."""
    words = [w.encode() for w in _WORDS]
    table = []
    for i in range(256):
        if i % 12 == 0:
            table.append(b"\n")
        elif i % 29 == 0:
            table.append(b"%d" % (i * 7919))
        else:
            table.append(words[int(len(words) * (i / 256) ** 2)])
    return table


def write_text(path: Path, size: int, table: list[bytes]) -> None:
    left = size
    with open(path, "wb") as f:
        while left > 0:
            chunk = b" ".join(map(table.__getitem__, os.urandom(1 << 20)))
            f.write(chunk[:left])
            left -= min(left, len(chunk))


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def image_labels(size_mb: int) -> dict[str, str]:
    return {"bench.bundle.size-mb": str(size_mb), "bench.bundle.gen": GEN_VERSION}


def inspect_image(ref: str) -> dict | None:
    r = run(["docker", "image", "inspect", ref], check=False)
    return json.loads(r.stdout)[0] if r.returncode == 0 else None


def ensure_image(tag: str, size_mb: int, work: Path) -> tuple[dict, bool, float]:
    """(image inspect, reused?, seconds to build)."""
    want = image_labels(size_mb)
    info = inspect_image(tag)
    if info:
        labels = info["Config"].get("Labels") or {}
        if all(labels.get(k) == v for k, v in want.items()):
            log(f"reusing image {tag} ({info['Id'][:19]}, {info['Size'] / 1e6:.0f} MB)")
            return info, True, 0.0
        log(f"image {tag} has other labels ({labels}); rebuilding it")
        remove_image(info["Id"])
    if not os.path.exists("/bin/busybox"):
        raise StepFailed("/bin/busybox not found (apt-get install -y busybox-static)")
    ctx = work / "ctx"
    (ctx / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", ctx / "bin" / "busybox")
    # a marker makes even the busybox layer unique to this image, so removing it removes every layer
    (ctx / "bin" / ".bench").write_text(f"bundle bench image, {size_mb} MiB, gen {GEN_VERSION}, {time.time()}\n")
    table = _token_table()
    lines = ["FROM scratch", "COPY bin/ /bin/", 'RUN ["/bin/busybox", "--install", "-s", "/bin"]']
    t0 = time.monotonic()
    total = size_mb * MiB
    for n, (kind, frac) in enumerate(LAYERS, 1):
        d = ctx / f"d{n}"
        d.mkdir()
        size = int(total * frac)
        part = 0
        while size > 0:
            piece = min(size, PIECE)
            name = d / (f"part-{part:03d}." + ("bin" if kind == "random" else "txt"))
            write_random(name, piece) if kind == "random" else write_text(name, piece, table)
            size -= piece
            part += 1
        lines.append(f"COPY d{n}/ /data/d{n}/")
    log(f"generated {size_mb} MiB of layer data in {time.monotonic() - t0:.1f}s")
    label_args = " ".join(f'"{k}"="{v}"' for k, v in want.items())
    lines += [f"LABEL {label_args}", 'CMD ["/bin/sleep", "3600"]']
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    log(f"building {tag} (DOCKER_BUILDKIT=0 docker build)")
    run(["docker", "build", "-q", "--rm", "--force-rm", "-t", tag, str(ctx)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"})
    took = time.monotonic() - t0
    shutil.rmtree(ctx)
    info = inspect_image(tag)
    log(f"built {tag} ({info['Id'][:19]}, {info['Size'] / 1e6:.0f} MB, "
        f"{len(info['RootFS']['Layers'])} layers) in {took:.1f}s")
    return info, False, took


def bench_containers() -> list[str]:
    r = run(["docker", "ps", "-a", "--format", "{{.Names}}"], check=False)
    return [n for n in r.stdout.split() if any(n == a or n.startswith(a + ".") for a in APPS)]


def remove_bench_containers() -> list[str]:
    names = bench_containers()
    if names:
        run(["docker", "rm", "-f", "-v", *names], check=False)
    return names


def remove_image(image_id: str) -> None:
    """Remove the image (all its tags) and any container made from it."""
    remove_bench_containers()
    r = run(["docker", "ps", "-a", "-q", "--filter", f"ancestor={image_id}"], check=False)
    if r.stdout.split():
        run(["docker", "rm", "-f", "-v", *r.stdout.split()], check=False)
    run(["docker", "rmi", "-f", image_id], check=False)


def layers_left(docker_root: Path | None, driver: str, diff_ids: list[str]) -> int | None:
    """How many of the image's layers the engine still has (None: cannot look)."""
    if docker_root is None:
        return None
    db = docker_root / "image" / driver / "layerdb" / "sha256"
    if not os.access(db, os.R_OK):
        return None
    return sum(1 for c in chain_ids(diff_ids) if (db / c.split(":", 1)[1]).exists())


def make_absent(image: dict, docker_root, driver) -> int | None:
    remove_image(image["Id"])
    if inspect_image(image["Id"]):
        raise StepFailed(f"image {image['Id']} is still in the engine after docker rmi -f")
    left = layers_left(docker_root, driver, image["RootFS"]["Layers"])
    if left:
        log(f"warning: {left} layer(s) of the image are still in the engine (shared with another image?)")
    return left


def docker_build(tag: str, ctx: Path, dockerfile: str) -> dict:
    (ctx / "Dockerfile").write_text(dockerfile)
    run(["docker", "build", "-q", "--rm", "--force-rm", "-t", tag, str(ctx)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return inspect_image(tag)


def app_release_images(base_tag: str, work: Path) -> list[dict]:
    """Two releases of an app on the big image that differ in one small top layer (1 MiB): what
    a layer-level delta is for. Rebuilt on every run (seconds), removed at the end."""
    ctx = work / "ctx-app"
    (ctx / "app").mkdir(parents=True)
    out = []
    for n, tag in enumerate(APP_TAGS, 1):
        write_random(ctx / "app" / "app.bin", MiB)
        out.append(docker_build(tag, ctx, f'FROM {base_tag}\nCOPY app/ /app/\nLABEL "bench.bundle.release"="{n}"\n'))
    shutil.rmtree(ctx)
    return out


def patch_release_images(layer_mb: int, work: Path) -> tuple[list[dict], bool]:
    """Two releases whose one big layer (`layer_mb` MiB in 100 KiB files, 60% random, 40% text-like)
    differs in 1% of its files; the busybox layer below is the same. Reused when labels match."""
    want = {"bench.bundle.layer-mb": str(layer_mb), "bench.bundle.gen": GEN_VERSION}
    have = [inspect_image(t) for t in PATCH_TAGS]
    if all(i and all((i["Config"].get("Labels") or {}).get(k) == v for k, v in want.items()) for i in have):
        log(f"reusing images {', '.join(PATCH_TAGS)}")
        return have, True
    for i in have:
        if i:
            remove_image(i["Id"])
    ctx = work / "ctx-patch"
    (ctx / "bin").mkdir(parents=True)
    (ctx / "files").mkdir()
    shutil.copy2("/bin/busybox", ctx / "bin" / "busybox")
    (ctx / "bin" / ".bench").write_text(f"bundle bench patch images, gen {GEN_VERSION}, {time.time()}\n")
    table = _token_table()
    count = max(100, layer_mb * MiB // (100 << 10))
    names = [ctx / "files" / f"f{i:05d}.{'bin' if i % 5 < 3 else 'txt'}" for i in range(count)]
    for f in names:
        write_random(f, 100 << 10) if f.suffix == ".bin" else write_text(f, 100 << 10, table)
    labels = " ".join(f'"{k}"="{v}"' for k, v in want.items())
    out = []
    for n, tag in enumerate(PATCH_TAGS, 1):
        if n > 1:  # the next release rewrites 1% of the files
            for f in names[::100]:
                write_random(f, 100 << 10) if f.suffix == ".bin" else write_text(f, 100 << 10, table)
        out.append(docker_build(tag, ctx, f'FROM scratch\nCOPY bin/ /bin/\nCOPY files/ /app/\n'
                                          f'LABEL {labels} "bench.bundle.release"="{n}"\n'
                                          'CMD ["/bin/busybox", "sleep", "3600"]\n'))
    shutil.rmtree(ctx)
    return out, False


# --------------------------------------------------------------------------------------------
# keys, spec
# --------------------------------------------------------------------------------------------

def make_keys(work: Path) -> tuple[Path, Path, str]:
    home, store = work / "gnupg", work / "keys"
    home.mkdir(mode=0o700)
    store.mkdir()
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    run(gpg + ["--quick-gen-key", "Bundle Bench <bench@example.test>", "ed25519", "sign", "never"])
    out = run(["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-secret-keys"]).stdout
    fpr = next(ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:"))
    pub = run(["gpg", "--homedir", str(home), "--batch", "--armor", "--export", fpr]).stdout
    (store / "bench.asc").write_text(pub)
    return home, store, fpr


def write_spec(work: Path, tag: str, *, name: str = "bench", container: str = APPS[0], release: int = 1,
               health: str = '"/bin/true"') -> Path:
    spec = work / f"{name}-{release}.toml"
    spec.write_text(
        f'name = "{name}"\nversion = "{release}.0.0"\nsequence = {release}\nimages = ["{tag}"]\n\n'
        f'[target]\nkind = "container"\nname = "{container}"\nimage = "{tag}"\n\n'
        '[target.run]\nports = []\nvolumes = []\n\n'
        f'[target.health]\ncmd = [{health}]\ntimeout = "30s"\nattempts = 1\n')
    return spec


def bundle_cli() -> str:
    for cand in (Path(sys.executable).parent / "bundle", REPO / ".venv" / "bin" / "bundle"):
        if cand.exists():
            return str(cand)
    found = shutil.which("bundle")
    if not found:
        raise StepFailed("the bundle command is not installed (.venv/bin/pip install -e .)")
    return found


def compile_bytecode() -> None:
    """Compile the project's modules to bytecode first, as `pip install` of the wheel does on the
    admin's host (scripts/install.sh): the editable checkout is otherwise compiled again at every
    start when PYTHONDONTWRITEBYTECODE is set, which times the compiler, not `bundle`."""
    run([sys.executable, "-m", "compileall", "-q", *(str(REPO / p) for p in PACKAGES)])


# --------------------------------------------------------------------------------------------
# figures and the table (pure; tests/unit/test_bench.py)
# --------------------------------------------------------------------------------------------

SIZES = {  # --quick for trying the bench; the defaults are the sizes issue 11 names
    "default": {"size_mb": 1000, "patch_layer_mb": 300, "repeat": 3},
    "quick": {"size_mb": 100, "patch_layer_mb": 30, "repeat": 1},
}


def resolve_sizes(quick: bool, size_mb: int | None, patch_layer_mb: int | None, repeat: int | None) -> dict:
    """The preset, with what was given explicitly over it."""
    given = {"size_mb": size_mb, "patch_layer_mb": patch_layer_mb, "repeat": repeat}
    sizes = {**SIZES["quick" if quick else "default"], **{k: v for k, v in given.items() if v is not None}}
    if min(sizes.values()) < 1:
        raise ValueError("sizes and --repeat must be at least 1")
    return sizes


def median(xs: list[float]) -> float:
    if not xs:
        raise ValueError("median of no runs")
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def runs(xs: list[float]) -> str:
    """' [runs 10.5 11.0 10.2]' after a figure that is a median of several runs."""
    return " [runs " + " ".join(f"{x:.1f}" for x in xs) + "]" if len(xs) > 1 else ""


def ratio_of_medians(subject: list[float], baseline: list[float]) -> float | None:
    """median(subject) / median(baseline), both measured in the same (interleaved) run."""
    if not subject or not baseline or median(baseline) <= 0:
        return None
    return median(subject) / median(baseline)


def import_phases(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds of each phase of `bundle import`, from its own lines' timestamps: start-up and the
    head gate (to 'verified signature'), staging and loading (to '... and loaded ...'), the swap
    before the new container starts (backup, create), and start + health gate (to the exit)."""
    def at(test):
        return next((t for t, ln in lines if test(ln.strip())), None)
    head = at(lambda ln: ln.startswith("verified signature"))
    loaded = at(lambda ln: ln.startswith("verified ") and " loaded " in ln)
    starting = at(lambda ln: ln.startswith("starting "))
    if None in (head, loaded, starting):
        return {}
    return {"startup_gate": head, "stage_load": loaded - head, "swap_prepare": starting - loaded,
            "start_probe": total - starting}


def cpu(x: float | None) -> str:
    return "?" if x is None else f"{x:.1f}"


def secs(x: float | None) -> str:
    return "?" if x is None else f"{x:.1f} s"


def mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def rss_mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb * 1024 / 1e6:.0f} MB"


class Report:
    """The table rows (figure, value, goal, status) and every figure for the JSON."""

    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []
        self.figures: dict = {}
        self.failures: list[str] = []

    def row(self, what: str, value: str, goal: str = "", met: bool | None = None) -> None:
        status = "" if met is None else ("met" if met else "NOT met")
        self.rows.append((what, value, goal, status))

    def section(self, title: str) -> None:
        self.rows.append((title, "", "", ""))

    def goal(self, what: str, value: float | None, limit: float, fmt: str = "{:.2f}", *, key: str) -> bool | None:
        """A figure against its upper limit; recorded under `key`. None when it could not be measured."""
        goal = f"<= {fmt.format(limit)}"
        if value is None:
            self.row(what, "?", goal)
            return None
        self.figures[key] = round(value, 4)
        self.row(what, fmt.format(value), goal, value <= limit)
        return value <= limit

    def fail(self, step: str, why: str) -> None:
        self.failures.append(f"{step}: {why}")
        self.row(step, "FAILED", "(see failures below)", None)
        log(f"FAILED {step}: {why}")

    def lines(self) -> list[str]:
        head = ("figure", "value", "goal", "status")
        w = [max(len(r[i]) for r in self.rows + [head]) for i in range(4)]

        def line(r):
            return f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]}".rstrip()
        out = [line(head), line(tuple("-" * n for n in w))]
        out += [r[0] if r[1:] == ("", "", "") else line(r) for r in self.rows]
        return out + [f"FAILED {f}" for f in self.failures]

    def document(self, title: str) -> dict:
        """What --json writes: the title, the table as printed and as rows, every figure."""
        return {"title": title, "table": self.lines(),
                "rows": [dict(zip(("figure", "value", "goal", "status"), r, strict=True)) for r in self.rows],
                "figures": self.figures, "failures": self.failures}


# --------------------------------------------------------------------------------------------
# the sections
# --------------------------------------------------------------------------------------------

class Bench:
    """What every section needs: the timer, the bundle command, keys, the work dir, the report."""

    def __init__(self, sizes: dict, rep: Report, work: Path, timer: Timer, bundle: str,
                 keys: tuple[Path, Path, str], docker_root: Path | None, driver: str):
        self.sizes, self.rep, self.fig = sizes, rep, rep.figures
        self.work, self.timer, self.bundle = work, timer, bundle
        self.home, self.store, self.fpr = keys
        self.docker_root, self.driver = docker_root, driver
        self.repeat = sizes["repeat"]
        self.manual = work / "manual.tar.zst"   # the manual pipeline's signed file (import's baseline)

    def build(self, spec: Path, out: Path, *extra) -> dict:
        r = self.timer([self.bundle, "build", spec, "-o", out, "--sign-key", self.fpr,
                        "--gnupghome", self.home, "--local", *extra])
        if r["rc"]:
            raise StepFailed(f"bundle build {out.name}: {failure_line(r)}")
        return r

    def import_(self, bundle: Path, state: Path) -> dict:
        r = self.timer([self.bundle, "import", bundle, "--keys", self.store, "--state-dir", state, "--yes"],
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if r["rc"]:
            raise StepFailed(f"bundle import {bundle.name}: {failure_line(r)}")
        return r

    def verify(self, bundle: Path) -> dict:
        r = self.timer([self.bundle, "verify", bundle, "--keys", self.store, "--state-dir", self.work / "state"])
        if r["rc"]:
            raise StepFailed(f"bundle verify {bundle.name}: {failure_line(r)}")
        return r


def manual_build_cmd(b: "Bench", tag: str, M: Path) -> str:
    """What a careful release engineer runs by hand: save, compress, sum, sign (three reads of M)."""
    return (f"set -o pipefail; docker save {tag} | zstd -q -T0 -3 -f -o {M} && sha256sum {M} > {M}.sha256 "
            f"&& gpg --homedir {b.home} --batch --yes --pinentry-mode loopback --passphrase '' "
            f"--local-user {b.fpr} --detach-sign -o {M}.asc {M}")


def section_build(b: Bench, tag: str, spec: Path, B: Path, T: Path) -> None:
    """`bundle build --local` against `docker save | zstd -T0 -3` and against the careful manual
    pipeline (the same, then sha256sum and gpg --detach-sign), interleaved."""
    rep, fig = b.rep, b.fig
    rep.section("BUILD (bundle build --local vs docker save | zstd -T0 -3, and vs the manual pipeline "
                "save | zstd && sha256sum && gpg --detach-sign)")
    F, M = b.work / "pipeline.tar.zst", b.manual
    base, manual, built = [], [], []
    for i in range(b.repeat):
        log(f"baseline: docker save | zstd -T0 -3 (run {i + 1}/{b.repeat})")
        r = b.timer(f"set -o pipefail; docker save {tag} | zstd -q -T0 -3 -f -o {F}", shell=True)
        if r["rc"]:
            raise StepFailed(f"docker save | zstd: {failure_line(r)}")
        base.append(r)
        log(f"baseline: save | zstd && sha256sum && gpg --detach-sign (run {i + 1}/{b.repeat})")
        r = b.timer(manual_build_cmd(b, tag, M), shell=True)
        if r["rc"]:
            raise StepFailed(f"manual build pipeline: {failure_line(r)}")
        manual.append(r)
        log(f"bundle build --local (run {i + 1}/{b.repeat})")
        built.append(b.build(spec, B))
    bw, mw, sw = [r["wall"] for r in base], [r["wall"] for r in manual], [r["wall"] for r in built]
    fig.update(pipeline_s=round(median(bw), 2), pipeline_runs_s=[round(x, 2) for x in bw],
               manual_build_s=round(median(mw), 2), manual_build_runs_s=[round(x, 2) for x in mw],
               build_s=round(median(sw), 2), build_runs_s=[round(x, 2) for x in sw],
               pipeline_bytes=F.stat().st_size, bundle_bytes=B.stat().st_size,
               build_rss_kb=max(r["maxrss_kb"] or 0 for r in built) or None)
    rep.row("docker save | zstd -T0 -3 -o f" + runs(bw), secs(median(bw)))
    rep.row("save | zstd -o f && sha256sum f && gpg --detach-sign f" + runs(mw), secs(median(mw)))
    rep.row("bundle build --local" + runs(sw), secs(median(sw)))
    met = rep.goal("  ratio of medians build / save | zstd", ratio_of_medians(sw, bw), GOAL_BUILD_RATIO,
                   key="build_ratio")
    rep.goal("  ratio of medians build / manual pipeline", ratio_of_medians(sw, mw), GOAL_BUILD_MANUAL_RATIO,
             key="build_manual_ratio")
    rep.row("  file size bundle / pipeline", f"{mb(fig['bundle_bytes'])} / {mb(fig['pipeline_bytes'])}",
            "bundle no larger", fig["bundle_bytes"] <= fig["pipeline_bytes"])
    rss = fig["build_rss_kb"]
    rep.row("  bundle build peak RSS", rss_mb(rss), f"< {GOAL_BUILD_RSS_MB} MB",
            None if rss is None else rss * 1024 / 1e6 < GOAL_BUILD_RSS_MB)
    total = {k: [((r["cpu_s"] or 0) + (r["engine_cpu_s"] or 0)) for r in runs_]
             for k, runs_ in (("pipeline", base), ("manual", manual), ("build", built))}
    fig.update(pipeline_cpu_s=round(median(total["pipeline"]), 2), manual_build_cpu_s=round(median(total["manual"]), 2),
               build_cpu_s=round(median(total["build"]), 2))
    rep.row("  CPU-s (command + engine) save | zstd / manual / build",
            f"{cpu(median(total['pipeline']))} / {cpu(median(total['manual']))} / {cpu(median(total['build']))}")
    if met is False:
        build_components(b, tag, B, T, F)
    F.unlink(missing_ok=True)


def build_components(b: Bench, tag: str, B: Path, T: Path, F: Path) -> None:
    """Where the build's time goes, each part run alone once: CPU-seconds (and wall)."""
    log("build components: save, compress, hash, write (each alone)")
    W = b.work / "write-copy"
    parts = [
        ("save", "docker save (engine + CLI) > /dev/null", f"docker save {tag} > /dev/null"),
        ("compress", "zstd -T0 -3 of the save tar", f"zstd -q -T0 -3 -c {T} > /dev/null"),
        ("hash", "sha256 of every saved file (the tar)", f"{_SHA256} {T}"),
        ("hash_out", "sha256 of the bundle file (OUT.sha256)", f"{_SHA256} {B}"),
        ("write", "the bundle file written once + fsync (cp)", f"cp {B} {W} && sync {W}"),
    ]
    for key, what, cmd in parts:
        r = b.timer(cmd, shell=True)
        c = (r["cpu_s"] or 0) + (r["engine_cpu_s"] or 0)
        b.fig[f"component_{key}_cpu_s"], b.fig[f"component_{key}_s"] = round(c, 2), round(r["wall"], 2)
        b.rep.row(f"    CPU-s {key}: {what}", cpu(c), f"(wall {secs(r['wall'])})")
    W.unlink(missing_ok=True)


# sha256 of a file with Python's hashlib (OpenSSL), as bundle hashes: coreutils' sha256sum is
# about 3x slower on this kind of machine and would overstate the cost.
_SHA256 = (f"{sys.executable} -c 'import hashlib, sys; h = hashlib.sha256(); f = open(sys.argv[1], \"rb\")\n"
           f"while c := f.read(1 << 20): h.update(c)'")


def section_split_verify(b: Bench, spec: Path, B: Path) -> None:
    """`bundle verify` of a split bundle against the same bundle in one file, interleaved."""
    rep, fig = b.rep, b.fig
    rep.section("SPLIT (bundle verify OUT.part001 vs bundle verify OUT)")
    part = max(1, -(-B.stat().st_size // 3 // MiB))  # three parts
    S = b.work / "split.bundle.zst"
    log(f"bundle build --split {part}M")
    b.build(spec, S, "--split", f"{part}M")
    one, split = [], []
    for i in range(b.repeat):
        log(f"bundle verify: one file, then parts (run {i + 1}/{b.repeat})")
        one.append(b.verify(B))
        split.append(b.verify(S.with_name(S.name + ".part001")))
    ow, sw = [r["wall"] for r in one], [r["wall"] for r in split]
    fig.update(verify_s=round(median(ow), 2), verify_runs_s=[round(x, 2) for x in ow],
               verify_split_s=round(median(sw), 2), verify_split_runs_s=[round(x, 2) for x in sw],
               verify_rss_kb=max(r["maxrss_kb"] or 0 for r in one + split) or None)
    rep.row(f"bundle verify OUT (one file){runs(ow)}", secs(median(ow)))
    rep.row(f"bundle verify OUT.part001 (3 parts of {part} MiB){runs(sw)}", secs(median(sw)))
    rep.goal("  ratio of medians split / one file", ratio_of_medians(sw, ow), GOAL_SPLIT_RATIO, key="split_verify_ratio")
    rss = fig["verify_rss_kb"]
    rep.row("  bundle verify peak RSS", rss_mb(rss), f"< {GOAL_VERIFY_RSS_MB} MB",
            None if rss is None else rss * 1024 / 1e6 < GOAL_VERIFY_RSS_MB)
    for p in S.parent.glob(S.name + "*"):
        p.unlink()


def manual_import_cmd(b: "Bench", tag: str, M: Path, name: str) -> str:
    """What a careful admin runs by hand: check the sums and the signature, then load, run, check once."""
    return (f"set -o pipefail; cd {M.parent} && sha256sum --quiet -c {M.name}.sha256 "
            f"&& gpg --homedir {b.home} --batch --verify {M}.asc {M} 2>/dev/null "
            f"&& zstd -q -dc {M} | docker load -q && docker run -d --name {name} {tag} && docker exec {name} /bin/true")


def section_import(b: Bench, image: dict, tag: str, B: Path, T: Path) -> None:
    """`bundle import` (image absent, first install, cmd health check) until it exits 0, against
    `docker load -i T && docker run -d` and against the careful manual pipeline, interleaved; the
    image removed before each."""
    rep, fig = b.rep, b.fig
    rep.section("IMPORT (bundle import, image absent, first install vs docker load -i T && docker run -d, "
                "and vs the manual pipeline sha256sum -c && gpg --verify && zstd -dc | docker load && run && exec)")
    if not b.manual.exists():
        log("the manual pipeline's signed file (once, untimed)")
        run(manual_build_cmd(b, tag, b.manual), shell=True)
    bases, manuals, unchecked, imports, staging_peak = [], [], [], [], 0
    for i in range(b.repeat):
        log(f"baseline: docker load -i T && docker run -d (image removed first; run {i + 1}/{b.repeat})")
        fig["layers_left_before_load"] = make_absent(image, b.docker_root, b.driver)
        # one command, as an admin types it: the run pays for what the load left the disk to write,
        # as the import's create does (timed apart, a sync between them would hide it)
        r = b.timer(f"docker load -q -i {T} && docker run -d --name {APPS[0]}.base {tag}", shell=True)
        if r["rc"]:
            raise StepFailed(f"docker load -i T && docker run -d: {failure_line(r)}")
        bases.append(r)
        log(f"baseline: the manual pipeline (image removed first; run {i + 1}/{b.repeat})")
        make_absent(image, b.docker_root, b.driver)
        r = b.timer(manual_import_cmd(b, tag, b.manual, f"{APPS[0]}.manual"), shell=True)
        if r["rc"]:
            raise StepFailed(f"manual import pipeline: {failure_line(r)}")
        manuals.append(r)
        log(f"reference: zstd -dc f | docker load && docker run -d (image removed first; run {i + 1}/{b.repeat})")
        make_absent(image, b.docker_root, b.driver)
        r = b.timer(f"set -o pipefail; zstd -dc {b.manual} | docker load -q && docker run -d --name {APPS[0]}.unz {tag}",
                    shell=True)
        if r["rc"]:
            raise StepFailed(f"zstd -dc | docker load && docker run -d: {failure_line(r)}")
        unchecked.append(r)
        log(f"bundle import --yes (image removed, fresh state dir; run {i + 1}/{b.repeat})")
        fig["layers_left_before_import"] = make_absent(image, b.docker_root, b.driver)
        with DirPoller(b.work / f"state-{i}" / "staging") as staging:
            imports.append(b.import_(B, b.work / f"state-{i}"))
        staging_peak = max(staging_peak, staging.peak)
    base = [r["wall"] for r in bases]
    # the load's own share: until `docker load -q` printed its "Loaded image" line
    load_walls = [next((t for t, ln in r["lines"] if ln.startswith("Loaded image")), r["wall"]) for r in bases]
    walls = [r["wall"] for r in imports]
    # the product's documented rule (a health gate passes on STABLE_PROBES passes PROBE_SPACING s
    # apart) waits this long after the first pass; `docker run -d` checks nothing
    stable_wait = (STABLE_PROBES - 1) * PROBE_SPACING
    unwaited = [w - stable_wait for w in walls]
    mw = [r["wall"] for r in manuals]
    fig.update(docker_load_s=round(median(load_walls), 2),
               docker_run_s=round(median([w - ld for w, ld in zip(base, load_walls, strict=True)]), 2),
               load_run_s=round(median(base), 2), load_run_runs_s=[round(x, 2) for x in base],
               manual_import_s=round(median(mw), 2), manual_import_runs_s=[round(x, 2) for x in mw],
               import_s=round(median(walls), 2), import_runs_s=[round(x, 2) for x in walls],
               import_stable_wait_s=stable_wait,
               import_rss_kb=max(r["maxrss_kb"] or 0 for r in imports) or None,
               import_staging_peak_bytes=staging_peak,
               import_output=[f"+{t:.2f}s {ln}" for t, ln in imports[-1]["lines"]])
    rep.row("docker load -i T && docker run -d" + runs(base), secs(median(base)))
    rep.row("sha256sum -c && gpg --verify && zstd -dc | docker load && run -d && exec" + runs(mw), secs(median(mw)))
    uw = [r["wall"] for r in unchecked]
    fig.update(unchecked_load_run_s=round(median(uw), 2), unchecked_load_run_runs_s=[round(x, 2) for x in uw])
    rep.row("zstd -dc f | docker load && run -d (decompressed, nothing checked)" + runs(uw), secs(median(uw)))
    rep.row("bundle import --yes (until exit 0)" + runs(walls), secs(median(walls)))
    rep.goal(f"  ratio of medians import (less the {stable_wait:g} s stable-probe wait) / load + run",
             ratio_of_medians(unwaited, base), GOAL_IMPORT_RATIO, key="import_ratio")
    rel = ratio_of_medians(unwaited, uw)
    if rel is not None:
        fig["import_unchecked_ratio"] = round(rel, 4)
    rep.row("  ratio of medians import (less the wait) / zstd -dc | load + run (what decompressing costs)",
            "?" if rel is None else f"{rel:.2f}", "(reference)")
    rep.goal("  ratio of medians import / manual pipeline", ratio_of_medians(walls, mw), GOAL_IMPORT_MANUAL_RATIO,
             key="import_manual_ratio")
    rss = fig["import_rss_kb"]
    rep.row("  bundle import peak RSS", rss_mb(rss), f"< {GOAL_IMPORT_RSS_MB} MB",
            None if rss is None else rss * 1024 / 1e6 < GOAL_IMPORT_RSS_MB)
    rep.row("  peak scratch under state/staging", mb(staging_peak), f"<= {GOAL_SCRATCH_MB} MB",
            staging_peak <= GOAL_SCRATCH_MB * MiB)
    phases = [import_phases(r["lines"], r["wall"]) for r in imports]
    if all(phases):
        for key, what in (("startup_gate", "start-up + head gate"), ("stage_load", "verify + docker load (streamed)"),
                          ("swap_prepare", "swap: journal, backup, create"),
                          ("start_probe", f"start + health gate ({STABLE_PROBES} probes {PROBE_SPACING:g} s apart)")):
            v = median([p[key] for p in phases])
            fig[f"import_phase_{key}_s"] = round(v, 2)
            rep.row(f"    import phase {what}", secs(v))
    rep.row("    baseline: docker load / docker run -d", f"{secs(fig['docker_load_s'])} / {secs(fig['docker_run_s'])}")

    def med(rs, k):
        return median([(r[k] or 0) for r in rs])

    fig.update(import_cpu_s=round(med(imports, "cpu_s"), 2), import_engine_cpu_s=round(med(imports, "engine_cpu_s"), 2),
               load_run_engine_cpu_s=round(med(bases, "engine_cpu_s"), 2), load_run_cpu_s=round(med(bases, "cpu_s"), 2))
    rep.row("    CPU-s bundle import: own process (gate, hash) / engine (load, start)",
            f"{cpu(fig['import_cpu_s'])} / {cpu(fig['import_engine_cpu_s'])}")
    rep.row("    CPU-s baseline: docker CLI / engine (load, start)",
            f"{cpu(fig['load_run_cpu_s'])} / {cpu(fig['load_run_engine_cpu_s'])}")


def section_delta(b: Bench, tag: str) -> None:
    """Full vs layer-level delta (`--since`) of a release that changes one layer of the big image."""
    rep, fig = b.rep, b.fig
    rep.section("DELTA (a release changing one 1 MiB layer of the big image: full vs --since the last)")
    v1, v2 = app_release_images(tag, b.work)
    B1, F2, D2 = (b.work / n for n in ("app-1.bundle.zst", "app-2.full.bundle.zst", "app-2.delta.bundle.zst"))
    spec1 = write_spec(b.work, APP_TAGS[0], name="bench-app", release=1)
    spec2 = write_spec(b.work, APP_TAGS[1], name="bench-app", release=2)
    log("bundle build of release 1 (the base)")
    b.build(spec1, B1)
    full, delta = [], []
    for i in range(b.repeat):
        log(f"release 2: full, then --since release 1 (run {i + 1}/{b.repeat})")
        full.append(b.build(spec2, F2))
        delta.append(b.build(spec2, D2, "--since", B1))
    fw, dw = [r["wall"] for r in full], [r["wall"] for r in delta]
    fig.update(delta_full_bytes=F2.stat().st_size, delta_bytes=D2.stat().st_size,
               delta_full_build_s=round(median(fw), 2), delta_build_s=round(median(dw), 2))
    rep.row(f"full bundle of release 2: size, build{runs(fw)}", f"{mb(F2.stat().st_size)}, {secs(median(fw))}")
    rep.row(f"delta bundle (--since release 1): size, build{runs(dw)}", f"{mb(D2.stat().st_size)}, {secs(median(dw))}")
    rep.goal("  size delta / full", D2.stat().st_size / F2.stat().st_size, GOAL_DELTA_SIZE, "{:.1%}", key="delta_size_ratio")


def section_patch(b: Bench) -> None:
    """A release changing 1% of the files of one big layer, built with `--since` the last release
    (binary patches inside changed layers, when that build has them), imported onto an engine
    holding the last release."""
    rep, fig = b.rep, b.fig
    mb_ = b.sizes["patch_layer_mb"]
    rep.section(f"BINARY DELTA (1% of the files of a {mb_} MiB layer changed: --since the last release)")
    (v1, v2), reused = patch_release_images(mb_, b.work)
    B1, F2, P2 = (b.work / n for n in ("patch-1.bundle.zst", "patch-2.full.bundle.zst", "patch-2.since.bundle.zst"))
    spec1 = write_spec(b.work, PATCH_TAGS[0], name="bench-patch", container=APPS[1], release=1,
                       health='"/bin/busybox", "true"')
    spec2 = write_spec(b.work, PATCH_TAGS[1], name="bench-patch", container=APPS[1], release=2,
                       health='"/bin/busybox", "true"')
    log("bundle build of release 1 (the base)")
    b.build(spec1, B1)
    full, since, imports = [], [], []
    for i in range(b.repeat):
        log(f"release 2: full, then --since release 1, then its import (run {i + 1}/{b.repeat})")
        full.append(b.build(spec2, F2))
        since.append(b.build(spec2, P2, "--since", B1))
        remove_image(v2["Id"])  # the engine holds release 1 only, as the intranet would
        imports.append(b.import_(P2, b.work / f"patch-state-{i}"))
    fw, pw, iw = ([r["wall"] for r in x] for x in (full, since, imports))
    fig.update(patch_full_bytes=F2.stat().st_size, patch_bytes=P2.stat().st_size,
               patch_full_build_s=round(median(fw), 2), patch_build_s=round(median(pw), 2),
               patch_import_s=round(median(iw), 2),
               patch_build_rss_kb=max(r["maxrss_kb"] or 0 for r in since) or None,
               patch_import_rss_kb=max(r["maxrss_kb"] or 0 for r in imports) or None)
    rep.row(f"full bundle of release 2: size, build{runs(fw)}", f"{mb(F2.stat().st_size)}, {secs(median(fw))}")
    rep.row(f"--since release 1: size, build{runs(pw)}", f"{mb(P2.stat().st_size)}, {secs(median(pw))}")
    rep.goal("  size --since / full", P2.stat().st_size / F2.stat().st_size, GOAL_PATCH_SIZE, "{:.1%}",
             key="patch_size_ratio")
    rep.row(f"  import of it onto release 1 (until exit 0){runs(iw)}", secs(median(iw)))
    rep.row("  peak RSS build / import", f"{rss_mb(fig['patch_build_rss_kb'])} / {rss_mb(fig['patch_import_rss_kb'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes for trying the bench (100 MiB image, 30 MiB layer, 1 run)")
    ap.add_argument("--size-mb", type=int, help="big image data size in MiB (default 1000)")
    ap.add_argument("--patch-layer-mb", type=int, help="the binary delta's layer in MiB (default 300)")
    ap.add_argument("--repeat", type=int, help="runs of each timed pair, interleaved; medians are reported (default 3)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    ap.add_argument("--json", dest="json_path", type=Path, help="also write the table and figures as JSON here")
    ap.add_argument("--tag", default="bench/big:1", help="the big image's tag (default bench/big:1)")
    ap.add_argument("--clean", action="store_true", help="also remove the bench images at the end")
    ap.add_argument("--keep-temp", action="store_true", help="keep the temp dir (bundles, keys, state) for a look")
    ap.add_argument("--workdir", default=None, help="where the temp dir goes (default: $TMPDIR or /tmp)")
    args = ap.parse_args(argv)
    try:
        sizes = resolve_sizes(args.quick, args.size_mb, args.patch_layer_mb, args.repeat)
    except ValueError as e:
        ap.error(str(e))
    only = [s for s in args.only.split(",") if s]
    if set(only) - set(SECTIONS):
        ap.error(f"--only: unknown section(s) {', '.join(sorted(set(only) - set(SECTIONS)))}")

    rep = Report()
    fig = rep.figures
    fig.update(sizes)
    fig["load_average"] = list(os.getloadavg())
    run(["bash", str(REPO / "scripts" / "ensure-docker.sh")], capture=False)
    bundle = bundle_cli()
    compile_bytecode()
    gnu_time = _gnu_time()
    if not gnu_time:
        log("GNU time unavailable: CPU and peak RSS via getrusage(RUSAGE_CHILDREN) in a wrapper")
    if not os.path.exists("/bin/busybox"):
        raise SystemExit("bench: /bin/busybox not found (apt-get install -y busybox-static)")
    dinfo = json.loads(run(["docker", "info", "--format", "{{json .}}"]).stdout)
    docker_root = Path(dinfo.get("DockerRootDir") or "/var/lib/docker")
    if not os.access(docker_root, os.R_OK):
        docker_root = None
    engine = EngineCPU()
    if engine.stat is None:
        log("the engine's process is not visible here: engine CPU-seconds are left out")

    work = Path(tempfile.mkdtemp(prefix="bundle-bench-", dir=args.workdir))
    timer = Timer(gnu_time, work, engine)
    home = image = None
    t_all = time.monotonic()
    try:
        image, reused, build_took = ensure_image(args.tag, sizes["size_mb"], work)
        fig.update(image_id=image["Id"], image_bytes=image["Size"], image_layers=len(image["RootFS"]["Layers"]))
        rep.row(f"image {args.tag}: {len(image['RootFS']['Layers'])} layers"
                + (" (reused)" if reused else f" (built in {build_took:.0f} s)"), mb(image["Size"]))
        keys = make_keys(work)
        home = keys[0]
        b = Bench(sizes, rep, work, timer, bundle, keys, docker_root, dinfo.get("Driver") or "overlay2")
        spec = write_spec(work, args.tag)
        B, T = work / "bench.bundle.zst", work / "save.tar"
        log("docker save -o T (the import baseline's archive; also warms the page cache)")
        r = timer(["docker", "save", "-o", T, args.tag])
        if r["rc"]:
            raise StepFailed(f"docker save: {failure_line(r)}")
        for name in only:
            try:
                if name == "build" or (name in ("split", "import") and not B.exists()):
                    section_build(b, args.tag, spec, B, T)
                if name == "split":
                    section_split_verify(b, spec, B)
                elif name == "import":
                    section_import(b, image, args.tag, B, T)
                elif name == "delta":
                    restore_image(args.tag, image, T)
                    section_delta(b, args.tag)
                elif name == "patch":
                    section_patch(b)
            except StepFailed as e:
                rep.fail(name, str(e))
    except StepFailed as e:
        rep.fail("bench", str(e))
    finally:
        log("cleaning up")
        removed = remove_bench_containers()
        if removed:
            log(f"removed containers {', '.join(removed)}")
        for t in APP_TAGS + (PATCH_TAGS if args.clean else ()):
            info = inspect_image(t)
            if info:
                remove_image(info["Id"])
        if image is not None:
            if args.clean:
                remove_image(image["Id"])
                log(f"removed image {args.tag}")
            else:
                restore_image(args.tag, image, work / "save.tar")
        if home is not None:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
        if args.keep_temp:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    fig["bench_total_s"] = round(time.monotonic() - t_all, 1)
    fig["failures"] = rep.failures
    la = fig["load_average"]
    title = (f"bundle bench: {sizes['size_mb']} MiB image {args.tag}, {sizes['patch_layer_mb']} MiB patch layer, "
             f"{sizes['repeat']} run(s) each, {os.cpu_count()} cores, load average at start "
             f"{la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, CPU/RSS via {'GNU time' if gnu_time else 'getrusage wrapper'}")
    print()
    print(title)
    print("\n".join(rep.lines()))
    print()
    print(json.dumps({k: v for k, v in fig.items() if k != "import_output"}, sort_keys=True))
    if args.json_path:
        args.json_path.write_text(json.dumps(rep.document(title), indent=2, sort_keys=True) + "\n")
    return 1 if rep.failures else 0


def restore_image(tag: str, image: dict, T: Path) -> None:
    """The big image back under its tag (an import section removes it) from the saved archive."""
    have = inspect_image(tag)
    if (not have or have["Id"] != image["Id"]) and T.exists():
        log(f"restoring {tag} (docker load -i T)")
        run(["docker", "load", "-q", "-i", str(T)], check=False)


if __name__ == "__main__":
    sys.exit(main())
