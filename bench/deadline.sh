#!/usr/bin/env bash
# Deadline-bounded actions under overload (docs/api.md, Deadlines; issue 18's target): policyd
# serving a peer MLP (mlp-med unless MODEL says; one instance, a constant fallback), its
# capacity at batch 1 measured, then offered OVERLOAD× that (default 3) with X-Deadline-Us:
# DEADLINE_US (default 2000) on every request; prints the answers later than the deadline +
# 200µs, the fallbacks, the 504s.
#
#   bash bench/deadline.sh            # needs lib/ (make native)
#
# Env: MODEL (a peer MLP: mlp-small, mlp-med (default) or mlp-large), BINARY (1: binary
# tensor bodies; default 0, JSON), OVERLOAD, DEADLINE_US, DURATION (default 5s), FALLBACK
# (constant | none), BATCHING (0 | 1, default 0), INFLIGHT (most requests in flight, default
# 64), PIN (1: the server on CPU 0, the load generator on CPU 1, with taskset), PORT (default
# 18123), POLICYD_BIN (the server binary; default: bin/policyd, built), PEERS_DIR (default
# ../shared/peers), GO.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR=${PEERS_DIR:-../shared/peers}
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
PORT=${PORT:-18123}
OUT=build/bench-deadline
[[ -f lib/libpolicyd.so ]] || { echo "deadline: lib/libpolicyd.so is missing: run 'make native' first" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT/repo" bin
POLICYD_BIN=${POLICYD_BIN:-bin/policyd}
[[ $POLICYD_BIN != bin/policyd ]] || "$GO" build -o bin/policyd ./cmd/policyd
"$GO" build -o bin/policyctl ./cmd/policyctl
"$GO" build -o "$OUT/deadline" ./bench/deadline
MODEL=${MODEL:-mlp-med}
# The observation and action widths from the peers' models.json.
read -r width actions < <(python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))["models"][sys.argv[2]]
print(m["inputs"][0]["shape"][1], m["outputs"][0]["shape"][1])' "$PEERS_DIR/models/models.json" "$MODEL")
bin/policyctl artifacts add --repository "$OUT/repo" --name "$MODEL" --version 1.0.0 "$PEERS_DIR/models/$MODEL.onnx" >/dev/null
fallback=""
if [[ ${FALLBACK:-constant} = constant ]]; then
  fallback="
    deadline_fallback:
      kind: constant
      constant:
        - output: action
          values: [$(python3 -c 'import sys; print(", ".join(["0"] * int(sys.argv[1])))' "$actions")]"
fi
cat > "$OUT/policyd.yaml" <<YAML
server:
  addr: 127.0.0.1:$PORT
  grpc_addr: 127.0.0.1:$((PORT + 1))
batching:
  enabled: $([[ ${BATCHING:-0} = 1 ]] && echo true || echo false)
repository:
  path: repo
models:
  - name: $MODEL
    instances: 1
    threads: 1$fallback
YAML
srv_pin=() cli_pin=()
if [[ ${PIN:-0} = 1 ]]; then srv_pin=(taskset -c 0) cli_pin=(taskset -c 1); fi
LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "${srv_pin[@]}" "$POLICYD_BIN" --config "$OUT/policyd.yaml" >"$OUT/policyd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null || { echo "deadline: policyd did not become ready:" >&2; tail "$OUT/policyd.log" >&2; exit 1; }
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
echo "model: $MODEL (FP32[1,$width] in), $([[ ${BINARY:-0} = 1 ]] && echo binary || echo JSON) bodies"
"${cli_pin[@]}" "$OUT/deadline" -url "http://127.0.0.1:$PORT/v2/models/$MODEL/infer" -width "$width" -binary="$([[ ${BINARY:-0} = 1 ]] && echo true || echo false)" \
  -overload "${OVERLOAD:-3}" -deadline-us "${DEADLINE_US:-2000}" -d "${DURATION:-5s}" -inflight "${INFLIGHT:-64}"
curl -s "http://127.0.0.1:$PORT/metrics" | grep '^policyd_fallback_total' || true
printf '{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,%d],"data":[%s0]}]}' "$width" "$(printf '0,%.0s' $(seq $((width - 1))))" >"$OUT/probe.json"
# PROBE=N: one more request with X-Deadline-Us: N after the run (with FALLBACK=none its 504
# names the version's expected service time).
if [[ -n ${PROBE:-} ]]; then
  curl -s -H "X-Deadline-Us: ${PROBE}" "http://127.0.0.1:$PORT/v2/models/$MODEL/infer" -d @"$OUT/probe.json" && echo
fi
