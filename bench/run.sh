#!/usr/bin/env bash
# make bench: policyd beside the peers of ../shared/peers, one run, one report.
#
#   bash bench/run.sh [policyctl bench suite flags...]
#
# Env knobs: BENCH_QUICK=1 (shorter runs, fewer points: ~4 min instead of ~12),
# BENCH_SAVE_BASELINE=1 (write bench/baselines/<cpu>--<isa>.json from this run), BENCH_RUN_ID,
# BENCH_STAGES (comma-separated subset of matrix,binary,grpc,shm,batch-sweep,conc-sweep,open-loop,memory,search,targets;
# targets: issue 18's shadow-overhead and deadline-overload targets, bench/targets.sh, run after the suite and added to
# its report),
# BENCH_P99_TARGET (batching search, default 2ms), PEERS_DIR (default ../shared/peers; only
# read), GO, NPM. Needs lib/ (make native). Writes build/bench/<run-id>/ (report.md,
# report.json, latency-throughput.svg, the repository, server configs and logs),
# build/bench-lib/ and build/peers/ (onnxruntime-node for the Node peer, when the harness has
# none). Installs nothing with apt; a peer that is not set up is reported as such.
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS_DIR=${PEERS_DIR:-../shared/peers}
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
export NPM=${NPM:-npm}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

# The stage "targets" is this script's (bench/targets.sh), the others the suite's.
run_id=${BENCH_RUN_ID:-$(date -u +%Y-%m-%d_%H%M%S)}
suite_stages="" targets=1 suite=1
if [[ -n ${BENCH_STAGES:-} ]]; then
  targets=0
  IFS=, read -ra want <<<"$BENCH_STAGES"
  for s in "${want[@]}"; do
    if [[ $s = targets ]]; then targets=1; else suite_stages+=${suite_stages:+,}$s; fi
  done
  [[ -n $suite_stages ]] || suite=0
fi
[[ -f $PEERS_DIR/models/models.json ]] || { echo "bench: $PEERS_DIR/models/models.json is missing (PEERS_DIR)" >&2; exit 1; }
[[ -f lib/libpolicyd.so ]] || { echo "bench: lib/libpolicyd.so is missing: run 'make native' first" >&2; exit 1; }

# onnxruntime-node for the Node peer, under build/ (as make bench-engine does), unless the
# harness has its own. Without it the report says the Node peer is missing.
if [[ $suite = 1 && ! -f $PEERS_DIR/node/node_modules/onnxruntime-node/package.json ]] && command -v node >/dev/null; then
  bash bench/prepare-ort.sh "$PEERS_DIR" || echo "bench: could not install onnxruntime-node; the Node peer will be missing" >&2
fi

# A private copy of lib/ (a concurrent `make native` rewrites lib/*.so in place); the backend
# plugin is found beside the libpolicyd.so that is loaded.
rm -rf build/bench-lib && mkdir -p build/bench-lib
cp lib/*.so build/bench-lib/
export LD_LIBRARY_PATH="$PWD/build/bench-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

mkdir -p bin
"$GO" build -o bin/policyd ./cmd/policyd
"$GO" build -o bin/policyctl ./cmd/policyctl
# ghz, the gRPC rows' independent load generator (make tools; pinned in tools/ghz/go.mod). Without
# it the report leaves those rows out and says so.
if [[ $suite = 1 && ! -x tools/bin/ghz ]]; then
  (mkdir -p tools/bin && cd tools/ghz && "$GO" build -o ../bin/ghz github.com/bojand/ghz/cmd/ghz) ||
    echo "bench: could not build tools/bin/ghz; the ghz rows will be missing" >&2
fi

args=(bench suite -peers "$PEERS_DIR" -node-modules build/peers/node/node_modules -run-id "$run_id")
[[ ${BENCH_QUICK:-0} = 1 ]] && args+=(-quick)
[[ ${BENCH_SAVE_BASELINE:-0} = 1 ]] && args+=(-save-baseline)
[[ -n $suite_stages ]] && args+=(-stages "$suite_stages")
[[ -n ${BENCH_P99_TARGET:-} ]] && args+=(-p99-target "$BENCH_P99_TARGET")
rc=0
if [[ $suite = 1 ]]; then bin/policyctl "${args[@]}" "$@" || rc=$?; fi
if [[ $targets = 1 ]]; then bash bench/targets.sh "build/bench/$run_id" || rc=$((rc ? rc : $?)); fi
exit "$rc"
