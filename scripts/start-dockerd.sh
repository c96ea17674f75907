#!/usr/bin/env bash
# Make sure a Docker Engine answers on /var/run/docker.sock.
# Installs Debian's docker.io when no engine exists, reuses a running daemon,
# and removes a stale pid file left by a killed daemon before starting one.
set -euo pipefail

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if answers; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "genesis-setup: installing docker.io" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if answers; then exit 0; fi
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  rm -f "$pidfile"
fi
log=${GENESIS_DOCKERD_LOG:-/var/log/genesis-dockerd.log}
config=${GENESIS_DOCKERD_CONFIG:-/etc/docker/daemon.json}  # runtimes (runsc): scripts/register-runsc.sh
args=()
[ -f "$config" ] && args=(--config-file "$config")
setsid dockerd "${args[@]}" >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  if answers; then exit 0; fi
  sleep 1
done
echo "genesis-setup: dockerd did not answer within 60 s; see $log" >&2
exit 1
