// The CPU emulation behind fake_cuda.h (see there). Besides computing, it checks what a GPU
// would reject or silently get wrong: kernel and matmul pointers that are not device memory,
// host<->device copies in the wrong direction, cuBLASLt layouts whose shapes do not chain, a
// leading dimension smaller than the rows, batch counts that differ, a strided batch that
// reaches past its device allocation (any operand) or whose output matrices overlap, an
// in-place matmul whose C and D layouts differ, a pageable buffer in an asynchronous copy, and
// allocations during stream capture.
#include "fake_cuda.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../kernels.h"

// ---- the kernels, as host C++ ----------------------------------------------------------------
namespace pd_fake_kernels {
struct Dim {
  unsigned x = 0;
};
thread_local Dim blockIdx, threadIdx, blockDim, gridDim;
inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
#define __global__
#define __device__
#define __forceinline__ inline
#include "../kernels.cuh"
#undef __global__
#undef __device__
#undef __forceinline__
}  // namespace pd_fake_kernels

namespace {

// ---- memory: device allocations are tracked so that misuse is an error --------------------
std::mutex g_mu;
std::map<uintptr_t, size_t> g_device, g_pinned, g_mapped;  // start -> size; g_mapped: pinned, device-visible

bool in(const std::map<uintptr_t, size_t>& m, const void* p, size_t n) {
  std::lock_guard<std::mutex> l(g_mu);
  auto u = reinterpret_cast<uintptr_t>(p);
  auto it = m.upper_bound(u);
  if (it == m.begin()) return false;
  --it;
  return u >= it->first && u + n <= it->first + it->second;
}
bool is_device(const void* p, size_t n = 1) { return in(g_device, p, n); }
bool is_pinned(const void* p, size_t n = 1) { return in(g_pinned, p, n); }
bool is_mapped(const void* p, size_t n = 1) { return in(g_mapped, p, n); }

void* alloc(std::map<uintptr_t, size_t>& m, size_t n) {
  void* p = std::aligned_alloc(256, (std::max<size_t>(n, 1) + 255) / 256 * 256);
  if (!p) return nullptr;
  std::memset(p, 0xcd, n);  // garbage, as device memory would be
  std::lock_guard<std::mutex> l(g_mu);
  m[reinterpret_cast<uintptr_t>(p)] = n;
  return p;
}
bool release(std::map<uintptr_t, size_t>& m, void* p) {
  if (!p) return true;
  std::lock_guard<std::mutex> l(g_mu);
  if (!m.erase(reinterpret_cast<uintptr_t>(p))) return false;
  std::free(p);
  return true;
}

}  // namespace

namespace {
constexpr char kIpcMagic[8] = {'p', 'd', 'f', 'k', 'i', 'p', 'c', '1'};
struct IpcAlloc {
  uintptr_t base = 0;
  bool freed = false;  // cudaFree'd by its owner while open: released at the last close
  long opens = 0;
};
std::map<uint64_t, IpcAlloc> g_ipc;          // handle id -> allocation (under g_mu)
std::map<uintptr_t, uint64_t> g_ipc_of_base;  // allocation base -> its handle id
uint64_t g_ipc_next = 1;
long g_ipc_open_total = 0;
}  // namespace

struct FakeStream {
  bool capturing = false;
  std::vector<std::function<void()>> ops;
  bool failed = false;  // an operation failed while capturing
};
struct FakeEvent {
  std::chrono::steady_clock::time_point t;
};
struct FakeGraph {
  std::vector<std::function<void()>> ops;
};

namespace {
bool any_capturing = false;  // the test runs one context at a time

// Runs f now, or records it when s is capturing.
void submit(cudaStream_t s, std::function<void()> f) {
  if (s && s->capturing) s->ops.push_back(std::move(f));
  else f();
}
}  // namespace

// ---- test hooks: live objects, call counts, injected failures ------------------------------
namespace {
std::atomic<long> g_streams{0}, g_events{0}, g_graphs{0}, g_execs{0}, g_lts{0};
struct Injected {
  int after = 0, times = 0;
};
std::mutex g_hook_mu;
std::map<std::string, Injected> g_fail;
std::map<std::string, long> g_calls;
thread_local cudaError_t t_last = cudaSuccess;

// Counts the call; true when it is to fail.
bool injected(const char* call) {
  std::lock_guard<std::mutex> l(g_hook_mu);
  ++g_calls[call];
  auto it = g_fail.find(call);
  if (it == g_fail.end()) return false;
  Injected& f = it->second;
  if (f.after > 0) {
    --f.after;
    return false;
  }
  if (f.times == 0) return false;
  if (f.times > 0) --f.times;
  return true;
}
cudaError_t fail_injected() { return t_last = cudaErrorFakeInjected; }
}  // namespace

FakeCudaLive fake_cuda_live() {
  FakeCudaLive v{g_streams.load(), g_events.load(), g_graphs.load(), g_execs.load(), g_lts.load(), 0, 0};
  std::lock_guard<std::mutex> l(g_mu);
  v.device_allocs = static_cast<long>(g_device.size());
  v.pinned_allocs = static_cast<long>(g_pinned.size());
  v.ipc_open = g_ipc_open_total;
  return v;
}
void fake_cuda_fail(const char* call, int after, int times) {
  std::lock_guard<std::mutex> l(g_hook_mu);
  g_fail[call] = Injected{after, times};
}
void fake_cuda_clear_failures() {
  std::lock_guard<std::mutex> l(g_hook_mu);
  g_fail.clear();
}
long fake_cuda_calls(const char* call) {
  std::lock_guard<std::mutex> l(g_hook_mu);
  auto it = g_calls.find(call);
  return it == g_calls.end() ? 0 : it->second;
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorFakeInjected: return "cudaErrorFakeInjected";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorInvalidValue ? "invalid argument (fake CUDA check)"
         : e == cudaErrorFakeInjected ? "failure injected by a test (fake_cuda_fail)" : "error";
}
cudaError_t cudaMalloc(void** p, size_t n) {
  if (injected(__func__)) return fail_injected();
  if (any_capturing) return cudaErrorStreamCaptureUnsupported;
  *p = alloc(g_device, n);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
// ---- IPC -----------------------------------------------------------------------------------

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* devPtr) {
  if (injected(__func__)) return fail_injected();
  if (!handle) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> l(g_mu);
  auto u = reinterpret_cast<uintptr_t>(devPtr);
  auto it = g_device.upper_bound(u);
  if (!devPtr || it == g_device.begin()) return cudaErrorInvalidDevicePointer;
  --it;
  if (u >= it->first + std::max<size_t>(it->second, 1)) return cudaErrorInvalidDevicePointer;
  uint64_t id;
  auto b = g_ipc_of_base.find(it->first);
  if (b != g_ipc_of_base.end()) {
    id = b->second;
  } else {
    id = g_ipc_next++;
    g_ipc[id] = IpcAlloc{it->first, false, 0};
    g_ipc_of_base[it->first] = id;
  }
  std::memset(handle->reserved, 0, sizeof handle->reserved);
  std::memcpy(handle->reserved, kIpcMagic, 8);
  std::memcpy(handle->reserved + 8, &id, 8);
  return cudaSuccess;
}
cudaError_t cudaIpcOpenMemHandle(void** devPtr, cudaIpcMemHandle_t handle, unsigned flags) {
  if (injected(__func__)) return fail_injected();
  if (!devPtr || flags != cudaIpcMemLazyEnablePeerAccess) return cudaErrorInvalidValue;
  uint64_t id = 0;
  std::memcpy(&id, handle.reserved + 8, 8);
  std::lock_guard<std::mutex> l(g_mu);
  auto it = g_ipc.find(id);
  if (std::memcmp(handle.reserved, kIpcMagic, 8) != 0 || it == g_ipc.end() || it->second.freed)
    return cudaErrorInvalidResourceHandle;
  ++it->second.opens;
  ++g_ipc_open_total;
  *devPtr = reinterpret_cast<void*>(it->second.base);
  return cudaSuccess;
}
cudaError_t cudaIpcCloseMemHandle(void* devPtr) {
  if (injected(__func__)) return fail_injected();
  std::lock_guard<std::mutex> l(g_mu);
  auto b = g_ipc_of_base.find(reinterpret_cast<uintptr_t>(devPtr));
  if (b == g_ipc_of_base.end()) return cudaErrorInvalidValue;
  IpcAlloc& a = g_ipc[b->second];
  if (a.opens == 0) return cudaErrorInvalidValue;
  --a.opens;
  --g_ipc_open_total;
  if (a.opens == 0 && a.freed) {
    g_device.erase(a.base);
    std::free(devPtr);
    g_ipc.erase(b->second);
    g_ipc_of_base.erase(b);
  }
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  {
    std::lock_guard<std::mutex> l(g_mu);
    auto b = g_ipc_of_base.find(reinterpret_cast<uintptr_t>(p));
    if (b != g_ipc_of_base.end()) {
      IpcAlloc& a = g_ipc[b->second];
      if (a.freed) return cudaErrorInvalidValue;
      if (a.opens > 0) {  // an importer still maps it: new opens fail, the memory stays
        a.freed = true;
        return cudaSuccess;
      }
      g_ipc.erase(b->second);
      g_ipc_of_base.erase(b);
    }
  }
  return release(g_device, p) ? cudaSuccess : cudaErrorInvalidValue;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned flags) {
  if (injected(__func__)) return fail_injected();
  *p = alloc(g_pinned, n);
  if (*p && (flags & cudaHostAllocMapped)) {
    std::lock_guard<std::mutex> l(g_mu);
    g_mapped[reinterpret_cast<uintptr_t>(*p)] = n;
  }
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaHostGetDevicePointer(void** dev, void* host, unsigned flags) {
  if (!dev || !host || flags != 0 || !is_mapped(host)) return cudaErrorInvalidValue;
  *dev = host;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  {
    std::lock_guard<std::mutex> l(g_mu);
    g_mapped.erase(reinterpret_cast<uintptr_t>(p));
  }
  return release(g_pinned, p) ? cudaSuccess : cudaErrorInvalidValue;
}

namespace {
bool copy_ok(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (n == 0) return true;
  switch (kind) {
    case cudaMemcpyHostToDevice: return is_device(dst, n) && !is_device(src);
    case cudaMemcpyDeviceToHost: return is_device(src, n) && !is_device(dst);
    case cudaMemcpyDeviceToDevice: return is_device(src, n) && is_device(dst, n);
  }
  return false;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (!copy_ok(dst, src, n, kind)) return cudaErrorInvalidValue;
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  if (!copy_ok(dst, src, n, kind)) return cudaErrorInvalidValue;
  // Asynchronous host<->device copies need pinned host memory (a pageable one is not async,
  // and is illegal in a graph).
  if (kind == cudaMemcpyHostToDevice && !is_pinned(src, n)) return cudaErrorInvalidValue;
  if (kind == cudaMemcpyDeviceToHost && !is_pinned(dst, n)) return cudaErrorInvalidValue;
  submit(s, [=] { std::memcpy(dst, src, n); });
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int v, size_t n, cudaStream_t s) {
  if (n && !is_device(dst, n)) return cudaErrorInvalidValue;
  submit(s, [=] { std::memset(dst, v, n); });
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  if (injected(__func__)) return fail_injected();
  *s = new FakeStream();
  ++g_streams;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) { return s && s->capturing ? cudaErrorInvalidValue : cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (s) --g_streams;
  delete s;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (injected(__func__)) return fail_injected();
  *e = new FakeEvent();
  ++g_events;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (e) --g_events;
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  submit(s, [e] { e->t = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}
// As the runtime does: cudaEventRecordExternal is legal only while the stream is capturing
// (seen on an H100 with CUDA 13: cudaErrorIllegalState for an eager record with that flag).
cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned flags) {
  if ((flags & cudaEventRecordExternal) && !(s && s->capturing)) return cudaErrorIllegalState;
  return cudaEventRecord(e, s);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
  if (injected(__func__)) return fail_injected();
  if (s->capturing) return cudaErrorInvalidValue;
  s->capturing = true;
  s->ops.clear();
  any_capturing = true;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  if (!s->capturing) return cudaErrorInvalidValue;
  s->capturing = false;
  any_capturing = false;
  if (injected(__func__)) {  // as the runtime: the capture ends, without a graph
    s->ops.clear();
    *g = nullptr;
    return fail_injected();
  }
  *g = new FakeGraph{std::move(s->ops)};
  ++g_graphs;
  s->ops.clear();
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
  if (injected(__func__)) return fail_injected();
  *e = new FakeGraph{g->ops};
  ++g_execs;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  if (g) --g_graphs;
  delete g;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  if (e) --g_execs;
  delete e;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
  if (injected(__func__)) return fail_injected();
  if (s->capturing) return cudaErrorInvalidValue;
  for (auto& op : e->ops) op();
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 11080;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 12040;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return cudaErrorInvalidValue;
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "policyd fake CUDA device (CPU)");
  for (int i = 0; i < 16; ++i) p->uuid.bytes[i] = static_cast<char>(i * 17);
  p->totalGlobalMem = size_t(1) << 30;
  p->major = 9;
  p->minor = 0;
  return cudaSuccess;
}

// ---- cuBLASLt ---------------------------------------------------------------------------------
struct FakeLt {};
struct FakeLtDesc {
  cudaDataType_t type = CUDA_R_32F;  // of the scale factors and, here, of every matrix
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  const float* bias = nullptr;
};
struct FakeLtLayout {
  uint64_t rows, cols;
  int64_t ld;
  cudaDataType_t type = CUDA_R_32F;
  int32_t batch = 1;
  int64_t stride = 0;
};
struct FakeLtPref {};

const char* cublasLtGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : s == CUBLAS_STATUS_INVALID_VALUE ? "CUBLAS_STATUS_INVALID_VALUE (fake check)" : "CUBLAS_STATUS_ERROR";
}
size_t cublasLtGetVersion() { return 111103; }
cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  if (injected(__func__)) return CUBLAS_STATUS_ALLOC_FAILED;
  *h = new FakeLt();
  ++g_lts;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  if (h) --g_lts;
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t c, cudaDataType_t t) {
  if (!(c == CUBLAS_COMPUTE_32F && t == CUDA_R_32F) && !(c == CUBLAS_COMPUTE_64F && t == CUDA_R_64F))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  *d = new FakeLtDesc();
  (*d)->type = t;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void* v,
                                              size_t n) {
  switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
      if (n != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->ta, v, n);
      break;
    case CUBLASLT_MATMUL_DESC_TRANSB:
      if (n != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->tb, v, n);
      break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      if (n != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->epi, v, n);
      break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      if (n != sizeof(void*)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&d->bias, v, n);
      break;
  }
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
  if (t != CUDA_R_32F && t != CUDA_R_64F) return CUBLAS_STATUS_NOT_SUPPORTED;
  // Column-major: the leading dimension holds a column.
  if (ld < static_cast<int64_t>(std::max<uint64_t>(rows, 1))) return CUBLAS_STATUS_INVALID_VALUE;
  *l = new FakeLtLayout{rows, cols, ld, t};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                const void* v, size_t n) {
  if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT) {
    if (n != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
    int32_t count = 0;
    std::memcpy(&count, v, n);
    if (count < 1) return CUBLAS_STATUS_INVALID_VALUE;
    l->batch = count;
  } else {
    if (n != sizeof(int64_t)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&l->stride, v, n);
  }
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new FakeLtPref();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void*, size_t n) {
  return n == sizeof(uint64_t) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

namespace {
// D (m x n) = op(A) (m x k) * op(B) (k x n): the shapes must chain, as cuBLASLt requires.
bool shapes(const FakeLtDesc& d, const FakeLtLayout& A, const FakeLtLayout& B, const FakeLtLayout& D, uint64_t* m,
            uint64_t* n, uint64_t* k) {
  *m = D.rows;
  *n = D.cols;
  const uint64_t am = d.ta == CUBLAS_OP_N ? A.rows : A.cols, ak = d.ta == CUBLAS_OP_N ? A.cols : A.rows;
  const uint64_t bk = d.tb == CUBLAS_OP_N ? B.rows : B.cols, bn = d.tb == CUBLAS_OP_N ? B.cols : B.rows;
  *k = ak;
  return am == *m && bn == *n && bk == ak && A.batch == D.batch && B.batch == D.batch && A.type == d.type &&
         B.type == d.type && D.type == d.type;
}

size_t elem_size(const FakeLtLayout& l) { return l.type == CUDA_R_64F ? 8 : 4; }

// Element offsets (from the pointer) of the first and last element of a strided batch.
void span(const FakeLtLayout& l, int64_t* lo, int64_t* hi) {
  const int64_t last = static_cast<int64_t>(l.rows - 1) + static_cast<int64_t>(l.cols - 1) * l.ld;
  const int64_t b = static_cast<int64_t>(l.batch) - 1;
  *lo = std::min<int64_t>(0, b * l.stride);
  *hi = last + std::max<int64_t>(0, b * l.stride);
}

// Every element of every matrix of the batch lies in one device allocation: a GPU reads (or
// writes) past the end of a buffer without a word when a stride or leading dimension is wrong.
bool in_device(const void* p, const FakeLtLayout& l) {
  if (l.rows == 0 || l.cols == 0 || l.batch < 1) return true;
  int64_t lo, hi;
  span(l, &lo, &hi);
  const size_t es = elem_size(l);
  return is_device(static_cast<const char*>(p) + lo * static_cast<int64_t>(es), static_cast<size_t>(hi - lo + 1) * es);
}

// No two elements of a batched output share an address (strided batches whose matrices
// interleave are fine; ones that overlap race on a GPU and give whichever write lands last).
bool distinct(const FakeLtLayout& l) {
  if (l.batch <= 1 || l.rows == 0 || l.cols == 0) return true;
  const int64_t extent = static_cast<int64_t>(l.rows) + static_cast<int64_t>(l.cols - 1) * l.ld;
  if (l.stride >= extent || -l.stride >= extent) return true;
  int64_t lo, hi;
  span(l, &lo, &hi);
  std::vector<bool> seen(static_cast<size_t>(hi - lo + 1), false);
  for (int64_t b = 0; b < l.batch; ++b)
    for (uint64_t j = 0; j < l.cols; ++j)
      for (uint64_t i = 0; i < l.rows; ++i) {
        const int64_t off = b * l.stride + static_cast<int64_t>(i) + static_cast<int64_t>(j) * l.ld - lo;
        if (seen[static_cast<size_t>(off)]) return false;
        seen[static_cast<size_t>(off)] = true;
      }
  return true;
}
}  // namespace

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t* r, int* returned) {
  uint64_t m, n, k;
  if (requested < 1 || !shapes(*d, *a, *b, *dd, &m, &n, &k) || c->rows != dd->rows || c->cols != dd->cols)
    return CUBLAS_STATUS_INVALID_VALUE;
  std::memset(r, 0, sizeof *r);
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

namespace {
// D = alpha op(A) op(B) + beta C (+ the epilogue), batch by batch, accumulating in double.
template <typename T>
void matmul(const FakeLtDesc& desc, uint64_t m, uint64_t n, uint64_t k, const FakeLtLayout& a, const FakeLtLayout& b,
            const FakeLtLayout& c, const FakeLtLayout& dl, T al, T be, const T* pa, const T* pb, const T* pc, T* pd) {
  for (int32_t bt = 0; bt < dl.batch; ++bt) {
    const T* ab = pa + bt * a.stride;
    const T* bb = pb + bt * b.stride;
    const T* cb = pc + bt * c.stride;
    T* db = pd + bt * dl.stride;
    std::vector<T> out(m * n);
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (uint64_t p = 0; p < k; ++p) {
          const T av = desc.ta == CUBLAS_OP_N ? ab[i + p * a.ld] : ab[p + i * a.ld];
          const T bv = desc.tb == CUBLAS_OP_N ? bb[p + j * b.ld] : bb[j + p * b.ld];
          acc += static_cast<double>(av) * bv;
        }
        T v = static_cast<T>(al * acc);
        if (be != T(0)) v += be * cb[i + j * c.ld];
        if (desc.epi == CUBLASLT_EPILOGUE_BIAS || desc.epi == CUBLASLT_EPILOGUE_RELU_BIAS) v += desc.bias[i];
        if (desc.epi == CUBLASLT_EPILOGUE_RELU || desc.epi == CUBLASLT_EPILOGUE_RELU_BIAS) v = v > T(0) ? v : T(0);
        out[i + j * m] = v;
      }
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t j = 0; j < n; ++j) db[i + j * dl.ld] = out[i + j * m];
  }
}
}  // namespace

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Ad, const void* B, cublasLtMatrixLayout_t Bd, const void* beta,
                              const void* C, cublasLtMatrixLayout_t Cd, void* D, cublasLtMatrixLayout_t Dd,
                              const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t s) {
  uint64_t m, n, k;
  if (!shapes(*d, *Ad, *Bd, *Dd, &m, &n, &k) || Cd->type != d->type) return CUBLAS_STATUS_INVALID_VALUE;
  if (!is_device(A) || !is_device(B) || !is_device(C) || !is_device(D) || (d->bias && !is_device(d->bias, m * 4)))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!in_device(A, *Ad) || !in_device(B, *Bd) || !in_device(C, *Cd) || !in_device(D, *Dd) || !distinct(*Dd))
    return CUBLAS_STATUS_INVALID_VALUE;
  // In place (C == D), cuBLASLt requires C's layout to be D's.
  if (C == D && (Cd->rows != Dd->rows || Cd->cols != Dd->cols || Cd->ld != Dd->ld || Cd->batch != Dd->batch ||
                 Cd->stride != Dd->stride))
    return CUBLAS_STATUS_INVALID_VALUE;
  // The bias epilogue is float32 here (the backend's only use of it).
  if (d->type == CUDA_R_64F && d->epi != CUBLASLT_EPILOGUE_DEFAULT) return CUBLAS_STATUS_NOT_SUPPORTED;
  const FakeLtDesc desc = *d;
  const FakeLtLayout a = *Ad, b = *Bd, c = *Cd, dl = *Dd;
  if (desc.type == CUDA_R_64F) {
    const double al = *static_cast<const double*>(alpha), be = *static_cast<const double*>(beta);
    const double *pa = static_cast<const double*>(A), *pb = static_cast<const double*>(B),
                 *pc = static_cast<const double*>(C);
    double* pd = static_cast<double*>(D);
    submit(s, [=] { matmul<double>(desc, m, n, k, a, b, c, dl, al, be, pa, pb, pc, pd); });
  } else {
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    const float *pa = static_cast<const float*>(A), *pb = static_cast<const float*>(B),
                *pc = static_cast<const float*>(C);
    float* pd = static_cast<float*>(D);
    submit(s, [=] { matmul<float>(desc, m, n, k, a, b, c, dl, al, be, pa, pb, pc, pd); });
  }
  return CUBLAS_STATUS_SUCCESS;
}

// ---- NVRTC: "compiles" to an image naming the architecture and carrying the source ---------
struct FakeProgram {
  std::string src, image, log;
};
const char* nvrtcGetErrorString(nvrtcResult r) { return r == NVRTC_SUCCESS ? "NVRTC_SUCCESS" : "NVRTC_ERROR (fake)"; }
nvrtcResult nvrtcVersion(int* major, int* minor) {
  *major = 11;
  *minor = 8;
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetNumSupportedArchs(int* n) {
  *n = 3;
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetSupportedArchs(int* archs) {
  archs[0] = 70;
  archs[1] = 80;
  archs[2] = 90;
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcCreateProgram(nvrtcProgram* p, const char* src, const char*, int, const char* const*,
                               const char* const*) {
  *p = new FakeProgram{src, "", ""};
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcDestroyProgram(nvrtcProgram* p) {
  delete *p;
  *p = nullptr;
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcCompileProgram(nvrtcProgram p, int n, const char* const* opts) {
  std::string arch;
  for (int i = 0; i < n; ++i)
    if (std::strncmp(opts[i], "--gpu-architecture=", 19) == 0) arch = opts[i] + 19;
  if (arch.empty()) {
    p->log = "no --gpu-architecture";
    return NVRTC_ERROR_INVALID_INPUT;
  }
  p->image = "FAKE-" + arch + "\n" + p->src;
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram p, size_t* n) {
  *n = p->log.size() + 1;
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLog(nvrtcProgram p, char* log) {
  std::memcpy(log, p->log.c_str(), p->log.size() + 1);
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetCUBINSize(nvrtcProgram p, size_t* n) {
  *n = p->image.size();
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetCUBIN(nvrtcProgram p, char* out) {
  std::memcpy(out, p->image.data(), p->image.size());
  return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetPTXSize(nvrtcProgram p, size_t* n) { return nvrtcGetCUBINSize(p, n); }
nvrtcResult nvrtcGetPTX(nvrtcProgram p, char* out) { return nvrtcGetCUBIN(p, out); }

// ---- driver: modules and launches ----------------------------------------------------------
namespace {

template <typename T>
bool device_arg_ok(const T& v) {
  if constexpr (std::is_pointer_v<T>) return v == nullptr || is_device(v) || is_mapped(v);
  return true;
}

// Copies the launch's arguments (as cuLaunchKernel does) into a closure that runs the kernel.
template <typename... A, size_t... I>
std::function<void()> bind_impl(void (*k)(A...), void** p, bool* ok, std::index_sequence<I...>) {
  auto args = std::make_tuple(*static_cast<std::remove_cv_t<A>*>(p[I])...);
  *ok = std::apply([](const auto&... a) { return (device_arg_ok(a) && ...); }, args);
  return [k, args] { std::apply(k, args); };
}
template <typename... A>
std::function<void()> bind(void (*k)(A...), void** p, bool* ok) {
  return bind_impl(k, p, ok, std::index_sequence_for<A...>{});
}

using Binder = std::function<void()> (*)(void**, bool*);
#define PD_FAKE_KERNEL(name) \
  {#name, [](void** p, bool* ok) { return bind(&pd_fake_kernels::name, p, ok); }}
const std::unordered_map<std::string, Binder>& binders() {
  static const std::unordered_map<std::string, Binder> m = {
      PD_FAKE_KERNEL(pd_unary_f32),     PD_FAKE_KERNEL(pd_bias_act_f32), PD_FAKE_KERNEL(pd_binary_f32),
      PD_FAKE_KERNEL(pd_binary_i64),    PD_FAKE_KERNEL(pd_compare_f32),  PD_FAKE_KERNEL(pd_compare_i64),
      PD_FAKE_KERNEL(pd_logic_bool),    PD_FAKE_KERNEL(pd_not_bool),     PD_FAKE_KERNEL(pd_cast),
      PD_FAKE_KERNEL(pd_copy_1),        PD_FAKE_KERNEL(pd_copy_2),       PD_FAKE_KERNEL(pd_copy_4),
      PD_FAKE_KERNEL(pd_copy_8),        PD_FAKE_KERNEL(pd_gather_1),     PD_FAKE_KERNEL(pd_gather_2),
      PD_FAKE_KERNEL(pd_gather_4),      PD_FAKE_KERNEL(pd_gather_8),     PD_FAKE_KERNEL(pd_softmax_f32),
      PD_FAKE_KERNEL(pd_argext_f32),    PD_FAKE_KERNEL(pd_im2col_f32),   PD_FAKE_KERNEL(pd_lstm_cell_f32)};
  return m;
}

}  // namespace

struct FakeModule {};
struct FakeFunction {
  Binder bind;
};

CUresult fake_cuModuleLoadData(CUmodule* m, const void* image) {
  const std::string img = static_cast<const char*>(image);
  const size_t nl = img.find('\n');
  // The image must be what nvrtcCompileProgram made from the very source compiled in here.
  if (img.rfind("FAKE-", 0) != 0 || nl == std::string::npos || img.substr(nl + 1) != pd::cuda::kernel_source())
    return CUDA_ERROR_INVALID_IMAGE;
  *m = new FakeModule();
  return CUDA_SUCCESS;
}
CUresult fake_cuModuleUnload(CUmodule m) {
  delete m;
  return CUDA_SUCCESS;
}
CUresult fake_cuModuleGetFunction(CUfunction* f, CUmodule, const char* name) {
  static std::unordered_map<std::string, FakeFunction> fns;
  static std::mutex mu;
  std::lock_guard<std::mutex> l(mu);
  auto it = binders().find(name);
  if (it == binders().end()) return CUDA_ERROR_NOT_FOUND;
  fns[name] = FakeFunction{it->second};
  *f = &fns[name];
  return CUDA_SUCCESS;
}
CUresult fake_cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                             unsigned bz, unsigned, CUstream s, void** params, void**) {
  if (!f || gx == 0 || bx == 0 || gy != 1 || gz != 1 || by != 1 || bz != 1 || bx > 1024) return CUDA_ERROR_INVALID_VALUE;
  bool ok = true;
  std::function<void()> run = f->bind(params, &ok);
  if (!ok) return CUDA_ERROR_INVALID_VALUE;  // a pointer argument is not device memory
  submit(s, [run, gx, bx] {
    using namespace pd_fake_kernels;
    gridDim.x = gx;
    blockDim.x = bx;
    for (unsigned b = 0; b < gx; ++b)
      for (unsigned t = 0; t < bx; ++t) {
        blockIdx.x = b;
        threadIdx.x = t;
        run();
      }
  });
  return CUDA_SUCCESS;
}
CUresult fake_cuGetErrorString(CUresult r, const char** s) {
  *s = r == CUDA_SUCCESS ? "no error" : r == CUDA_ERROR_INVALID_VALUE ? "invalid argument (fake CUDA check)" : "error";
  return CUDA_SUCCESS;
}

// ---- the exporter for tests in other languages ----
extern "C" int pd_fake_cuda_export(size_t n, void** dev, void* handle) {
  cudaError_t e = cudaMalloc(dev, n);
  if (e != cudaSuccess) return e;
  cudaIpcMemHandle_t h;
  e = cudaIpcGetMemHandle(&h, *dev);
  if (e != cudaSuccess) {
    cudaFree(*dev);
    return e;
  }
  std::memcpy(handle, &h, sizeof h);
  return cudaSuccess;
}
extern "C" int pd_fake_cuda_copy(void* dst, const void* src, size_t n, int to_device) {
  return cudaMemcpy(dst, src, n, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost);
}
extern "C" int pd_fake_cuda_free(void* dev) { return cudaFree(dev); }
extern "C" long pd_fake_cuda_ipc_open() { return fake_cuda_live().ipc_open; }
