#!/usr/bin/env bash
# The targets of issue 18 (rollout: shadow evaluation, deadline-bounded actions), measured in
# the same run as the rest of `make bench` (bench/run.sh's stage "targets"):
#   - shadow at 100 % sampling on mlp-med batch 1, 16 connections: the primary's p50 and p99
#     within 10 % of the run without shadow, throughput ≥ 0.9× (bench/shadow/run.sh: medians
#     of alternated rounds, the server's default shadow CPU budget);
#   - 3× overload with deadlines of 2 ms: 0 answers later than deadline + 200 µs
#     (bench/deadline.sh; counted at the client), twice: mlp-med with JSON bodies, where 3×
#     the capacity overloads the HTTP front end (a run is 5 µs), and mlp-large with binary
#     bodies, where it overloads the model's queue (a run is ~180 µs), which deadlines act on.
# Writes DIR/targets.md (a table: target, measured, met or missed) and the raw outputs
# DIR/targets-shadow.txt, DIR/targets-deadline.txt and DIR/targets-deadline-large.txt, appends the table to DIR/report.md
# when there is one, and prints it.
#
#   bash bench/targets.sh DIR        # BENCH_QUICK=1: fewer rounds, shorter overload
#
# Env: BENCH_QUICK, TARGET_ROUNDS, TARGET_N (shadow rounds and requests per run),
# TARGET_DURATION (the overload run), PEERS_DIR, GO. Needs lib/ (make native).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: bench/targets.sh DIR}
mkdir -p "$DIR"
if [[ ${BENCH_QUICK:-0} = 1 ]]; then
  rounds=${TARGET_ROUNDS:-3} n=${TARGET_N:-10000} dur=${TARGET_DURATION:-2s}
else
  rounds=${TARGET_ROUNDS:-9} n=${TARGET_N:-20000} dur=${TARGET_DURATION:-5s}
fi
[[ -f lib/libpolicyd.so ]] || { echo "targets: lib/libpolicyd.so is missing: run 'make native' first" >&2; exit 1; }
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "targets: shadow overhead, $rounds alternated rounds of $n requests" >&2
shadow_ok=1
ROUNDS=$rounds N=$n bash bench/shadow/run.sh >"$DIR/targets-shadow.txt" 2>&1 || shadow_ok=0
echo "targets: deadline overload, $dur" >&2
# deadline.sh's exit status is not its verdict (it ends with a test of PROBE, false when
# unset): the run counts when it printed its tally.
DURATION=$dur bash bench/deadline.sh >"$DIR/targets-deadline.txt" 2>&1 || true
MODEL=mlp-large BINARY=1 DURATION=$dur bash bench/deadline.sh >"$DIR/targets-deadline-large.txt" 2>&1 || true

# met: the measured value meets the target; "not run" when the measurement failed.
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { if (v == "") { print "not run"; exit }
  ok = (op == "<=") ? (v + 0 <= t + 0) : (op == ">=") ? (v + 0 >= t + 0) : (v + 0 == t + 0); print ok ? "met" : "**missed**" }'; }

read -r p50 p99 rps < <(awk '/^on \/ off/ { print $4, $5, $6 }' "$DIR/targets-shadow.txt") || true
cmp=$(awk -F': ' '/^sampled requests compared/ { print $2 }' "$DIR/targets-shadow.txt")
base=$(awk '/^shadow off/ { printf "%s µs, %s µs, %s req/s", $3, $4, $5 }' "$DIR/targets-shadow.txt")
# deadline_row FILE WHAT: the table rows of one deadline run.
deadline_row() {
  local late sent marked
  late=$(sed -n 's/^answers later than deadline + [^ ]* at the client: \([0-9]*\).*/\1/p' "$1")
  sent=$(sed -n 's/^sent \([0-9]*\) in.*/\1/p' "$1")
  marked=$(sed -n 's/.*of which later than deadline + [^:]*: \([0-9]*\).*/\1/p' "$1")
  echo "| 3× overload, deadline 2 ms, $2: 0 answers later than deadline + 200 µs (client) | ${late:-–} of ${sent:-–} | $(verdict "$late" "==" 0) |"
  echo "| (the same, as the server marked them late, X-Policyd-Late-Us) | ${marked:-–} | |"
}
offered=$(sed -n 's/^capacity: \(.*\)/\1/p' "$DIR/targets-deadline.txt")
offered_large=$(sed -n 's/^capacity: \(.*\)/\1/p' "$DIR/targets-deadline-large.txt")
[[ $shadow_ok = 1 ]] || p50="" p99="" rps=""

{
  echo
  echo "## Issue 18 targets (rollout)"
  echo
  echo "Measured in this run on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)."
  echo "Shadow: bench/shadow/run.sh, medians of $rounds alternated rounds of $n requests, mlp-med batch 1, 16 connections, the shadow at 100 % with the server's default CPU budget (server.shadow_cpu_share); without shadow: $base."
  echo "Deadlines: bench/deadline.sh for $dur: mlp-med, JSON ($offered); mlp-large, binary ($offered_large)."
  echo
  echo "| target | measured | |"
  echo "| --- | --- | --- |"
  echo "| shadow on: primary p50 ≤ 1.10× of shadow off | ${p50:-–}× | $(verdict "$p50" "<=" 1.10) |"
  echo "| shadow on: primary p99 ≤ 1.10× of shadow off | ${p99:-–}× | $(verdict "$p99" "<=" 1.10) |"
  echo "| shadow on: throughput ≥ 0.9× of shadow off | ${rps:-–}× | $(verdict "$rps" ">=" 0.9) |"
  echo "| (shadow on: share of the sampled requests compared; the rest dropped, counted) | ${cmp:-–} | |"
  deadline_row "$DIR/targets-deadline.txt" "mlp-med (JSON)"
  deadline_row "$DIR/targets-deadline-large.txt" "mlp-large (binary)"
  echo
  echo "Raw outputs: targets-shadow.txt, targets-deadline.txt, targets-deadline-large.txt."
} >"$DIR/targets.md"
[[ -f $DIR/report.md ]] && cat "$DIR/targets.md" >>"$DIR/report.md"
cat "$DIR/targets.md"
