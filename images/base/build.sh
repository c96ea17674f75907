#!/usr/bin/env bash
# Build the offline base image Genesis's toolchain images start FROM.
#
# No image registry is needed: a minimal Debian root filesystem is made with
# debootstrap from Debian's package mirror and imported with `docker import`.
# On a host that can pull images, set GENESIS_BASE_IMAGE=debian:bookworm-slim
# instead and skip this script.
set -euo pipefail
name=${1:-${GENESIS_BASE_IMAGE:-genesis/base:bookworm}}
mirror=${GENESIS_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$name" >/dev/null 2>&1; then
  echo "genesis-setup: base image $name present" >&2
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root=$(mktemp -d /tmp/genesis-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "genesis-setup: debootstrap bookworm into $root (about a minute)" >&2
debootstrap --variant=minbase --include=python3,git,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$name" >/dev/null
echo "genesis-setup: imported $name" >&2
