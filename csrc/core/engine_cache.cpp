#include "engine_cache.h"

#include <cstring>
#include <utility>
#include <vector>

#include "error.h"

namespace pd {

namespace {

constexpr char kMagic[8] = {'P', 'D', 'E', 'N', 'G', 'I', 'N', 'E'};

uint64_t fnv1a64(const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

template <typename T>
void put(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}

template <typename T>
T get(const unsigned char* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

// The binding's fields with their header keys, in header order.
std::vector<std::pair<const char*, std::string CacheBinding::*>> fields() {
  return {{"backend", &CacheBinding::backend},
          {"backend_version", &CacheBinding::backend_version},
          {"target", &CacheBinding::target},
          {"model_fingerprint", &CacheBinding::model_fingerprint},
          {"model_digest", &CacheBinding::model_digest},
          {"options", &CacheBinding::options}};
}

}  // namespace

std::string fnv1a64_tag(const void* data, size_t size) {
  static const char kHex[] = "0123456789abcdef";
  uint64_t h = fnv1a64(data, size);
  std::string s = "fnv1a64:";
  for (int i = 15; i >= 0; --i) s.push_back(kHex[(h >> (4 * i)) & 0xf]);
  return s;
}

std::string encode_engine_cache(const CacheBinding& b, const std::string& payload) {
  std::string header;
  for (const auto& [key, field] : fields()) {
    const std::string& v = b.*field;
    if (v.find('\n') != std::string::npos)
      fail(PD_ERR_INTERNAL, "engine cache: field ", key, " contains a newline");
    header += str(key, "=", v, "\n");
  }
  header += str("payload_size=", payload.size(), "\n");
  header += str("payload_fnv1a64=", fnv1a64_tag(payload.data(), payload.size()), "\n");
  std::string out(kMagic, sizeof kMagic);
  put<uint32_t>(out, kEngineCacheFormat);
  put<uint32_t>(out, static_cast<uint32_t>(header.size()));
  out += header;
  put<uint64_t>(out, payload.size());
  out += payload;
  return out;
}

CacheBinding decode_engine_cache(const void* data, size_t size, std::string* payload) {
  const auto* p = static_cast<const unsigned char*>(data);
  if (!data || size < sizeof kMagic + 8 || std::memcmp(p, kMagic, sizeof kMagic) != 0)
    fail(PD_ERR_INVALID_ARG, "engine cache: not an engine cache (no PDENGINE header)");
  const uint32_t format = get<uint32_t>(p + 8);
  if (format != kEngineCacheFormat)
    fail(PD_ERR_INVALID_ARG, "engine cache: format ", format, ", this library reads format ",
         kEngineCacheFormat, "; rebuild engines");
  const uint64_t hlen = get<uint32_t>(p + 12);
  size_t off = 16;
  if (hlen > size - off) fail(PD_ERR_INVALID_ARG, "engine cache: truncated header");
  std::string header(reinterpret_cast<const char*>(p + off), hlen);
  off += hlen;
  if (size - off < 8) fail(PD_ERR_INVALID_ARG, "engine cache: truncated (no payload size)");
  const uint64_t plen = get<uint64_t>(p + off);
  off += 8;
  if (plen != size - off)
    fail(PD_ERR_INVALID_ARG, "engine cache: payload of ", size - off, " bytes, header says ", plen);

  CacheBinding b;
  std::string payload_size, payload_hash;
  size_t line = 0;
  while (line < header.size()) {
    size_t end = header.find('\n', line);
    if (end == std::string::npos) fail(PD_ERR_INVALID_ARG, "engine cache: header line without newline");
    std::string kv = header.substr(line, end - line);
    line = end + 1;
    size_t eq = kv.find('=');
    if (eq == std::string::npos) fail(PD_ERR_INVALID_ARG, "engine cache: header line '", kv, "' has no '='");
    std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
    bool known = false;
    for (const auto& [k, field] : fields())
      if (key == k) {
        b.*field = value;
        known = true;
      }
    if (key == "payload_size") payload_size = value, known = true;
    if (key == "payload_fnv1a64") payload_hash = value, known = true;
    if (!known) fail(PD_ERR_INVALID_ARG, "engine cache: unknown header key '", key, "'");
  }
  if (payload_size != std::to_string(plen))
    fail(PD_ERR_INVALID_ARG, "engine cache: payload_size ", payload_size, " differs from ", plen);
  if (payload_hash != fnv1a64_tag(p + off, plen))
    fail(PD_ERR_INVALID_ARG, "engine cache: payload is corrupt (checksum differs)");
  if (payload) payload->assign(reinterpret_cast<const char*>(p + off), plen);
  return b;
}

void check_engine_cache(const CacheBinding& want, const CacheBinding& got) {
  for (const auto& [key, field] : fields()) {
    const std::string& w = want.*field;
    const std::string& g = got.*field;
    if (w != g)
      fail(PD_ERR_INVALID_ARG, "engine cache does not match this build: ", key, " is '", g,
           "' in the cache, '", w, "' here; rebuild engines");
  }
}

}  // namespace pd
