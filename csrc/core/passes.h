// Graph passes run once at load, in this order: quantized fusion, constant folding, fusion,
// dead-node removal.
#pragma once

#include "ir.h"

namespace pd {

// Evaluates every node whose inputs are all constants (random ops excepted) and replaces its
// outputs by constants. Returns the number of nodes folded. max_bytes > 0 bounds the bytes of
// all constants together; a fold that would pass it fails (INVALID_ARG) before allocating.
int fold_constants(Graph& g, uint64_t max_bytes = 0);

// Fuses Gemm / MatMul(+Add bias) / Conv with a following activation (and MatMul with its bias
// Add) into pd.FusedGemm / pd.FusedMatMul / pd.FusedConv, which the CPU backend runs as one
// oneDNN primitive with post-ops. Returns the number of fusions.
int fuse(Graph& g);

// Fuses the quantized patterns (ONNX Runtime's quantize_dynamic MatMul; static QDQ around
// MatMul, Gemm and Conv) into pd.DynQuantMatMul, pd.QuantMatMul and pd.QuantConv (see
// quant_passes.cpp). Runs before fold_constants, which would turn the quantized weights into
// float. Returns the number of fusions.
int fuse_quantized(Graph& g);

// Removes nodes whose outputs reach no graph output, and constants nothing reads. Returns the
// number of nodes removed.
int eliminate_dead_nodes(Graph& g);

}  // namespace pd
