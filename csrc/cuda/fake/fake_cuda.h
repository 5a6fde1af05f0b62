// A CPU emulation of exactly the CUDA runtime, driver, cuBLASLt and NVRTC calls that
// csrc/cuda/*.cpp and csrc/gpu/ make, for the test build of the plugin (CMake target
// policyd_backend_cuda_fake). Not a CUDA implementation: one fake device, memory is host
// memory, every asynchronous call runs at once, stream capture records the calls and a graph
// launch replays them, a kernel launch runs the kernel (compiled from kernels.cuh as host C++)
// thread by thread, and cublasLtMatmul is a plain loop over cuBLASLt's documented
// column-major semantics (op(A), op(B), leading dimensions, strided batches, the bias and
// Relu epilogues; float32, and float64 without an epilogue). It lets the tests run the backend's whole plan — buckets, arena, strides,
// the GEMM mapping, LSTM, Conv, graph capture and replay, engine caches — against ONNX
// Runtime's outputs on a machine without a GPU. Names and values are ours, chosen only to
// compile the same source; nothing here is NVIDIA's.
#pragma once

#include <cstddef>
#include <cstdint>

// ---- runtime ----
enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInsufficientDriver = 35,
                   cudaErrorInvalidValue = 1, cudaErrorIllegalState = 401,
                   cudaErrorInvalidDevicePointer = 17, cudaErrorInvalidResourceHandle = 400,
                   cudaErrorStreamCaptureUnsupported = 900, cudaErrorFakeInjected = 999 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
enum cudaStreamCaptureMode { cudaStreamCaptureModeThreadLocal = 1 };
constexpr unsigned cudaHostAllocDefault = 0;
constexpr unsigned cudaHostAllocMapped = 2;
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventRecordExternal = 1;
struct FakeStream;
struct FakeEvent;
struct FakeGraph;
typedef FakeStream* cudaStream_t;
typedef FakeEvent* cudaEvent_t;
typedef FakeGraph* cudaGraph_t;
typedef FakeGraph* cudaGraphExec_t;
struct cudaUUID_t {
  char bytes[16];
};
struct cudaDeviceProp {
  char name[256];
  cudaUUID_t uuid;
  size_t totalGlobalMem;
  int major, minor;
};

const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaMalloc(void** p, size_t n);
cudaError_t cudaFree(void* p);
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned flags);
// Host and device share one address space here: the device's address of a mapped buffer is its own.
cudaError_t cudaHostGetDevicePointer(void** dev, void* host, unsigned flags);
cudaError_t cudaFreeHost(void* p);
// CUDA IPC: a handle names an emulated device allocation (the one containing devPtr, as in
// CUDA); opening it gives that allocation's base (here: the same host address, reference
// counted per open), closing releases one open. An unknown, forged or freed allocation's handle
// fails to open with cudaErrorInvalidResourceHandle; cudaFree of an allocation that is open
// keeps its memory until the last close, as the driver does for an importer.
constexpr unsigned cudaIpcMemLazyEnablePeerAccess = 1;
struct cudaIpcMemHandle_t {
  char reserved[64];
};
cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* devPtr);
cudaError_t cudaIpcOpenMemHandle(void** devPtr, cudaIpcMemHandle_t handle, unsigned flags);
cudaError_t cudaIpcCloseMemHandle(void* devPtr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemsetAsync(void* dst, int v, size_t n, cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaSetDevice(int d);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned flags);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g);
cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e);
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s);
cudaError_t cudaGetLastError();
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);

// ---- cuBLASLt ----
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_ALLOC_FAILED = 3, CUBLAS_STATUS_INVALID_VALUE = 7,
                      CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_64F = 70 };
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_64F = 1 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasLtMatmulDescAttributes_t { CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4,
                                      CUBLASLT_MATMUL_DESC_EPILOGUE = 7, CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8 };
enum cublasLtEpilogue_t { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_RELU = 2, CUBLASLT_EPILOGUE_BIAS = 4,
                          CUBLASLT_EPILOGUE_RELU_BIAS = 6 };
enum cublasLtMatrixLayoutAttribute_t { CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5,
                                       CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6 };
enum cublasLtMatmulPreferenceAttributes_t { CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1 };
struct FakeLt;
struct FakeLtDesc;
struct FakeLtLayout;
struct FakeLtPref;
typedef FakeLt* cublasLtHandle_t;
typedef FakeLtDesc* cublasLtMatmulDesc_t;
typedef FakeLtLayout* cublasLtMatrixLayout_t;
typedef FakeLtPref* cublasLtMatmulPreference_t;
struct cublasLtMatmulAlgo_t {
  uint64_t data[8];
};
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};

const char* cublasLtGetStatusString(cublasStatus_t s);
size_t cublasLtGetVersion();
cublasStatus_t cublasLtCreate(cublasLtHandle_t* h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t c, cudaDataType_t t);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void* v,
                                              size_t n);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                                          int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                const void* v, size_t n);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a, const void* v, size_t n);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t dd, cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t* r, int* returned);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Ad, const void* B, cublasLtMatrixLayout_t Bd, const void* beta,
                              const void* C, cublasLtMatrixLayout_t Cd, void* D, cublasLtMatrixLayout_t Dd,
                              const cublasLtMatmulAlgo_t* algo, void* ws, size_t ws_size, cudaStream_t s);

// ---- NVRTC ----
enum nvrtcResult { NVRTC_SUCCESS = 0, NVRTC_ERROR_INVALID_INPUT = 3, NVRTC_ERROR_COMPILATION = 6 };
struct FakeProgram;
typedef FakeProgram* nvrtcProgram;
const char* nvrtcGetErrorString(nvrtcResult r);
nvrtcResult nvrtcVersion(int* major, int* minor);
nvrtcResult nvrtcGetNumSupportedArchs(int* n);
nvrtcResult nvrtcGetSupportedArchs(int* archs);
nvrtcResult nvrtcCreateProgram(nvrtcProgram* p, const char* src, const char* name, int nh, const char* const* h,
                               const char* const* hn);
nvrtcResult nvrtcDestroyProgram(nvrtcProgram* p);
nvrtcResult nvrtcCompileProgram(nvrtcProgram p, int n, const char* const* opts);
nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram p, size_t* n);
nvrtcResult nvrtcGetProgramLog(nvrtcProgram p, char* log);
nvrtcResult nvrtcGetCUBINSize(nvrtcProgram p, size_t* n);
nvrtcResult nvrtcGetCUBIN(nvrtcProgram p, char* out);
nvrtcResult nvrtcGetPTXSize(nvrtcProgram p, size_t* n);
nvrtcResult nvrtcGetPTX(nvrtcProgram p, char* out);

// ---- driver ----
enum CUresult { CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_OUT_OF_MEMORY = 2, CUDA_ERROR_NOT_FOUND = 500,
                CUDA_ERROR_INVALID_IMAGE = 200 };
struct FakeModule;
struct FakeFunction;
typedef FakeModule* CUmodule;
typedef const FakeFunction* CUfunction;
typedef FakeStream* CUstream;
CUresult fake_cuModuleLoadData(CUmodule* m, const void* image);
CUresult fake_cuModuleUnload(CUmodule m);
CUresult fake_cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name);
CUresult fake_cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                             unsigned bz, unsigned shmem, CUstream s, void** params, void** extra);
CUresult fake_cuGetErrorString(CUresult r, const char** s);

// ---- test hooks (the emulation only; nothing of a real runtime) ----
// The fake is a shared library (libpd_fakecuda.so) that the fake-CUDA plugin and a test program
// both link, so a test sees the plugin's objects and steers its calls.

// Objects handed out and not yet given back.
struct FakeCudaLive {
  long streams, events, graphs, graph_execs, lt_handles, device_allocs, pinned_allocs;
  long ipc_open = 0;  // IPC mappings opened and not closed (each open counts)
};
FakeCudaLive fake_cuda_live();
// The runtime or cuBLASLt call named call ("cudaEventCreate", "cublasLtCreate",
// "cudaGraphInstantiateWithFlags", "cudaStreamBeginCapture", "cudaMalloc", …) fails with
// cudaErrorFakeInjected (cuBLASLt: CUBLAS_STATUS_ALLOC_FAILED) times times (-1: until cleared)
// after succeeding after times. Thread-safe.
void fake_cuda_fail(const char* call, int after, int times);
// Clears every injected failure.
void fake_cuda_clear_failures();
// How often call has been made since the process started (graph launches, captures).
long fake_cuda_calls(const char* call);

// ---- an exporter for tests in other languages (C linkage; the Go tests reach them with dlsym):
// a process that owns device memory and hands out its IPC handle, as a CUDA shared memory
// client does. Each returns a cudaError_t value.
extern "C" {
// n bytes of device memory at *dev, and its handle's 64 bytes in handle.
int pd_fake_cuda_export(size_t n, void** dev, void* handle);
// cudaMemcpy host->device (to_device) or device->host.
int pd_fake_cuda_copy(void* dst, const void* src, size_t n, int to_device);
int pd_fake_cuda_free(void* dev);
// IPC mappings opened and not closed.
long pd_fake_cuda_ipc_open();
}
