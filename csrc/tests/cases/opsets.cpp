// Generated cases of opsets 18–21: every op policyd claims in its newest form, and each change
// that ONNX's operator changelog lists for those opsets (docs/operators.md, "Opsets 18–21").
//
//   - opset 18: Reduce* take 'axes' as an input (and noop_with_empty_axes); Split num_outputs;
//     Pad's optional 'axes' input; Mish is new.
//   - opset 19: Pad mode 'wrap'; AveragePool 'dilations'; Cast/CastLike 'saturate' (it only
//     affects float8 targets, which policyd refuses); Equal/Identity/Reshape/Shape/Size/
//     Constant gain float8 (and string) types.
//   - opset 20: ReduceMax/ReduceMin take bool; ConstantOfShape gains float8; Gelu is new.
//   - opset 21: int4/uint4 (and the float8 types) for Cast, CastLike, Constant,
//     ConstantOfShape, Flatten, Identity, Pad, Reshape, Shape, Size, Squeeze, Transpose,
//     Unsqueeze: the numeric semantics are those of opset 18–20, checked here at 21.
// Every other claimed op runs here once at opset 21 (its definition unchanged since it was last
// versioned), so a model exported at the newest opset is covered op by op (Einsum's own
// tests are the Debian ones and csrc/tests/einsum_test.cpp).
#include <string>
#include <vector>

#include "cases.h"

namespace {

using namespace pd::cases;

// One node `op` over inputs x0.. (seeded, in [lo, hi)) and an output y of type `out`.
Case unary(const std::string& name, int opset, const std::string& op, Elem t, const Dims& dims,
           double lo = -1, double hi = 1, Elem out = Elem(0)) {
  Case c(name, opset);
  c.input("x", t, dims, lo, hi);
  c.node(op, {"x"}, {"y"});
  c.output("y", out ? out : t);
  return c;
}

// ---- Reduce* (opset 18: axes input; 20: bool for ReduceMax/ReduceMin) ----

struct ReduceOp {
  const char* op;
  const char* lower;
  double lo, hi;  // input range (ReduceLogSum needs a positive sum)
};
const ReduceOp kReduce[] = {
    {"ReduceL1", "l1", -1, 1},           {"ReduceL2", "l2", -1, 1},
    {"ReduceLogSum", "log_sum", 0.1, 1}, {"ReduceLogSumExp", "log_sum_exp", -1, 1},
    {"ReduceMax", "max", -1, 1},         {"ReduceMean", "mean", -1, 1},
    {"ReduceMin", "min", -1, 1},         {"ReduceProd", "prod", 0.5, 1.5},
    {"ReduceSum", "sum", -1, 1},         {"ReduceSumSquare", "sum_square", -1, 1},
};

void reduce_cases(std::vector<Case>& out) {
  for (const auto& r : kReduce) {
    const std::string base = std::string("test_reduce_") + r.lower;
    {  // axes as a constant input, keepdims
      Case c(base + "_axes_input_opset18", 18);
      c.input("x", F32, {2, 3, 4}, r.lo, r.hi);
      c.constant("axes", I64, {1}, {1});
      c.node(r.op, {"x", "axes"}, {"y"}).i("keepdims", 1);
      c.output("y", F32);
      out.push_back(std::move(c));
    }
    {  // two axes, one negative, keepdims 0
      Case c(base + "_neg_axes_keepdims0_opset18", 18);
      c.input("x", F32, {2, 3, 4}, r.lo, r.hi);
      c.constant("axes", I64, {2}, {-1, 0});
      c.node(r.op, {"x", "axes"}, {"y"}).i("keepdims", 0);
      c.output("y", F32);
      out.push_back(std::move(c));
    }
    {  // no axes: every axis
      Case c(base + "_default_axes_opset18", 18);
      c.input("x", F32, {3, 4}, r.lo, r.hi);
      c.node(r.op, {"x"}, {"y"});
      c.output("y", F32);
      out.push_back(std::move(c));
    }
    {  // empty axes with noop_with_empty_axes: the identity
      Case c(base + "_empty_axes_noop_opset18", 18);
      c.input("x", F32, {3, 4}, r.lo, r.hi);
      c.constant("axes", I64, {0}, {});
      c.node(r.op, {"x", "axes"}, {"y"}).i("noop_with_empty_axes", 1);
      c.output("y", F32);
      out.push_back(std::move(c));
    }
    {  // axes as a graph input (the shape-deciding value becomes part of the bucket)
      Case c(base + "_axes_graph_input_opset18", 18);
      c.input("x", F32, {2, 3, 4}, r.lo, r.hi);
      c.input_values("axes", I64, {1}, {2});
      c.node(r.op, {"x", "axes"}, {"y"}).i("keepdims", 0);
      c.output("y", F32);
      out.push_back(std::move(c));
    }
    {  // the newest opset, double
      Case c(base + "_double_opset21", 21);
      c.input("x", F64, {2, 5}, r.lo, r.hi);
      c.constant("axes", I64, {1}, {1});
      c.node(r.op, {"x", "axes"}, {"y"});
      c.output("y", F64);
      out.push_back(std::move(c));
    }
  }
  // ReduceMax/ReduceMin on bool (opset 20): any / all.
  for (const char* op : {"ReduceMax", "ReduceMin"}) {
    const std::string base = std::string("test_reduce_") + (op[6] == 'M' && op[7] == 'a' ? "max" : "min");
    {
      Case c(base + "_bool_opset20", 20);
      c.input("x", BOOL, {3, 4, 2});
      c.constant("axes", I64, {1}, {1});
      c.node(op, {"x", "axes"}, {"y"}).i("keepdims", 1);
      c.output("y", BOOL);
      out.push_back(std::move(c));
    }
    {
      Case c(base + "_bool_all_axes_opset20", 20);
      c.input_values("x", BOOL, {2, 3}, {1, 1, 1, 0, 1, 1});
      c.node(op, {"x"}, {"y"}).i("keepdims", 0);
      c.output("y", BOOL);
      out.push_back(std::move(c));
    }
    {
      Case c(base + "_bool_keepdims0_opset21", 21);
      c.input_values("x", BOOL, {3, 2}, {0, 0, 1, 0, 1, 1});
      c.constant("axes", I64, {1}, {-1});
      c.node(op, {"x", "axes"}, {"y"}).i("keepdims", 0);
      c.output("y", BOOL);
      out.push_back(std::move(c));
    }
    for (Elem t : {I32, I64, U8, I8}) {
      const char* tn = t == I32 ? "int32" : t == I64 ? "int64" : t == U8 ? "uint8" : "int8";
      Case c(base + "_" + tn + "_opset20", 20);
      c.input("x", t, {3, 4}, t == U8 ? 0 : -50, 100);
      c.constant("axes", I64, {1}, {0});
      c.node(op, {"x", "axes"}, {"y"});
      c.output("y", t);
      out.push_back(std::move(c));
    }
  }
}

// ---- Split (opset 18: num_outputs) ----

void split_cases(std::vector<Case>& out) {
  {
    Case c("test_split_num_outputs_even_opset18", 18);
    c.input("x", F32, {2, 6});
    c.node("Split", {"x"}, {"a", "b", "c"}).i("axis", 1).i("num_outputs", 3);
    c.output("a", F32).output("b", F32).output("c", F32);
    out.push_back(std::move(c));
  }
  {  // 7 into 3: chunks of ceil(7/3) = 3, the last one smaller
    Case c("test_split_num_outputs_uneven_opset18", 18);
    c.input("x", F32, {7, 2});
    c.node("Split", {"x"}, {"a", "b", "c"}).i("axis", 0).i("num_outputs", 3);
    c.output("a", F32).output("b", F32).output("c", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_split_num_outputs_neg_axis_int64_opset21", 21);
    c.input("x", I64, {2, 3, 5}, -100, 100);
    c.node("Split", {"x"}, {"a", "b"}).i("axis", -1).i("num_outputs", 2);
    c.output("a", I64).output("b", I64);
    out.push_back(std::move(c));
  }
  {
    Case c("test_split_split_input_opset18", 18);
    c.input("x", F32, {2, 6});
    c.constant("split", I64, {3}, {1, 2, 3});
    c.node("Split", {"x", "split"}, {"a", "b", "c"}).i("axis", 1);
    c.output("a", F32).output("b", F32).output("c", F32);
    out.push_back(std::move(c));
  }
}

// ---- Pad (opset 18: axes input; 19: wrap; 21: more types) ----

void pad_cases(std::vector<Case>& out) {
  struct P {
    const char* name;
    int opset;
    const char* mode;
    Dims dims;
    std::vector<double> pads;
    std::vector<double> axes;  // empty: no axes input
    Elem t;
  };
  const P ps[] = {
      {"test_pad_constant_axes_opset18", 18, "constant", {2, 3, 4}, {1, 2, 0, 1}, {0, 2}, F32},
      {"test_pad_constant_neg_axes_opset18", 18, "constant", {2, 3, 4}, {2, 1}, {-2}, F32},
      {"test_pad_reflect_axes_opset18", 18, "reflect", {2, 4, 5}, {1, 2, 2, 1}, {1, 2}, F32},
      {"test_pad_edge_axes_opset18", 18, "edge", {3, 4}, {2, 3}, {1}, F32},
      {"test_pad_wrap_opset19", 19, "wrap", {3, 4}, {1, 2, 2, 1}, {}, F32},
      {"test_pad_wrap_axes_opset19", 19, "wrap", {2, 3, 4}, {2, 3, 1, 2}, {-1, 1}, F32},
      {"test_pad_wrap_int64_opset21", 21, "wrap", {2, 3}, {0, 1, 1, 2}, {}, I64},
      {"test_pad_constant_negative_pads_opset21", 21, "constant", {3, 5}, {-1, 1, 0, -2}, {}, F32},
      {"test_pad_reflect_int32_opset21", 21, "reflect", {3, 4}, {1, 2, 1, 3}, {}, I32},
      {"test_pad_edge_bool_opset21", 21, "edge", {2, 3}, {1, 1, 0, 2}, {}, BOOL},
  };
  for (const P& p : ps) {
    Case c(p.name, p.opset);
    c.input("x", p.t, p.dims, p.t == F32 ? -1 : -9, p.t == F32 ? 1 : 9);
    c.constant("pads", I64, {static_cast<int64_t>(p.pads.size())}, p.pads);
    std::vector<std::string> ins = {"x", "pads"};
    if (std::string(p.mode) == "constant") {
      c.constant("value", p.t, {}, {p.t == F32 ? 0.5 : 1});
      ins.push_back("value");
    }
    if (!p.axes.empty()) {
      if (ins.size() == 2) ins.push_back("");
      c.constant("axes", I64, {static_cast<int64_t>(p.axes.size())}, p.axes);
      ins.push_back("axes");
    }
    c.node("Pad", ins, {"y"}).s("mode", p.mode);
    c.output("y", p.t);
    out.push_back(std::move(c));
  }
}

// ---- AveragePool (opset 19: dilations) ----

void pool_cases(std::vector<Case>& out) {
  {
    Case c("test_averagepool_2d_dilations_opset19", 19);
    c.input("x", F32, {1, 2, 6, 6});
    c.node("AveragePool", {"x"}, {"y"}).ints("kernel_shape", {2, 2}).ints("dilations", {2, 2});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_averagepool_2d_dilations_pads_opset19", 19);
    c.input("x", F32, {1, 1, 5, 7});
    c.node("AveragePool", {"x"}, {"y"})
        .ints("kernel_shape", {3, 2}).ints("dilations", {2, 3}).ints("pads", {1, 1, 2, 1}).ints("strides", {1, 2});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_averagepool_2d_dilations_count_include_pad_opset19", 19);
    c.input("x", F32, {1, 1, 5, 5});
    c.node("AveragePool", {"x"}, {"y"})
        .ints("kernel_shape", {2, 2}).ints("dilations", {2, 2}).ints("pads", {1, 1, 1, 1}).i("count_include_pad", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_averagepool_1d_dilations_ceil_opset19", 19);
    c.input("x", F32, {1, 2, 10});
    c.node("AveragePool", {"x"}, {"y"})
        .ints("kernel_shape", {3}).ints("dilations", {2}).ints("strides", {2}).i("ceil_mode", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_averagepool_3d_dilations_opset21", 21);
    c.input("x", F32, {1, 1, 4, 4, 4});
    c.node("AveragePool", {"x"}, {"y"}).ints("kernel_shape", {2, 2, 2}).ints("dilations", {2, 1, 2});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_maxpool_2d_dilations_opset21", 21);
    c.input("x", F32, {1, 2, 6, 6});
    c.node("MaxPool", {"x"}, {"y"}).ints("kernel_shape", {2, 2}).ints("dilations", {2, 2}).ints("pads", {1, 0, 0, 1});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
    Case c(std::string("test_") + (op[6] == 'A' ? "globalaveragepool" : "globalmaxpool") + "_opset21", 21);
    c.input("x", F32, {2, 3, 4, 5});
    c.node(op, {"x"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
}

// ---- Cast / CastLike (opset 19: saturate; 21: int4) ----

const char* tname(Elem t) {
  switch (t) {
    case F32: return "FLOAT";
    case F64: return "DOUBLE";
    case F16: return "FLOAT16";
    case BF16: return "BFLOAT16";
    case I8: return "INT8";
    case U8: return "UINT8";
    case I16: return "INT16";
    case U16: return "UINT16";
    case I32: return "INT32";
    case U32: return "UINT32";
    case I64: return "INT64";
    case U64: return "UINT64";
    case BOOL: return "BOOL";
  }
  return "?";
}

void cast_cases(std::vector<Case>& out) {
  struct C {
    Elem from, to;
    double lo, hi;
  };
  const C cs[] = {
      {F32, I32, -100, 100}, {F32, F16, -10, 10},  {F32, BF16, -10, 10}, {F32, F64, -1, 1},
      {F64, F32, -1, 1},     {I64, F32, -1000, 1000}, {F32, BOOL, -1, 1},  {BOOL, F32, 0, 1},
      {I32, I8, -100, 100},  {F16, F32, -4, 4},   {U8, I64, 0, 255},     {F32, U8, 0, 200},
  };
  for (int opset : {19, 21}) {
    for (const C& k : cs) {
      {
        Case c(std::string("test_cast_") + tname(k.from) + "_to_" + tname(k.to) + "_opset" + std::to_string(opset), opset);
        c.input("x", k.from, {3, 4}, k.lo, k.hi);
        if (k.to == BF16) {  // onnxruntime-node cannot return bfloat16: cast back to float
          c.node("Cast", {"x"}, {"b"}).i("to", k.to);
          c.node("Cast", {"b"}, {"y"}).i("to", F32);
          c.output("y", F32);
        } else {
          c.node("Cast", {"x"}, {"y"}).i("to", k.to);
          c.output("y", k.to);
        }
        out.push_back(std::move(c));
      }
      if (opset == 21) continue;
      {
        Case c(std::string("test_castlike_") + tname(k.from) + "_to_" + tname(k.to) + "_opset19", 19);
        c.input("x", k.from, {3, 4}, k.lo, k.hi);
        c.constant("like", k.to, {1}, {0});
        if (k.to == BF16) {
          c.node("CastLike", {"x", "like"}, {"b"});
          c.node("Cast", {"b"}, {"y"}).i("to", F32);
          c.output("y", F32);
        } else {
          c.node("CastLike", {"x", "like"}, {"y"});
          c.output("y", k.to);
        }
        out.push_back(std::move(c));
      }
    }
  }
  // 'saturate' (opset 19) only applies to float8 targets, which policyd refuses at load
  // (opset_refusal_test.cpp); ONNX Runtime refuses the attribute on any other target, so no
  // case here has it.
}

// ---- Shape, data movement and constants (opset 19/20/21 type lists) ----

void shape_cases(std::vector<Case>& out) {
  {
    Case c("test_shape_start_end_opset21", 21);
    c.input("x", F32, {2, 3, 4, 5});
    c.node("Shape", {"x"}, {"y"}).i("start", 1).i("end", -1);
    c.output("y", I64);
    out.push_back(std::move(c));
  }
  {
    Case c("test_shape_opset19", 19);
    c.input("x", I32, {3, 1, 2}, 0, 5);
    c.node("Shape", {"x"}, {"y"});
    c.output("y", I64);
    out.push_back(std::move(c));
  }
  {
    Case c("test_size_opset21", 21);
    c.input("x", BOOL, {3, 4, 2});
    c.node("Size", {"x"}, {"y"});
    c.output("y", I64);
    out.push_back(std::move(c));
  }
  {
    Case c("test_size_opset19", 19);
    c.input("x", F32, {5, 2});
    c.node("Size", {"x"}, {"y"});
    c.output("y", I64);
    out.push_back(std::move(c));
  }
  for (int opset : {19, 21}) {
    const std::string o = "_opset" + std::to_string(opset);
    {
      Case c("test_reshape_allowzero" + o, opset);
      c.input("x", F32, {2, 3, 4});
      c.constant("shape", I64, {3}, {4, 0, -1});
      c.node("Reshape", {"x", "shape"}, {"y"});
      c.output("y", F32);
      out.push_back(std::move(c));
    }
    {
      Case c("test_identity_int64" + o, opset);
      c.input("x", I64, {2, 3}, -9, 9);
      c.node("Identity", {"x"}, {"y"});
      c.output("y", I64);
      out.push_back(std::move(c));
    }
    {  // a Constant node (value tensor) feeding Add: the case counts for Add
      Case c("test_constant_add" + o, opset);
      c.input("x", F32, {2, 3});
      auto n = c.node("Constant", {}, {"k"});
      auto* a = n.proto()->add_attribute();
      a->set_name("value");
      a->set_type(onnx::AttributeProto::TENSOR);
      *a->mutable_t() = make_tensor("k", F32, {3}, {0.5, -1.25, 2});
      c.node("Add", {"x", "k"}, {"y"});
      c.output("y", F32);
      out.push_back(std::move(c));
    }
  }
  {
    Case c("test_reshape_allowzero_empty_opset21", 21);
    c.input("x", F32, {0, 3, 4});
    c.constant("shape", I64, {3}, {3, 4, 0});
    c.node("Reshape", {"x", "shape"}, {"y"}).i("allowzero", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_identity_bool_opset21", 21);
    c.input("x", BOOL, {4});
    c.node("Identity", {"x"}, {"y"});
    c.output("y", BOOL);
    out.push_back(std::move(c));
  }
  // ConstantOfShape (20, 21).
  struct K {
    const char* name;
    int opset;
    Elem t;
    double v;
    bool has_value;
  };
  const K ks[] = {
      {"test_constantofshape_float_opset20", 20, F32, 1.5, true},
      {"test_constantofshape_int64_opset21", 21, I64, -7, true},
      {"test_constantofshape_bool_opset21", 21, BOOL, 1, true},
      {"test_constantofshape_default_opset21", 21, F32, 0, false},
      {"test_constantofshape_int8_opset20", 20, I8, -3, true},
  };
  for (const K& k : ks) {
    Case c(k.name, k.opset);
    c.input_values("shape", I64, {3}, {2, 3, 1});
    auto n = c.node("ConstantOfShape", {"shape"}, {"y"});
    if (k.has_value) {
      auto* a = n.proto()->add_attribute();
      a->set_name("value");
      a->set_type(onnx::AttributeProto::TENSOR);
      *a->mutable_t() = make_tensor("value", k.t, {1}, {k.v});
    }
    c.output("y", k.t);
    out.push_back(std::move(c));
  }
  {
    Case c("test_flatten_axis2_opset21", 21);
    c.input("x", F32, {2, 3, 4, 5});
    c.node("Flatten", {"x"}, {"y"}).i("axis", 2);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_flatten_neg_axis_int32_opset21", 21);
    c.input("x", I32, {2, 3, 4}, -9, 9);
    c.node("Flatten", {"x"}, {"y"}).i("axis", -1);
    c.output("y", I32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_squeeze_axes_opset21", 21);
    c.input("x", F32, {1, 3, 1, 5});
    c.constant("axes", I64, {2}, {0, -2});
    c.node("Squeeze", {"x", "axes"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_squeeze_all_opset21", 21);
    c.input("x", I64, {1, 3, 1}, 0, 9);
    c.node("Squeeze", {"x"}, {"y"});
    c.output("y", I64);
    out.push_back(std::move(c));
  }
  {
    Case c("test_unsqueeze_axes_opset21", 21);
    c.input("x", F32, {3, 5});
    c.constant("axes", I64, {2}, {-1, 0});
    c.node("Unsqueeze", {"x", "axes"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_transpose_perm_opset21", 21);
    c.input("x", F32, {2, 3, 4});
    c.node("Transpose", {"x"}, {"y"}).ints("perm", {1, 2, 0});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_transpose_default_bool_opset21", 21);
    c.input("x", BOOL, {2, 3, 4});
    c.node("Transpose", {"x"}, {"y"});
    c.output("y", BOOL);
    out.push_back(std::move(c));
  }
  // Equal (19): every numeric type and bool.
  for (Elem t : {F32, I32, I64, BOOL}) {
    Case c(std::string("test_equal_") + tname(t) + "_opset19", 19);
    c.input("a", t, {3, 4}, t == F32 ? -1 : 0, t == F32 ? 1 : 2);
    if (t == F32) c.constant("b", t, {4}, {0.25, -0.5, 0, 1});
    else c.input("b", t, {4}, 0, 2);
    c.node("Equal", {"a", "b"}, {"y"});
    c.output("y", BOOL);
    out.push_back(std::move(c));
  }
}

// ---- Every other claimed op once at opset 21 ----

void newest_cases(std::vector<Case>& out) {
  struct U {
    const char* op;
    double lo, hi;
  };
  const U us[] = {
      {"Abs", -1, 1},      {"Neg", -1, 1},        {"Exp", -2, 2},       {"Log", 0.01, 3},
      {"Sqrt", 0, 4},      {"Reciprocal", 0.1, 2}, {"Sigmoid", -4, 4},  {"Tanh", -3, 3},
      {"Relu", -1, 1},     {"Elu", -2, 2},        {"LeakyRelu", -2, 2}, {"Selu", -2, 2},
      {"Softplus", -3, 3}, {"Softsign", -3, 3},   {"Mish", -4, 4},      {"HardSigmoid", -4, 4},
      {"HardSwish", -4, 4}, {"Sin", -3, 3},       {"Cos", -3, 3},       {"Floor", -3, 3},
      {"Ceil", -3, 3},     {"Round", -3, 3},      {"Sign", -1, 1},      {"Erf", -2, 2},
      {"Softmax", -2, 2},  {"LogSoftmax", -2, 2},
  };
  for (const U& u : us) {
    std::string lower;
    for (const char* p = u.op; *p; ++p) lower += static_cast<char>(std::tolower(*p));
    out.push_back(unary("test_" + lower + "_opset21", 21, u.op, F32, {3, 4}, u.lo, u.hi));
  }
  // Mish is new in opset 18.
  out.push_back(unary("test_mish_opset18", 18, "Mish", F32, {2, 5}, -5, 5));
  out.push_back(unary("test_mish_double_opset18", 18, "Mish", F64, {2, 5}, -5, 5));
  // Gelu is new in opset 20.
  out.push_back(unary("test_gelu_opset20", 20, "Gelu", F32, {3, 5}, -4, 4));
  {
    Case c("test_gelu_tanh_opset20", 20);
    c.input("x", F32, {3, 5}, -4, 4);
    c.node("Gelu", {"x"}, {"y"}).s("approximate", "tanh");
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  out.push_back(unary("test_not_opset21", 21, "Not", BOOL, {3, 4}));
  out.push_back(unary("test_abs_int32_opset21", 21, "Abs", I32, {3, 4}, -50, 50));
  {
    Case c("test_elu_alpha_opset21", 21);
    c.input("x", F32, {3, 4}, -2, 2);
    c.node("Elu", {"x"}, {"y"}).f("alpha", 0.5f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  // Binary and variadic ops, broadcasting [3,4] with [4].
  struct B {
    const char* op;
    Elem t, out;
    double lo, hi;
  };
  const B bs[] = {
      {"Add", F32, F32, -1, 1},          {"Sub", F32, F32, -1, 1},
      {"Mul", F32, F32, -1, 1},          {"Div", F32, F32, 0.5, 2},
      {"Pow", F32, F32, 0.5, 2},         {"Mod", I32, I32, 1, 9},
      {"Greater", F32, BOOL, -1, 1},     {"GreaterOrEqual", I64, BOOL, 0, 3},
      {"Less", F32, BOOL, -1, 1},        {"LessOrEqual", I32, BOOL, 0, 3},
      {"And", BOOL, BOOL, 0, 1},         {"Or", BOOL, BOOL, 0, 1},
      {"Xor", BOOL, BOOL, 0, 1},         {"Max", F32, F32, -1, 1},
      {"Min", I64, I64, -9, 9},          {"Sum", F32, F32, -1, 1},
      {"Mean", F32, F32, -1, 1},         {"Add", I64, I64, -100, 100},
  };
  for (const B& b : bs) {
    std::string lower;
    for (const char* p = b.op; *p; ++p) lower += static_cast<char>(std::tolower(*p));
    Case c("test_" + lower + "_" + tname(b.t) + "_bcast_opset21", 21);
    c.input("a", b.t, {3, 4}, b.lo, b.hi);
    c.input("b", b.t, {4}, b.lo, b.hi);
    c.node(b.op, {"a", "b"}, {"y"});
    c.output("y", b.out);
    out.push_back(std::move(c));
  }
  {
    Case c("test_mod_fmod_opset21", 21);
    c.input("a", F32, {3, 4}, -5, 5);
    c.input("b", F32, {4}, 0.5, 2);
    c.node("Mod", {"a", "b"}, {"y"}).i("fmod", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_sum_three_inputs_opset21", 21);
    c.input("a", F32, {3, 4}).input("b", F32, {1, 4}).input("c", F32, {3, 1});
    c.node("Sum", {"a", "b", "c"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_where_opset21", 21);
    c.input("cond", BOOL, {3, 4}).input("a", F32, {3, 4}).input("b", F32, {4});
    c.node("Where", {"cond", "a", "b"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_clip_min_max_opset21", 21);
    c.input("x", F32, {3, 4}, -2, 2);
    c.constant("lo", F32, {}, {-0.5}).constant("hi", F32, {}, {0.75});
    c.node("Clip", {"x", "lo", "hi"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_clip_int64_max_only_opset21", 21);
    c.input("x", I64, {3, 4}, -20, 20);
    c.constant("hi", I64, {}, {5});
    c.node("Clip", {"x", "", "hi"}, {"y"});
    c.output("y", I64);
    out.push_back(std::move(c));
  }
  for (const char* op : {"ArgMax", "ArgMin"}) {
    Case c(std::string("test_") + (op[3] == 'M' && op[4] == 'a' ? "argmax" : "argmin") + "_select_last_opset21", 21);
    c.input("x", I32, {3, 5}, 0, 3);
    c.node(op, {"x"}, {"y"}).i("axis", 1).i("keepdims", 0).i("select_last_index", 1);
    c.output("y", I64);
    out.push_back(std::move(c));
  }
  {
    Case c("test_softmax_axis0_opset21", 21);
    c.input("x", F32, {3, 4, 2}, -2, 2);
    c.node("Softmax", {"x"}, {"y"}).i("axis", 0);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  // Linear algebra and convolution.
  {
    Case c("test_gemm_trans_bias_opset21", 21);
    c.input("a", F32, {4, 3}).input("b", F32, {5, 4}).input("c", F32, {5});
    c.node("Gemm", {"a", "b", "c"}, {"y"}).i("transA", 1).i("transB", 1).f("alpha", 0.5f).f("beta", 2.f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_matmul_batched_opset21", 21);
    c.input("a", F32, {2, 3, 4}).input("b", F32, {4, 5});
    c.node("MatMul", {"a", "b"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_conv_group_pads_opset21", 21);
    c.input("x", F32, {1, 4, 6, 6}).input("w", F32, {4, 2, 3, 3}).input("b", F32, {4});
    c.node("Conv", {"x", "w", "b"}, {"y"})
        .i("group", 2).ints("pads", {1, 0, 1, 2}).ints("strides", {2, 1}).ints("dilations", {1, 2});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_batchnormalization_opset21", 21);
    c.input("x", F32, {2, 3, 4}).input("s", F32, {3}).input("bias", F32, {3});
    c.input("mean", F32, {3}).input("var", F32, {3}, 0.5, 2);
    c.node("BatchNormalization", {"x", "s", "bias", "mean", "var"}, {"y"}).f("epsilon", 1e-3f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_layernormalization_axis1_opset21", 21);
    c.input("x", F32, {2, 3, 4}).input("s", F32, {3, 4}).input("bias", F32, {3, 4});
    c.node("LayerNormalization", {"x", "s", "bias"}, {"y"}).i("axis", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  // GroupNormalization: opset 18 scales per group, 21 per channel (and adds stash_type).
  {
    Case c("test_groupnormalization_opset18", 18);
    c.input("x", F32, {2, 6, 3, 2}).input("s", F32, {3}).input("bias", F32, {3});
    c.node("GroupNormalization", {"x", "s", "bias"}, {"y"}).i("num_groups", 3).f("epsilon", 1e-3f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_groupnormalization_opset21", 21);
    c.input("x", F32, {2, 6, 5}).input("s", F32, {6}).input("bias", F32, {6});
    c.node("GroupNormalization", {"x", "s", "bias"}, {"y"}).i("num_groups", 2);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_groupnormalization_stash_type_opset21", 21);
    c.input("x", F32, {1, 4, 2, 3}).input("s", F32, {4}).input("bias", F32, {4});
    c.node("GroupNormalization", {"x", "s", "bias"}, {"y"}).i("num_groups", 4).i("stash_type", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_instancenormalization_opset21", 21);
    c.input("x", F32, {2, 3, 5}).input("s", F32, {3}).input("bias", F32, {3});
    c.node("InstanceNormalization", {"x", "s", "bias"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  // Recurrent ops (forward, seq 3, batch 2, input 4, hidden 3).
  struct R {
    const char* op;
    int gates;
  };
  for (const R& r : {R{"RNN", 1}, R{"GRU", 3}, R{"LSTM", 4}}) {
    std::string lower;
    for (const char* p = r.op; *p; ++p) lower += static_cast<char>(std::tolower(*p));
    Case c("test_" + lower + "_bidirectional_opset21", 21);
    const int64_t H = 3, I = 4, D = 2;
    c.input("x", F32, {3, 2, I});
    c.input("w", F32, {D, r.gates * H, I}, -0.5, 0.5).input("r", F32, {D, r.gates * H, H}, -0.5, 0.5);
    c.input("b", F32, {D, 2 * r.gates * H}, -0.5, 0.5);
    c.node(r.op, {"x", "w", "r", "b"}, {"y", "yh"}).i("hidden_size", H).s("direction", "bidirectional");
    c.output("y", F32).output("yh", F32);
    out.push_back(std::move(c));
  }
  // Data movement.
  {
    Case c("test_gather_axis1_opset21", 21);
    c.input("x", F32, {3, 4}).input_values("i", I64, {2, 2}, {0, -1, 2, 1});
    c.node("Gather", {"x", "i"}, {"y"}).i("axis", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_gatherelements_opset21", 21);
    c.input("x", F32, {3, 4}).input_values("i", I64, {3, 2}, {0, 3, -1, 2, 1, 1});
    c.node("GatherElements", {"x", "i"}, {"y"}).i("axis", 1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_expand_opset21", 21);
    c.input("x", F32, {3, 1});
    c.constant("shape", I64, {3}, {2, 1, 4});
    c.node("Expand", {"x", "shape"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_tile_opset21", 21);
    c.input("x", I32, {2, 3}, -9, 9);
    c.constant("reps", I64, {2}, {2, 3});
    c.node("Tile", {"x", "reps"}, {"y"});
    c.output("y", I32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_slice_steps_opset21", 21);
    c.input("x", F32, {5, 6});
    c.constant("starts", I64, {2}, {4, 1}).constant("ends", I64, {2}, {-100, 100});
    c.constant("axes", I64, {2}, {0, -1}).constant("steps", I64, {2}, {-2, 2});
    c.node("Slice", {"x", "starts", "ends", "axes", "steps"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_concat_neg_axis_opset21", 21);
    c.input("a", F32, {2, 3}).input("b", F32, {2, 1});
    c.node("Concat", {"a", "b"}, {"y"}).i("axis", -1);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_range_opset21", 21);
    c.input_values("start", F32, {}, {1.5}).input_values("limit", F32, {}, {-2}).input_values("delta", F32, {}, {-0.75});
    c.node("Range", {"start", "limit", "delta"}, {"y"});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
}

// ---- Resize (18: axes, keep_aspect_ratio_policy, antialias; 19: half_pixel_symmetric) ----

void resize_cases(std::vector<Case>& out) {
  struct R {
    const char* name;
    int opset;
    const char* mode;
    const char* coord;
    Dims in;
    std::vector<double> scales;  // or sizes when empty
    std::vector<double> sizes;
    std::vector<int64_t> axes;
    const char* policy;  // keep_aspect_ratio_policy or nullptr
    int antialias;
    const char* nearest;  // nearest_mode or nullptr
  };
  const R rs[] = {
      {"test_resize_nearest_upsample_opset21", 21, "nearest", "half_pixel", {1, 2, 3, 4}, {1, 1, 2, 1.5}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_nearest_asymmetric_floor_opset21", 21, "nearest", "asymmetric", {1, 1, 4, 5}, {1, 1, 0.5, 1.6}, {}, {}, nullptr, 0, "floor"},
      {"test_resize_nearest_ceil_align_corners_opset21", 21, "nearest", "align_corners", {1, 1, 3, 3}, {}, {1, 1, 5, 4}, {}, nullptr, 0, "ceil"},
      {"test_resize_nearest_round_prefer_ceil_opset21", 21, "nearest", "half_pixel", {1, 1, 4, 4}, {}, {1, 1, 8, 6}, {}, nullptr, 0, "round_prefer_ceil"},
      {"test_resize_linear_upsample_opset21", 21, "linear", "half_pixel", {1, 2, 3, 4}, {1, 1, 2, 1.5}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_linear_downsample_opset21", 21, "linear", "half_pixel", {1, 1, 6, 8}, {1, 1, 0.5, 0.75}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_linear_align_corners_opset21", 21, "linear", "align_corners", {1, 1, 3, 4}, {}, {1, 1, 5, 7}, {}, nullptr, 0, nullptr},
      {"test_resize_linear_asymmetric_opset21", 21, "linear", "asymmetric", {2, 3, 4}, {1, 2, 0.5}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_linear_pytorch_half_pixel_opset21", 21, "linear", "pytorch_half_pixel", {1, 1, 4, 4}, {}, {1, 1, 1, 3}, {}, nullptr, 0, nullptr},
      {"test_resize_linear_half_pixel_symmetric_opset19", 19, "linear", "half_pixel_symmetric", {1, 1, 4, 5}, {1, 1, 1.5, 0.6}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_nearest_half_pixel_symmetric_opset19", 19, "nearest", "half_pixel_symmetric", {1, 1, 4, 5}, {1, 1, 1.5, 2.5}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_cubic_upsample_opset21", 21, "cubic", "half_pixel", {1, 1, 4, 4}, {1, 1, 2, 1.5}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_cubic_downsample_asymmetric_opset21", 21, "cubic", "asymmetric", {1, 1, 6, 6}, {1, 1, 0.5, 0.75}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_linear_axes_opset18", 18, "linear", "half_pixel", {1, 2, 3, 4}, {2, 0.5}, {}, {2, 3}, nullptr, 0, nullptr},
      {"test_resize_nearest_axes_sizes_opset18", 18, "nearest", "half_pixel", {2, 3, 4}, {}, {6, 2}, {-2, 0}, nullptr, 0, nullptr},
      {"test_resize_linear_not_larger_opset18", 18, "linear", "half_pixel", {1, 1, 4, 8}, {}, {2, 2}, {2, 3}, "not_larger", 0, nullptr},
      {"test_resize_nearest_not_smaller_opset18", 18, "nearest", "half_pixel", {1, 1, 2, 4}, {}, {6, 6}, {2, 3}, "not_smaller", 0, nullptr},
      {"test_resize_linear_antialias_opset18", 18, "linear", "half_pixel", {1, 2, 8, 8}, {1, 1, 0.5, 0.375}, {}, {}, nullptr, 1, nullptr},
      {"test_resize_cubic_antialias_opset18", 18, "cubic", "half_pixel", {1, 1, 8, 8}, {1, 1, 0.5, 0.625}, {}, {}, nullptr, 1, nullptr},
      {"test_resize_linear_align_corners_downsample_opset21", 21, "linear", "align_corners", {1, 1, 2, 4}, {1, 1, 0.6f, 0.6f}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_cubic_align_corners_downsample_opset21", 21, "cubic", "align_corners", {1, 1, 4, 4}, {1, 1, 0.8f, 0.8f}, {}, {}, nullptr, 0, nullptr},
      {"test_resize_linear_antialias_upsample_opset21", 21, "linear", "half_pixel", {1, 1, 3, 4}, {1, 1, 2, 1.5}, {}, {}, nullptr, 1, nullptr},
  };
  for (const R& r : rs) {
    Case c(r.name, r.opset);
    c.input("x", F32, r.in);
    std::vector<std::string> ins = {"x", ""};
    if (!r.scales.empty()) {
      c.constant("scales", F32, {static_cast<int64_t>(r.scales.size())}, r.scales);
      ins.push_back("scales");
    } else {
      c.constant("sizes", I64, {static_cast<int64_t>(r.sizes.size())}, r.sizes);
      ins.push_back("");
      ins.push_back("sizes");
    }
    auto n = c.node("Resize", ins, {"y"});
    n.s("mode", r.mode).s("coordinate_transformation_mode", r.coord);
    if (!r.axes.empty()) n.ints("axes", r.axes);
    if (r.policy) n.s("keep_aspect_ratio_policy", r.policy);
    if (r.antialias) n.i("antialias", 1);
    if (r.nearest) n.s("nearest_mode", r.nearest);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_resize_tf_crop_and_resize_opset21", 21);
    c.input("x", F32, {1, 1, 4, 4});
    c.constant("roi", F32, {8}, {0, 0, 0.4, 0.6, 1, 1, 1.2, 1.7});
    c.constant("sizes", I64, {4}, {1, 1, 3, 3});
    c.node("Resize", {"x", "roi", "", "sizes"}, {"y"})
        .s("mode", "linear").s("coordinate_transformation_mode", "tf_crop_and_resize").f("extrapolation_value", 10.f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_resize_cubic_antialias_exclude_outside_opset21", 21);
    c.input("x", F32, {1, 1, 7, 9});
    c.constant("sizes", I64, {2}, {3, 4});
    c.node("Resize", {"x", "", "", "sizes"}, {"y"})
        .s("mode", "cubic").i("antialias", 1).i("exclude_outside", 1).ints("axes", {2, 3});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {  // sizes as a graph input: its value becomes part of the shape bucket
    Case c("test_resize_linear_sizes_graph_input_opset21", 21);
    c.input("x", F32, {1, 2, 3, 5});
    c.input_values("sizes", I64, {2}, {7, 2});
    c.node("Resize", {"x", "", "", "sizes"}, {"y"}).s("mode", "linear").ints("axes", {3, 2});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_resize_cubic_exclude_outside_opset21", 21);
    c.input("x", F32, {1, 1, 4, 4});
    c.constant("scales", F32, {4}, {1, 1, 1.5, 2});
    c.node("Resize", {"x", "", "scales"}, {"y"})
        .s("mode", "cubic").i("exclude_outside", 1).f("cubic_coeff_a", -0.5f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
}

// ---- Constant alone, and the random ops (compared by type and shape only) ----

void constant_random_cases(std::vector<Case>& out) {
  {
    Case c("test_constant_tensor_opset21", 21);
    auto n = c.node("Constant", {}, {"y"});
    auto* a = n.proto()->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    *a->mutable_t() = make_tensor("y", I32, {2, 2}, {1, -2, 3, -4});
    c.output("y", I32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_constant_value_floats_opset21", 21);
    c.node("Constant", {}, {"y"}).floats("value_floats", {0.5f, -1.5f, 2.25f});
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_constant_value_int_opset19", 19);
    c.node("Constant", {}, {"y"}).i("value_int", -7);
    c.output("y", I64);
    out.push_back(std::move(c));
  }
  // A fixed seed keeps ONNX Runtime's outputs (and so the committed files) the same from run to
  // run; policyd's own streams differ, so the runner compares these by type and shape.
  {
    Case c("test_randomnormal_opset21", 21);
    c.node("RandomNormal", {}, {"y"}).ints("shape", {3, 4}).f("mean", 1.f).f("scale", 2.f).f("seed", 3.f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_randomuniform_double_opset21", 21);
    c.node("RandomUniform", {}, {"y"}).ints("shape", {2, 5}).i("dtype", F64).f("low", -2.f).f("high", 2.f).f("seed", 3.f);
    c.output("y", F64);
    out.push_back(std::move(c));
  }
  {
    Case c("test_randomnormallike_opset21", 21);
    c.input("x", F32, {2, 3});
    c.node("RandomNormalLike", {"x"}, {"y"}).f("seed", 5.f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_randomuniformlike_opset21", 21);
    c.input("x", F32, {4, 2});
    c.node("RandomUniformLike", {"x"}, {"y"}).f("seed", 5.f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_bernoulli_opset21", 21);
    c.input("p", F32, {3, 4}, 0, 1);
    c.node("Bernoulli", {"p"}, {"y"}).f("seed", 7.f);
    c.output("y", F32);
    out.push_back(std::move(c));
  }
  {
    Case c("test_multinomial_opset21", 21);
    c.input("logits", F32, {2, 5}, -1, 1);
    c.node("Multinomial", {"logits"}, {"y"}).i("sample_size", 4).f("seed", 7.f);
    c.output("y", I32);
    out.push_back(std::move(c));
  }
}

}  // namespace

PD_ONNX_CASES(opsets) {
  resize_cases(out);
  constant_random_cases(out);
  reduce_cases(out);
  split_cases(out);
  pad_cases(out);
  pool_cases(out);
  cast_cases(out);
  shape_cases(out);
  newest_cases(out);
}
