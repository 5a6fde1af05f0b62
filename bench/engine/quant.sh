#!/usr/bin/env bash
# make bench-quant: issue 15's int8 and attention targets, policyd beside onnxruntime-node in one
# run (docs/benchmarks.md#int8-and-attention-make-bench-quant).
#
#   bash bench/engine/quant.sh [policyctl bench engine flags...]
#
# Makes build/bench-models/ with pd_make_bench_models (mlp-large.onnx copied from the peers,
# mlp-large-int8.onnx in ONNX Runtime quantize_dynamic's pattern, attention-einsum.onnx and their
# models.json), then runs bench/engine/run.sh on them at batches 1 and 256 (BATCHES overrides):
# targets int8 vs f32 throughput at b256 (≥ 2×), int8 policyd vs ORT at b256 (≥ 1.2×), attention
# p50 at b1 (≤ 0.8× ORT), each printed as met / missed / "refused: <error>" (a model policyd
# refuses to load does not fail the run), and every output checked against ORT's.
# Env: BUILD_DIR (default build), PEERS_DIR, SECONDS_PER_CASE, BATCHES, and run.sh's knobs.
# Report: build/bench-quant.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD_DIR=${BUILD_DIR:-build}
PEERS_DIR=${PEERS_DIR:-../shared/peers}
src=$PEERS_DIR/models/mlp-large.onnx
[[ -f $src ]] || { echo "bench-quant: $src is missing" >&2; exit 1; }
[[ -f $BUILD_DIR/build.ninja || -f $BUILD_DIR/Makefile ]] || { echo "bench-quant: $BUILD_DIR is not configured: run 'make native' first" >&2; exit 1; }

cmake --build "$BUILD_DIR" --target pd_make_bench_models >&2
mkdir -p build/bench-models
"$BUILD_DIR/bin/pd_make_bench_models" --mlp-large "$src" --out build/bench-models >&2

MODELS_DIR=build/bench-models BATCHES=${BATCHES:-1,256} REPORT=build/bench-quant.md \
  PEERS_DIR="$PEERS_DIR" bash bench/engine/run.sh --allow-refused "$@"
