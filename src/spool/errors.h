// RocksDB statuses as Mailroom errors, for the spool's files.
#pragma once

#include <rocksdb/status.h>

#include <expected>
#include <string>

#include "mailroom/result.h"

namespace mailroom {

inline std::unexpected<Error> Closed() { return Fail(ErrorCode::kUnavailable, "spool is closed"); }

inline Error FromRocks(const rocksdb::Status& s, const std::string& what) {
  ErrorCode code = ErrorCode::kIoError;
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kNoSpace) code = ErrorCode::kNoSpace;
  if (s.IsCorruption()) code = ErrorCode::kCorruption;
  if (s.IsNotFound()) code = ErrorCode::kNotFound;
  return Error{code, what + ": " + s.ToString()};
}

}  // namespace mailroom
