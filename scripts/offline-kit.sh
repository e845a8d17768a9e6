#!/usr/bin/env bash
# Build the offline kit: every wheel `bundle` needs, for one Python version and platform, plus
# install.sh, the man page, the docs, contrib/ (systemd units) and SHA256SUMS, as dist/bundle-offline-kit-<version>-py<XY>-<platform>.tar.gz.
#
#   make offline-kit                    # for this machine's Python and platform
#   make offline-kit KIT_PYTHON=3.12    # binary wheels for CPython 3.12 on manylinux (this arch)
#   KIT_PLATFORM=manylinux_2_28_aarch64 # another platform tag (with KIT_PYTHON)
#
# Needs a package index (PyPI) on this, the internet side. The kit then installs with no index.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-python3}"
DIST="${DIST:-$REPO/dist}"
VERSION="$("$PY" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$REPO/pyproject.toml")"

if [ -n "${KIT_PYTHON:-}" ]; then
    case "$KIT_PYTHON" in
        3.[0-9]|3.[0-9][0-9]) ;;
        *) echo "offline-kit: KIT_PYTHON must look like 3.12, not '$KIT_PYTHON'" >&2; exit 2 ;;
    esac
    PYVER="$KIT_PYTHON"
    ARCH="$(uname -m)"
    PLATFORM="${KIT_PLATFORM:-manylinux2014_$ARCH}"
    # manylinux2014 == manylinux_2_17; list the newer glibc tags too: some wheels only ship those
    PLATFORM_ARGS=(--platform "$PLATFORM")
    if [ -z "${KIT_PLATFORM:-}" ]; then
        for tag in manylinux_2_17 manylinux_2_28 manylinux_2_31 manylinux_2_34; do
            PLATFORM_ARGS+=(--platform "${tag}_$ARCH")
        done
    fi
    TARGET_ARGS=(--only-binary=:all: --python-version "$PYVER" --implementation cp
                 --abi "cp${PYVER/./}" "${PLATFORM_ARGS[@]}")
else
    PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    PLATFORM="$("$PY" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')"
    TARGET_ARGS=(--only-binary=:all:)
fi

NAME="bundle-offline-kit-$VERSION-py${PYVER/./}-$PLATFORM"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
KIT="$WORK/$NAME"
mkdir -p "$KIT/wheels" "$DIST"

echo "offline-kit: building the bundle $VERSION wheel" >&2
"$PY" -m pip wheel -q --no-deps -w "$WORK/project" "$REPO" >&2
WHEEL="$(ls "$WORK"/project/bundle-"$VERSION"-*.whl)"
cp "$WHEEL" "$KIT/wheels/"

echo "offline-kit: fetching dependency wheels for Python $PYVER on $PLATFORM" >&2
"$PY" -m pip download -q -d "$KIT/wheels" "${TARGET_ARGS[@]}" "$WHEEL" >&2

install -m 0755 "$REPO/scripts/install.sh" "$KIT/install.sh"
# What the server's admin reads there, with no network: the man page, the docs, the systemd units.
mkdir -p "$KIT/man/man1" "$KIT/docs" "$KIT/contrib"
install -m 0644 "$REPO/docs/bundle.1" "$KIT/man/man1/bundle.1"
install -m 0644 "$REPO"/docs/*.md "$REPO/README.md" "$KIT/docs/"
install -m 0644 "$REPO"/contrib/* "$KIT/contrib/"
printf '%s\n' "$PYVER" > "$KIT/PYTHON_VERSION"
printf '%s\n' "$VERSION" > "$KIT/VERSION"
(cd "$KIT" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)

OUT="$DIST/$NAME.tar.gz"
tar -C "$WORK" --owner=0 --group=0 --numeric-owner -czf "$OUT.tmp" "$NAME"
mv "$OUT.tmp" "$OUT"
# The checksum file the intranet admin checks with `sha256sum -c` before unpacking
(cd "$DIST" && sha256sum "$NAME.tar.gz" > "$NAME.tar.gz.sha256")
echo "$OUT"
