#!/usr/bin/env bash
# Lays out onnxruntime-node under build/peers/ from the peer harness (never writing there):
# ort_bench.js, node/package.json + package-lock.json, and `npm ci --ignore-scripts` when
# node_modules is missing or the lock file changed. Used by bench/engine/run.sh and bench/run.sh.
#
#   bash bench/prepare-ort.sh PEERS_DIR      # exit 1 when npm fails
set -euo pipefail
PEERS_DIR=${1:?usage: prepare-ort.sh PEERS_DIR}
NPM=${NPM:-npm}
for f in ort_bench.js node/package.json node/package-lock.json; do
  [[ -f $PEERS_DIR/$f ]] || { echo "prepare-ort: $PEERS_DIR/$f is missing" >&2; exit 1; }
done
mkdir -p build/peers/node
cp "$PEERS_DIR/ort_bench.js" build/peers/ort_bench.js
lock_changed=0
cmp -s "$PEERS_DIR/node/package-lock.json" build/peers/node/package-lock.json || lock_changed=1
cp "$PEERS_DIR/node/package.json" "$PEERS_DIR/node/package-lock.json" build/peers/node/
if [[ $lock_changed = 1 || ! -f build/peers/node/node_modules/onnxruntime-node/package.json ]]; then
  echo "prepare-ort: npm ci in build/peers/node" >&2
  (cd build/peers/node && "$NPM" ci --ignore-scripts --no-audit --no-fund >&2)
fi
