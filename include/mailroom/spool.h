// The durable spool: RocksDB column families for jobs, the due index, the
// event outbox, suppressions, provider message ids and retention. Every
// mutation is one WriteBatch, so a job's state and the event reporting it are
// persisted together or not at all (transactional outbox).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/arena.h>
#include <google/protobuf/repeated_ptr_field.h>

#include "mailroom/config.h"
#include "mailroom/result.h"
#include "mailroom/v1/delivery_event.pb.h"
#include "mailroom/v1/spool.pb.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace mailroom {

// Jobs accepted from one poll batch plus the events (ACCEPTED, REJECTED) that
// report them; written as one synced WriteBatch. Its messages live on its own
// arena: thousands of them are allocated by bumping a pointer and freed as a
// few blocks. Not copied or moved (hold one by pointer).
struct IngestBatch {
  IngestBatch();
  IngestBatch(const IngestBatch&) = delete;
  IngestBatch& operator=(const IngestBatch&) = delete;

  std::unique_ptr<google::protobuf::Arena> arena;  // first: outlives the fields below
  google::protobuf::RepeatedPtrField<v1::JobRecord> jobs;
  google::protobuf::RepeatedPtrField<v1::DeliveryEvent> events;
  // Empty, or one per job: its MailJob exactly as the producer serialized it
  // (a view into the Kafka record, alive until the write is prepared), or an
  // empty view (a JSON record). The spool stores these bytes rather than
  // serializing job() again.
  std::vector<std::string_view> job_bytes;
};

// An IngestBatch serialized for its synced write (Spool::PrepareIngest), so
// that ingest prepares one batch while the last is being written.
class PreparedIngest {
 public:
  PreparedIngest();
  ~PreparedIngest();
  PreparedIngest(PreparedIngest&&) noexcept;
  PreparedIngest& operator=(PreparedIngest&&) noexcept;

 private:
  friend class Spool;
  std::unique_ptr<rocksdb::WriteBatch> batch_;
  // The events' outbox value; its key (a seq) is taken at commit.
  std::optional<std::string> events_;
};

// One job's state change after a delivery attempt (or an expiry, a
// suppression, a rate-limit release), written with its events in one batch.
struct JobUpdate {
  v1::JobRecord record;  // the new state; record.due_ms() is its new due time
  v1::JobState previous_state = v1::JOB_STATE_UNSPECIFIED;
  int64_t previous_due_ms = 0;  // the due entry to remove
  std::vector<v1::DeliveryEvent> events;
  std::vector<v1::Suppression> suppress;  // added to record.tenant()'s list
};

struct SpoolStats {
  std::map<v1::JobState, int64_t> jobs_by_state;  // every state, zero included
  int64_t queued_jobs = 0;                        // not finished: queued, sending or deferred
  int64_t outbox_pending = 0;                     // events not yet published
  uint64_t disk_bytes = 0;                        // SST + blob files + memtables
  std::optional<int64_t> oldest_queued_ms;        // accepted time of the oldest queued job
};

struct OutboxEntry {
  uint64_t seq;
  v1::DeliveryEvent event;
  // An ingest batch's events share one seq (one key for the lot): this is
  // event `index` of `count`. The seq is deleted once all have landed.
  uint32_t index = 0;
  uint32_t count = 1;
};

class Spool {
 public:
  // Opens (creating if needed) the spool at config.path. With read_only the
  // spool may be inspected while a service holds it open.
  static Result<std::unique_ptr<Spool>> Open(const SpoolConfig& config, bool read_only = false);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Which of `keys` (JobKey) are already spooled; same order as `keys`.
  Result<std::vector<bool>> ContainsJobs(const std::vector<std::string>& keys);

  // Serializes the batch's jobs (each one key: its body headed by its record),
  // their due and age index entries, state counters and events (one outbox
  // entry) into one write. The records are used as scratch space and are as
  // before on return. Safe beside a CommitIngest running on another thread.
  Result<PreparedIngest> PrepareIngest(IngestBatch& batch);
  // Writes a prepared batch, once, with the WAL synced; its events take the
  // next outbox seq.
  Status CommitIngest(PreparedIngest& prepared);
  // Both steps.
  Status CommitIngest(IngestBatch& batch);

  Result<std::optional<v1::JobRecord>> GetJob(const std::string& tenant, const std::string& id);

  // Leases up to `max` unfinished jobs due at `now_ms`: each job's due entry
  // moves to now_ms + lease_ms, so a crashed lease simply falls due again.
  // `cursor`, when given, is a due-index key (see DueKey) to start from and
  // receives the last key taken, so that the next scan skips what this one
  // leased.
  Result<std::vector<v1::JobRecord>> LeaseDue(int64_t now_ms, int64_t lease_ms, size_t max,
                                              std::string* cursor = nullptr);

  // Applies state changes: job records (their bodies are never rewritten),
  // due entries, counters, events, suppressions and the retention index of
  // finished jobs, in one batch. Records are scratch space, as CommitIngest.
  Status CommitUpdates(std::vector<JobUpdate>& updates, bool sync = true);

  // Which of `addresses` are on the tenant's suppression list.
  Result<std::vector<bool>> Suppressed(const std::string& tenant,
                                       const std::vector<std::string>& addresses);
  // Entries on a tenant's suppression list (all tenants when empty).
  Result<std::vector<std::pair<std::string, v1::Suppression>>> ListSuppressions(
      const std::string& tenant, size_t max);
  Status RemoveSuppression(const std::string& tenant, const std::string& address);

  // Extends leases: moves each job's due entry from `from_ms` to `to_ms`.
  struct LeaseRenewal {
    std::string tenant, id;
    int64_t from_ms, to_ms;
  };
  Status RenewLeases(const std::vector<LeaseRenewal>& renewals);

  // The earliest due time in the index at or after `from_ms`, if any.
  Result<std::optional<int64_t>> NextDueMs(int64_t from_ms = 0);

  // Outbox events with seq >= from_seq, oldest first: about `max`, never
  // part of a seq. Readers that delete what they read pass the next seq, so
  // scans skip the deleted range.
  Result<std::vector<OutboxEntry>> ReadOutbox(size_t max, uint64_t from_seq = 0);
  // Deletes published seqs, each with the number of events it held.
  Status DeleteOutbox(const std::map<uint64_t, uint32_t>& events_by_seq);

  SpoolStats Stats();

  // After a failed write (a full disk, say): closes and reopens the database
  // so writing can go on. Fails, leaving the spool closed, while it cannot
  // reopen yet; call again later. Safe while other threads use the spool.
  Status Recover();

  // Flushes memtables and closes cleanly; further calls fail.
  Status Close();

  const std::string& path() const { return config_.path; }

 private:
  Spool() = default;
  Status OpenDb();                // with db_mu_ held exclusively (or unshared)
  Status CloseDb(bool sync_wal);  // with db_mu_ held exclusively
  Status Write(rocksdb::WriteBatch& batch, bool sync);
  Result<std::optional<v1::JobRecord>> ReadJob(const std::string& key);  // record + body
  Result<std::vector<bool>> Exist(rocksdb::ColumnFamilyHandle* family,
                                  const std::vector<std::string>& keys, const char* what);
  void AppendEvents(rocksdb::WriteBatch& batch,
                    const std::vector<const v1::DeliveryEvent*>& events);
  void Count(rocksdb::WriteBatch& batch, v1::JobState state, int64_t delta);
  int64_t Counter(const std::string& key);

  SpoolConfig config_;
  bool read_only_ = false;
  // Shared by every operation; exclusive while Recover() swaps the database.
  std::shared_mutex db_mu_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;  // default CF: schema, counters
  rocksdb::ColumnFamilyHandle* jobs_ = nullptr;
  rocksdb::ColumnFamilyHandle* due_ = nullptr;
  rocksdb::ColumnFamilyHandle* outbox_ = nullptr;
  rocksdb::ColumnFamilyHandle* suppressions_ = nullptr;
  rocksdb::ColumnFamilyHandle* retention_ = nullptr;
  rocksdb::ColumnFamilyHandle* queued_ = nullptr;  // be64(accepted_ms) job key
  rocksdb::ColumnFamilyHandle* bodies_ = nullptr;  // job key -> MailJob
  std::mutex oldest_mu_;
  std::string oldest_hint_;  // guarded by oldest_mu_
  std::mutex seq_mu_;
  uint64_t next_seq_ = 1;                // guarded by seq_mu_
  std::atomic<uint64_t> next_group_{0};  // due-index group numbers, from the clock at open
};

// Spool key encodings (exposed for tests and tools).
std::string JobKey(const std::string& tenant, const std::string& id);
std::string DueKey(int64_t due_ms, const std::string& tenant, const std::string& id);
int64_t DueKeyMs(std::string_view due_key);
std::string OutboxKey(uint64_t seq);
std::string SuppressionKey(const std::string& tenant, const std::string& address);
bool IsFinished(v1::JobState state);
std::string StateLabel(v1::JobState state);  // JOB_STATE_QUEUED -> "queued"

}  // namespace mailroom
