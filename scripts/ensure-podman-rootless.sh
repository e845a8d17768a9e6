#!/usr/bin/env bash
# A rootless Podman service for the tests (issue 23): the user $BUNDLE_ROOTLESS_USER (made here, with
# subordinate UIDs/GIDs, when run as root) runs `podman system service` on its own
# $XDG_RUNTIME_DIR/podman/podman.sock (/run/user/UID/...), as `systemctl --user enable podman.socket`
# would on a host with systemd. Reuses a running one; prints the DOCKER_HOST value to use on stdout.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

user=${BUNDLE_ROOTLESS_USER:-bundle-rootless}
log=${PODMAN_ROOTLESS_LOG:-/tmp/bundle-podman-rootless.log}

# a rootless Podman maps its user's subordinate IDs with newuidmap/newgidmap (Debian's uidmap, which
# an `apt-get install podman` without recommends leaves out); podman itself: ensure-podman.sh
need_pkgs=()
command -v newuidmap >/dev/null 2>&1 || need_pkgs+=(uidmap)
command -v runuser >/dev/null 2>&1 || need_pkgs+=(util-linux)
install_missing ensure-podman-rootless "${need_pkgs[@]}"

if ! id -u "$user" >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-podman-rootless: no user $user and not root to make it" >&2
        exit 1
    fi
    useradd --create-home --shell /usr/sbin/nologin "$user"
fi
grep -q "^$user:" /etc/subuid || usermod --add-subuids 300000-365535 "$user"
grep -q "^$user:" /etc/subgid || usermod --add-subgids 300000-365535 "$user"
uid=$(id -u "$user")
run=/run/user/$uid
home=$(getent passwd "$user" | cut -d: -f6)
as_user() { runuser -u "$user" -- env XDG_RUNTIME_DIR="$run" HOME="$home" "$@"; }
sock=$run/podman/podman.sock
answers() { curl -sf --max-time 5 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; }
if answers; then
    echo "unix://$sock"
    exit 0
fi
install -d -m 700 -o "$user" -g "$user" "$run"
as_user mkdir -p "$run/podman"
exec 9>"$run/podman/start.lock"
flock 9
if ! answers; then
    rm -f "$sock"
    echo "=== rootless podman service started by ensure-podman-rootless at $(date -u +%FT%TZ)" >>"$log"
    # its own session: a test run killed with its process group must not take the engine along;
    # from / (see ensure-podman.sh); `exec`, not the as_user function: bash keeps copies of a
    # function's redirected fds (our caller's stdout pipe, the lock) open for as long as it runs,
    # so whoever reads this script's output would wait for the service to end
    (cd / && exec runuser -u "$user" -- env XDG_RUNTIME_DIR="$run" HOME="$home" \
        setsid nohup podman system service --time=0 "unix://$sock" >>"$log" 2>&1 </dev/null 9>&-) &
fi
serve_when_answering ensure-podman-rootless "the rootless Podman service of $user" "$sock" "$log"
