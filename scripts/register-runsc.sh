#!/usr/bin/env bash
# Register gVisor's runsc with the Docker daemon, idempotent: merge the runtime
# into the daemon's config file (keeping whatever else it holds) and, when a
# daemon is running, send it SIGHUP so it reloads its runtimes without a restart.
#   --network=none: runsc's own network stack cannot start in the host's root
#   network namespace here; sandboxes have no network anyway (network: true is
#   refused under runsc). --platform=ptrace: no KVM on these machines.
set -euo pipefail

config=${GENESIS_DOCKERD_CONFIG:-/etc/docker/daemon.json}
runsc=$(command -v runsc)
mkdir -p "$(dirname "$config")"
changed=$(python3 - "$config" "$runsc" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
config = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
wanted = {"path": runsc, "runtimeArgs": ["--platform=ptrace", "--network=none"]}
if config.get("runtimes", {}).get("runsc") == wanted:
    print("no")
else:
    config.setdefault("runtimes", {})["runsc"] = wanted
    with open(path + ".tmp", "w") as handle:
        json.dump(config, handle, indent=2)
    os.replace(path + ".tmp", path)
    print("yes")
PY
)

known() { docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; }
pidfile=/var/run/docker.pid
if [ "$changed" = yes ] || ! known; then
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "genesis-setup: registering runsc with the running dockerd (SIGHUP)" >&2
    kill -HUP "$(cat "$pidfile")"
    for _ in $(seq 1 20); do
      if known; then exit 0; fi
      sleep 0.5
    done
    echo "genesis-setup: dockerd did not load runsc from $config (a daemon started with another config file?)" >&2
    exit 1
  fi
fi
