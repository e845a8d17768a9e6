#!/usr/bin/env bash
# Make sure a Podman engine answers on its own socket (the Podman tier of `make test`): reuse a
# running one, else install (Debian's podman) and start `podman system service` on
# $BUNDLE_PODMAN_SOCK, then wait until its Docker-compatible API answers /_ping. Idempotent, and
# apart from the Docker engine: its own socket, its own storage (/var/lib/containers).
# Prints the DOCKER_HOST value to use on stdout.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sock=${BUNDLE_PODMAN_SOCK:-/run/bundle-podman.sock}
log=${PODMAN_LOG:-/tmp/bundle-podman.log}

answers() { curl -sf --max-time 5 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; }

if answers; then
    echo "unix://$sock"
    exit 0
fi

need_pkgs=()
command -v podman >/dev/null 2>&1 || need_pkgs+=(podman)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
install_missing ensure-podman "${need_pkgs[@]}"

# one starter at a time (parallel test workers): the others wait for its socket
exec 9>"$sock.lock"
flock 9
if ! answers; then
    rm -f "$sock"  # left by a service that is gone
    echo "ensure-podman: starting podman system service on $sock (log: $log)" >&2
    echo "=== podman service started by ensure-podman at $(date -u +%FT%TZ)" >>"$log"
    # Podman gives a rootful container nofile and nproc limits of about a million unless
    # containers.conf says otherwise; where this host's hard limits are lower (a sandboxed CI
    # machine) every start fails "error setting rlimits": the service's own containers.conf gives
    # this host's limits instead (nproc at most 32768, the limit Podman 4.3 runs conmon with).
    conf=${sock%.sock}.containers.conf
    nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
    [ "$nofile" = unlimited ] && nofile=1048576
    { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
    printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' \
        "$nofile" "$nofile" "$nproc" "$nproc" >"$conf"
    # its own session: a test run killed with its process group must not take the engine along
    # from /: the service outlives the caller, whose working directory may be removed (conmon then
    # fails every container start: "Failed to get working directory")
    (cd / && CONTAINERS_CONF=$conf setsid nohup podman system service --time=0 "unix://$sock" >>"$log" 2>&1 </dev/null 9>&- &)
fi
serve_when_answering ensure-podman "the Podman service" "$sock" "$log"
