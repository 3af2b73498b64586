// Ingest and spool instruments (catalogue: docs/metrics.md). Business logic
// calls the probe, never the registry.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "ingest/batch_builder.h"
#include "mailroom/spool.h"

namespace mailroom {

class IngestProbe {
 public:
  explicit IngestProbe(prometheus::Registry& registry);

  void BatchTally(const std::map<std::string, TenantTally>& tally);
  void DeadLettered(const std::string& reason, uint64_t n);
  void BatchCommitted(double seconds, size_t records);
  void WriteError();
  void PausedPartitions(size_t n);
  void Backpressure(bool paused);
  void ConsumerLag(const std::string& topic, int32_t partition, int64_t lag);
  void ForgetPartition(const std::string& topic, int32_t partition);
  void SpoolStats(const mailroom::SpoolStats& stats, uint64_t free_disk_bytes);

 private:
  prometheus::Family<prometheus::Counter>& received_;
  prometheus::Family<prometheus::Counter>& accepted_;
  prometheus::Family<prometheus::Counter>& duplicates_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Family<prometheus::Counter>& deadletter_;
  prometheus::Histogram& commit_seconds_;
  prometheus::Histogram& batch_records_;
  prometheus::Counter& write_errors_;
  prometheus::Gauge& paused_partitions_;
  prometheus::Gauge& backpressure_;
  prometheus::Family<prometheus::Gauge>& lag_;
  prometheus::Family<prometheus::Gauge>& spool_jobs_;
  prometheus::Gauge& outbox_pending_;
  prometheus::Gauge& spool_bytes_;
  prometheus::Gauge& free_disk_;
  prometheus::Gauge& oldest_queued_;
  std::mutex lag_mu_;
  std::map<std::pair<std::string, int32_t>, prometheus::Gauge*> lag_gauges_;
};

}  // namespace mailroom
