#include "metrics/ingest_probe.h"

#include <algorithm>
#include <chrono>

#include <prometheus/counter.h>

namespace mailroom {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

prometheus::Gauge& OneGauge(prometheus::Registry& r, const char* name, const char* help) {
  return BuildGauge().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

IngestProbe::IngestProbe(prometheus::Registry& r)
    : received_(BuildCounter()
                    .Name("mailroom_ingest_received_total")
                    .Help("Kafka records received, by tenant")
                    .Register(r)),
      accepted_(BuildCounter()
                    .Name("mailroom_ingest_accepted_total")
                    .Help("Jobs spooled durably and queued for delivery, by tenant")
                    .Register(r)),
      duplicates_(BuildCounter()
                      .Name("mailroom_ingest_duplicates_total")
                      .Help("Records dropped because their job id was already spooled, by tenant")
                      .Register(r)),
      rejected_(BuildCounter()
                    .Name("mailroom_ingest_rejected_total")
                    .Help("Records rejected at ingest, by tenant and reason")
                    .Register(r)),
      deadletter_(BuildCounter()
                      .Name("mailroom_ingest_deadletter_total")
                      .Help("Undecodable records copied to the dead-letter topic, by reason")
                      .Register(r)),
      commit_seconds_(
          BuildHistogram()
              .Name("mailroom_ingest_batch_commit_seconds")
              .Help("Time to write one poll batch to the spool with the WAL synced")
              .Register(r)
              .Add({},
                   prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                                                           0.05, 0.1, 0.25, 0.5, 1, 2.5})),
      batch_records_(BuildHistogram()
                         .Name("mailroom_ingest_batch_records")
                         .Help("Records per poll batch")
                         .Register(r)
                         .Add({}, prometheus::Histogram::BucketBoundaries{1, 10, 50, 100, 250, 500,
                                                                          1000, 2500, 5000})),
      write_errors_(BuildCounter()
                        .Name("mailroom_ingest_spool_write_errors_total")
                        .Help("Failed spool writes (e.g. disk full); offsets were not committed")
                        .Register(r)
                        .Add({})),
      paused_partitions_(
          OneGauge(r, "mailroom_ingest_paused_partitions", "Assigned partitions currently paused")),
      backpressure_(OneGauge(r, "mailroom_ingest_backpressure",
                             "1 while ingest is paused by a spool high-water mark or write error")),
      lag_(BuildGauge()
               .Name("mailroom_ingest_consumer_lag")
               .Help("Records between the consumer position and the partition's high watermark")
               .Register(r)),
      spool_jobs_(
          BuildGauge().Name("mailroom_spool_jobs").Help("Jobs in the spool, by state").Register(r)),
      outbox_pending_(OneGauge(r, "mailroom_spool_outbox_pending",
                               "Delivery events in the outbox not yet published")),
      spool_bytes_(OneGauge(r, "mailroom_spool_disk_bytes",
                            "Bytes of spool data (SST, blob files, memtables)")),
      free_disk_(
          OneGauge(r, "mailroom_spool_free_disk_bytes", "Free bytes on the spool's filesystem")),
      oldest_queued_(OneGauge(r, "mailroom_spool_oldest_queued_age_seconds",
                              "Age of the oldest job not yet finished (0 when none)")) {}

void IngestProbe::BatchTally(const std::map<std::string, TenantTally>& tally) {
  for (const auto& [tenant, t] : tally) {
    if (t.received) received_.Add({{"tenant", tenant}}).Increment(static_cast<double>(t.received));
    if (t.accepted) accepted_.Add({{"tenant", tenant}}).Increment(static_cast<double>(t.accepted));
    if (t.duplicates) {
      duplicates_.Add({{"tenant", tenant}}).Increment(static_cast<double>(t.duplicates));
    }
    for (const auto& [reason, n] : t.rejected) {
      rejected_.Add({{"tenant", tenant}, {"reason", reason}}).Increment(static_cast<double>(n));
    }
  }
}

void IngestProbe::DeadLettered(const std::string& reason, uint64_t n) {
  deadletter_.Add({{"reason", reason}}).Increment(static_cast<double>(n));
}

void IngestProbe::BatchCommitted(double seconds, size_t records) {
  commit_seconds_.Observe(seconds);
  batch_records_.Observe(static_cast<double>(records));
}

void IngestProbe::WriteError() { write_errors_.Increment(); }
void IngestProbe::PausedPartitions(size_t n) { paused_partitions_.Set(static_cast<double>(n)); }
void IngestProbe::Backpressure(bool paused) { backpressure_.Set(paused ? 1 : 0); }

void IngestProbe::ConsumerLag(const std::string& topic, int32_t partition, int64_t lag) {
  std::lock_guard lock(lag_mu_);
  auto& gauge = lag_gauges_[{topic, partition}];
  if (!gauge) gauge = &lag_.Add({{"topic", topic}, {"partition", std::to_string(partition)}});
  gauge->Set(static_cast<double>(lag));
}

void IngestProbe::ForgetPartition(const std::string& topic, int32_t partition) {
  std::lock_guard lock(lag_mu_);
  auto it = lag_gauges_.find({topic, partition});
  if (it == lag_gauges_.end()) return;
  lag_.Remove(it->second);
  lag_gauges_.erase(it);
}

void IngestProbe::SpoolStats(const mailroom::SpoolStats& stats, uint64_t free_disk_bytes) {
  for (const auto& [state, n] : stats.jobs_by_state) {
    spool_jobs_.Add({{"state", StateLabel(state)}}).Set(static_cast<double>(n));
  }
  outbox_pending_.Set(static_cast<double>(stats.outbox_pending));
  spool_bytes_.Set(static_cast<double>(stats.disk_bytes));
  free_disk_.Set(static_cast<double>(free_disk_bytes));
  double age = 0;
  if (stats.oldest_queued_ms) {
    auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
    age = static_cast<double>(std::max<int64_t>(0, now_ms - *stats.oldest_queued_ms)) / 1000.0;
  }
  oldest_queued_.Set(age);
}

}  // namespace mailroom
