#!/usr/bin/env bash
# make gpu-bundle: what bench/gpu-check.sh needs on a GPU machine that has only the CUDA
# toolkit, CMake, ninja and Python (no Debian packages, no network), in one folder that travels
# with the tree (at most 64 MiB together):
#   include/  ONNX headers (with protoc's generated onnx-ml.pb.h), protobuf headers, nlohmann/json
#   lib/      libonnx_proto.so.1, libprotobuf.so.32 (Debian 12 builds: need glibc >= 2.34 and
#             libstdc++ with GLIBCXX_3.4.29, i.e. GCC >= 11's runtime)
#   cmake/ONNX/ONNXConfig.cmake   the imported target onnx_proto over lib/ and include/
#   shared/   the models the check runs: ../shared/models/**/*.onnx (not *_INVALID) and
#             ../shared/peers/models/*.onnx (+ models.json), laid out as ../shared is
#   MANIFEST  versions and sizes
# oneDNN is not carried: the check builds the core and the cuda plugin only (-DPD_WITH_CPU=OFF).
set -euo pipefail
out=${1:?usage: make-bundle.sh OUTDIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
shared=${PD_SHARED_DIR:-$root/../shared}
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
libdir=/usr/lib/$multiarch

need() { [ -e "$1" ] || { echo "gpu-bundle: $1 is missing (make deps installs it)" >&2; exit 1; }; }
need /usr/include/onnx/onnx_pb.h
need /usr/include/google/protobuf/message.h
need /usr/include/nlohmann/json.hpp
need "$libdir/libonnx_proto.so.1"
need "$libdir/libprotobuf.so"
[ -d "$shared/models" ] || { echo "gpu-bundle: no models at $shared/models" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/include/google" "$out/lib" "$out/cmake/ONNX" "$out/shared/models" "$out/shared/peers/models"
cp -r /usr/include/onnx "$out/include/"
cp -r /usr/include/google/protobuf "$out/include/google/"
cp -r /usr/include/nlohmann "$out/include/"
cp -L "$libdir/libonnx_proto.so.1" "$out/lib/"
pb=$(readlink -f "$libdir/libprotobuf.so")
pbso=$(objdump -p "$pb" | awk '/SONAME/ {print $2}')
cp "$pb" "$out/lib/$pbso"
ln -sf "$pbso" "$out/lib/libprotobuf.so"
ln -sf libonnx_proto.so.1 "$out/lib/libonnx_proto.so"

onnx_version=$(dpkg-query -W -f='${Version}' libonnx-dev 2>/dev/null || echo unknown)
pb_version=$(dpkg-query -W -f='${Version}' libprotobuf-dev 2>/dev/null || echo unknown)
cat > "$out/cmake/ONNX/ONNXConfig.cmake" <<CMAKE
# Written by bench/gpu/make-bundle.sh: Debian's libonnx-dev $onnx_version, relocated.
get_filename_component(_pd_bundle "\${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
set(ONNX_VERSION "${onnx_version%%-*}")
if(NOT TARGET onnx_proto)
  add_library(onnx_proto SHARED IMPORTED)
  set_target_properties(onnx_proto PROPERTIES
    IMPORTED_LOCATION "\${_pd_bundle}/lib/libonnx_proto.so.1"
    INTERFACE_COMPILE_DEFINITIONS "ONNX_NAMESPACE=onnx;ONNX_ML=1"
    INTERFACE_INCLUDE_DIRECTORIES "\${_pd_bundle}/include"
    INTERFACE_LINK_LIBRARIES "protobuf::libprotobuf")
endif()
set(ONNX_INCLUDE_DIRS "\${_pd_bundle}/include")
CMAKE

# Models, laid out like ../shared so that the references' paths resolve.
(cd "$shared" && find models -name '*.onnx' ! -name '*_INVALID*' -print0 | xargs -0 -I{} cp --parents {} "$out/shared/")
cp "$shared"/peers/models/*.onnx "$shared/peers/models/models.json" "$out/shared/peers/models/"

{
  echo "policyd gpu-bundle, made $(date -u +%Y-%m-%dT%H:%MZ) from $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "libonnx-dev $onnx_version; libprotobuf-dev $pb_version ($pbso); nlohmann-json3-dev $(dpkg-query -W -f='${Version}' nlohmann-json3-dev 2>/dev/null || echo '?')"
  (cd "$out" && find . -type f | sort | xargs du -b | awk '{s+=$1} END {printf "%d files, %.1f MiB\n", NR, s/1048576}')
} > "$out/MANIFEST"
cat "$out/MANIFEST"
size=$(du -sm "$out" | cut -f1)
if [ "$size" -gt 48 ]; then echo "gpu-bundle: $size MiB is too large to travel with the tree (64 MiB in all)" >&2; exit 1; fi
