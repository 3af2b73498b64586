// Small text helpers shared by the parts.
#pragma once

#include <cctype>
#include <string>
#include <string_view>

namespace mailroom {

// ASCII lower case (addresses, domains, header names, reply texts); other
// bytes, UTF-8 included, are kept as they are.
inline std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace mailroom
