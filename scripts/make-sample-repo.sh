#!/usr/bin/env bash
# Turn examples/sample-monorepo into a git repository at DEST (one commit on
# branch main). Idempotent: an existing repository at DEST is left as it is.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:?usage: make-sample-repo.sh DEST}
if [ -d "$dest/.git" ]; then exit 0; fi
mkdir -p "$dest"
cp -r "$here/examples/sample-monorepo/." "$dest/"
git -C "$dest" init -q -b main
git -C "$dest" -c user.name=genesis -c user.email=genesis@localhost add -A
git -C "$dest" -c user.name=genesis -c user.email=genesis@localhost commit -q -m "sample monorepo"
