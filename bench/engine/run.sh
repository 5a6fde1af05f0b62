#!/usr/bin/env bash
# make bench-engine: policyd's engine beside onnxruntime-node, same machine, same run.
#
#   bash bench/engine/run.sh [policyctl bench engine flags...]
#
# Env knobs: SECONDS_PER_CASE (timed seconds per peer, mode, model and batch; default 2),
# MODELS (comma-separated, default all of models.json), BATCHES (default 1,32,256),
# PEERS_DIR (default ../shared/peers; only read), GO, NODE, NPM.
# Needs lib/ (make native); the run uses a private copy of it. Writes build/peers/ (ORT, set
# up from PEERS_DIR, never written there), build/bench-engine-lib/, bin/policyctl and
# build/bench-engine.md (the report, also on stdout).
set -euo pipefail
cd "$(dirname "$0")/../.."

PEERS_DIR=${PEERS_DIR:-../shared/peers}
SECONDS_PER_CASE=${SECONDS_PER_CASE:-2}
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
NODE=${NODE:-node}
export NPM=${NPM:-npm}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

for f in models/models.json; do
  [[ -f $PEERS_DIR/$f ]] || { echo "bench-engine: $PEERS_DIR/$f is missing" >&2; exit 1; }
done
[[ -f lib/libpolicyd.so ]] || { echo "bench-engine: lib/libpolicyd.so is missing: run 'make native' first" >&2; exit 1; }

# ORT, laid out as ort_bench.js expects (node/node_modules beside it), under build/.
bash bench/prepare-ort.sh "$PEERS_DIR"

# A private copy of lib/: a concurrent `make native` rewrites lib/*.so in place, which would
# crash or silently change a library this run has mapped. LD_LIBRARY_PATH beats the RUNPATH.
rm -rf build/bench-engine-lib && mkdir -p build/bench-engine-lib
cp lib/*.so build/bench-engine-lib/
export LD_LIBRARY_PATH="$PWD/build/bench-engine-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

mkdir -p bin
"$GO" build -o bin/policyctl ./cmd/policyctl

args=(bench engine --models "$PEERS_DIR/models" --ort-script build/peers/ort_bench.js --node "$NODE"
      --seconds "$SECONDS_PER_CASE")
[[ -n ${MODELS:-} ]] && args+=(--model "$MODELS")
[[ -n ${BATCHES:-} ]] && args+=(--batch "$BATCHES")

bin/policyctl "${args[@]}" "$@" | tee build/bench-engine.md.tmp
mv build/bench-engine.md.tmp build/bench-engine.md
echo "bench-engine: report in build/bench-engine.md" >&2
