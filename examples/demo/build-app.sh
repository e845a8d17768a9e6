#!/usr/bin/env bash
# Build the demo app image: build-app.sh TAG VERSION [broken]
set -euo pipefail
tag=$1 version=$2 broken=0
[ "${3:-}" = broken ] && broken=1
here=$(cd "$(dirname "$0")" && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp -r "$here/app/." "$ctx/"
mkdir -p "$ctx/bin" && cp /bin/busybox "$ctx/bin/busybox"
if ! log=$(DOCKER_BUILDKIT=0 docker build -q --build-arg APP_VERSION="$version" --build-arg APP_BROKEN="$broken" \
        -t "$tag" "$ctx" 2>&1); then
    echo "build-app: docker build of $tag failed:" >&2
    echo "$log" >&2
    exit 1
fi
echo "$tag"
