#!/usr/bin/env bash
# The whole server on a GPU: bin/policyd and bin/policyctl (Go, built here) over the libpolicyd
# and cuda plugin that bench/gpu-check.sh built on the GPU machine (docs/gpu.md).
#
#   here:  bash bench/gpu/serve-check.sh --prepare   # build/gpu-serve/: the two binaries (xz),
#                                                    # a repository with the peers' MLPs
#   there: bash bench/gpu-check.sh && bash bench/gpu/serve-check.sh
#   here:  bash bench/gpu/serve-check.sh --local     # the same steps on cpu (checks the script)
#
# There: policyctl engines build writes the sm_XX engine caches into the repository copy and
# artifacts verify checks them; policyd serves with engine.build_engines false and
# fallback false (so every version must load on cuda from its cache); the health details, the
# NVML metrics (real go-nvml, not the mocks of the tests) and the log are shown; policyctl bench
# load checks the first answer against ONNX Runtime's reference, then measures batch 1 over
# HTTP (JSON and binary, 1 and 16 connections). The binaries travel compressed: with the
# gpu-bundle the tree must stay under 64 MiB.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out=$root/build/gpu-serve
models=(mlp-med mlp-small)
mode=${1:-gpu}

if [ "$mode" = --prepare ]; then
  shared=${PD_SHARED_DIR:-$root/../shared}
  make --no-print-directory go >/dev/null || exit 1
  rm -rf "$out" && mkdir -p "$out/bin"
  for b in policyd policyctl; do
    GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$out/bin/$b" "./cmd/$b" || exit 1
  done
  tar cJf "$out/bin.tar.xz" -C "$out" bin && rm -rf "$out/bin"
  for m in "${models[@]}"; do
    bin/policyctl artifacts add --repository "$out/repository" --name "$m" --version 1.0.0 \
      "$shared/peers/models/$m.onnx" --metadata source=../shared/peers/models/$m.onnx >/dev/null || exit 1
  done
  du -sh "$out"
  exit 0
fi

work=$(mktemp -d /tmp/gpu-serve.XXXX)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
pid=
tar xJf "$out/bin.tar.xz" -C "$work" || exit 1
cp -r "$out/repository" "$work/repository"
bundle=${PD_GPU_BUNDLE:-$root/build/gpu-bundle}
if [ "$mode" = --local ]; then
  backend=cpu
  lib=$root/lib
  peers=$root/../shared/peers
else
  backend=cuda
  lib=$root/build/gpu/lib
  peers=$bundle/shared/peers
  cuda_root=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
  export LD_LIBRARY_PATH="$bundle/lib:$lib:$cuda_root/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
[ -f "$lib/libpolicyd.so" ] || { echo "serve-check: no $lib/libpolicyd.so (run bench/gpu-check.sh first)"; exit 1; }
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ctl=$work/bin/policyctl

echo "== policyctl engines build"
"$ctl" engines build --repository "$work/repository" 2>&1 | tail -8
"$ctl" artifacts verify --repository "$work/repository" 2>&1 | tail -3
find "$work/repository" -path '*engines*' -type f | sed "s|$work/||" | sort

cat > "$work/policyd.yaml" <<YAML
server:
  addr: 127.0.0.1:18431
repository:
  path: $work/repository
log:
  level: info
  format: json
engine:
  backends: [$backend]
  build_engines: $([ "$backend" = cpu ] && echo true || echo false)
models:
$(for m in "${models[@]}"; do printf '  - name: %s\n    fallback: false\n' "$m"; done)
YAML
get() { python3 -c 'import sys,urllib.request as u
try:
  r=u.urlopen(sys.argv[1], timeout=2); print(r.status); sys.stdout.write(r.read().decode())
except Exception as e:
  print(getattr(e, "code", 0))' "$1"; }
# Every policyd* binary of the bundle is served in turn, twice when there are several (two
# builds side by side: an A/B); the details are shown on the first pass only.
servers=("$work"/bin/policyd*)
[ ${#servers[@]} -gt 1 ] && servers+=("${servers[@]}")
pass=0
for server in "${servers[@]}"; do
pass=$((pass + 1))
echo "==== $(basename "$server") (pass $pass)"
"$server" --config "$work/policyd.yaml" >"$work/policyd.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [ "$(get http://127.0.0.1:18431/v2/health/ready | head -1)" = 200 ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.2
done
echo "== ready: $(get http://127.0.0.1:18431/v2/health/ready | head -1)"
if [ $pass = 1 ]; then
grep -E '"(loaded|model version)|fell back|engine cache|cuda device|backend' "$work/policyd.log" | cut -c1-300 | head -12
echo "== health details"
get http://127.0.0.1:18431/v2/health/details | tail -n +2 | python3 -c 'import json,sys
d=json.load(sys.stdin)
for b in d.get("backends", []): print("backend %-9s %s %s" % (b["name"], "available" if b.get("available") else "unavailable:", b.get("version") or b.get("reason", "")))
dev=d.get("devices", {})
for g in dev.get("gpus", []): print("gpu", json.dumps(g)[:300])
if not dev.get("gpus"): print("gpus: none;", dev.get("gpus_reason", ""))'
echo "== NVML metrics"
get http://127.0.0.1:18431/metrics | grep -E '^policyd_gpu_' | head -12
fi

echo "== HTTP: batch 1, the first answer checked against ONNX Runtime"
for m in "${models[@]}"; do
  for args in "-c 1" "-c 1 -binary" "-c 16"; do
    printf '%-10s %-14s ' "$m" "$args"
    "$ctl" bench load -url "http://127.0.0.1:18431/v2/models/$m/infer" -model "$m" -peers "$peers" \
      -refs testdata/reference $args -d 2s -warmup 0.5s 2>&1 | tail -1 | python3 -c 'import json,sys
l=sys.stdin.read()
try:
  d=json.loads(l); print("p50 %(p50_us)s us  p99 %(p99_us)s us  %(rps).0f req/s  errors %(errors)s" % d)
except Exception: print(l.strip()[:300])'
  done
done
kill $pid; wait $pid 2>/dev/null; pid=
if [ $pass = 1 ]; then echo "== policyd exited; its last log lines"; tail -3 "$work/policyd.log" | cut -c1-300; fi
done
