// The driver and device probe every CUDA-based plugin runs when it loads, device names, the
// dlopen of the NVIDIA libraries a plugin opens only once it has found a device, and the body
// of a plugin's pd_backend_entry. Header-only, like check.h: include after the plugin's
// runtime header.
#pragma once

#include <dlfcn.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/error.h"

namespace pd::gpu {

// What an engine cache is bound to: "sm_90".
inline std::string arch_of(int major, int minor) { return "sm_" + std::to_string(major * 10 + minor); }

// "GPU-8c1f…", as nvidia-smi and NVML print it (so the health details can join the two).
inline std::string uuid_string(const cudaUUID_t& u) {
  static const char kHex[] = "0123456789abcdef";
  std::string s = "GPU-";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    const auto b = static_cast<unsigned char>(u.bytes[i]);
    s += kHex[b >> 4];
    s += kHex[b & 15];
  }
  return s;
}

// dlopen of the first of names that loads ("" entries skipped); nullptr and the last dlerror in
// *err when none does. For the NVIDIA libraries a plugin opens only once it has found a device.
inline void* dlopen_first(const std::vector<std::string>& names, std::string* err) {
  for (const auto& n : names) {
    if (n.empty()) continue;
    if (void* h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
    const char* e = dlerror();
    *err = e ? e : n + " not found";
  }
  return nullptr;
}

// The first half of a plugin's probe: "" and *count > 0 when the driver runs and sees a device,
// else why not ("no NVIDIA driver is installed", "NVIDIA driver too old: …", "no CUDA device").
inline std::string probe_driver(int* count) {
  *count = 0;
  int driver = 0, runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaError_t e = cudaDriverGetVersion(&driver);
  if (e != cudaSuccess) return std::string("cannot query the NVIDIA driver: ") + cudaGetErrorString(e);
  if (driver == 0) return "no NVIDIA driver is installed";
  e = cudaGetDeviceCount(count);
  if (e == cudaErrorInsufficientDriver)
    return str("NVIDIA driver too old: it supports CUDA ", driver / 1000, ".", driver % 1000 / 10,
               ", this plugin was built with CUDA ", runtime / 1000, ".", runtime % 1000 / 10);
  if (e != cudaSuccess) return str("no usable CUDA device (", cudaGetErrorName(e), ": ", cudaGetErrorString(e), ")");
  if (*count == 0) return "no CUDA device";
  return "";
}

// The second half: devices [0, count) appended to *out, or why one cannot be queried.
inline std::string list_devices(int count, std::vector<DeviceInfo>* out) {
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    cudaError_t e = cudaGetDeviceProperties(&p, i);
    if (e != cudaSuccess) return str("cannot query CUDA device ", i, ": ", cudaGetErrorString(e));
    DeviceInfo d;
    d.ordinal = i;
    d.name = p.name;
    d.uuid = uuid_string(p.uuid);
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.target = arch_of(p.major, p.minor);
    d.total_memory = p.totalGlobalMem;
    out->push_back(d);
  }
  return "";
}

// The body of a GPU plugin's pd_backend_entry: checks the ABI, probes the machine once (the
// outcome is kept for later calls), then hands out the plugin's one backend B, calling loaded
// (its log line), or writes why there is none into err and returns non-zero.
template <typename B>
int backend_entry(const char* plugin, const HostServices* host, const HostServices** g_host, std::string (*probe)(),
                  void (*loaded)(), Backend** out, char* err, size_t err_len) {
  try {
    if (!host || host->abi_version != kBackendAbiVersion) {
      std::snprintf(err, err_len, "backend ABI mismatch: core %u, %s plugin %u", host ? host->abi_version : 0u, plugin,
                    kBackendAbiVersion);
      return 1;
    }
    *g_host = host;
    static std::once_flag once;
    static std::string why;
    std::call_once(once, [probe] { why = probe(); });
    if (!why.empty()) {
      std::snprintf(err, err_len, "%s", why.c_str());
      return 1;
    }
    static B backend;
    loaded();
    *out = &backend;
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(err, err_len, "%s", e.what());
    return 1;
  }
}

}  // namespace pd::gpu
