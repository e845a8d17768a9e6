#!/usr/bin/env bash
# Install `bundle` from this offline kit, with no package index (intranet side).
#
#   sudo ./install.sh                 # venv in /opt/bundle, `bundle` in /usr/local/bin
#   PREFIX=/srv/bundle BINDIR=$HOME/bin KEYS_DIR=/etc/bundle/keys ./install.sh
#   PYTHON=/usr/bin/python3.12 ./install.sh   # the Python this kit was built for
#
# It checks the kit's own SHA256SUMS, the Python version and gpg, creates a venv under PREFIX,
# installs the kit's wheels with `pip install --no-index`, links `bundle` into BINDIR, and creates
# the trust store KEYS_DIR (empty: copy the builders' public keys there, see `bundle doctor`).
# It installs the man page into MANDIR/man1 (`man bundle`), the docs and contrib/ into DOCDIR, and,
# run as root, the system user and group BUNDLE_USER (default bundle) that contrib/'s
# bundle-check.service runs as, with its state dir CHECK_DIR (default /var/lib/bundle-check) owned
# by it, mode 0700 (CREATE_USER=0 skips both). The importer's state dir (/var/lib/bundle) stays
# root's: `bundle import` and contrib/bundle-status.service run as root.
set -euo pipefail

KIT="$(cd "$(dirname "$0")" && pwd)"
PREFIX="${PREFIX:-/opt/bundle}"
BINDIR="${BINDIR:-/usr/local/bin}"
KEYS_DIR="${KEYS_DIR:-/etc/bundle/keys}"
PYTHON="${PYTHON:-python3}"
MANDIR="${MANDIR:-/usr/local/share/man}"
DOCDIR="${DOCDIR:-$PREFIX/share/doc/bundle}"
BUNDLE_USER="${BUNDLE_USER:-bundle}"
CHECK_DIR="${CHECK_DIR:-/var/lib/bundle-check}"
CREATE_USER="${CREATE_USER:-1}"
WANT="$(cat "$KIT/PYTHON_VERSION")"

die() { echo "install.sh: $*" >&2; exit 1; }

if ! bad="$(cd "$KIT" && sha256sum --quiet -c SHA256SUMS 2>/dev/null)"; then
    bad="$(printf '%s\n' "$bad" | head -n 1)"
    die "the kit's file ${bad%%: *} does not match its SHA256SUMS: get the kit again"
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python $WANT or pass PYTHON=/path/to/python$WANT"
HAVE="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" || die "$PYTHON does not run"
[ "$HAVE" = "$WANT" ] || die "this kit holds wheels for Python $WANT but $PYTHON is $HAVE: pass PYTHON=/path/to/python$WANT, or build a kit with KIT_PYTHON=$HAVE"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON cannot create a venv: install the python$WANT-venv package"

command -v gpg >/dev/null 2>&1 || die "gpg not found: install the gnupg package (bundle checks every signature with gpg)"

echo "install.sh: creating $PREFIX/venv"
"$PYTHON" -m venv "$PREFIX/venv"
# Only the kit's wheels: no index, and no pip configuration of this host (files or PIP_* variables)
# that could add one or pin other versions.
unset $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p')
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 "$PREFIX/venv/bin/python" -m pip install -q --no-index \
    --disable-pip-version-check --find-links "$KIT/wheels" "bundle==$(cat "$KIT/VERSION")"

mkdir -p "$BINDIR"
ln -sfn "$PREFIX/venv/bin/bundle" "$BINDIR/bundle"
install -d -m 0755 "$KEYS_DIR"
install -d -m 0755 "$MANDIR/man1" "$DOCDIR"
install -m 0644 "$KIT/man/man1/bundle.1" "$MANDIR/man1/bundle.1"
cp -R "$KIT/docs/." "$KIT/contrib" "$DOCDIR/"

if [ "$CREATE_USER" = 1 ] && [ "$(id -u)" = 0 ]; then
    getent group "$BUNDLE_USER" >/dev/null || groupadd --system "$BUNDLE_USER"
    getent passwd "$BUNDLE_USER" >/dev/null || useradd --system --gid "$BUNDLE_USER" --home-dir "$CHECK_DIR" \
        --no-create-home --shell /usr/sbin/nologin --comment "bundle check (contrib/bundle-check.service)" "$BUNDLE_USER"
    install -d -m 0700 -o "$BUNDLE_USER" -g "$BUNDLE_USER" "$CHECK_DIR"
    echo "install.sh: user and group $BUNDLE_USER (contrib/bundle-check.service), its state dir $CHECK_DIR"
elif [ "$CREATE_USER" = 1 ]; then
    echo "install.sh: not root: create the user $BUNDLE_USER and $CHECK_DIR (owned by it, 0700) before using contrib/"
fi

echo "install.sh: installed $("$BINDIR/bundle" --version) as $BINDIR/bundle"
echo "install.sh: man page $MANDIR/man1/bundle.1, docs and contrib/ (systemd units) in $DOCDIR"
echo "install.sh: trust store $KEYS_DIR: copy the builders' PUBLIC keys there (.asc), then run 'bundle doctor'"
