#!/usr/bin/env bash
# The main job: two experiments against the sample monorepo, on the embedded
# defaults (SQLite, local Docker), driven through the `genesis` CLI.
#
# One good change (replaces an LLM call with a rule; tests pass) and one bad
# change (breaks add(); tests fail). Prints both outcomes with metrics beside
# the baseline, then shows the rolled-back sandbox gone and the merged one kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
home=$root/.genesis/demo
genesis=$root/.venv/bin/genesis
mkdir -p "$home"
"$root/scripts/make-sample-repo.sh" "$home/monorepo"
cat > "$home/genesis.yaml" <<YAML
home: .
repos:
  monorepo:
    path: monorepo
preserve_ttl_s: 3600
YAML
export GENESIS_CONFIG=$home/genesis.yaml

# Fresh experiment ids each run: the same id would be a duplicate (no rerun).
run_id=$(date +%s)
good=$home/good-$run_id.json bad=$home/bad-$run_id.json
"$root/.venv/bin/python" - "$root/examples/requests" "$good" "$bad" "$run_id" <<'PY'
import json, sys, uuid, yaml
src, good, bad, run = sys.argv[1:]
for name, out in (("good-change.yaml", good), ("bad-change.yaml", bad)):
    body = yaml.safe_load(open(f"{src}/{name}"))
    body["experiment_id"] = str(uuid.uuid4())
    json.dump(body, open(out, "w"))
PY
good_id=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['experiment_id'])" "$good")
bad_id=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['experiment_id'])" "$bad")

echo "== genesis apply"
"$genesis" apply -f "$good" -f "$bad"
echo "== genesis serve --once (builds the snapshot image the first time)"
"$genesis" serve --once 2>/dev/null
echo "== genesis get experiments -o wide"
"$genesis" get experiments -o wide -l repo=monorepo | head -n 3
for id in "$good_id" "$bad_id"; do
  echo; echo "== genesis describe experiment $id"
  "$genesis" describe experiment "$id" | sed -n '/^Name:/,/^Events:/p'
done
echo; echo "== genesis get sandboxes (the merged one is kept, the rolled-back one is gone)"
"$genesis" get sandboxes | grep -E "NAME|$good_id|$bad_id" || true

good_rec=$("$genesis" get experiment "$good_id" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['status']['recommendation'])")
bad_rec=$("$genesis" get experiment "$bad_id" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['status']['recommendation'])")
kept=$("$genesis" get sandboxes -o name | grep -c "$good_id" || true)
gone=$("$genesis" get sandboxes -o name | grep -c "$bad_id" || true)
echo
echo "good change: $good_rec (sandbox kept: $kept)   bad change: $bad_rec (sandboxes left: $gone)"
case "$good_rec" in merge|merge_with_adaptations) ;; *) echo "demo: unexpected verdict for the good change" >&2; exit 1;; esac
[ "$bad_rec" = rollback ] && [ "$kept" = 1 ] && [ "$gone" = 0 ] || { echo "demo: unexpected result" >&2; exit 1; }
