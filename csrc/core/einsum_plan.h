// Einsum's equation analysis, shared by the backends that run it (the portable kernels in
// ops/einsum.cpp and the CUDA lowering in csrc/cuda/ops/einsum.cpp): the parsed equation with
// a size per label, each input's stride per label, and the split of a two-input equation's
// labels into batch, M, N and K groups.
//
// Labels are ids: 'A'..'Z' -> 0..25, 'a'..'z' -> 26..51 (so sorting ids is sorting characters,
// as numpy orders an implicit output), ellipsis dimension j -> kEinsumEllipsis + j.
#pragma once

#include <cstdint>
#include <vector>

#include "op.h"

namespace pd {

constexpr int kEinsumEllipsis = 52;

struct EinsumEquation {
  std::vector<std::vector<int>> terms;  // label per dimension of each input
  std::vector<int> out;                 // label per output dimension
  std::vector<int64_t> size;            // per label id; 0 entries for labels not used
  std::vector<bool> used;
};

// Parses c.node's "equation" against the shapes of c's inputs; fails (INVALID_ARG, naming the
// node) on a malformed equation or sizes that do not match, UNSUPPORTED past kEinsumEllipsis
// dimensions under '...'.
EinsumEquation parse_einsum(const InferCtx& c);

// Stride of each label in input i of shape s (the sum over a repeated label's dimensions; 0
// where the input broadcasts a dimension of size 1 or lacks the label).
std::vector<int64_t> einsum_label_strides(const EinsumEquation& e, const Shape& s, size_t i);

// Whether a label in use has size 0.
bool einsum_has_zero_size(const EinsumEquation& e);

// The labels of a two-input equation in groups, each in a fixed order shared by the operands
// that hold it; labels of size 1 play no part. batch: both inputs and the output; M: first
// input and output; N: second input and output; K: both inputs, not the output; only_a /
// only_b: one input only, not the output (summed).
struct EinsumGroups {
  std::vector<int> batch, M, N, K, only_a, only_b;
};
EinsumGroups einsum_groups(const EinsumEquation& e);

// The stride of a group of labels seen as one dimension of an operand with label strides st,
// or -1 when the group's labels are not laid out as one (row-major, in group order) or the
// last has stride 0; 0 for an empty group.
int64_t einsum_group_stride(const std::vector<int>& g, const EinsumEquation& e, const std::vector<int64_t>& st);

}  // namespace pd
