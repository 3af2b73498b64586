// Signed 64-bit counters updated with RocksDB merges, so a state change and
// its counter update share one WriteBatch and counts stay O(1) to read.
#pragma once

#include <rocksdb/merge_operator.h>

#include <cstdint>
#include <memory>
#include <string>

namespace mailroom {

std::string EncodeCounter(int64_t v);
int64_t DecodeCounter(const std::string& bytes);
std::shared_ptr<rocksdb::MergeOperator> NewCounterMergeOperator();

}  // namespace mailroom
