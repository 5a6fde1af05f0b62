// The CPU backend: policyd's ONNX executor (core/program.h) with oneDNN kernels for the
// compute-heavy ops (Gemm, MatMul and Conv, fused with their bias and activation as oneDNN
// post-ops) and oneDNN's sgemm for the portable kernels that need a GEMM (LSTM, Conv
// fallback).
//
// Threading: a CpuContext belongs to one host worker thread at a time. Everything mutable
// lives in it: the programs (memory plan + kernels) per shape bucket, oneDNN primitives and
// their scratchpads (user scratchpad mode, so primitives never share hidden state), the RNG
// and the row seeds. memory() alone may be called from another thread: it reads atomics.
// oneDNN on Debian uses OpenMP: each run sets the calling thread's OpenMP team size to the
// engine's thread count (1 by default: one context per core).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "../core/backend.h"
#include "../core/program.h"
#include "onednn_kernels.h"

namespace pd {
namespace {

const HostServices* g_host = nullptr;

void sgemm_onednn(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (st != dnnl_success) fail(PD_ERR_INTERNAL, "oneDNN sgemm failed (status ", static_cast<int>(st), ")");
}
const Blas kOneDnnBlas{sgemm_onednn};

// Most models see a handful of batch sizes; past this many buckets the least recently used
// program is dropped.
constexpr size_t kMaxBuckets = 64;

class CpuContext final : public BackendContext {
 public:
  CpuContext(std::shared_ptr<const Graph> g, int threads)
      : graph_(std::move(g)), threads_(threads), rng_(kDefaultSeed) {}

  void set_seed(uint64_t seed) override { rng_.seed(seed); }

  // assign reuses the vector's capacity: no allocation unless n exceeds every earlier n.
  void set_row_seeds(const uint64_t* seeds, size_t n) override { row_seeds_.assign(seeds, seeds + n); }

  ContextMemory memory() const override {
    ContextMemory m;
    m.arena_bytes = arena_bytes_.load(std::memory_order_relaxed);
    m.context_weight_bytes = provider_.reordered_weight_bytes();
    m.buckets = buckets_.load(std::memory_order_relaxed);
    return m;
  }

  void run(const pd_tensor* inputs, pd_tensor* outputs) override {
    omp_set_num_threads(threads_);
    Program* p = lookup(inputs);
    RunCtx rc{&rng_, &kOneDnnBlas, row_seeds_.data(), row_seeds_.size()};
    p->run(rc, inputs, outputs);
  }

 private:
  static constexpr uint64_t kDefaultSeed = 0x5eed;

  static bool same(const Program& p, const pd_tensor* in) { return p.key().matches(in); }

  Program* lookup(const pd_tensor* in) {
    if (last_ && same(*last_, in)) return last_;
    for (auto it = programs_.begin(); it != programs_.end(); ++it) {
      if (same(**it, in)) {
        // Move to the front: most recently used first.
        std::rotate(programs_.begin(), it, it + 1);
        last_ = programs_.front().get();
        return last_;
      }
    }
    auto prog = std::make_unique<Program>(*graph_, BucketKey::of(*graph_, in), &provider_);
    if (programs_.size() >= kMaxBuckets) {
      arena_bytes_.fetch_sub(programs_.back()->arena_bytes(), std::memory_order_relaxed);
      programs_.pop_back();
    }
    arena_bytes_.fetch_add(prog->arena_bytes(), std::memory_order_relaxed);
    programs_.insert(programs_.begin(), std::move(prog));
    buckets_.store(programs_.size(), std::memory_order_relaxed);
    last_ = programs_.front().get();
    return last_;
  }

  std::shared_ptr<const Graph> graph_;
  int threads_;
  std::mt19937_64 rng_;
  std::vector<uint64_t> row_seeds_;  // empty: the random ops draw from rng_
  OneDnnKernels provider_;
  std::vector<std::unique_ptr<Program>> programs_;
  Program* last_ = nullptr;
  // What memory() reports, kept beside programs_ so that another thread can read it.
  std::atomic<uint64_t> arena_bytes_{0};
  std::atomic<uint64_t> buckets_{0};
};

class CpuEngine final : public BackendEngine {
 public:
  CpuEngine(std::shared_ptr<const Graph> g, int threads) : graph_(std::move(g)), threads_(threads) {}
  std::unique_ptr<BackendContext> create_context() override {
    return std::make_unique<CpuContext>(graph_, threads_);
  }

 private:
  std::shared_ptr<const Graph> graph_;
  int threads_;
};

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  std::string version() const override {
    const dnnl_version_t* v = dnnl_version();
    return str("onednn-", v->major, ".", v->minor, ".", v->patch);
  }
  std::unique_ptr<BackendEngine> build(std::shared_ptr<const Graph> g, const BuildOptions& o) override {
    return std::make_unique<CpuEngine>(std::move(g), o.threads);
  }
};

}  // namespace
}  // namespace pd

extern "C" __attribute__((visibility("default"))) int pd_backend_entry(const pd::HostServices* host,
                                                                      pd::Backend** out, char* err,
                                                                      size_t err_len) {
  try {
    if (!host || host->abi_version != pd::kBackendAbiVersion) {
      std::snprintf(err, err_len, "backend ABI mismatch: core %u, cpu plugin %u",
                    host ? host->abi_version : 0u, pd::kBackendAbiVersion);
      return 1;
    }
    pd::g_host = host;
    static pd::CpuBackend backend;
    *out = &backend;
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}
