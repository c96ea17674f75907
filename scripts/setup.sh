#!/usr/bin/env bash
# Everything Genesis needs on a fresh Debian machine, idempotent:
#   Docker Engine (Debian's docker.io) running with gVisor's runsc registered,
#   a venv with the package and its test tools, the offline base image, and
#   PostgreSQL's server binaries for the tests. Safe to run again: each step
#   checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v git >/dev/null 2>&1 || need_apt+=(git)
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)  # promtool and a server for the tests
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium fonts-dejavu-core)  # the web UI's browser tests (Playwright drives it)
command -v runsc >/dev/null 2>&1 || need_apt+=(runsc)  # gVisor: sandbox_runtime runsc, and its tests
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "genesis-setup: installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

scripts/register-runsc.sh  # before a fresh daemon starts (it reads the config), or reloads a running one
scripts/start-dockerd.sh
scripts/register-runsc.sh  # a daemon that was just installed and started

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import orchestrator, pytest, hypothesis" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.genesis-installed ]; then
  echo "genesis-setup: installing the package into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'
  touch .venv/.genesis-installed
fi

base=${GENESIS_BASE_IMAGE:-genesis/base:bookworm}
if ! docker image inspect "$base" >/dev/null 2>&1; then
  images/base/build.sh "$base"
fi
