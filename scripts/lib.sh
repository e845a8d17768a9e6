# Shared by the scripts/ensure-*.sh set-up scripts (sourced, not run).

# install_missing WHO PKG...: apt-get install the Debian packages given (the caller lists only those
# whose command is missing); as root only, else one line naming them and exit 1.
install_missing() {
    local who=$1
    shift
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "$who: missing $* and not root: install them first" >&2
        exit 1
    fi
    echo "$who: installing $* (about a minute)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# serve_when_answering WHO WHAT SOCK LOG: wait (30 s at most) until the caller's `answers` says the
# service on SOCK answers, then print its DOCKER_HOST value and exit 0; else one line naming WHAT
# and LOG, the log's last lines, exit 1.
serve_when_answering() {
    local who=$1 what=$2 sock=$3 log=$4
    for _ in $(seq 1 60); do
        if answers; then
            echo "unix://$sock"
            exit 0
        fi
        sleep 0.5
    done
    echo "$who: $what did not answer within 30 s; see $log" >&2
    tail -5 "$log" >&2 || true
    exit 1
}
