#!/usr/bin/env bash
# make bench-clients: the client libraries' benchmark (issue 17), report in build/bench-clients.md.
#
#   bash bench/clients/run.sh
#
# 1. policyd's engine alone: policyctl bench engine, mlp-med batch 1, mode st (one context, one
#    thread), SECONDS_PER_CASE seconds: the engine p50 the LocalPolicy target is measured against.
# 2. A policyd (cpu backend) on a free loopback port serving mlp-med from build/bench-clients/repo,
#    for bench/clients/python_http.py (the HTTP client's benchmark) when that script is there:
#    run as `python_http.py URL --model mlp-med`, its stdout goes into the report.
# 3. bench/clients/python_local.py: LocalPolicy.act beside PyTorch in-process, alternating rounds.
# Env knobs: SECONDS_PER_CASE (default 2), ROUNDS (default 6), PY (default /usr/bin/python3:
# Debian's, with numpy, torch and onnx), PEERS_DIR (default ../shared/peers), GO, REPORT.
# Needs lib/ (make native); like bench-engine the run uses a private copy of it, so a concurrent
# `make native` cannot change a library it has mapped. The machine may be shared: the engine's
# report says how busy it was, python_local.py prints the load average.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PY:-/usr/bin/python3}
PEERS_DIR=${PEERS_DIR:-../shared/peers}
REPORT=${REPORT:-build/bench-clients.md}
SECONDS_PER_CASE=${SECONDS_PER_CASE:-2}
ROUNDS=${ROUNDS:-6}
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
WORK=build/bench-clients

[[ -f lib/libpolicyd.so ]] || { echo "bench-clients: lib/libpolicyd.so is missing: run 'make native' first" >&2; exit 1; }
[[ -f $PEERS_DIR/models/mlp-med.onnx ]] || { echo "bench-clients: $PEERS_DIR/models/mlp-med.onnx is missing" >&2; exit 1; }

rm -rf "$WORK" && mkdir -p "$WORK/lib"
cp lib/*.so "$WORK/lib/"
export LD_LIBRARY_PATH="$PWD/$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export POLICYD_LIB="$PWD/$WORK/lib/libpolicyd.so"

mkdir -p bin
"$GO" build -o bin/policyctl ./cmd/policyctl
"$GO" build -o bin/policyd ./cmd/policyd
bin/policyctl artifacts add --repository "$WORK/repo" --name mlp-med --version 1.0.0 "$PEERS_DIR/models/mlp-med.onnx" >/dev/null

echo "bench-clients: engine (policyctl bench engine, mlp-med batch 1 st)" >&2
bin/policyctl bench engine --models "$PEERS_DIR/models" --model mlp-med --batch 1 --modes st --format json \
  --seconds "$SECONDS_PER_CASE" >"$WORK/engine.json"
engine_p50=$("$PY" -c 'import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d.get("type") == "case": print(d["policyd"][0]["p50_us"])' "$WORK/engine.json")

{
  echo "# Client benchmarks ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  echo "Engine alone (policyctl bench engine --model mlp-med --batch 1 --modes st): p50 ${engine_p50} µs."
  echo
} >"$REPORT.tmp"

rc=0
if [[ -f bench/clients/python_http.py ]]; then
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  gport=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  bin/policyd --repository "$WORK/repo" --addr "127.0.0.1:$port" --grpc-addr "127.0.0.1:$gport" \
    --engine.backends cpu >"$WORK/policyd.log" 2>&1 &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true' EXIT
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/v2/models/mlp-med/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "bench-clients: python_http.py against http://127.0.0.1:$port" >&2
  if ! "$PY" bench/clients/python_http.py "http://127.0.0.1:$port" --model mlp-med >>"$REPORT.tmp"; then
    echo "python_http.py failed (see above)" >>"$REPORT.tmp"; rc=1
  fi
  echo >>"$REPORT.tmp"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap - EXIT
else
  echo "(bench/clients/python_http.py is not in this tree: no HTTP client rows)" >>"$REPORT.tmp"
  echo >>"$REPORT.tmp"
fi

echo "bench-clients: python_local.py (LocalPolicy vs torch, $ROUNDS alternating rounds)" >&2
"$PY" bench/clients/python_local.py --artifact "$WORK/repo/mlp-med/1.0.0" --peers "$PEERS_DIR" \
  --engine-p50-us "$engine_p50" --rounds "$ROUNDS" --seconds 1 >>"$REPORT.tmp" || rc=1

mv "$REPORT.tmp" "$REPORT"
cat "$REPORT"
echo "bench-clients: report in $REPORT" >&2
exit "$rc"
