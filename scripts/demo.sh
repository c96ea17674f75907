#!/usr/bin/env bash
# The main job, as an agent sees Genesis: on the embedded defaults (SQLite,
# local Docker, a local NATS server with JetStream), `genesis serve` runs in
# the background and examples/agent.py sends two experiment requests over
# NATS and awaits their outcomes:
#   a good change (replaces an LLM call with a rule; tests pass) -> merge,
#     its sandbox kept for review;
#   a bad change (add() subtracts; tests fail) -> rollback, its sandbox gone.
# Both outcomes are printed with their metrics beside the baseline, and the
# good one is read back through the HTTP API (the remote CLI, `--server`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
home=$root/.genesis/demo
genesis=$root/.venv/bin/genesis
python=$root/.venv/bin/python
port=${GENESIS_DEMO_NATS_PORT:-4222}
api_port=${GENESIS_DEMO_API_PORT:-8080}
mkdir -p "$home"
"$root/scripts/make-sample-repo.sh" "$home/monorepo"
cat > "$home/genesis.yaml" <<YAML
home: .
repos:
  monorepo:
    path: monorepo
preserve_ttl_s: 3600
nats:
  url: nats://127.0.0.1:$port
api:
  port: $api_port   # loopback, no tokens file: every local caller is the operator
YAML
export GENESIS_CONFIG=$home/genesis.yaml

nats_pid=$("$root/scripts/start-nats.sh" "$home/nats" "$port")
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null || true
}
trap cleanup EXIT

"$genesis" db upgrade >/dev/null
"$genesis" serve > "$home/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 100); do
  grep -q '"nats ready"' "$home/serve.log" && grep -q '"API ready"' "$home/serve.log" && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$home/serve.log" >&2; exit 1; }
  sleep 0.2
done

echo "== examples/agent.py: two requests over NATS (the first run builds the snapshot image)"
"$python" "$root/examples/agent.py" --nats "nats://127.0.0.1:$port" --out "$home/outcomes.json" \
  "$root/examples/requests/good-change.yaml" "$root/examples/requests/bad-change.yaml"

read -r good_id good_rec bad_id bad_rec < <("$python" - "$home/outcomes.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
print(o["good-change"]["experiment_id"], o["good-change"]["recommendation"],
      o["bad-change"]["experiment_id"], o["bad-change"]["recommendation"])
PY
)
echo; echo "== genesis get experiments -o wide"
"$genesis" get experiments -o wide | grep -E "^NAME|$good_id|$bad_id"
echo; echo "== genesis get sandboxes (the merged one is kept, the rolled-back one is gone)"
"$genesis" get sandboxes | grep -E "^NAME|$good_id|$bad_id" || true
# By the EXPERIMENT column: a sandbox claimed from a warm pool has the pool's name.
kept=$("$genesis" get sandboxes | grep -c "$good_id" || true)
gone=$("$genesis" get sandboxes | grep -c "$bad_id" || true)
echo
echo "good change: $good_rec (sandbox kept: $kept)   bad change: $bad_rec (sandboxes left: $gone)"
echo "details: $genesis describe experiment $good_id   (GENESIS_CONFIG=$GENESIS_CONFIG)"
echo; echo "== the same record through the HTTP API: genesis --server http://127.0.0.1:$api_port get experiment"
api_rec=$("$genesis" --server "http://127.0.0.1:$api_port" get experiment "$good_id" -o json \
  | "$python" -c 'import json, sys; print(json.load(sys.stdin)["status"]["recommendation"])')
echo "API: $api_rec   (web UI at http://127.0.0.1:$api_port/ while genesis serve runs)"
[ "$api_rec" = "$good_rec" ] || { echo "demo: the API disagrees with the outcome" >&2; exit 1; }
case "$good_rec" in merge|merge_with_adaptations) ;; *) echo "demo: unexpected verdict for the good change" >&2; exit 1;; esac
[ "$bad_rec" = rollback ] && [ "$kept" = 1 ] && [ "$gone" = 0 ] || { echo "demo: unexpected result" >&2; exit 1; }
