#include "spool/counter_merge.h"

#include <cstring>

namespace mailroom {
namespace {

int64_t Decode(const rocksdb::Slice& s) {
  if (s.size() != sizeof(int64_t)) return 0;
  int64_t v;
  std::memcpy(&v, s.data(), sizeof v);
  return v;
}

class CounterMerge : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
             std::string* new_value, rocksdb::Logger*) const override {
    *new_value = EncodeCounter((existing ? Decode(*existing) : 0) + Decode(value));
    return true;
  }
  const char* Name() const override { return "mailroom.CounterMerge"; }
};

}  // namespace

std::string EncodeCounter(int64_t v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof v);
}

int64_t DecodeCounter(const std::string& bytes) { return Decode(bytes); }

std::shared_ptr<rocksdb::MergeOperator> NewCounterMergeOperator() {
  return std::make_shared<CounterMerge>();
}

}  // namespace mailroom
