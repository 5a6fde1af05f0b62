// The run machinery the CUDA-based plugins share (csrc/gpu/) and the cuda plugin's context on
// the CPU emulation of CUDA (csrc/cuda/fake), with failures injected into the emulation:
//
//  - GpuStagedRun.*: the staged run (pinned staging -> eager -> capture -> replay) directly, as
//    both plugins run it: a failed capture, end of capture or instantiation falls back to eager
//    runs with one warning and serves the run; an eager failure is the run's error.
//  - FakeCudaContext.*: the cuda plugin through the C ABI: a context whose constructor fails
//    after its stream and cuBLASLt handle leaves no object of the emulation behind; a context
//    whose graph cannot be instantiated serves every run eagerly with the outputs of a graph run;
//    cuda.graphs=false never captures.
//  - FakeCublasLt.*: the emulation's strided-batched matmul checks what a GPU would reject or get
//    silently wrong: batches reaching past their allocation, output matrices that overlap, an
//    in-place C whose layout is not D's, float64 against float32 layouts; interleaved (not
//    overlapping) output batches are computed right.
//
// Its own program (pd_fakecuda_tests), not part of pd_tests: it links the emulation
// (libpd_fakecuda.so), which the real plugin that pd_tests loads must never bind to.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "fake_cuda.h"
#include "../gpu/staged_run.h"
#include "policyd.h"
#include "test_util.h"

namespace {

// ---- the staged run --------------------------------------------------------------------------

std::vector<std::string> g_lines;
void collect(pd_log_level, const std::string& msg) { g_lines.push_back(msg); }

bool equal(const FakeCudaLive& a, const FakeCudaLive& b) {
  return a.streams == b.streams && a.events == b.events && a.graphs == b.graphs && a.graph_execs == b.graph_execs &&
         a.lt_handles == b.lt_handles && a.device_allocs == b.device_allocs && a.pinned_allocs == b.pinned_allocs;
}
std::string live_str(const FakeCudaLive& v) {
  return pd::str("streams ", v.streams, ", events ", v.events, ", graphs ", v.graphs, ", graph execs ", v.graph_execs,
                 ", cuBLASLt handles ", v.lt_handles, ", device allocations ", v.device_allocs,
                 ", pinned allocations ", v.pinned_allocs);
}

// A bucket whose body copies its 4-float input twice into its 8-float output on the device:
// out = [in, in], so every run's output is checkable.
class StagedRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_cuda_clear_failures();
    g_lines.clear();
    before_ = fake_cuda_live();
    stream_ = pd::gpu::make_stream();
    ev0_ = pd::gpu::make_event();
    ev1_ = pd::gpu::make_event();
    in_ = pd::gpu::dev_alloc(16);
    out_ = pd::gpu::dev_alloc(32);
  }
  void TearDown() override {
    fake_cuda_clear_failures();
    run_.reset();
    in_.reset();
    out_.reset();
    ev0_.reset();
    ev1_.reset();
    stream_.reset();
    const FakeCudaLive after = fake_cuda_live();
    EXPECT_TRUE(equal(before_, after)) << "before: " << live_str(before_) << "\nafter:  " << live_str(after);
  }

  // body_fails(n): whether the body's n-th call (from 1) throws.
  void make(std::function<bool(int)> body_fails = [](int) { return false; }) {
    void* in = in_.get();
    void* out = out_.get();
    run_ = std::make_unique<pd::gpu::StagedRun>(
        "test: batch 1", &collect, [this, in, out, body_fails](cudaStream_t s) {
          ++body_calls_;
          if (body_fails(body_calls_)) pd::fail(PD_ERR_INTERNAL, "body failed on call ", body_calls_);
          PD_CUDA_CHECK(cudaMemcpyAsync(out, in, 16, cudaMemcpyDeviceToDevice, s));
          PD_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(out) + 16, in, 16, cudaMemcpyDeviceToDevice, s));
        });
    run_->add_input(pd::gpu::stage(in, 16, false));
    run_->add_output(pd::gpu::stage(out, 32, false));
  }

  // One run with input {k, k+1, k+2, k+3}; checks the output.
  void run_once(float k, bool graphs = true, bool profile = false) {
    const float x[4] = {k, k + 1, k + 2, k + 3};
    const void* host[] = {x};
    double ms = -1;
    run_->run(stream_.get(), graphs, profile, pd::gpu::RunEvents{ev0_.get(), ev1_.get()}, host, &ms);
    const float* y = static_cast<const float*>(run_->output(0));
    for (int i = 0; i < 8; ++i) ASSERT_EQ(y[i], x[i % 4]) << "element " << i << " of the run with k=" << k;
    if (profile) {
      EXPECT_GE(ms, 0.0);
    }
  }

  FakeCudaLive before_{};
  pd::gpu::Stream stream_;
  pd::gpu::Event ev0_, ev1_;
  pd::gpu::DevMem in_, out_;
  std::unique_ptr<pd::gpu::StagedRun> run_;
  int body_calls_ = 0;
};

using Mode = pd::gpu::StagedRun::Mode;

TEST_F(StagedRunTest, EagerThenCaptureThenReplay) {
  make();
  const long launches = fake_cuda_calls("cudaGraphLaunch");
  run_once(1);
  EXPECT_EQ(run_->mode(), Mode::kWarm);
  run_once(2);
  EXPECT_EQ(run_->mode(), Mode::kReplay);
  run_once(3, true, true);
  run_once(4);
  EXPECT_EQ(body_calls_, 2);  // the eager run and the capture; replays do not call the body
  EXPECT_EQ(fake_cuda_calls("cudaGraphLaunch") - launches, 3);
  EXPECT_TRUE(g_lines.empty());
}

TEST_F(StagedRunTest, GraphsOffRunsEagerly) {
  make();
  const long captures = fake_cuda_calls("cudaStreamBeginCapture");
  for (int i = 0; i < 3; ++i) run_once(static_cast<float>(i), false);
  EXPECT_EQ(body_calls_, 3);
  EXPECT_EQ(fake_cuda_calls("cudaStreamBeginCapture"), captures);
}

// Each way a capture can fail: the run is served eagerly, one warning names why, later runs
// stay eager without trying again, and nothing of the capture is left behind (TearDown).
struct CaptureFailure {
  const char* call;     // injected into the emulation, or "" for a body that throws under capture
  const char* says;     // in the warning
};
class StagedRunFallback : public StagedRunTest, public ::testing::WithParamInterface<CaptureFailure> {};

TEST_P(StagedRunFallback, FallsBackToEagerOnceAndKeepsServing) {
  const CaptureFailure f = GetParam();
  if (*f.call) {
    make();
    fake_cuda_fail(f.call, 0, -1);
  } else {
    make([](int call) { return call == 2; });  // the second call is the capture
  }
  const long begins = fake_cuda_calls("cudaStreamBeginCapture");
  run_once(1);
  run_once(2);  // the capture fails: served eagerly
  EXPECT_EQ(run_->mode(), Mode::kEagerOnly);
  run_once(3, true, true);
  run_once(4);
  EXPECT_EQ(fake_cuda_calls("cudaStreamBeginCapture") - begins, 1) << "capture is tried once";
  ASSERT_EQ(g_lines.size(), 1u);
  EXPECT_NE(g_lines[0].find("test: batch 1: no CUDA graph, running eagerly: "), std::string::npos) << g_lines[0];
  EXPECT_NE(g_lines[0].find(f.says), std::string::npos) << g_lines[0];
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the fallback clears the runtime's error";
}

INSTANTIATE_TEST_SUITE_P(
    Failures, StagedRunFallback,
    ::testing::Values(CaptureFailure{"cudaGraphInstantiateWithFlags", "cudaGraphInstantiateWithFlags: cudaErrorFakeInjected"},
                      CaptureFailure{"cudaStreamBeginCapture", "cudaStreamBeginCapture: cudaErrorFakeInjected"},
                      CaptureFailure{"cudaStreamEndCapture", "cudaStreamEndCapture: cudaErrorFakeInjected"},
                      CaptureFailure{"", "body failed on call 2"}),
    [](const ::testing::TestParamInfo<CaptureFailure>& i) {
      return std::string(*i.param.call ? i.param.call : "BodyUnderCapture");
    });

TEST_F(StagedRunTest, EagerFailureIsTheRunsError) {
  make([](int call) { return call == 1; });
  const float x[4] = {};
  const void* host[] = {x};
  double ms = 0;
  try {
    run_->run(stream_.get(), true, false, pd::gpu::RunEvents{ev0_.get(), ev1_.get()}, host, &ms);
    FAIL() << "the failed eager run returned";
  } catch (const pd::Error& e) {
    EXPECT_EQ(e.code(), PD_ERR_INTERNAL);
    EXPECT_NE(std::string(e.what()).find("body failed on call 1"), std::string::npos) << e.what();
  }
  EXPECT_EQ(run_->mode(), Mode::kCold);
  run_once(5);  // the next run is eager again, then the graph as usual
  run_once(6);
  EXPECT_EQ(run_->mode(), Mode::kReplay);
  EXPECT_TRUE(g_lines.empty());
}

TEST_F(StagedRunTest, ReplayFailureIsTheRunsError) {
  make();
  run_once(1);
  run_once(2);
  fake_cuda_fail("cudaGraphLaunch", 0, 1);
  const float x[4] = {};
  const void* host[] = {x};
  double ms = 0;
  EXPECT_THROW(run_->run(stream_.get(), true, false, pd::gpu::RunEvents{ev0_.get(), ev1_.get()}, host, &ms), pd::Error);
  run_once(3);
}

// ---- the emulation's cuBLASLt: strided batches ----------------------------------------------

class FakeCublasLt : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cublasLtCreate(&h_), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    for (void* p : mem_) cudaFree(p);
    for (auto* l : layouts_) cublasLtMatrixLayoutDestroy(l);
    if (d_) cublasLtMatmulDescDestroy(d_);
    cudaStreamDestroy(s_);
    cublasLtDestroy(h_);
  }
  template <typename T>
  T* dev(const std::vector<T>& v) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    mem_.push_back(p);
    return static_cast<T*>(p);
  }
  cublasLtMatrixLayout_t layout(uint64_t rows, uint64_t cols, int64_t ld, int32_t batch, int64_t stride,
                                cudaDataType_t t = CUDA_R_32F) {
    cublasLtMatrixLayout_t l = nullptr;
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&l, t, rows, cols, ld), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride),
              CUBLAS_STATUS_SUCCESS);
    layouts_.push_back(l);
    return l;
  }
  void desc(cublasComputeType_t c = CUBLAS_COMPUTE_32F, cudaDataType_t t = CUDA_R_32F) {
    ASSERT_EQ(cublasLtMatmulDescCreate(&d_, c, t), CUBLAS_STATUS_SUCCESS);
  }

  cublasLtHandle_t h_ = nullptr;
  cudaStream_t s_ = nullptr;
  cublasLtMatmulDesc_t d_ = nullptr;
  std::vector<void*> mem_;
  std::vector<cublasLtMatrixLayout_t> layouts_;
};

// Two batches of D (2x3) = A (2x2) * B (2x3), column-major; D's batches interleave by rows in
// one 4x3 buffer (batch stride 2, ld 4): allowed, and each element lands where it belongs.
TEST_F(FakeCublasLt, InterleavedOutputBatchesAreComputed) {
  desc();
  const std::vector<float> a = {1, 2, 3, 4, /* batch 1 */ 5, 6, 7, 8};
  const std::vector<float> b = {1, 0, 0, 1, 1, 1};  // shared by both batches (stride 0)
  float* A = dev(a);
  float* B = dev(b);
  float* D = dev(std::vector<float>(12, -1.f));
  const float alpha = 1, beta = 0;
  cublasLtMatrixLayout_t la = layout(2, 2, 2, 2, 4), lb = layout(2, 3, 2, 2, 0), ld = layout(2, 3, 4, 2, 2);
  ASSERT_EQ(cublasLtMatmul(h_, d_, &alpha, A, la, B, lb, &beta, D, ld, D, ld, nullptr, nullptr, 0, s_),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(s_), cudaSuccess);
  std::vector<float> d(12);
  ASSERT_EQ(cudaMemcpy(d.data(), D, sizeof(float) * 12, cudaMemcpyDeviceToHost), cudaSuccess);
  // Column j of D: rows 0-1 batch 0, rows 2-3 batch 1. A0 = [[1,3],[2,4]], A1 = [[5,7],[6,8]];
  // B's columns e0, e1, e0+e1.
  EXPECT_EQ(d, (std::vector<float>{1, 2, 5, 6, 3, 4, 7, 8, 4, 6, 12, 14}));
}

TEST_F(FakeCublasLt, RejectsWhatAGpuWouldGetWrong) {
  desc();
  float* A = dev(std::vector<float>(4, 1.f));  // one 2x2 matrix
  float* B = dev(std::vector<float>(4, 1.f));
  float* D = dev(std::vector<float>(8, 0.f));
  const float alpha = 1, beta = 0;
  auto mm = [&](cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc,
                cublasLtMatrixLayout_t ld) {
    return cublasLtMatmul(h_, d_, &alpha, A, la, B, lb, &beta, D, lc, D, ld, nullptr, nullptr, 0, s_);
  };
  cublasLtMatrixLayout_t shared = layout(2, 2, 2, 2, 0);  // one matrix for both batches
  cublasLtMatrixLayout_t out = layout(2, 2, 2, 2, 4);
  // A batch of two reads a second A matrix past the allocation.
  cublasLtMatrixLayout_t past = layout(2, 2, 2, 2, 4);
  EXPECT_EQ(mm(past, shared, out, out), CUBLAS_STATUS_INVALID_VALUE);
  // Output batches one element apart overlap.
  cublasLtMatrixLayout_t overlap = layout(2, 2, 2, 2, 1);
  EXPECT_EQ(mm(shared, shared, overlap, overlap), CUBLAS_STATUS_INVALID_VALUE);
  // In place with a C layout other than D's.
  cublasLtMatrixLayout_t other = layout(2, 2, 2, 2, 3);
  EXPECT_EQ(mm(shared, shared, other, out), CUBLAS_STATUS_INVALID_VALUE);
  // float64 layouts under a float32 matmul.
  cublasLtMatrixLayout_t l64 = layout(2, 2, 2, 1, 0, CUDA_R_64F);
  EXPECT_EQ(mm(l64, l64, l64, l64), CUBLAS_STATUS_INVALID_VALUE);
  // Made right, the call succeeds.
  EXPECT_EQ(mm(shared, shared, out, out), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(s_), cudaSuccess);
}

TEST_F(FakeCublasLt, Float64) {
  desc(CUBLAS_COMPUTE_64F, CUDA_R_64F);
  const double* A = dev(std::vector<double>{1, 2, 3, 4});
  const double* B = dev(std::vector<double>{1e-12, 1, 0, 0});
  double* D = dev(std::vector<double>(4, 0));
  const double alpha = 1, beta = 0;
  cublasLtMatrixLayout_t l = layout(2, 2, 2, 1, 0, CUDA_R_64F);
  ASSERT_EQ(cublasLtMatmul(h_, d_, &alpha, A, l, B, l, &beta, D, l, D, l, nullptr, nullptr, 0, s_),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(s_), cudaSuccess);
  std::vector<double> d(4);
  ASSERT_EQ(cudaMemcpy(d.data(), D, sizeof(double) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  // Column 0: A * (1e-12, 1) = (1e-12 + 3, 2e-12 + 4): float64 keeps the 1e-12.
  EXPECT_EQ(d[0], 1e-12 + 3.0);
  EXPECT_EQ(d[1], 2e-12 + 4.0);
  EXPECT_EQ(d[2], 0.0);
}

// ---- the cuda plugin's context, through the C ABI ----------------------------------------------

std::mutex g_log_mu;
std::vector<std::string> g_plugin_lines;
void plugin_log(void*, pd_log_level level, const char* msg) {
  std::lock_guard<std::mutex> l(g_log_mu);
  if (level >= PD_LOG_WARN) g_plugin_lines.push_back(msg);
}

class FakeCudaContext : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_cuda_clear_failures();
    pd_set_log_callback(&plugin_log, nullptr);
    g_plugin_lines.clear();
    pd_runtime_options* ro = nullptr;
    ASSERT_EQ(pd_runtime_options_create(&ro), nullptr);
    ASSERT_EQ(pd_runtime_options_set_backend_dir(ro, PD_FAKE_CUDA_DIR), nullptr);
    ASSERT_EQ(pd_runtime_create(ro, &rt_), nullptr);
    pd_runtime_options_destroy(ro);
  }
  void TearDown() override {
    fake_cuda_clear_failures();
    if (e_) pd_engine_destroy(e_);
    pd_runtime_destroy(rt_);
    pd_set_log_callback(nullptr, nullptr);
  }

  void build(const char* graphs = nullptr) {
    pd_engine_options* eo = nullptr;
    ASSERT_EQ(pd_engine_options_create(&eo), nullptr);
    ASSERT_EQ(pd_engine_options_set_backend(eo, "cuda"), nullptr);
    ASSERT_EQ(pd_engine_options_set_name(eo, "mlp-small"), nullptr);
    if (graphs) {
      ASSERT_EQ(pd_engine_options_set_param(eo, "cuda.graphs", graphs), nullptr);
    }
    const std::string model = pd::test::slurp(PD_SHARED_DIR "/peers/models/mlp-small.onnx");
    pd_error* err = pd_engine_create(rt_, model.data(), model.size(), eo, &e_);
    pd_engine_options_destroy(eo);
    ASSERT_EQ(err, nullptr) << pd_error_get_message(err);
  }

  // The action for obs = {k, k+1, …} (mlp-small: obs [1, 8] -> action [1, 2]).
  static std::vector<float> run(pd_context* c, float k) {
    float obs[8];
    for (int i = 0; i < 8; ++i) obs[i] = k + 0.125f * static_cast<float>(i);
    pd_tensor in{};
    in.dtype = PD_DTYPE_FLOAT32;
    in.rank = 2;
    in.dims[0] = 1;
    in.dims[1] = 8;
    in.data = obs;
    in.byte_size = sizeof obs;
    pd_tensor out{};
    pd_error* err = pd_context_run(c, &in, 1, &out, 1);
    if (err) {
      std::string m = pd_error_get_message(err);
      pd_error_free(err);
      throw std::runtime_error(m);
    }
    const float* y = static_cast<const float*>(out.data);
    return std::vector<float>(y, y + out.byte_size / sizeof(float));
  }

  pd_runtime* rt_ = nullptr;
  pd_engine* e_ = nullptr;
};

// The resources the context makes after its stream and cuBLASLt handle: each failing in turn
// must leave the emulation's live objects as they were (the stream and the handle released).
TEST_F(FakeCudaContext, ConstructorFailureLeaksNothing) {
  build();
  struct Inject {
    const char* call;
    int after;
  };
  for (const Inject& f : {Inject{"cublasLtCreate", 0}, Inject{"cudaMalloc", 0}, Inject{"cudaEventCreate", 0},
                          Inject{"cudaEventCreate", 1}}) {
    SCOPED_TRACE(pd::str(f.call, " failing after ", f.after, " successes"));
    const FakeCudaLive before = fake_cuda_live();
    fake_cuda_fail(f.call, f.after, 1);
    pd_context* c = nullptr;
    pd_error* err = pd_context_create(e_, &c);
    fake_cuda_clear_failures();
    ASSERT_NE(err, nullptr) << "the context was made despite the injected failure";
    EXPECT_NE(std::string(pd_error_get_message(err)).find(f.call), std::string::npos) << pd_error_get_message(err);
    pd_error_free(err);
    EXPECT_EQ(c, nullptr);
    const FakeCudaLive after = fake_cuda_live();
    EXPECT_TRUE(equal(before, after)) << "before: " << live_str(before) << "\nafter:  " << live_str(after);
  }
  // And the engine still makes working contexts.
  pd_context* c = nullptr;
  ASSERT_EQ(pd_context_create(e_, &c), nullptr);
  EXPECT_EQ(run(c, 0.5f).size(), 2u);
  pd_context_destroy(c);
}

TEST_F(FakeCudaContext, ContextReleasesEverything) {
  build();
  const FakeCudaLive before = fake_cuda_live();
  pd_context* c = nullptr;
  ASSERT_EQ(pd_context_create(e_, &c), nullptr);
  for (int i = 0; i < 3; ++i) run(c, 0.25f * static_cast<float>(i));
  pd_context_destroy(c);
  const FakeCudaLive after = fake_cuda_live();
  EXPECT_TRUE(equal(before, after)) << "before: " << live_str(before) << "\nafter:  " << live_str(after);
}

// A graph that cannot be instantiated: every run is served eagerly, with the outputs a graph
// run gives, and one warning (the tensorrt plugin's behaviour, now both plugins').
TEST_F(FakeCudaContext, FailedInstantiateFallsBackToEager) {
  build();
  pd_context* good = nullptr;
  ASSERT_EQ(pd_context_create(e_, &good), nullptr);
  std::vector<std::vector<float>> want;
  for (int i = 0; i < 4; ++i) want.push_back(run(good, 0.5f * static_cast<float>(i)));  // eager, capture, replays
  pd_context_destroy(good);

  pd_context* c = nullptr;
  ASSERT_EQ(pd_context_create(e_, &c), nullptr);
  fake_cuda_fail("cudaGraphInstantiateWithFlags", 0, -1);
  const long launches = fake_cuda_calls("cudaGraphLaunch");
  const FakeCudaLive live = fake_cuda_live();
  for (int i = 0; i < 4; ++i) {
    std::vector<float> got;
    ASSERT_NO_THROW(got = run(c, 0.5f * static_cast<float>(i))) << "run " << i;
    EXPECT_EQ(got, want[i]) << "run " << i;
  }
  EXPECT_EQ(fake_cuda_calls("cudaGraphLaunch"), launches);
  EXPECT_EQ(fake_cuda_live().graphs, live.graphs);
  EXPECT_EQ(fake_cuda_live().graph_execs, live.graph_execs);
  {
    std::lock_guard<std::mutex> l(g_log_mu);
    ASSERT_EQ(g_plugin_lines.size(), 1u);
    EXPECT_NE(g_plugin_lines[0].find("no CUDA graph, running eagerly: cudaGraphInstantiateWithFlags"),
              std::string::npos)
        << g_plugin_lines[0];
  }
  pd_context_destroy(c);
}

// cuda.graphs=false (the backend parameter that replaced POLICYD_CUDA_GRAPHS=0): never a capture.
TEST_F(FakeCudaContext, GraphsParameterOffNeverCaptures) {
  build("false");
  pd_context* c = nullptr;
  ASSERT_EQ(pd_context_create(e_, &c), nullptr);
  const long begins = fake_cuda_calls("cudaStreamBeginCapture");
  for (int i = 0; i < 3; ++i) run(c, 1.f);
  EXPECT_EQ(fake_cuda_calls("cudaStreamBeginCapture"), begins);
  pd_context_destroy(c);
}

TEST_F(FakeCudaContext, UnknownParameterIsRefused) {
  pd_engine_options* eo = nullptr;
  ASSERT_EQ(pd_engine_options_create(&eo), nullptr);
  ASSERT_EQ(pd_engine_options_set_backend(eo, "cuda"), nullptr);
  ASSERT_EQ(pd_engine_options_set_param(eo, "cuda.graphs", "off"), nullptr);
  const std::string model = pd::test::slurp(PD_SHARED_DIR "/peers/models/mlp-small.onnx");
  pd_error* err = pd_engine_create(rt_, model.data(), model.size(), eo, &e_);
  pd_engine_options_destroy(eo);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_INVALID_ARG);
  EXPECT_NE(std::string(pd_error_get_message(err)).find("'graphs' must be true or false, got 'off'"), std::string::npos)
      << pd_error_get_message(err);
  pd_error_free(err);
}


// ---- CUDA shared memory (IPC handles) ----------------------------------------------------------
// The host logic of Triton's CUDA shared memory extension on the emulation: an exporter's
// allocation (cudaMalloc + cudaIpcGetMemHandle, as a client process does) opened through the C
// ABI, a run reading its inputs from and writing its outputs into that mapping at offsets, the
// results equal to the inline run's (which refcheck_fakecuda checks against ONNX Runtime), and
// every refusal named.

class FakeCudaIpc : public FakeCudaContext {
 protected:
  void SetUp() override {
    FakeCudaContext::SetUp();
    before_ = fake_cuda_live();
  }
  void TearDown() override {
    if (c_) pd_context_destroy(c_);
    for (void* p : exported_) cudaFree(p);
    EXPECT_EQ(fake_cuda_live().ipc_open, before_.ipc_open) << "an IPC mapping was left open";
    FakeCudaContext::TearDown();
  }
  // The exporter's side: n bytes of device memory and its handle.
  cudaIpcMemHandle_t export_alloc(size_t n, void** dev) {
    EXPECT_EQ(cudaMalloc(dev, n), cudaSuccess);
    exported_.push_back(*dev);
    cudaIpcMemHandle_t h;
    EXPECT_EQ(cudaIpcGetMemHandle(&h, *dev), cudaSuccess);
    return h;
  }
  static std::string take(pd_error* err, pd_error_code* code = nullptr) {
    if (!err) return "";
    std::string m = pd_error_get_message(err);
    if (code) *code = pd_error_get_code(err);
    pd_error_free(err);
    return m;
  }
  FakeCudaLive before_{};
  pd_context* c_ = nullptr;
  std::vector<void*> exported_;
};

static std::vector<float> obs_batch(int batch, float k) {
  std::vector<float> obs(static_cast<size_t>(batch) * 8);
  for (size_t i = 0; i < obs.size(); ++i) obs[i] = k + 0.0625f * static_cast<float>(i) - 0.5f;
  return obs;
}

TEST_F(FakeCudaIpc, RegisterInferUnregisterMatchesInlineRuns) {
  build();
  ASSERT_EQ(pd_context_create(e_, &c_), nullptr);
  // One region holding both tensors at offsets, as a Triton client lays them out.
  constexpr size_t kRegion = 4096, kInOff = 256, kOutOff = 1024;
  void* dev = nullptr;
  cudaIpcMemHandle_t h = export_alloc(kRegion, &dev);
  pd_cuda_ipc* m = nullptr;
  ASSERT_EQ(take(pd_cuda_ipc_open(rt_, 0, &h, sizeof h, &m)), "");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(fake_cuda_live().ipc_open, before_.ipc_open + 1);
  auto* base = static_cast<unsigned char*>(pd_cuda_ipc_pointer(m));
  ASSERT_NE(base, nullptr);
  for (int batch : {1, 3, 7, 3}) {
    SCOPED_TRACE(pd::str("batch ", batch));
    const std::vector<float> obs = obs_batch(batch, 0.25f * static_cast<float>(batch));
    // The client writes its input into its own allocation.
    ASSERT_EQ(cudaMemcpy(static_cast<unsigned char*>(dev) + kInOff, obs.data(), obs.size() * 4, cudaMemcpyHostToDevice),
              cudaSuccess);
    pd_tensor in{};
    in.dtype = PD_DTYPE_FLOAT32;
    in.rank = 2;
    in.dims[0] = batch;
    in.dims[1] = 8;
    in.byte_size = obs.size() * 4;
    in.data = base + kInOff;
    pd_tensor out{};
    out.data = base + kOutOff;
    out.byte_size = kRegion - kOutOff;
    ASSERT_EQ(take(pd_context_run_device(c_, &in, 1, &out, 1)), "");
    EXPECT_EQ(out.dtype, PD_DTYPE_FLOAT32);
    ASSERT_EQ(out.rank, 2);
    EXPECT_EQ(out.dims[0], batch);
    EXPECT_EQ(out.dims[1], 2);
    ASSERT_EQ(out.byte_size, static_cast<uint64_t>(batch) * 2 * 4);
    EXPECT_EQ(out.data, base + kOutOff);
    std::vector<float> got(static_cast<size_t>(batch) * 2);
    ASSERT_EQ(cudaMemcpy(got.data(), static_cast<unsigned char*>(dev) + kOutOff, got.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    // The inline run of the same inputs on the same context.
    pd_tensor hin = in;
    hin.data = const_cast<float*>(obs.data());
    pd_tensor hout{};
    ASSERT_EQ(take(pd_context_run(c_, &hin, 1, &hout, 1)), "");
    ASSERT_EQ(hout.byte_size, out.byte_size);
    const float* want = static_cast<const float*>(hout.data);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << "element " << i;
    // The copy path the server uses: read the result through the mapping.
    std::vector<float> read(got.size());
    ASSERT_EQ(take(pd_cuda_ipc_read(m, kOutOff, read.data(), read.size() * 4)), "");
    EXPECT_EQ(read, got);
  }
  // Written through the mapping, seen by the exporter.
  const float w[3] = {1.5f, -2.0f, 3.25f};
  ASSERT_EQ(take(pd_cuda_ipc_write(m, 8, w, sizeof w)), "");
  float back[3] = {};
  ASSERT_EQ(cudaMemcpy(back, static_cast<unsigned char*>(dev) + 8, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back[0], w[0]);
  EXPECT_EQ(back[2], w[2]);
  pd_cuda_ipc_destroy(m);
  EXPECT_EQ(fake_cuda_live().ipc_open, before_.ipc_open);
  pd_cuda_ipc_destroy(nullptr);
}

TEST_F(FakeCudaIpc, HandlesTheDriverRefusesAreInvalidArguments) {
  build();
  pd_error_code code{};
  pd_cuda_ipc* m = nullptr;
  // A forged handle.
  cudaIpcMemHandle_t forged;
  std::memset(&forged, 0x5a, sizeof forged);
  std::string msg = take(pd_cuda_ipc_open(rt_, 0, &forged, sizeof forged, &m), &code);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG);
  EXPECT_NE(msg.find("cudaErrorInvalidResourceHandle"), std::string::npos) << msg;
  EXPECT_EQ(m, nullptr);
  // A handle whose allocation its owner has freed.
  void* dev = nullptr;
  cudaIpcMemHandle_t h = export_alloc(64, &dev);
  ASSERT_EQ(cudaFree(dev), cudaSuccess);
  exported_.clear();
  msg = take(pd_cuda_ipc_open(rt_, 0, &h, sizeof h, &m), &code);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG) << msg;
  EXPECT_EQ(m, nullptr);
  // Wrong size, device out of range.
  cudaIpcMemHandle_t ok = export_alloc(64, &dev);
  msg = take(pd_cuda_ipc_open(rt_, 0, &ok, 63, &m), &code);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG);
  EXPECT_NE(msg.find("64 bytes, got 63"), std::string::npos) << msg;
  msg = take(pd_cuda_ipc_open(rt_, 1, &ok, sizeof ok, &m), &code);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG);
  EXPECT_NE(msg.find("device 1 out of range"), std::string::npos) << msg;
  // Opening twice is counted; a freed allocation that is open stays readable until closed.
  pd_cuda_ipc *a = nullptr, *b = nullptr;
  ASSERT_EQ(take(pd_cuda_ipc_open(rt_, 0, &ok, sizeof ok, &a)), "");
  ASSERT_EQ(take(pd_cuda_ipc_open(rt_, 0, &ok, sizeof ok, &b)), "");
  EXPECT_EQ(pd_cuda_ipc_pointer(a), pd_cuda_ipc_pointer(b));
  EXPECT_EQ(fake_cuda_live().ipc_open, before_.ipc_open + 2);
  pd_cuda_ipc_destroy(a);
  pd_cuda_ipc_destroy(b);
  EXPECT_EQ(cudaIpcCloseMemHandle(dev), cudaErrorInvalidValue) << "closing what is not open must fail";
}

TEST_F(FakeCudaIpc, BadDeviceRunsAreRefusedNamingTheTensor) {
  build();
  ASSERT_EQ(pd_context_create(e_, &c_), nullptr);
  void* dev = nullptr;
  cudaIpcMemHandle_t h = export_alloc(1024, &dev);
  pd_cuda_ipc* m = nullptr;
  ASSERT_EQ(take(pd_cuda_ipc_open(rt_, 0, &h, sizeof h, &m)), "");
  auto* base = static_cast<unsigned char*>(pd_cuda_ipc_pointer(m));
  const std::vector<float> obs = obs_batch(2, 1.0f);
  ASSERT_EQ(cudaMemcpy(base, obs.data(), obs.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  pd_tensor in{};
  in.dtype = PD_DTYPE_FLOAT32;
  in.rank = 2;
  in.dims[0] = 2;
  in.dims[1] = 8;
  in.byte_size = obs.size() * 4;
  in.data = base;
  pd_error_code code{};
  // Output room too small (2x2 floats need 16 bytes): refused, nothing written.
  std::memset(base + 512, 0x77, 16);
  pd_tensor out{};
  out.data = base + 512;
  out.byte_size = 15;
  std::string msg = take(pd_context_run_device(c_, &in, 1, &out, 1), &code);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG);
  EXPECT_NE(msg.find("output 'action'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("needs 16 bytes"), std::string::npos) << msg;
  for (int i = 0; i < 16; ++i) EXPECT_EQ(base[512 + i], 0x77) << "byte " << i << " written by a refused run";
  // Host memory where device memory is expected.
  std::vector<float> host = obs;
  pd_tensor hin = in;
  hin.data = host.data();
  out.byte_size = 16;
  msg = take(pd_context_run_device(c_, &hin, 1, &out, 1), &code);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG);
  EXPECT_NE(msg.find("input 'obs'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not device memory"), std::string::npos) << msg;
  // A byte size that does not match the shape is checked like pd_context_run's.
  pd_tensor bad = in;
  bad.byte_size = 60;
  msg = take(pd_context_run_device(c_, &bad, 1, &out, 1), &code);
  EXPECT_EQ(code, PD_ERR_INVALID_ARG);
  EXPECT_NE(msg.find("input 'obs'"), std::string::npos) << msg;
  pd_cuda_ipc_destroy(m);
}

TEST(FakeCudaIpcCpu, CpuBackendAndMissingCudaAreRefused) {
#ifndef PD_CPU_BACKEND_DIR
  GTEST_SKIP() << "the cpu plugin is not built";
#else
  // A runtime whose backend folder has the cpu plugin and no cuda one.
  pd_runtime_options* ro = nullptr;
  ASSERT_EQ(pd_runtime_options_create(&ro), nullptr);
  ASSERT_EQ(pd_runtime_options_set_backend_dir(ro, PD_CPU_BACKEND_DIR), nullptr);
  pd_runtime* rt = nullptr;
  ASSERT_EQ(pd_runtime_create(ro, &rt), nullptr);
  pd_runtime_options_destroy(ro);
  unsigned char handle[PD_CUDA_IPC_HANDLE_SIZE] = {};
  pd_cuda_ipc* m = nullptr;
  pd_error* err = pd_cuda_ipc_open(rt, 0, handle, sizeof handle, &m);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_UNAVAILABLE);
  EXPECT_NE(std::string(pd_error_get_message(err)).find("needs the cuda backend"), std::string::npos)
      << pd_error_get_message(err);
  pd_error_free(err);

  pd_engine_options* eo = nullptr;
  ASSERT_EQ(pd_engine_options_create(&eo), nullptr);
  ASSERT_EQ(pd_engine_options_set_backend(eo, "cpu"), nullptr);
  const std::string model = pd::test::slurp(PD_SHARED_DIR "/peers/models/mlp-small.onnx");
  pd_engine* e = nullptr;
  err = pd_engine_create(rt, model.data(), model.size(), eo, &e);
  pd_engine_options_destroy(eo);
  ASSERT_EQ(err, nullptr) << pd_error_get_message(err);
  pd_context* c = nullptr;
  ASSERT_EQ(pd_context_create(e, &c), nullptr);
  float obs[8] = {};
  pd_tensor in{};
  in.dtype = PD_DTYPE_FLOAT32;
  in.rank = 2;
  in.dims[0] = 1;
  in.dims[1] = 8;
  in.data = obs;
  in.byte_size = sizeof obs;
  float room[2];
  pd_tensor out{};
  out.data = room;
  out.byte_size = sizeof room;
  err = pd_context_run_device(c, &in, 1, &out, 1);
  ASSERT_NE(err, nullptr);
  EXPECT_EQ(pd_error_get_code(err), PD_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(pd_error_get_message(err)).find("backend 'cpu'"), std::string::npos)
      << pd_error_get_message(err);
  pd_error_free(err);
  pd_context_destroy(c);
  pd_engine_destroy(e);
  pd_runtime_destroy(rt);
#endif
}

}  // namespace
