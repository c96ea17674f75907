#!/usr/bin/env bash
# Build the Genesis orchestrator image without a package index in the build.
#
#   images/orchestrator/build.sh [TAG] [DOCKER BUILD OPTIONS...]
#
# TAG defaults to $GENESIS_ORCHESTRATOR_IMAGE or genesis/orchestrator:<version>.
# Options after TAG go to `docker build` unchanged (e.g. --label k=v).
#
# On the host, into a temporary build context: a wheel of this project and
# wheels of its runtime dependencies (pyproject's [project.dependencies], not
# the test extras) for CPython 3.11 on the engine's architecture, with pip's
# own wheel to install them. The Dockerfile installs them with --no-index.
# The wheel is built with a fixed SOURCE_DATE_EPOCH, so an unchanged tree
# gives byte-identical wheels and Docker reuses every cached layer.
#
# Environment:
#   PYTHON              host interpreter with pip, 3.11 or later (default: python3)
#   GENESIS_BASE_IMAGE  passed as BASE_IMAGE (default: genesis/base:bookworm;
#                       debian:bookworm-slim or python:3.11-slim with a registry)
#   PIP_CONSTRAINT      pip's own variable: pin dependency versions
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
base=${GENESIS_BASE_IMAGE:-genesis/base:bookworm}
# The image's python3 (Debian bookworm, python:3.11-slim); wheels must match it.
py_version=3.11

version=$("$python" - "$root/pyproject.toml" <<'EOF'
import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])
EOF
)
tag=${GENESIS_ORCHESTRATOR_IMAGE:-genesis/orchestrator:$version}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  tag=$1
  shift
fi
revision=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

case "$(docker version --format '{{.Server.Arch}}')" in
  amd64) arch=x86_64 ;;
  arm64) arch=aarch64 ;;
  *) echo "build.sh: unsupported engine architecture" >&2; exit 1 ;;
esac

ctx=$(mktemp -d "${TMPDIR:-/tmp}/genesis-orchestrator-build.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/src" "$ctx/wheels/deps" "$ctx/wheels/genesis"

# The project's sources only: building in a copy leaves no build/ or
# *.egg-info behind in the working tree.
cp "$root/pyproject.toml" "$ctx/src/"
cp -r "$root/orchestrator" "$ctx/src/"
cp -r "$root/images" "$root/migrations" "$root/alembic.ini" "$ctx/"
find "$ctx" -name __pycache__ -type d -prune -exec rm -rf {} +
cp "$here/Dockerfile" "$ctx/Dockerfile"

# 315532800 is 1980-01-01, the earliest time a zip entry can carry.
SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel --quiet --no-deps \
  --wheel-dir "$ctx/wheels/genesis" "$ctx/src" >&2
rm -rf "$ctx/src"

"$python" - "$root/pyproject.toml" >"$ctx/wheels/deps/requirements.txt" <<'EOF'
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
EOF
platforms=()
for p in manylinux2014 manylinux_2_17 manylinux_2_28; do
  platforms+=(--platform "${p}_${arch}")
done
"$python" -m pip download --quiet --only-binary=:all: "${platforms[@]}" \
  --python-version "$py_version" --implementation cp --abi "cp${py_version/./}" \
  --dest "$ctx/wheels/deps" --requirement "$ctx/wheels/deps/requirements.txt" pip >&2

echo "build.sh: building $tag from $base" >&2
docker build --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" --tag "$tag" "$@" "$ctx"
