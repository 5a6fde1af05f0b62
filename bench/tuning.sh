#!/usr/bin/env bash
# The measurements behind docs/tuning.md: short runs of bin/policyd under `policyctl bench load`
# with one CPU setting changed at a time. Prints markdown tables (also to build/bench/tuning.md).
#
#   bash bench/tuning.sh            # ~3 min on 2 cores; needs lib/, bin/policyd, bin/policyctl
#
# Env: PEERS_DIR (default ../shared/peers), SECONDS_PER_RUN (default 2). Servers are started
# and stopped by PID; only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR=${PEERS_DIR:-../shared/peers}
D=${SECONDS_PER_RUN:-2}
OUT=build/bench/tuning
rm -rf "$OUT" && mkdir -p "$OUT"
for m in mlp-med mlp-large; do
  bin/policyctl artifacts add --repository "$OUT/repo" --name "$m" --version 1.0.0 "$PEERS_DIR/models/$m.onnx" >/dev/null
done
PORT=18370
SRV=""
stop() { [ -n "$SRV" ] || return 0; kill -TERM "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; SRV=""; }
trap stop EXIT
trap 'stop; exit 130' INT TERM
# start [env KEY=V...] [taskset ...] -- policyd flags...
start() {
  env "$@" bin/policyd --repository "$OUT/repo" --addr "127.0.0.1:$PORT" --grpc-addr off --log-level warn >>"$OUT/server.log" 2>&1 &
  SRV=$!
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready" && return 0
    kill -0 "$SRV" 2>/dev/null || { echo "policyd exited; see $OUT/server.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "policyd not ready" >&2; exit 1
}
# run LABEL CLIENT_PREFIX MODEL BATCH CONC [load flags...]
run() {
  local label=$1 prefix=$2 model=$3 batch=$4 conc=$5; shift 5
  $prefix bin/policyctl bench load -url "http://127.0.0.1:$PORT/v2/models/$model/infer" -model "$model" -batch "$batch" \
    -peers "$PEERS_DIR" -c "$conc" -d "${D}s" -warmup 0.5s -server-pid "$SRV" "$@" |
    jq -r --arg l "$label" --arg m "$model" --argjson b "$batch" \
      '"| \($l) | \($m) b\($b) \(.protocol) c\(.concurrency) | \(.p50_us) | \(.p99_us) | \(.rps|floor) | \(.rps*$b|floor) | \(.server_cpu_us_per_req) | \(.other_cores) |"'
}
table_head() { printf '\n### %s\n\n| setting | load | p50 µs | p99 µs | req/s | inf/s | srv CPU µs/req | other cores |\n|---|---|---|---|---|---|---|---|\n' "$1"; }
isa_of() { # the ISA line and the kernels oneDNN picks under the current environment
  ONEDNN_VERBOSE=1 "$@" bin/policyd --repository "$OUT/repo" --addr "127.0.0.1:$((PORT+1))" --grpc-addr off >"$OUT/isa.log" 2>&1 &
  local p=$!
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$((PORT+1))/v2/health/ready" && break; sleep 0.1; done
  bin/policyctl bench load -url "http://127.0.0.1:$((PORT+1))/v2/models/mlp-med/infer" -model mlp-med -peers "$PEERS_DIR" -d 50ms -warmup 0s >/dev/null
  kill -TERM $p; wait $p 2>/dev/null || true
  echo "$(sed -n 's/^onednn_verbose,info,cpu,isa://p' "$OUT/isa.log" | head -1); matmul kernel: $(grep -o 'matmul,[a-z_:0-9]*' "$OUT/isa.log" | sort -u | sed 's/matmul,//' | tr '\n' ' ')"
}

{
echo "## CPU tuning measurements ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))"
echo
echo "Each row: ${D} s measured after 0.5 s warm-up, closed loop; server and load generator share the cores unless pinned."

table_head "1. ISA cap (ONEDNN_MAX_CPU_ISA); default settings otherwise"
for isa in DEFAULT AVX512_CORE AVX2 SSE41; do
  envs=(); [ "$isa" = DEFAULT ] || envs=(ONEDNN_MAX_CPU_ISA=$isa)
  echo "| $isa: $(isa_of env "${envs[@]}") | | | | | | | |"
  start "${envs[@]}"
  run "$isa" "" mlp-med 1 1
  run "$isa" "" mlp-large 32 2 -binary
  stop
done

table_head "2. engine.threads × instances (--threads, POLICYD_MODELS__i__INSTANCES)"
for ti in "1 2" "1 1" "2 1"; do
  set -- $ti
  start POLICYD_MODELS__0__NAME=mlp-med POLICYD_MODELS__0__INSTANCES=$2 POLICYD_MODELS__1__NAME=mlp-large POLICYD_MODELS__1__INSTANCES=$2 \
    POLICYD_ENGINE__THREADS=$1
  run "threads=$1 instances=$2" "" mlp-med 1 1
  run "threads=$1 instances=$2" "" mlp-med 256 2 -binary
  run "threads=$1 instances=$2" "" mlp-large 32 1 -binary
  stop
done

table_head "3. Pinning: server on core 0, load generator on core 1 (taskset)"
start
run "unpinned" "" mlp-med 1 1
run "unpinned" "" mlp-med 1 16
stop
start taskset -c 0
run "server cpu0, client cpu1" "taskset -c 1" mlp-med 1 1
run "server cpu0, client cpu1" "taskset -c 1" mlp-med 1 16
stop

table_head "4. OpenMP (engine.threads=2, 1 instance: the only setting where oneDNN runs an OpenMP team)"
for omp in "DEFAULT" "OMP_WAIT_POLICY=passive" "OMP_WAIT_POLICY=active" "GOMP_SPINCOUNT=0" "OMP_PROC_BIND=true"; do
  envs=(POLICYD_ENGINE__THREADS=2 POLICYD_MODELS__0__NAME=mlp-med POLICYD_MODELS__0__INSTANCES=1 POLICYD_MODELS__1__NAME=mlp-large POLICYD_MODELS__1__INSTANCES=1)
  [ "$omp" = DEFAULT ] || envs+=("$omp")
  start "${envs[@]}"
  run "$omp" "" mlp-large 32 1 -binary
  run "$omp" "" mlp-med 1 16
  stop
done
} | tee "$OUT/tuning.md"
