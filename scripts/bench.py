#!/usr/bin/env python3
"""`make bench`: how `bundle build`, `bundle verify` and `bundle import` compare with the plain
docker/zstd commands they replace, on this machine, in one run. A benchmark, not a test: it exits 0
when every step ran (goals met or not) and 1 when a step could not run.

    .venv/bin/python scripts/bench.py [--size-mb 1200] [--tag bench/big:1] [--clean] [--keep-temp]

1. A multi-layer image (default 1200 MiB: ~60% random bytes, ~40% text-like) is built locally from
   scratch + /bin/busybox (reused on later runs when its labels match); a throwaway GNUPGHOME with an
   ed25519 key, a trust store with its public key and a bundle spec go into a temp dir.
2. Build: `bundle build --local` against `docker save | zstd -T0 -3`.
3. Verify: `bundle verify` against `zstd -dc B | sha256sum` and `zstd -dc B > /dev/null`.
4. Import: `bundle import --yes` (gate + staging + load + swap) against `docker load -i` of a
   `docker save` tarball, the image removed before each; peak scratch under the state dir's staging.
5. Clean-up: bench containers, temp files and bundles; the image stays unless --clean.

Progress goes to stderr; stdout gets the table and, last, one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
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
MiB = 1 << 20
PIECE = 64 * MiB
GEN_VERSION = "1"           # bump when the generated image content changes
APP = "bench-app"           # the spec's target container name
# data layers: (kind, fraction of --size-mb); 60% random, 40% text-like, interleaved
LAYERS = [("random", 0.30), ("text", 0.20), ("random", 0.30), ("text", 0.20)]

GOAL_BUILD_RATIO = 1.10
GOAL_VERIFY_RSS_MB = 150
GOAL_IMPORT_RATIO = 1.15


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
    "open(sys.argv[1], 'w').write('Maximum resident set size (kbytes): %d\\n'"
    " % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(rc)\n"
)


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
    """Runs one command: wall time, exit code, peak RSS (kbytes), stdout lines with timestamps."""

    def __init__(self, gnu_time: str | None, tmp: Path):
        self.gnu_time, self.tmp = gnu_time, tmp

    def __call__(self, cmd, *, shell=False, rss=False, env=None, stdout_to=None) -> dict:
        rss_file = self.tmp / "rss.txt"
        if rss_file.exists():
            rss_file.unlink()
        argv = ["bash", "-c", cmd] if shell else list(map(str, cmd))
        if rss:
            if self.gnu_time:
                argv = [self.gnu_time, "-v", "-o", str(rss_file)] + argv
            else:
                argv = [sys.executable, "-c", _RSS_WRAPPER, str(rss_file)] + argv
        os.sync()  # earlier steps' dirty pages are not this step's cost
        err_path = self.tmp / "stderr.txt"
        lines: list[tuple[float, str]] = []
        with open(err_path, "w") as err:
            start = time.monotonic()
            p = subprocess.Popen(argv, stdout=subprocess.PIPE if stdout_to is None else stdout_to,
                                 stderr=err, text=True, env=env)
            if p.stdout is not None:
                for line in p.stdout:
                    lines.append((time.monotonic() - start, line.rstrip("\n")))
            rc = p.wait()
            wall = time.monotonic() - start
        stderr = err_path.read_text(errors="replace")
        maxrss = None
        if rss and rss_file.exists():
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", rss_file.read_text())
            maxrss = int(m.group(1)) if m else None
        return {"wall": wall, "rc": rc, "lines": lines, "stderr": stderr, "maxrss_kb": maxrss}


def failure_line(res: dict) -> str:
    text = [l for l in res["stderr"].splitlines() if l.strip() and not l.startswith(("\t", "Command "))]
    if not text:
        text = [l for _, l in res["lines"] if l.strip()]
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
    return [n for n in r.stdout.split() if n == APP or n.startswith(APP + ".")]


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


def chain_ids(diff_ids: list[str]) -> list[str]:
    chains, prev = [], None
    for d in diff_ids:
        prev = d if prev is None else "sha256:" + hashlib.sha256(f"{prev} {d}".encode()).hexdigest()
        chains.append(prev)
    return chains


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
    fpr = next(l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:"))
    pub = run(["gpg", "--homedir", str(home), "--batch", "--armor", "--export", fpr]).stdout
    (store / "bench.asc").write_text(pub)
    return home, store, fpr


def write_spec(work: Path, tag: str) -> Path:
    spec = work / "bundle.toml"
    spec.write_text(
        f'name = "bench"\nversion = "1.0.0"\nsequence = 1\nimages = ["{tag}"]\n\n'
        f'[target]\nkind = "container"\nname = "{APP}"\nimage = "{tag}"\n\n'
        '[target.run]\nports = []\nvolumes = []\n\n'
        '[target.health]\ncmd = ["/bin/true"]\ntimeout = "30s"\nattempts = 1\n')
    return spec


def bundle_cli() -> str:
    for cand in (Path(sys.executable).parent / "bundle", REPO / ".venv" / "bin" / "bundle"):
        if cand.exists():
            return str(cand)
    found = shutil.which("bundle")
    if not found:
        raise StepFailed("the bundle command is not installed (.venv/bin/pip install -e .)")
    return found


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------

class Report:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []
        self.figures: dict = {}
        self.failures: list[str] = []

    def row(self, what: str, value: str, goal: str = "", met: bool | None = None) -> None:
        status = "" if met is None else ("met" if met else "NOT met")
        self.rows.append((what, value, goal, status))

    def fail(self, step: str, why: str) -> None:
        self.failures.append(f"{step}: {why}")
        self.row(step, "FAILED", "(see failures below)", None)
        log(f"FAILED {step}: {why}")

    def print(self) -> None:
        w = [max(len(r[i]) for r in self.rows + [("figure", "value", "goal", "status")]) for i in range(4)]
        def line(r):
            return f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]}".rstrip()
        print(line(("figure", "value", "goal", "status")))
        print(line(tuple("-" * n for n in w)))
        for r in self.rows:
            print(r[0] if r[1] == "" and r[2] == "" else line(r))
        for f in self.failures:
            print(f"FAILED {f}")


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def runs(xs: list[float]) -> str:
    """' [runs 10.5 11.0 10.2]' after a figure that is a median of several runs."""
    return " [runs " + " ".join(f"{x:.1f}" for x in xs) + "]" if len(xs) > 1 else ""


def secs(x: float) -> str:
    return f"{x:.1f} s"


def mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def rss_mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb * 1024 / 1e6:.0f} MB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1200, help="image data size in MiB (default 1200)")
    ap.add_argument("--tag", default="bench/big:1", help="the bench image tag (default bench/big:1)")
    ap.add_argument("--clean", action="store_true", help="also remove the bench image at the end")
    ap.add_argument("--keep-temp", action="store_true", help="keep the temp dir (bundles, keys, state) for a look")
    ap.add_argument("--workdir", default=None, help="where the temp dir goes (default: $TMPDIR or /tmp)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each timed pair, interleaved; medians are reported (default 3)")
    args = ap.parse_args(argv)

    rep = Report()
    fig = rep.figures
    fig["size_mb"] = args.size_mb
    run(["bash", str(REPO / "scripts" / "ensure-docker.sh")], capture=False)
    bundle = bundle_cli()
    gnu_time = _gnu_time()
    if not gnu_time:
        log("GNU time unavailable: peak RSS measured with getrusage(RUSAGE_CHILDREN) in a wrapper")
    dinfo = json.loads(run(["docker", "info", "--format", "{{json .}}"]).stdout)
    docker_root = Path(dinfo.get("DockerRootDir") or "/var/lib/docker")
    driver = dinfo.get("Driver") or "overlay2"
    if not os.access(docker_root, os.R_OK):
        docker_root = None

    work = Path(tempfile.mkdtemp(prefix="bundle-bench-", dir=args.workdir))
    timer = Timer(gnu_time, work)
    home = None
    image = None
    t_all = time.monotonic()
    try:
        # -- 1. setup --------------------------------------------------------------------------
        image, reused, build_took = ensure_image(args.tag, args.size_mb, work)
        fig.update(image_id=image["Id"], image_bytes=image["Size"], image_layers=len(image["RootFS"]["Layers"]),
                   image_reused=reused, image_build_s=round(build_took, 2))
        rep.row(f"image {args.tag}: {len(image['RootFS']['Layers'])} layers"
                + (" (reused)" if reused else f" (built in {build_took:.0f} s)"), mb(image["Size"]))
        home, store, fpr = make_keys(work)
        spec = write_spec(work, args.tag)
        state = work / "state"
        B, F, T = work / "bench.bundle.zst", work / "pipeline.tar.zst", work / "save.tar"

        # -- 2. build side ---------------------------------------------------------------------
        rep.row("BUILD", "")
        log("docker save -o T (also warms the page cache for both build runs)")
        r = timer(["docker", "save", "-o", str(T), args.tag])
        if r["rc"]:
            raise StepFailed(f"docker save: {failure_line(r)}")
        fig["docker_save_file_s"] = round(r["wall"], 2)
        fig["docker_save_tar_bytes"] = T.stat().st_size
        rep.row("docker save -o T (reference)", secs(r["wall"]))

        # baseline and build alternate, so load on this shared machine hits both alike
        base_runs, build_runs = [], []
        for i in range(args.repeat):
            log(f"baseline: docker save | zstd -T0 -3 (run {i + 1}/{args.repeat})")
            r = timer(f"set -o pipefail; docker save {args.tag} | zstd -q -T0 -3 -f -o {F}", shell=True)
            if r["rc"]:
                rep.fail("docker save | zstd -T0 -3", failure_line(r))
                break
            base_runs.append(r["wall"])
            fig["pipeline_bytes"] = F.stat().st_size
            log(f"bundle build --local (run {i + 1}/{args.repeat})")
            r = timer([bundle, "build", spec, "-o", B, "--sign-key", fpr, "--gnupghome", home, "--local"], rss=True)
            if r["rc"]:
                rep.fail("bundle build", failure_line(r))
                raise StepFailed("bundle build failed; nothing else can be measured")
            build_runs.append(r)
        base_build = median(base_runs) if base_runs else None
        if base_build is not None:
            fig["pipeline_s"], fig["pipeline_runs_s"] = round(base_build, 2), [round(x, 2) for x in base_runs]
            rep.row("docker save | zstd -T0 -3 -o f (baseline)" + runs(base_runs), secs(base_build))
        walls = [b["wall"] for b in build_runs]
        r = {"wall": median(walls), "maxrss_kb": max((b["maxrss_kb"] or 0) for b in build_runs) or None,
             "lines": build_runs[-1]["lines"]}
        fig["build_s"], fig["build_runs_s"] = round(r["wall"], 2), [round(x, 2) for x in walls]
        fig["build_rss_kb"], fig["bundle_bytes"] = r["maxrss_kb"], B.stat().st_size
        said = next((l for _, l in r["lines"] if l.startswith("built ")), "")
        m = re.search(r" in ([0-9.]+)s", said)
        if m:
            fig["build_self_reported_s"] = float(m.group(1))
        rep.row("bundle build --local" + runs(walls), secs(r["wall"]))
        if base_build:
            ratio = r["wall"] / base_build
            fig["build_ratio"] = round(ratio, 3)
            rep.row("  ratio of medians build / baseline", f"{ratio:.2f}", f"<= {GOAL_BUILD_RATIO:.2f}", ratio <= GOAL_BUILD_RATIO)
        rep.row("  bundle build peak RSS", rss_mb(r["maxrss_kb"]))
        rep.row("bundle file size", mb(fig["bundle_bytes"]),
                f"<= pipeline file ({mb(fig.get('pipeline_bytes'))})" if base_build else "",
                (fig["bundle_bytes"] <= fig["pipeline_bytes"]) if base_build else None)
        if base_build:
            rep.row("pipeline file size", mb(fig["pipeline_bytes"]))
        if F.exists():
            F.unlink()

        # -- 3. verify side --------------------------------------------------------------------
        rep.row("VERIFY", "")
        log("baselines: zstd -dc B | sha256sum; zstd -dc B > /dev/null")
        r = timer(f"set -o pipefail; zstd -q -dc {B} | sha256sum >/dev/null", shell=True)
        base_sha = r["wall"] if r["rc"] == 0 else None
        if base_sha is None:
            rep.fail("zstd -dc B | sha256sum", failure_line(r))
        else:
            fig["zstd_sha256sum_s"] = round(base_sha, 2)
            rep.row("zstd -dc B | sha256sum (baseline)", secs(base_sha))
        r = timer(f"zstd -q -dc {B} >/dev/null", shell=True)
        base_dc = r["wall"] if r["rc"] == 0 else None
        if base_dc is not None:
            fig["zstd_dc_s"] = round(base_dc, 2)
            rep.row("zstd -dc B > /dev/null (baseline)", secs(base_dc))

        log("bundle verify")
        r = timer([bundle, "verify", B, "--keys", store, "--state-dir", state, "--json"], rss=True)
        payload_bytes = None
        if r["rc"]:
            rep.fail("bundle verify", failure_line(r))
        else:
            report = json.loads("\n".join(l for _, l in r["lines"]))
            payload_bytes = report["payload_bytes"]
            fig.update(verify_s=round(r["wall"], 2), verify_rss_kb=r["maxrss_kb"], payload_bytes=payload_bytes)
            rep.row("bundle verify", secs(r["wall"]))
            if base_sha:
                fig["verify_ratio_sha256sum"] = round(r["wall"] / base_sha, 3)
                rep.row("  ratio verify / (zstd -dc | sha256sum)", f"{r['wall'] / base_sha:.2f}", "(info)")
            if base_dc:
                fig["verify_ratio_zstd_dc"] = round(r["wall"] / base_dc, 3)
                rep.row("  ratio verify / (zstd -dc > /dev/null)", f"{r['wall'] / base_dc:.2f}", "(info)")
            ok = r["maxrss_kb"] is not None and r["maxrss_kb"] * 1024 / 1e6 < GOAL_VERIFY_RSS_MB
            rep.row("  bundle verify peak RSS", rss_mb(r["maxrss_kb"]), f"< {GOAL_VERIFY_RSS_MB} MB", ok)

        # -- 4. import side --------------------------------------------------------------------
        rep.row("IMPORT", "")
        tmp_poll_dir = docker_root / "tmp" if docker_root else None
        load_runs, import_runs = [], []
        staging_peak = engine_tmp_import = 0
        for i in range(args.repeat):
            log(f"baseline: docker load -i T (image removed first; run {i + 1}/{args.repeat})")
            fig["layers_left_before_load"] = make_absent(image, docker_root, driver)
            with DirPoller(tmp_poll_dir) as dtmp:
                r = timer(["docker", "load", "-q", "-i", T])
            if r["rc"]:
                rep.fail("docker load -i T", failure_line(r))
                break
            load_runs.append(r["wall"])
            fig["docker_load_engine_tmp_bytes"] = dtmp.growth

            log(f"bundle import --yes (image removed, fresh state dir; run {i + 1}/{args.repeat})")
            remove_bench_containers()
            fig["layers_left_before_import"] = make_absent(image, docker_root, driver)
            state = work / f"state-{i}"
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with DirPoller(state / "staging") as staging, DirPoller(tmp_poll_dir) as dtmp:
                r = timer([bundle, "import", B, "--keys", store, "--state-dir", state, "--yes"], rss=True, env=env)
            staging_peak, engine_tmp_import = max(staging_peak, staging.peak), max(engine_tmp_import, dtmp.growth)
            import_runs.append(r)
            if r["rc"]:
                break
        base_load = median(load_runs) if load_runs else None
        if base_load is not None:
            fig.update(docker_load_s=round(base_load, 2), docker_load_runs_s=[round(x, 2) for x in load_runs])
            rep.row("docker load -i T (baseline, no layer present)" + runs(load_runs), secs(base_load))
        r = import_runs[-1]
        for t, l in r["lines"]:
            log(f"  import +{t:6.1f}s  {l}")
        fig["import_output"] = [f"+{t:.2f}s {l}" for t, l in r["lines"]]
        if r["rc"]:
            rep.fail("bundle import", failure_line(r))
            fig["import_error"] = failure_line(r)
        else:
            # phases from the import's own lines: "verified N payload files ... and loaded ..."
            def loaded_at(run):
                return next((t for t, l in run["lines"] if l.startswith("verified ") and " loaded " in l), None)
            to_loaded = [loaded_at(x) for x in import_runs]
            totals = [x["wall"] for x in import_runs]
            total = median(totals)
            t_loaded = median(to_loaded) if None not in to_loaded else None
            r = {"maxrss_kb": max((x["maxrss_kb"] or 0) for x in import_runs) or None}
            staging = type("Peak", (), {"peak": staging_peak})
            fig.update(import_s=round(total, 2), import_rss_kb=r["maxrss_kb"],
                       import_staging_peak_bytes=staging_peak, import_engine_tmp_bytes=engine_tmp_import)
            rep.row("bundle import --yes (total, with swap)" + runs(totals), secs(total))
            if t_loaded is not None:
                fig["import_to_loaded_s"], fig["import_to_loaded_runs_s"] = round(t_loaded, 2), [round(x, 2) for x in to_loaded]
                fig["import_swap_s"] = round(total - t_loaded, 2)
                rep.row("  gate + load (to '... and loaded ...')" + runs(to_loaded), secs(t_loaded))
                rep.row("  swap (after it)", secs(total - t_loaded))
            if base_load:
                if t_loaded is not None:
                    ratio = t_loaded / base_load
                    fig["import_ratio"] = round(ratio, 3)
                    rep.row("  ratio of medians import up to 'loaded' / docker load", f"{ratio:.2f}",
                            f"<= {GOAL_IMPORT_RATIO:.2f}", ratio <= GOAL_IMPORT_RATIO)
                fig["import_total_ratio"] = round(total / base_load, 3)
                rep.row("  ratio import total / docker load", f"{total / base_load:.2f}", "(info: includes the swap)")
            rep.row("  bundle import peak RSS", rss_mb(r["maxrss_kb"]))
            if payload_bytes:
                rep.row("  peak scratch under state/staging", mb(staging.peak),
                        f"<= payload ({mb(payload_bytes)})", staging.peak <= payload_bytes)
            else:
                rep.row("  peak scratch under state/staging", mb(staging.peak))
            if docker_root:
                rep.row("  peak engine tmp (docker's own copy of the archive)", mb(dtmp.growth),
                        f"(info; plain docker load: {mb(fig.get('docker_load_engine_tmp_bytes'))})")
    except StepFailed as e:
        rep.fail("bench", str(e))
    finally:
        # -- 5. clean-up -----------------------------------------------------------------------
        log("cleaning up")
        removed = remove_bench_containers()
        if removed:
            log(f"removed containers {', '.join(removed)}")
        if image is not None:
            if args.clean:
                remove_image(image["Id"])
                log(f"removed image {args.tag}")
            else:
                have = inspect_image(args.tag)
                if not have or have["Id"] != image["Id"]:
                    T = work / "save.tar"
                    if T.exists():
                        log(f"restoring {args.tag} for later runs (docker load -i T)")
                        run(["docker", "load", "-q", "-i", str(T)], check=False)
        if home is not None:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
        if args.keep_temp:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    fig["bench_total_s"] = round(time.monotonic() - t_all, 1)
    fig["failures"] = rep.failures
    print()
    print(f"bundle bench: {args.size_mb} MiB image {args.tag}, {os.cpu_count()} cores, "
          f"peak RSS via {'GNU time' if gnu_time else 'getrusage wrapper'}")
    rep.print()
    print()
    print(json.dumps({k: v for k, v in fig.items() if k != "import_output"}, sort_keys=True))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
