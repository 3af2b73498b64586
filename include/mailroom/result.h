// Fallible calls return Result<T> (std::expected) or Status; no exceptions on
// the data path. An Error carries a code a caller can branch on and a message
// a user can act on.
#pragma once

#include <expected>
#include <string>
#include <utility>

namespace mailroom {

enum class ErrorCode {
  kInvalidArgument,  // bad config or input; the message names what and why
  kNotFound,
  kIoError,  // disk or network; usually worth retrying
  kNoSpace,  // the spool's filesystem is full
  kCorruption,
  kUnavailable,  // a dependency (broker, carrier) cannot be reached
  kInternal,
};

struct Error {
  ErrorCode code;
  std::string message;
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> Fail(ErrorCode code, std::string message) {
  return std::unexpected<Error>(Error{code, std::move(message)});
}

}  // namespace mailroom
