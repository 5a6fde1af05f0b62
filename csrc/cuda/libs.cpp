#include "libs.h"

#include <dlfcn.h>

#include "../gpu/probe.h"

namespace pd::cuda {

const HostServices* g_host = nullptr;
Libs g_libs;
Driver g_drv;

void log(pd_log_level level, const std::string& msg) {
  if (g_host && g_host->log) g_host->log(level, msg.c_str());
}

std::string load_libs() {
#ifdef PD_FAKE_CUDA
#define PD_SET(f) g_libs.f = &::f;
  PD_LT_FUNCS(PD_SET) PD_NVRTC_FUNCS(PD_SET)
#undef PD_SET
  return "";
#else
  // The libraries of the toolkit this plugin was compiled with (same major version).
  const std::string major = std::to_string(CUDART_VERSION / 1000);
  const auto open = gpu::dlopen_first;
  // First beside the libcudart this plugin loaded (a toolkit outside the linker's path, e.g.
  // /usr/local/cuda/lib64), then wherever the dynamic linker finds them.
  std::string dir;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&cudaGetDeviceCount), &info) && info.dli_fname) {
    dir = info.dli_fname;
    dir = dir.substr(0, dir.rfind('/') + 1);
  }
  std::string err;
  void* lt = open({dir + "libcublasLt.so." + major, "libcublasLt.so." + major, "libcublasLt.so"}, &err);
  if (!lt) return "cannot load cuBLASLt (" + err + ")";
  const std::string nvso = major == "11" ? "libnvrtc.so.11.2" : "libnvrtc.so." + major;
  void* nv = open({dir + nvso, nvso, "libnvrtc.so"}, &err);
  if (!nv) return "cannot load NVRTC (" + err + ")";
#define PD_SYM(lib, f)                                                  \
  g_libs.f = reinterpret_cast<decltype(g_libs.f)>(dlsym(lib, #f));      \
  if (!g_libs.f) return std::string(#lib " library lacks ") + #f;
#define PD_SYM_LT(f) PD_SYM(lt, f)
#define PD_SYM_NV(f) PD_SYM(nv, f)
  PD_LT_FUNCS(PD_SYM_LT) PD_NVRTC_FUNCS(PD_SYM_NV)
#undef PD_SYM_NV
#undef PD_SYM_LT
#undef PD_SYM
  return "";
#endif
}

[[noreturn]] void driver_fail(CUresult r, const char* call, const char* file, int line) {
  const char* msg = nullptr;
  if (g_drv.GetErrorString) g_drv.GetErrorString(r, &msg);
  fail(r == CUDA_ERROR_OUT_OF_MEMORY ? PD_ERR_UNAVAILABLE : PD_ERR_INTERNAL, "CUDA driver call ", call,
       " failed at ", file, ":", line, ": ", msg ? msg : "unknown error", " (", static_cast<int>(r), ")");
}

std::string load_driver() {
#ifdef PD_FAKE_CUDA
  g_drv.ModuleLoadData = &fake_cuModuleLoadData;
  g_drv.ModuleUnload = &fake_cuModuleUnload;
  g_drv.ModuleGetFunction = &fake_cuModuleGetFunction;
  g_drv.LaunchKernel = &fake_cuLaunchKernel;
  g_drv.GetErrorString = &fake_cuGetErrorString;
  return "";
#endif
  void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    return std::string("no NVIDIA driver (") + (e ? e : "libcuda.so.1 not found") + ")";
  }
  auto sym = [&](const char* name) { return dlsym(h, name); };
  g_drv.handle = h;
  g_drv.ModuleLoadData = reinterpret_cast<decltype(g_drv.ModuleLoadData)>(sym("cuModuleLoadData"));
  g_drv.ModuleUnload = reinterpret_cast<decltype(g_drv.ModuleUnload)>(sym("cuModuleUnload"));
  g_drv.ModuleGetFunction = reinterpret_cast<decltype(g_drv.ModuleGetFunction)>(sym("cuModuleGetFunction"));
  g_drv.LaunchKernel = reinterpret_cast<decltype(g_drv.LaunchKernel)>(sym("cuLaunchKernel"));
  g_drv.GetErrorString = reinterpret_cast<decltype(g_drv.GetErrorString)>(sym("cuGetErrorString"));
  if (!g_drv.ModuleLoadData || !g_drv.ModuleUnload || !g_drv.ModuleGetFunction || !g_drv.LaunchKernel ||
      !g_drv.GetErrorString)
    return "the NVIDIA driver library libcuda.so.1 lacks the module API";
  return "";
}

}  // namespace pd::cuda
