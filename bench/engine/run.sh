#!/usr/bin/env bash
# make bench-engine: policyd's engine beside onnxruntime-node, same machine, same run.
#
#   bash bench/engine/run.sh [policyctl bench engine flags...]
#
# Env knobs: SECONDS_PER_CASE (timed seconds per peer, mode, model and batch; default 2),
# MODELS (comma-separated, default all of models.json), BATCHES (default 1,32,256),
# PEERS_DIR (default ../shared/peers; only read), MODELS_DIR (models.json and the .onnx files;
# default $PEERS_DIR/models; make bench-quant points it at build/bench-models), REPORT (default
# build/bench-engine.md), GO, NODE, NPM.
# policyd's outputs are compared with ORT's on every model and batch (ort_outputs.js, copied
# beside ort_bench.js); a mismatch fails the run.
# Needs lib/ (make native); the run uses a private copy of it. Writes build/peers/ (ORT, set
# up from PEERS_DIR, never written there), build/bench-engine-lib/, bin/policyctl and
# build/bench-engine.md (the report, also on stdout).
set -euo pipefail
cd "$(dirname "$0")/../.."

PEERS_DIR=${PEERS_DIR:-../shared/peers}
MODELS_DIR=${MODELS_DIR:-$PEERS_DIR/models}
REPORT=${REPORT:-build/bench-engine.md}
SECONDS_PER_CASE=${SECONDS_PER_CASE:-2}
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
NODE=${NODE:-node}
export NPM=${NPM:-npm}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

[[ -f $MODELS_DIR/models.json ]] || { echo "bench-engine: $MODELS_DIR/models.json is missing" >&2; exit 1; }
[[ -f lib/libpolicyd.so ]] || { echo "bench-engine: lib/libpolicyd.so is missing: run 'make native' first" >&2; exit 1; }

# ORT, laid out as ort_bench.js expects (node/node_modules beside it), under build/.
bash bench/prepare-ort.sh "$PEERS_DIR"
cp bench/engine/ort_outputs.js build/peers/ort_outputs.js

# A private copy of lib/: a concurrent `make native` rewrites lib/*.so in place, which would
# crash or silently change a library this run has mapped. LD_LIBRARY_PATH beats the RUNPATH.
rm -rf build/bench-engine-lib && mkdir -p build/bench-engine-lib
cp lib/*.so build/bench-engine-lib/
export LD_LIBRARY_PATH="$PWD/build/bench-engine-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

mkdir -p bin
"$GO" build -o bin/policyctl ./cmd/policyctl

args=(bench engine --models "$MODELS_DIR" --ort-script build/peers/ort_bench.js --node "$NODE"
      --seconds "$SECONDS_PER_CASE")
[[ -n ${MODELS:-} ]] && args+=(--model "$MODELS")
[[ -n ${BATCHES:-} ]] && args+=(--batch "$BATCHES")

set +e
bin/policyctl "${args[@]}" "$@" | tee "$REPORT.tmp"
rc=${PIPESTATUS[0]}
set -e
mv "$REPORT.tmp" "$REPORT"
echo "bench-engine: report in $REPORT" >&2
exit "$rc"
