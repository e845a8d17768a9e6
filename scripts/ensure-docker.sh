#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine: reuse a running one, else install
# (Debian's docker.io) and start one, then wait until `docker info` answers.
# Idempotent; used by `make test`, `make demo`, `make bench` and .ci/run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log=${DOCKERD_LOG:-/tmp/bundle-dockerd.log}

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v busybox >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v docker-registry >/dev/null 2>&1 || need_pkgs+=(docker-registry)
command -v zstd >/dev/null 2>&1 || need_pkgs+=(zstd)
command -v prometheus >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need_pkgs+=(prometheus-node-exporter)
command -v htpasswd >/dev/null 2>&1 || need_pkgs+=(apache2-utils)
install_missing ensure-docker "${need_pkgs[@]}"

if docker info >/dev/null 2>&1; then
    exit 0
fi

# A pid that is gone or a zombie does not count as running (a killed session can leave either).
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]; }

live=""
for pid in $(pgrep -x dockerd || true); do
    alive "$pid" && live=$pid
done
if [ -z "$live" ]; then
    # pid files left by an engine that is gone would stop a new one from starting
    for pidfile in /var/run/docker.pid /run/docker/containerd/containerd.pid; do
        if [ -f "$pidfile" ] && ! alive "$(cat "$pidfile" 2>/dev/null)"; then
            rm -f "$pidfile"
        fi
    done
    echo "ensure-docker: starting dockerd (log: $log)" >&2
    echo "=== dockerd started by ensure-docker at $(date -u +%FT%TZ)" >>"$log"
    # its own session: a test run killed with its process group must not take the engine along
    setsid nohup dockerd >>"$log" 2>&1 < /dev/null &
fi

for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.5
done
echo "ensure-docker: the Docker engine did not answer within 30 s; see $log" >&2
tail -5 "$log" >&2 || true
exit 1
