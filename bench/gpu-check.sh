#!/usr/bin/env bash
# GPU check of the CUDA backend, and of the TensorRT backend where TensorRT is installed
# (docs/gpu.md, docs/tensorrt.md), for an NVIDIA machine that has only the CUDA
# toolkit (13 or any from 11.8), CMake, ninja and Python with PyTorch: no Go, no Debian
# packages, no network. What the C++ build needs beyond that travels in the folder that
# `make gpu-bundle` prepares (build/gpu-bundle, or $PD_GPU_BUNDLE).
#
#   bash bench/gpu-check.sh            # about 3-5 minutes; everything within 8
#   bash bench/gpu-check.sh --fake     # the same on the CPU emulation of CUDA (csrc/cuda/fake):
#                                      # checks the script itself on a machine without a GPU
#
# 1. says which GPU, driver and toolkit, and whether TensorRT is present;
# 2. builds libpolicyd + the cuda plugin + pd_refcheck with CMake (-DPD_CUDA=ON, no oneDNN);
# 3. runs the ONNX Runtime references (testdata/reference/*.json) of ../shared/models and
#    ../shared/peers/models on the cuda backend (tolerance 1e-5 + 1e-3 relative), each engine
#    also rebuilt from its serialized cache; models with random ops fall back (reported);
#    Einsum's own models (testdata/models/einsum) run again eagerly and graphed, and may not
#    fall back; attention through Einsum is timed at batch 1, 32, 256;
# 4. benchmarks the peers' models at batch 1, 32 and 256: end to end through pd_context_run
#    (host<->device copies included) and the kernels' GPU time (CUDA events), beside PyTorch
#    eager on the same GPU for the MLPs; the table comes last.
# With TensorRT's headers and libraries present (TENSORRT_ROOT, or the standard paths), step 2
# also builds the tensorrt plugin (-DPD_TENSORRT=ON) and steps 3-4 run on --backend tensorrt
# too (the references and their cache round trip; the benchmark with a 1/32/256 batch profile).
# Output also goes to build/gpu-check/ (log and table).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
fake=0
[ "${1:-}" = --fake ] && fake=1
bundle=${PD_GPU_BUNDLE:-$root/build/gpu-bundle}
out=$root/build/gpu-check
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
deadline=$((SECONDS + 470))
left() { echo $((deadline - SECONDS)); }
step() { echo; echo "== $* ($(date -u +%H:%M:%S), $(left) s left)"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
nvcc_bin=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
[ -n "$nvcc_bin" ] && "$nvcc_bin" --version | tail -2
trt=""
ldconfig -p 2>/dev/null | grep -q 'libnvinfer\.so' && trt="libnvinfer in the linker cache"
[ -z "$trt" ] && ls /usr/lib/*/libnvinfer.so* /usr/local/tensorrt/lib/libnvinfer.so* >/dev/null 2>&1 && trt="libnvinfer found"
pytrt=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)
[ -n "$pytrt" ] && trt="${trt:+$trt; }python tensorrt $pytrt"
echo "TensorRT: ${trt:-not present}"
# The tensorrt plugin needs TensorRT's headers too (a Python wheel alone has none).
trt_root=""
if [ -n "$trt" ] && [ $fake = 0 ]; then
  for d in "${TENSORRT_ROOT:-}" /usr/local/tensorrt /usr/lib/x86_64-linux-gnu/.. /usr; do
    [ -n "$d" ] || continue
    if ls "$d"/include/NvInfer.h "$d"/include/*/NvInfer.h >/dev/null 2>&1; then trt_root=$d; break; fi
  done
  [ -n "$trt_root" ] && echo "TensorRT headers under $trt_root: building the tensorrt plugin" \
    || echo "TensorRT headers not found (set TENSORRT_ROOT): the tensorrt plugin is not built"
fi

[ -d "$bundle/include/onnx" ] || { echo "gpu-check: no bundle at $bundle (run make gpu-bundle on a Debian 12 machine)"; exit 1; }
cat "$bundle/MANIFEST" 2>/dev/null
# The models: ../shared when the checkout has it, else the bundle's copy. The references name
# them as ../shared/..., relative to --repo.
if [ -d "$root/../shared/peers/models" ]; then repo=$root; else mkdir -p "$bundle/repo"; repo=$bundle/repo; fi
# The repository's own test models (testdata/models) are named relative to the checkout.
[ "$repo" = "$root" ] || ln -sfn "$root/testdata" "$repo/testdata"
echo "models from $(cd "$repo/../shared" && pwd)"

step "build (core + cuda plugin${trt_root:+ + tensorrt plugin} + pd_refcheck)"
cuda_root=$(dirname "$(dirname "${nvcc_bin:-/usr/local/cuda/bin/nvcc}")")
t0=$SECONDS
trt_flags=(-DPD_TENSORRT=OFF)
[ -n "$trt_root" ] && trt_flags=(-DPD_TENSORRT=ON -DTENSORRT_ROOT="$trt_root")
timeout $(( $(left) - 200 )) cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DPD_CUDA=ON "${trt_flags[@]}" -DPD_WITH_CPU=OFF -DPD_BUILD_TESTS=OFF -DCUDAToolkit_ROOT="$cuda_root" \
  -DONNX_DIR="$bundle/cmake/ONNX" -DProtobuf_INCLUDE_DIR="$bundle/include" \
  -DProtobuf_LIBRARY="$bundle/lib/libprotobuf.so" -DCMAKE_INCLUDE_PATH="$bundle/include" \
  -DCMAKE_BUILD_RPATH="$bundle/lib" >"$out/cmake.txt" 2>&1 || { tail -30 "$out/cmake.txt"; echo "gpu-check: configure failed"; exit 1; }
grep -E "policyd .*backends" "$out/cmake.txt"
targets="policyd policyd_backend_cuda pd_refcheck pd_cuda_ipc_check"
[ $fake = 1 ] && targets="$targets policyd_backend_cuda_fake pd_cuda_ipc_check_fake"
[ -n "$trt_root" ] && targets="$targets policyd_backend_tensorrt"
timeout $(( $(left) - 150 )) cmake --build build/gpu -j "$(nproc)" --target $targets \
  >"$out/build.txt" 2>&1 || { grep -E "error|Error" "$out/build.txt" | head -30; echo "gpu-check: build failed"; exit 1; }
echo "built in $((SECONDS - t0)) s"
export LD_LIBRARY_PATH="$bundle/lib:$root/build/gpu/lib:$cuda_root/lib64:$cuda_root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
refcheck=build/gpu/csrc/tests/pd_refcheck
plugins=build/gpu/lib
[ $fake = 1 ] && plugins=build/gpu/fakecuda && echo "FAKE: the CPU emulation of CUDA, not a GPU; numbers mean nothing"
why=$($refcheck --backend cuda --backend-dir $plugins --repo "$repo" testdata/reference/peers-mlp-small_b1.json \
  | sed -n 's/^backend cuda *unavailable: //p')
if [ -n "$why" ]; then echo "gpu-check: the cuda backend is unavailable: $why"; exit 1; fi

step "ONNX Runtime references on the cuda backend (and from each engine's cache)"
refs=(testdata/reference/*.json)
timeout 90 $refcheck --backend cuda --backend-dir $plugins --repo "$repo" --cache-roundtrip "${refs[@]}" \
  | tee "$out/refcheck.txt"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
  echo "-- again without CUDA graphs (eager launches), to tell graph capture from kernel faults:"
  timeout 60 $refcheck --backend cuda --param cuda.graphs=false --backend-dir $plugins --repo "$repo" "${refs[@]}" \
    | grep -E "^(FAIL|refcheck)" | tee "$out/refcheck-nographs.txt"
fi

step "Einsum on the cuda backend (strided-batched cuBLASLt GEMMs): references eager and graphed, no fallback"
# testdata/models/einsum: attention (in place at batch 1, gathered at batch 8), one-input forms,
# broadcasting, float64. Each must run on cuda (a FALLBACK fails the check), with and without
# CUDA graphs; then attention's end-to-end and GPU time at batch 1, 32, 256.
einsum_refs=(testdata/reference/testdata-einsum-*.json)
timeout 60 $refcheck --backend cuda --backend-dir $plugins --repo "$repo" "${einsum_refs[@]}" | tee "$out/einsum.txt"
einsum_rc=${PIPESTATUS[0]}
timeout 60 $refcheck --backend cuda --param cuda.graphs=false --backend-dir $plugins --repo "$repo" "${einsum_refs[@]}" \
  | tee -a "$out/einsum.txt"
[ "${PIPESTATUS[0]}" = 0 ] || einsum_rc=1
if grep -q '^FALLBACK' "$out/einsum.txt"; then echo "gpu-check: an Einsum model fell back to the cpu backend"; einsum_rc=1; fi
timeout 60 $refcheck --backend cuda --backend-dir $plugins --repo "$repo" --bench 1,32,256 --seconds 0.3 \
  testdata/reference/testdata-einsum-attention_b1.json | tee -a "$out/einsum.txt"
[ "$rc" = 0 ] && rc=$einsum_rc

trt_rc=0
if [ -n "$trt_root" ]; then
  step "ONNX Runtime references on the tensorrt backend (and from each plan's cache)"
  trt_why=$($refcheck --backend tensorrt --backend-dir $plugins --repo "$repo" testdata/reference/peers-mlp-small_b1.json \
    | sed -n 's/^backend tensorrt *unavailable: //p')
  if [ -n "$trt_why" ]; then
    echo "gpu-check: the tensorrt backend is unavailable: $trt_why"
    trt_rc=1
  else
    timeout $(( $(left) > 240 ? 150 : $(left) / 2 )) $refcheck --backend tensorrt --backend-dir $plugins --repo "$repo" \
      --cache-roundtrip "${refs[@]}" | tee "$out/refcheck-tensorrt.txt"
    trt_rc=${PIPESTATUS[0]}
  fi
fi

step "CUDA shared memory: a client process's device memory through CUDA IPC handles"
# csrc/tests/cuda_ipc_check.cpp: a forked client cudaMallocs and exports an IPC handle; this side
# opens it through the C ABI (pd_cuda_ipc_open), runs mlp-small at batch 1, 3, 64 on device
# pointers into it (pd_context_run_device) and compares with the inline runs; a forged handle
# and a too-small output room must be refused. (--fake: the client is the same process.)
ipc=build/gpu/csrc/tests/pd_cuda_ipc_check
[ $fake = 1 ] && ipc=build/gpu/csrc/tests/pd_cuda_ipc_check_fake
timeout 60 $ipc --backend-dir $plugins --model "$repo/../shared/peers/models/mlp-small.onnx" | tee "$out/cuda-ipc.txt"
[ "${PIPESTATUS[0]}" = 0 ] || echo "gpu-check: CUDA shared memory check FAILED (see above)"

step "benchmark: batch 1, 32, 256"
bench_refs=(testdata/reference/peers-*_b1.json)
trt_reserve=0
[ -n "$trt_root" ] && trt_reserve=40
timeout $(( $(left) - trt_reserve - 60 )) $refcheck --backend cuda --backend-dir $plugins --repo "$repo" \
  --bench 1,32,256 --seconds 0.7 "${bench_refs[@]}" | tee "$out/bench.txt"
if [ -n "$trt_root" ] && [ "$trt_rc" = 0 ]; then
  timeout $(( $(left) > 80 ? $(left) - 40 : 40 )) $refcheck --backend tensorrt --backend-dir $plugins --repo "$repo" \
    --batch-profile 1,32,256 --bench 1,32,256 --seconds 0.5 "${bench_refs[@]}" | tee "$out/bench-tensorrt.txt"
fi
mlps=()
for m in mlp-small mlp-med mlp-large; do
  d=$out/torch-$m
  mkdir -p "$d"
  if $refcheck --export-gemms "$repo/../shared/peers/models/$m.onnx" "$d"; then mlps+=(--mlp "peers-$m=$d"); fi
done
step "PyTorch eager on the same GPU, and the table"
[ $fake = 1 ] && mlps=()
timeout $(( $(left) > 20 ? $(left) : 20 )) python3 bench/gpu/torch_mlp.py --bench "$out/bench.txt" "${mlps[@]}" \
  --batches 1,32,256 --seconds 0.5 | tee "$out/table.md"
echo
echo "TensorRT: ${trt:-not present}; references: $(grep -E '^refcheck' "$out/refcheck.txt" || echo 'did not finish')"
echo "einsum (graphs, then eager): $(grep -E '^refcheck' "$out/einsum.txt" | tr '\n' ' ')$(grep -E '^BENCH' "$out/einsum.txt" | tr '\n' ' ')"
if [ -n "$trt_root" ]; then
  echo "tensorrt references: $(grep -E '^refcheck' "$out/refcheck-tensorrt.txt" 2>/dev/null || echo 'did not finish')"
  [ -s "$out/bench-tensorrt.txt" ] && { echo "tensorrt benchmark:"; grep -E '^BENCH' "$out/bench-tensorrt.txt"; }
  [ "$rc" = 0 ] && rc=$trt_rc
fi
echo "GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); total $SECONDS s"
exit "$rc"
