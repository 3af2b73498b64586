// Ingest: a Kafka consumer group that moves mail jobs into the spool. A poll
// batch is decoded, validated and written as one synced WriteBatch; only then
// are its offsets stored (offset + 1) and committed. Nothing is lost across
// crashes, restarts, rebalances or a full disk; duplicates are dropped.
#pragma once

#include <atomic>
#include <functional>
#include <memory>

#include "mailroom/config.h"
#include "mailroom/health.h"
#include "mailroom/result.h"
#include "mailroom/spool.h"

namespace mailroom {

class IngestProbe;

class IngestService {
 public:
  IngestService(const Config& config, Spool& spool, IngestProbe& probe, Health& health);
  ~IngestService();

  // Creates the consumer and dead-letter producer and subscribes.
  Status Start();

  // Called on the ingest thread after each batch of new jobs is spooled,
  // with the earliest due time among them (the dispatcher's wakeup).
  void OnSpooled(std::function<void(int64_t earliest_due_ms)> callback);

  // Consumes until `stop` is set; then finishes the batch in hand, commits
  // and leaves the group.
  Status Run(const std::atomic<bool>& stop);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailroom
