// Engine caches: a built engine saved by pd_engine_serialize and handed back through
// pd_engine_options_set_cache, so that a GPU backend skips its slow work (kernel compilation,
// weight preparation) at load. The core wraps the backend's own bytes in an envelope that
// binds them to everything that made them; a cache whose binding differs in any field is
// refused, never used.
//
// Layout (integers little-endian):
//   "PDENGINE"                    8 bytes, magic
//   u32 format                    kEngineCacheFormat
//   u32 H, H bytes                header: "key=value\n" lines, keys in the order of
//                                 CacheBinding plus payload_size and payload_fnv1a64
//   u64 P, P bytes                the backend's payload (BackendEngine::serialize)
// Host-only code: no backend, no device; unit-tested in csrc/tests/engine_cache_test.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pd {

constexpr uint32_t kEngineCacheFormat = 1;

// What a cache is bound to. Every field must match exactly.
struct CacheBinding {
  std::string backend;            // "cuda"
  std::string backend_version;    // Backend::version(): plugin, toolkit and library versions
  std::string target;             // DeviceInfo::target of the device it was built for: "sm_90"
  std::string model_fingerprint;  // "fnv1a64:<16 hex>" of the ONNX bytes (always computed)
  std::string model_digest;       // the host's digest of the model ("sha256:…"), may be empty
  std::string options;            // Backend::options_key
};

// FNV-1a 64 of the bytes as "fnv1a64:<16 lower-case hex digits>".
std::string fnv1a64_tag(const void* data, size_t size);

std::string encode_engine_cache(const CacheBinding& b, const std::string& payload);

// Parses an envelope; throws PD_ERR_INVALID_ARG ("engine cache: …") when it is not one, is
// truncated, has another format version or a corrupt payload.
CacheBinding decode_engine_cache(const void* data, size_t size, std::string* payload);

// Throws PD_ERR_INVALID_ARG naming the first field that differs and both values, ending in
// "; rebuild engines", when got (the cache) is not bound to want (this build).
void check_engine_cache(const CacheBinding& want, const CacheBinding& got);

}  // namespace pd
