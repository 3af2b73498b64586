// Turns one poll batch of Kafka records into an IngestBatch: decode, validate,
// authorize, dedupe. Pure apart from the spool lookup, so it is unit-tested
// without a broker.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "mailroom/spool.h"
#include "mailroom/validation.h"

namespace mailroom {

struct InboundRecord {
  std::string_view topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string_view key;
  std::string_view payload;
  bool json = false;  // record header content-type: application/json
};

// A record to copy to the dead-letter topic.
struct DeadLetter {
  size_t record_index;  // into the input vector
  std::string reason;
  std::string detail;
};

struct TenantTally {
  uint64_t received = 0;
  uint64_t accepted = 0;
  uint64_t duplicates = 0;
  std::map<std::string, uint64_t> rejected;  // by reason code
};

struct BuiltBatch {
  std::unique_ptr<IngestBatch> batch;
  std::unordered_set<std::string> job_keys;  // JobKeys of batch.jobs
  std::vector<DeadLetter> dead_letters;
  std::map<std::string, TenantTally> tally;  // by tenant
};

// Decodes binary protobuf, or proto3 JSON when `json` is set, into `job`.
Status DecodeJob(std::string_view payload, bool json, v1::MailJob& job);

class BatchBuilder {
 public:
  BatchBuilder(const Config& config, Spool& spool)
      : config_(config), spool_(spool), validator_(config) {}

  // `pending`: the JobKeys of batches still being written; duplicates too.
  Result<BuiltBatch> Build(
      const std::vector<InboundRecord>& records, int64_t now_ms,
      const std::vector<const std::unordered_set<std::string>*>& pending = {}) const;

  // Tenant named by a topic, or empty when the topic lacks the prefix.
  std::string TenantOf(std::string_view topic) const;

 private:
  const Config& config_;
  Spool& spool_;
  JobValidator validator_;
};

}  // namespace mailroom
