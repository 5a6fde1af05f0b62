#!/bin/sh
# Encodes the Einsum test models from their text form (ONNX's ModelProto in protobuf text
# format), with Debian's onnx.proto (libonnx-dev) and protoc: sh testdata/models/einsum/make.sh
set -eu
cd "$(dirname "$0")"
for m in attention forms float64; do
  grep -v '^#' $m.txt | protoc --encode=onnx.ModelProto -I/usr/include onnx/onnx.proto > $m.onnx
done
