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
