#!/bin/sh
# Generate the Python protobuf and gRPC code of api/inference/*.proto into DIR (default: the
# package's policyd/_proto), with Debian's protoc (protobuf-compiler) and grpc_python_plugin
# (protobuf-compiler-grpc). The generated modules import each other absolutely
# ("import model_config_pb2"); they are rewritten to relative imports so that they work inside
# the policyd package. tests/test_proto_fresh.py runs this into a temporary folder and fails
# when the committed files differ.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here/../policyd/_proto}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin)}
mkdir -p "$out"
protoc -I "$root/api/inference" \
  --python_out="$out" --grpc_python_out="$out" --plugin=protoc-gen-grpc_python="$plugin" \
  "$root/api/inference/grpc_service.proto" "$root/api/inference/model_config.proto"
for f in "$out"/grpc_service_pb2.py "$out"/grpc_service_pb2_grpc.py "$out"/model_config_pb2.py "$out"/model_config_pb2_grpc.py; do
  [ -f "$f" ] || continue
  sed -i -E 's/^import (grpc_service_pb2|model_config_pb2) as /from . import \1 as /' "$f"
done
