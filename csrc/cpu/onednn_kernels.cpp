#include "onednn_kernels.h"

#include <cfloat>
#include <string>

#include "../core/activation.h"

namespace pd {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

bool append_activation(const Node& n, dnnl::post_ops& po) {
  Act act;
  if (!parse_act(n.attr_string("activation", ""), &act)) return false;
  float a = n.attr_float("activation_alpha", 0.f), b = n.attr_float("activation_beta", 0.f);
  switch (act) {
    case Act::None: return true;
    case Act::Relu: po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f); return true;
    case Act::LeakyRelu: po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, a, 0.f); return true;
    case Act::Tanh: po.append_eltwise(1.f, dnnl::algorithm::eltwise_tanh, 0.f, 0.f); return true;
    case Act::Sigmoid: po.append_eltwise(1.f, dnnl::algorithm::eltwise_logistic, 0.f, 0.f); return true;
    case Act::Elu: po.append_eltwise(1.f, dnnl::algorithm::eltwise_elu, a, 0.f); return true;
    case Act::Softplus: po.append_eltwise(1.f, dnnl::algorithm::eltwise_soft_relu, 0.f, 0.f); return true;
    case Act::Mish: po.append_eltwise(1.f, dnnl::algorithm::eltwise_mish, 0.f, 0.f); return true;
    case Act::Swish: po.append_eltwise(1.f, dnnl::algorithm::eltwise_swish, a, 0.f); return true;
    case Act::Clip: po.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, a, b); return true;
    case Act::HardSigmoid:
      po.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, a, b);
      po.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, 1.f);
      return true;
  }
  return false;
}

namespace {

void check(dnnl_status_t st, const char* what) {
  if (st != dnnl_success) fail(PD_ERR_INTERNAL, "oneDNN ", what, " failed (status ", static_cast<int>(st), ")");
}

// One primitive with up to 6 arguments; the addresses of the Program's views are bound per run
// (graph inputs move; arena addresses do not, so set_data_handle is skipped when unchanged).
class PrimitiveKernel : public Kernel {
 public:
  struct Binding {
    int arg;        // DNNL_ARG_*
    memory mem;
    int input = -1;   // node input index whose view's data feeds this memory, or
    int output = -1;  // node output index
  };
  PrimitiveKernel(OneDnnKernels& ctx, dnnl::primitive prim, std::vector<Binding> b)
      : ctx_(ctx), prim_(std::move(prim)), bind_(std::move(b)) {
    args_.resize(bind_.size());
    last_.assign(bind_.size(), nullptr);
    for (size_t i = 0; i < bind_.size(); ++i) args_[i] = dnnl_exec_arg_t{bind_[i].arg, bind_[i].mem.get()};
  }
  // Optional reorders of the input before and the output after (blocked layouts for Conv).
  void set_reorders(dnnl::primitive in_r, memory in_user, memory in_blk, dnnl::primitive out_r, memory out_blk,
                    memory out_user) {
    in_reorder_ = std::move(in_r);
    in_user_ = in_user;
    in_blk_ = in_blk;
    out_reorder_ = std::move(out_r);
    out_blk_ = out_blk;
    out_user_ = out_user;
    if (in_reorder_) {
      in_args_[0] = {DNNL_ARG_FROM, in_user_.get()};
      in_args_[1] = {DNNL_ARG_TO, in_blk_.get()};
    }
    if (out_reorder_) {
      out_args_[0] = {DNNL_ARG_FROM, out_blk_.get()};
      out_args_[1] = {DNNL_ARG_TO, out_user_.get()};
    }
  }

  void run(RunCtx&, const View* in, View* out) override {
    for (size_t i = 0; i < bind_.size(); ++i) {
      void* p = bind_[i].input >= 0 ? in[bind_[i].input].data
                : bind_[i].output >= 0 ? out[bind_[i].output].data : nullptr;
      if (p && p != last_[i]) {
        check(dnnl_memory_set_data_handle(bind_[i].mem.get(), p), "set_data_handle");
        last_[i] = p;
      }
    }
    if (in_reorder_) {
      if (in[0].data != in_last_) {
        check(dnnl_memory_set_data_handle(in_user_.get(), in[0].data), "set_data_handle");
        in_last_ = in[0].data;
      }
      check(dnnl_primitive_execute(in_reorder_.get(), ctx_.stream().get(), 2, in_args_), "reorder");
    }
    check(dnnl_primitive_execute(prim_.get(), ctx_.stream().get(), static_cast<int>(args_.size()), args_.data()),
          "execute");
    if (out_reorder_) {
      if (out[0].data != out_last_) {
        check(dnnl_memory_set_data_handle(out_user_.get(), out[0].data), "set_data_handle");
        out_last_ = out[0].data;
      }
      check(dnnl_primitive_execute(out_reorder_.get(), ctx_.stream().get(), 2, out_args_), "reorder");
    }
  }

 private:
  OneDnnKernels& ctx_;
  dnnl::primitive prim_;
  std::vector<Binding> bind_;
  std::vector<dnnl_exec_arg_t> args_;
  std::vector<void*> last_;
  dnnl::primitive in_reorder_, out_reorder_;
  memory in_user_, in_blk_, out_blk_, out_user_;
  dnnl_exec_arg_t in_args_[2], out_args_[2];
  void* in_last_ = nullptr;
  void* out_last_ = nullptr;
};

memory::dims dims_of(const Shape& s) { return memory::dims(s.begin(), s.end()); }

// Gemm / MatMul / FusedGemm / FusedMatMul on f32 with constant 2-D weights.
std::unique_ptr<Kernel> make_matmul(OneDnnKernels& k, const InferCtx& c) {
  const Node& n = c.node;
  bool is_gemm = n.op == "Gemm" || n.op == "FusedGemm";
  if (c.num_inputs() < 2 || c.in[0].dtype != DType::F32 || c.in[1].dtype != DType::F32) return nullptr;
  if (!c.in[1].value || c.in[1].shape.size() != 2) return nullptr;
  const Shape& as = c.in[0].shape;
  if (as.empty()) return nullptr;
  bool ta = is_gemm && n.attr_int("transA", 0) != 0;
  bool tb = is_gemm && n.attr_int("transB", 0) != 0;
  if (is_gemm && (n.attr_float("alpha", 1.f) != 1.f)) return nullptr;
  int64_t K = ta ? as[0] : as.back();
  int64_t M = 1;
  if (is_gemm) {
    if (as.size() != 2) return nullptr;
    M = ta ? as[1] : as[0];
  } else {
    for (size_t i = 0; i + 1 < as.size(); ++i) M *= as[i];
  }
  const Shape& bs = c.in[1].shape;
  int64_t N = tb ? bs[0] : bs[1];
  if ((tb ? bs[1] : bs[0]) != K) return nullptr;
  if (M == 0 || N == 0 || K == 0) return nullptr;

  // Bias: Gemm's C (beta must be 1) or FusedMatMul's bias; [N] or [1,N] or [M,N].
  bool has_bias = c.has_input(2);
  memory::desc bias_md;
  bool full_bias = false;
  if (has_bias) {
    const TensorInfo& b = c.in[2];
    if (b.dtype != DType::F32) return nullptr;
    if (is_gemm && n.attr_float("beta", 1.f) != 1.f) return nullptr;
    int64_t bn = numel(b.shape);
    if (bn == N && (b.shape.size() == 1 || (b.shape.size() == 2 && b.shape[0] == 1))) {
      bias_md = memory::desc({1, N}, dt::f32, tag::ab);
    } else if (bn == M * N && b.shape.size() == 2 && b.shape[0] == M) {
      bias_md = memory::desc({M, N}, dt::f32, tag::ab);
      full_bias = true;
    } else {
      return nullptr;  // scalar or column bias: the portable kernel broadcasts it
    }
  }
  (void)full_bias;
  memory::desc src_md({M, K}, dt::f32, ta ? tag::ba : tag::ab);
  memory::desc wplain({K, N}, dt::f32, tb ? tag::ba : tag::ab);
  memory::desc wany({K, N}, dt::f32, tag::any);
  memory::desc dst_md({M, N}, dt::f32, tag::ab);

  dnnl::post_ops po;
  if (!append_activation(n, po)) return nullptr;
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto d = has_bias ? dnnl::matmul::desc(src_md, wany, bias_md, dst_md)
                    : dnnl::matmul::desc(src_md, wany, dst_md);
  dnnl::matmul::primitive_desc pd(d, attr, k.engine());
  memory wmem = k.weights(*c.in[1].value, wplain, pd.weights_desc());
  std::vector<PrimitiveKernel::Binding> b;
  b.push_back({DNNL_ARG_SRC, memory(src_md, k.engine(), nullptr), 0, -1});
  b.push_back({DNNL_ARG_WEIGHTS, wmem, -1, -1});
  if (has_bias) {
    if (c.in[2].value) {
      b.push_back({DNNL_ARG_BIAS, memory(bias_md, k.engine(), const_cast<void*>(c.in[2].value->data())), -1, -1});
    } else {
      b.push_back({DNNL_ARG_BIAS, memory(bias_md, k.engine(), nullptr), 2, -1});
    }
  }
  b.push_back({DNNL_ARG_DST, memory(dst_md, k.engine(), nullptr), -1, 0});
  b.push_back({DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), k.engine()), -1, -1});
  return std::make_unique<PrimitiveKernel>(k, dnnl::matmul(pd), std::move(b));
}

// Conv / FusedConv: 2-D, f32, constant weights (and bias).
std::unique_ptr<Kernel> make_conv(OneDnnKernels& k, const InferCtx& c) {
  const Node& n = c.node;
  if (c.num_inputs() < 2 || c.in[0].dtype != DType::F32 || !c.in[1].value) return nullptr;
  const Shape& xs = c.in[0].shape;
  const Shape& ws = c.in[1].shape;
  const Shape& ys = c.out[0].shape;
  if (xs.size() != 4 || ws.size() != 4 || ys.size() != 4) return nullptr;
  if (c.has_input(2) && !c.in[2].value) return nullptr;
  int64_t group = n.attr_int("group", 1);
  std::vector<int64_t> strides = n.attr_ints("strides", {1, 1});
  std::vector<int64_t> dil = n.attr_ints("dilations", {1, 1});
  std::vector<int64_t> pads = n.attr_ints("pads", {0, 0, 0, 0});
  std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  if (strides.size() != 2 || dil.size() != 2 || pads.size() != 4) return nullptr;
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (int i = 0; i < 2; ++i) {
      int64_t kext = (ws[2 + i] - 1) * dil[i] + 1;
      int64_t total = std::max<int64_t>(0, (ys[2 + i] - 1) * strides[i] + kext - xs[2 + i]);
      int64_t small = total / 2, big = total - small;
      pads[i] = auto_pad == "SAME_UPPER" ? small : big;
      pads[2 + i] = auto_pad == "SAME_UPPER" ? big : small;
    }
  } else if (auto_pad == "VALID") {
    pads = {0, 0, 0, 0};
  }
  memory::dims wdims = group > 1 ? memory::dims{group, ws[0] / group, ws[1], ws[2], ws[3]} : dims_of(ws);
  memory::desc x_user(dims_of(xs), dt::f32, tag::nchw);
  memory::desc y_user(dims_of(ys), dt::f32, tag::nchw);
  memory::desc x_any(dims_of(xs), dt::f32, tag::any);
  memory::desc y_any(dims_of(ys), dt::f32, tag::any);
  memory::desc w_plain(wdims, dt::f32, group > 1 ? tag::goihw : tag::oihw);
  memory::desc w_any(wdims, dt::f32, tag::any);
  memory::desc b_md({ws[0]}, dt::f32, tag::x);
  dnnl::post_ops po;
  if (!append_activation(n, po)) return nullptr;
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  memory::dims st{strides[0], strides[1]}, dl{dil[0] - 1, dil[1] - 1}, pl{pads[0], pads[1]}, pr{pads[2], pads[3]};
  auto d = c.has_input(2)
               ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                 x_any, w_any, b_md, y_any, st, dl, pl, pr)
               : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                 x_any, w_any, y_any, st, dl, pl, pr);
  dnnl::convolution_forward::primitive_desc pd(d, attr, k.engine());
  memory wmem = k.weights(*c.in[1].value, w_plain, pd.weights_desc());
  bool reorder_in = pd.src_desc() != x_user;
  bool reorder_out = pd.dst_desc() != y_user;
  std::vector<PrimitiveKernel::Binding> b;
  memory x_blk, y_blk;
  if (reorder_in) {
    x_blk = memory(pd.src_desc(), k.engine());
    b.push_back({DNNL_ARG_SRC, x_blk, -1, -1});
  } else {
    b.push_back({DNNL_ARG_SRC, memory(x_user, k.engine(), nullptr), 0, -1});
  }
  b.push_back({DNNL_ARG_WEIGHTS, wmem, -1, -1});
  if (c.has_input(2))
    b.push_back({DNNL_ARG_BIAS, memory(b_md, k.engine(), const_cast<void*>(c.in[2].value->data())), -1, -1});
  if (reorder_out) {
    y_blk = memory(pd.dst_desc(), k.engine());
    b.push_back({DNNL_ARG_DST, y_blk, -1, -1});
  } else {
    b.push_back({DNNL_ARG_DST, memory(y_user, k.engine(), nullptr), -1, 0});
  }
  b.push_back({DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), k.engine()), -1, -1});
  auto kern = std::make_unique<PrimitiveKernel>(k, dnnl::convolution_forward(pd), std::move(b));
  dnnl::primitive rin, rout;
  memory x_u, y_u;
  if (reorder_in) {
    x_u = memory(x_user, k.engine(), nullptr);
    rin = dnnl::reorder(x_u, x_blk);
  }
  if (reorder_out) {
    y_u = memory(y_user, k.engine(), nullptr);
    rout = dnnl::reorder(y_blk, y_u);
  }
  kern->set_reorders(rin, x_u, x_blk, rout, y_blk, y_u);
  return kern;
}

}  // namespace

OneDnnKernels::OneDnnKernels() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

memory OneDnnKernels::weights(const Tensor& t, const memory::desc& plain, const memory::desc& want) {
  for (const auto& c : weights_)
    if (c.data == t.data() && c.desc == want) return c.mem;
  memory src(plain, engine_, const_cast<void*>(t.data()));
  memory dst;
  if (want == plain) {
    dst = src;
  } else {
    dst = memory(want, engine_);
    dnnl::reorder(src, dst).execute(stream_, src, dst);
    stream_.wait();
    reordered_bytes_.fetch_add(want.get_size(), std::memory_order_relaxed);
  }
  weights_.push_back({t.data(), want, dst});
  return dst;
}

memory OneDnnKernels::weights_shifted(const Tensor& t, const memory::desc& plain, const memory::desc& want) {
  const Tensor* shifted = nullptr;
  for (const auto& [orig, copy] : shifted_)
    if (orig == t.data()) shifted = copy.get();
  if (!shifted) {
    auto copy = std::make_unique<Tensor>(DType::I8, t.shape());
    const uint8_t* src = static_cast<const uint8_t*>(t.data());
    int8_t* dst = copy->as<int8_t>();
    for (int64_t i = 0; i < t.numel(); ++i) dst[i] = static_cast<int8_t>(static_cast<int32_t>(src[i]) - 128);
    reordered_bytes_.fetch_add(copy->nbytes(), std::memory_order_relaxed);
    shifted = copy.get();
    shifted_.emplace_back(t.data(), std::move(copy));
  }
  return weights(*shifted, plain, want);
}

std::unique_ptr<Kernel> OneDnnKernels::make(const InferCtx& c) {
  const Node& n = c.node;
  try {
    if ((n.domain.empty() && (n.op == "MatMulInteger" || n.op == "QLinearMatMul")) ||
        (n.domain == "pd" && (n.op == "DynQuantMatMul" || n.op == "QuantMatMul")))
      return make_int8_matmul(*this, c);
    if ((n.domain.empty() && (n.op == "ConvInteger" || n.op == "QLinearConv")) ||
        (n.domain == "pd" && n.op == "QuantConv"))
      return make_int8_conv(*this, c);
    if (n.domain.empty() && (n.op == "Gemm" || n.op == "MatMul")) return make_matmul(*this, c);
    if (n.domain == "pd" && (n.op == "FusedGemm" || n.op == "FusedMatMul")) return make_matmul(*this, c);
    if ((n.domain.empty() && n.op == "Conv") || (n.domain == "pd" && n.op == "FusedConv")) return make_conv(*this, c);
  } catch (const dnnl::error& e) {
    // oneDNN has no implementation for this configuration: the portable kernel runs it.
    return nullptr;
  }
  return nullptr;
}

}  // namespace pd
