// Ingest's write: a poll batch of jobs as one synced WriteBatch, serialized
// by PrepareIngest (on the ingest thread) and written by CommitIngest.
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <map>

#include "mailroom/spool.h"
#include "spool/counter_merge.h"
#include "spool/errors.h"
#include "spool/keys.h"

namespace mailroom {
namespace {

google::protobuf::ArenaOptions BatchArena() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 64 << 10;  // a batch of 2 KiB jobs takes megabytes
  options.max_block_size = 1 << 20;
  return options;
}

// The outbox value of events that share one seq: a lone event as itself,
// several as a group (kEventGroup).
std::string OutboxValue(const google::protobuf::RepeatedPtrField<v1::DeliveryEvent>& events) {
  if (events.size() == 1) return events[0].SerializeAsString();
  std::string value(1, kEventGroup);
  for (const auto& event : events) AppendSized(value, event);
  return value;
}

}  // namespace

IngestBatch::IngestBatch()
    : arena(std::make_unique<google::protobuf::Arena>(BatchArena())),
      jobs(arena.get()),
      events(arena.get()) {}

PreparedIngest::PreparedIngest() = default;
PreparedIngest::~PreparedIngest() = default;
PreparedIngest::PreparedIngest(PreparedIngest&&) noexcept = default;
PreparedIngest& PreparedIngest::operator=(PreparedIngest&&) noexcept = default;

// One key a job: its body, headed by its first record (the record is stored
// apart only once an outcome changes it). Jobs due on acceptance share one
// due-index entry and one age-index entry per batch, which leasing expands.
Result<PreparedIngest> Spool::PrepareIngest(IngestBatch& ingest) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  auto& jobs = ingest.jobs;
  const bool as_sent = ingest.job_bytes.size() == static_cast<size_t>(jobs.size());
  size_t bytes = 64 + 256 * static_cast<size_t>(ingest.events.size());
  for (int i = 0; i < jobs.size(); ++i) {
    bytes += 640 + (as_sent && !ingest.job_bytes[i].empty() ? ingest.job_bytes[i].size()
                                                            : jobs[i].job().ByteSizeLong());
  }
  PreparedIngest prepared;
  // One allocation, not a doubling series of copies.
  prepared.batch_ = std::make_unique<rocksdb::WriteBatch>(bytes);
  rocksdb::WriteBatch& batch = *prepared.batch_;
  std::string head, serialized;
  std::map<v1::JobState, int64_t> counts;  // one counter merge per state, not per job
  std::map<int64_t, std::string> due_now;  // accepted_ms -> the keys of jobs due then
  for (int i = 0; i < jobs.size(); ++i) {
    v1::JobRecord& job = jobs[i];
    std::string key = JobKey(job.tenant(), job.job().id());
    SerializeWithoutJob(job, serialized);
    head.assign(1, kHeadedBody);
    AppendVarint(head, serialized.size()) += serialized;
    std::string_view body = as_sent ? ingest.job_bytes[i] : std::string_view();
    if (body.empty()) {
      job.job().SerializeToString(&serialized);
      body = serialized;
    }
    rocksdb::Slice key_part(key), value_parts[] = {head, rocksdb::Slice(body.data(), body.size())};
    batch.Put(bodies_, rocksdb::SliceParts(&key_part, 1), rocksdb::SliceParts(value_parts, 2));
    if (job.due_ms() == job.accepted_ms()) {
      AppendVarint(due_now[job.accepted_ms()], key.size()) += key;
    } else {  // not_before: a due entry of its own
      batch.Put(due_, DueKey(job.due_ms(), job.tenant(), job.job().id()), rocksdb::Slice());
      batch.Put(queued_, QueuedKey(job.accepted_ms(), key), rocksdb::Slice());
    }
    counts[job.state()]++;
  }
  for (const auto& [accepted_ms, keys] : due_now) {
    std::string group = GroupKey(accepted_ms, next_group_.fetch_add(1));
    batch.Put(due_, group, keys);
    batch.Put(queued_, group, rocksdb::Slice());
  }
  for (const auto& [state, n] : counts) Count(batch, state, n);
  if (!ingest.events.empty()) {
    prepared.events_ = OutboxValue(ingest.events);
    batch.Merge(meta_, kOutboxCounter, EncodeCounter(ingest.events.size()));
  }
  return prepared;
}

Status Spool::CommitIngest(PreparedIngest& prepared) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteBatch& batch = *prepared.batch_;
  if (!prepared.events_) return batch.Count() == 0 ? Status() : Write(batch, /*sync=*/true);
  // Under seq_mu_ until written: see AppendEvents.
  std::lock_guard seq_lock(seq_mu_);
  batch.Put(outbox_, OutboxKey(next_seq_++), *prepared.events_);
  return Write(batch, /*sync=*/true);
}

Status Spool::CommitIngest(IngestBatch& ingest) {
  auto prepared = PrepareIngest(ingest);
  if (!prepared) return std::unexpected(prepared.error());
  return CommitIngest(*prepared);
}

}  // namespace mailroom
