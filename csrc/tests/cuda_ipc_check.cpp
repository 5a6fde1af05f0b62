// CUDA shared memory on a real GPU (bench/gpu-check.sh) or on the CPU emulation (ctest
// cuda_ipc_check_fakecuda): what FakeCudaIpc.* checks in pd_fakecuda_tests, without GoogleTest.
//
// A client process owns the device memory: it cudaMallocs a region, takes its IPC handle and
// hands it over a pipe, then keeps the allocation until told to go. (CUDA refuses to open a
// handle in the process that made it, so on a GPU the client is a forked child; the emulation's
// handles are process-local, so there the client is this process.) This process then, through
// the C ABI only: opens the handle on the cuda backend (pd_cuda_ipc_open), writes the inputs
// into the mapping, runs mlp-small at batch 1, 3 and 64 with device-pointer inputs and outputs
// (pd_context_run_device), reads the outputs back and compares them with pd_context_run of the
// same inputs on the same context (bit for bit: the same kernels), checks that a result larger
// than its room and a forged handle are refused, closes the mapping. Exit 0 when all hold.
//
//   pd_cuda_ipc_check --backend-dir DIR --model mlp-small.onnx
#ifdef PD_FAKE_CUDA
#include "fake_cuda.h"
#else
#include <cuda_runtime.h>
#endif
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "policyd.h"

namespace {

constexpr size_t kRegion = 64 * 1024, kOutOff = 32 * 1024;
int g_failures = 0;

#define CHECK(cond, ...)                               \
  do {                                                 \
    if (!(cond)) {                                     \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);               \
      std::fprintf(stderr, "\n");                      \
      ++g_failures;                                    \
    }                                                  \
  } while (0)

std::string take(pd_error* e) {
  if (!e) return "";
  std::string m = pd_error_get_message(e);
  pd_error_free(e);
  return m.empty() ? "(error)" : m;
}

// The client: n bytes of device memory and its handle; returns the device pointer.
void* client_export(cudaIpcMemHandle_t* h) {
  void* dev = nullptr;
  cudaError_t e = cudaSetDevice(0);
  if (e == cudaSuccess) e = cudaMalloc(&dev, kRegion);
  if (e == cudaSuccess) e = cudaIpcGetMemHandle(h, dev);
  if (e != cudaSuccess) {
    std::fprintf(stderr, "client: %s: %s\n", cudaGetErrorName(e), cudaGetErrorString(e));
    return nullptr;
  }
  return dev;
}

int check(const char* dir, const std::string& model, const cudaIpcMemHandle_t& handle) {
  pd_runtime_options* ro = nullptr;
  pd_runtime* rt = nullptr;
  take(pd_runtime_options_create(&ro));
  take(pd_runtime_options_set_backend_dir(ro, dir));
  std::string err = take(pd_runtime_create(ro, &rt));
  pd_runtime_options_destroy(ro);
  if (!err.empty()) return std::fprintf(stderr, "runtime: %s\n", err.c_str()), 1;
  pd_engine_options* eo = nullptr;
  take(pd_engine_options_create(&eo));
  take(pd_engine_options_set_backend(eo, "cuda"));
  pd_engine* e = nullptr;
  err = take(pd_engine_create(rt, model.data(), model.size(), eo, &e));
  pd_engine_options_destroy(eo);
  if (!err.empty()) return std::fprintf(stderr, "engine: %s\n", err.c_str()), 1;
  pd_context* c = nullptr;
  err = take(pd_context_create(e, &c));
  if (!err.empty()) return std::fprintf(stderr, "context: %s\n", err.c_str()), 1;

  pd_cuda_ipc* m = nullptr;
  err = take(pd_cuda_ipc_open(rt, 0, &handle, sizeof handle, &m));
  CHECK(err.empty(), "pd_cuda_ipc_open: %s", err.c_str());
  if (m) {
    char* base = static_cast<char*>(pd_cuda_ipc_pointer(m));
    for (int batch : {1, 3, 64}) {
      std::vector<float> obs(static_cast<size_t>(batch) * 8);
      for (size_t i = 0; i < obs.size(); ++i) obs[i] = 0.03125f * static_cast<float>(i % 97) - 1.0f;
      err = take(pd_cuda_ipc_write(m, 256, obs.data(), obs.size() * 4));
      CHECK(err.empty(), "pd_cuda_ipc_write: %s", err.c_str());
      pd_tensor in{};
      in.dtype = PD_DTYPE_FLOAT32;
      in.rank = 2;
      in.dims[0] = batch;
      in.dims[1] = 8;
      in.byte_size = obs.size() * 4;
      in.data = base + 256;
      pd_tensor out{};
      out.data = base + kOutOff;
      out.byte_size = kRegion - kOutOff;
      err = take(pd_context_run_device(c, &in, 1, &out, 1));
      CHECK(err.empty(), "batch %d: pd_context_run_device: %s", batch, err.c_str());
      CHECK(out.byte_size == static_cast<uint64_t>(batch) * 8, "batch %d: output of %llu bytes", batch,
            static_cast<unsigned long long>(out.byte_size));
      std::vector<float> got(static_cast<size_t>(batch) * 2);
      err = take(pd_cuda_ipc_read(m, kOutOff, got.data(), got.size() * 4));
      CHECK(err.empty(), "pd_cuda_ipc_read: %s", err.c_str());
      pd_tensor hin = in;
      hin.data = obs.data();
      pd_tensor hout{};
      err = take(pd_context_run(c, &hin, 1, &hout, 1));
      CHECK(err.empty() && hout.byte_size == got.size() * 4, "inline run: %s", err.c_str());
      if (err.empty() && hout.byte_size == got.size() * 4)
        CHECK(std::memcmp(hout.data, got.data(), hout.byte_size) == 0, "batch %d: device run differs from inline run",
              batch);
      std::printf("batch %d: device-pointer run %s the inline run\n", batch,
                  std::memcmp(hout.data, got.data(), got.size() * 4) == 0 ? "equals" : "DIFFERS from");
    }
    pd_tensor in{};
    in.dtype = PD_DTYPE_FLOAT32;
    in.rank = 2;
    in.dims[0] = 2;
    in.dims[1] = 8;
    in.byte_size = 64;
    in.data = base + 256;
    pd_tensor out{};
    out.data = base + kOutOff;
    out.byte_size = 15;
    pd_error* pe = pd_context_run_device(c, &in, 1, &out, 1);
    CHECK(pe && pd_error_get_code(pe) == PD_ERR_INVALID_ARG, "a room of 15 bytes for 16 was not refused");
    take(pe);
    pd_cuda_ipc_destroy(m);
  }
  cudaIpcMemHandle_t forged;
  std::memset(&forged, 0x5a, sizeof forged);
  pd_cuda_ipc* f = nullptr;
  pd_error* pe = pd_cuda_ipc_open(rt, 0, &forged, sizeof forged, &f);
  CHECK(pe && pd_error_get_code(pe) == PD_ERR_INVALID_ARG, "a forged handle was not refused as INVALID_ARG");
  if (pe) std::printf("forged handle: %s\n", pd_error_get_message(pe));
  take(pe);
  pd_cuda_ipc_destroy(f);
  pd_context_destroy(c);
  pd_engine_destroy(e);
  pd_runtime_destroy(rt);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* dir = nullptr;
  const char* model_path = nullptr;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--backend-dir")) dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
  }
  if (!dir || !model_path) return std::fprintf(stderr, "usage: %s --backend-dir DIR --model FILE\n", argv[0]), 2;
  std::ifstream f(model_path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string model = ss.str();
  if (model.empty()) return std::fprintf(stderr, "cannot read %s\n", model_path), 2;
  cudaIpcMemHandle_t h;
#ifdef PD_FAKE_CUDA
  void* dev = client_export(&h);
  if (!dev) return 1;
  if (check(dir, model, h)) return 1;
  cudaFree(dev);
#else
  int to_parent[2], to_child[2];
  if (pipe(to_parent) || pipe(to_child)) return std::perror("pipe"), 1;
  const pid_t pid = fork();
  if (pid == 0) {  // the client: no CUDA was touched before the fork
    close(to_parent[0]);
    close(to_child[1]);
    void* dev = client_export(&h);
    const char ok = dev ? 1 : 0;
    if (write(to_parent[1], &ok, 1) != 1 || (dev && write(to_parent[1], &h, sizeof h) != sizeof h)) _exit(1);
    char c;
    while (read(to_child[0], &c, 1) > 0) {
    }  // until the parent closes its end
    if (dev) cudaFree(dev);
    _exit(dev ? 0 : 1);
  }
  close(to_parent[1]);
  close(to_child[0]);
  char ok = 0;
  if (read(to_parent[0], &ok, 1) != 1 || !ok || read(to_parent[0], &h, sizeof h) != sizeof h)
    return std::fprintf(stderr, "the client could not export device memory\n"), 1;
  const int rc = check(dir, model, h);
  close(to_child[1]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (rc) return 1;
#endif
  std::printf("%s\n", g_failures ? "cuda-ipc: FAILED" : "cuda-ipc: OK");
  return g_failures ? 1 : 0;
}
