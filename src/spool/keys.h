// Big-endian integer encoding: keys that sort bytewise in numeric order.
#pragma once

#include <cstdint>
#include <string>

namespace mailroom {

inline std::string EncodeBe64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
  return out;
}

inline uint64_t DecodeBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace mailroom
