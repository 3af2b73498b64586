#include "mailroom/spool.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "spool/counter_merge.h"
#include "spool/errors.h"
#include "spool/keys.h"
#include "spool/spdlog_logger.h"
#include "spool/tuning.h"

namespace mailroom {
namespace {

constexpr char kSchemaKey[] = "schema_version";
// 2: bodies headed by their first record, due-index groups (keys.h). A
// version 1 spool is read as it is and marked 2 when opened for writing.
constexpr char kSchemaVersion[] = "2";
const char* const kFamilies[] = {"default",      "jobs",      "due",    "outbox", "suppressions",
                                 "provider_ids", "retention", "queued", "bodies"};

std::string StateCounterKey(v1::JobState state) {
  return "count/state/" + v1::JobState_Name(state);
}

void PutRecord(rocksdb::WriteBatch& batch, rocksdb::ColumnFamilyHandle* jobs,
               const std::string& key, v1::JobRecord& record, std::string& scratch) {
  SerializeWithoutJob(record, scratch);
  batch.Put(jobs, key, scratch);
}

}  // namespace

bool IsFinished(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
    case v1::JOB_STATE_SENDING:
    case v1::JOB_STATE_DEFERRED:
      return false;
    default:
      return true;
  }
}

std::string StateLabel(v1::JobState state) {
  std::string label = v1::JobState_Name(state).substr(std::string_view("JOB_STATE_").size());
  for (auto& c : label) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return label;
}

Result<std::unique_ptr<Spool>> Spool::Open(const SpoolConfig& config, bool read_only) {
  std::unique_ptr<Spool> spool(new Spool());
  spool->config_ = config;
  spool->read_only_ = read_only;
  if (!read_only) {
    std::error_code ec;
    std::filesystem::create_directories(config.path, ec);
    if (ec)
      return Fail(ErrorCode::kIoError,
                  "spool.path: cannot create " + config.path + ": " + ec.message());
  }
  if (auto s = spool->OpenDb(); !s) return std::unexpected(s.error());
  return spool;
}

Status Spool::OpenDb() {
  rocksdb::DBOptions options;
  options.create_if_missing = !read_only_;
  options.create_missing_column_families = !read_only_;
  options.max_background_jobs = 2;
  options.bytes_per_sync = 1 << 20;
  options.keep_log_file_num = 5;
  // Writers queued behind a write (ingest keeps several in flight) block
  // instead of spinning first: spinning takes a core from the work that
  // feeds the writes (~6 % more ingest at 2 KiB in paired runs).
  options.enable_write_thread_adaptive_yield = false;
  options.info_log_level = rocksdb::WARN_LEVEL;
  options.info_log = std::make_shared<SpdlogLogger>(rocksdb::WARN_LEVEL);
  // A write that failed (ENOSPC) leaves a torn record at the end of its WAL;
  // Recover() then continues in a new WAL. Point-in-time recovery would stop
  // at the first torn WAL and drop the acknowledged writes in later ones, so
  // tolerate a torn tail in every WAL instead. Synced writes are never torn.
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;

  auto cache = rocksdb::NewLRUCache(config_.block_cache_bytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const char* name : kFamilies) {
    families.emplace_back(name, FamilyOptions(name, config_, cache));
  }
  rocksdb::DB* db = nullptr;
  const std::string& path = config_.path;
  rocksdb::Status s = read_only_
                          ? rocksdb::DB::OpenForReadOnly(options, path, families, &handles_, &db)
                          : rocksdb::DB::Open(options, path, families, &handles_, &db);
  if (!s.ok()) return std::unexpected(FromRocks(s, "opening spool " + path));
  db_.reset(db);
  meta_ = handles_[0];
  jobs_ = handles_[1];
  due_ = handles_[2];
  outbox_ = handles_[3];
  suppressions_ = handles_[4];
  retention_ = handles_[6];
  queued_ = handles_[7];
  bodies_ = handles_[8];

  std::string version;
  s = db->Get(rocksdb::ReadOptions(), meta_, kSchemaKey, &version);
  if ((s.IsNotFound() || (s.ok() && version == "1")) && !read_only_) {
    s = db->Put(rocksdb::WriteOptions(), meta_, kSchemaKey, kSchemaVersion);
    version = kSchemaVersion;
  }
  if (!s.ok()) return std::unexpected(FromRocks(s, "reading spool schema version"));
  if (version != kSchemaVersion && version != "1") {
    return Fail(ErrorCode::kInvalidArgument, "spool " + path + " has schema version " + version +
                                                 "; this build reads version " + kSchemaVersion);
  }

  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), outbox_));
  it->SeekToLast();
  std::lock_guard seq_lock(seq_mu_);
  // Never backwards (Recover() reopens while a publisher reads from its last seq).
  if (it->Valid()) next_seq_ = std::max(next_seq_, DecodeBe64(it->key().data()) + 1);
  // Group numbers only need to differ from the ones already spooled.
  uint64_t clock_us = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  next_group_ = std::max(next_group_.load(), clock_us);
  return {};
}

Status Spool::CloseDb(bool sync_wal) {
  if (!db_) return {};
  rocksdb::Status s;
  if (sync_wal && !read_only_) s = db_->FlushWAL(true);
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  handles_.clear();
  rocksdb::Status close = db_->Close();
  db_.reset();
  if (!s.ok()) return std::unexpected(FromRocks(s, "syncing WAL at close"));
  if (!close.ok()) return std::unexpected(FromRocks(close, "closing spool"));
  return {};
}

Spool::~Spool() { (void)Close(); }

Status Spool::Close() {
  std::unique_lock lock(db_mu_);
  return CloseDb(/*sync_wal=*/true);
}

Status Spool::Recover() {
  std::unique_lock lock(db_mu_);
  // A WAL file that failed a write must not be written again: close without
  // touching it and reopen, which replays it and starts a fresh one.
  (void)CloseDb(/*sync_wal=*/false);
  return OpenDb();
}

Status Spool::Write(rocksdb::WriteBatch& batch, bool sync) {
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  rocksdb::Status s = db_->Write(wo, &batch);
  if (!s.ok()) return std::unexpected(FromRocks(s, "writing to spool"));
  return {};
}

void Spool::Count(rocksdb::WriteBatch& batch, v1::JobState state, int64_t delta) {
  batch.Merge(meta_, StateCounterKey(state), EncodeCounter(delta));
}

int64_t Spool::Counter(const std::string& key) {
  std::string value;
  if (!db_->Get(rocksdb::ReadOptions(), meta_, key, &value).ok()) return 0;
  return DecodeCounter(value);
}

Result<std::vector<bool>> Spool::ContainsJobs(const std::vector<std::string>& keys) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  return Exist(bodies_, keys, "looking up job");  // every job has a body; records come later
}

// One MultiGet: which of `keys` are present in `family`.
Result<std::vector<bool>> Spool::Exist(rocksdb::ColumnFamilyHandle* family,
                                       const std::vector<std::string>& keys, const char* what) {
  std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  db_->MultiGet(rocksdb::ReadOptions(), family, keys.size(), slices.data(), values.data(),
                statuses.data());
  std::vector<bool> found(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (statuses[i].ok()) {
      found[i] = true;
    } else if (!statuses[i].IsNotFound()) {
      return std::unexpected(FromRocks(statuses[i], what));
    }
  }
  return found;
}

// With seq_mu_ held until the batch is written: sequence numbers are taken
// and written under one lock, so outbox order is commit order and the
// publisher never sees a later seq before an earlier one.
void Spool::AppendEvents(rocksdb::WriteBatch& batch,
                         const std::vector<const v1::DeliveryEvent*>& events) {
  std::string value;
  for (const auto* event : events) {
    event->SerializeToString(&value);
    batch.Put(outbox_, OutboxKey(next_seq_++), value);
  }
  batch.Merge(meta_, kOutboxCounter, EncodeCounter(static_cast<int64_t>(events.size())));
}

Status Spool::CommitUpdates(std::vector<JobUpdate>& updates, bool sync) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteBatch batch;
  std::map<v1::JobState, int64_t> counts;
  std::vector<const v1::DeliveryEvent*> events;
  std::string value;
  for (auto& update : updates) {
    auto& record = update.record;
    std::string key = JobKey(record.tenant(), record.job().id());
    PutRecord(batch, jobs_, key, record, value);
    batch.Delete(due_, DueKey(update.previous_due_ms, record.tenant(), record.job().id()));
    if (IsFinished(record.state())) {
      batch.Delete(queued_, QueuedKey(record.accepted_ms(), key));
      batch.Put(retention_, EncodeBe64(static_cast<uint64_t>(record.finished_ms())) + key,
                rocksdb::Slice());
    } else {
      batch.Put(due_, DueKey(record.due_ms(), record.tenant(), record.job().id()),
                rocksdb::Slice());
    }
    if (update.previous_state != record.state()) {
      counts[update.previous_state]--;
      counts[record.state()]++;
    }
    for (const auto& s : update.suppress) {
      s.SerializeToString(&value);
      batch.Put(suppressions_, SuppressionKey(record.tenant(), s.address()), value);
    }
    for (const auto& event : update.events) events.push_back(&event);
  }
  for (const auto& [state, n] : counts) {
    if (n != 0) Count(batch, state, n);
  }
  if (events.empty()) return Write(batch, sync);
  std::lock_guard seq_lock(seq_mu_);
  AppendEvents(batch, events);
  return Write(batch, sync);
}

Result<std::vector<bool>> Spool::Suppressed(const std::string& tenant,
                                            const std::vector<std::string>& addresses) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  std::vector<std::string> keys;
  for (const auto& a : addresses) keys.push_back(SuppressionKey(tenant, a));
  return Exist(suppressions_, keys, "reading suppression list");
}

Result<std::vector<std::pair<std::string, v1::Suppression>>> Spool::ListSuppressions(
    const std::string& tenant, size_t max) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  std::vector<std::pair<std::string, v1::Suppression>> out;
  std::string prefix = tenant.empty() ? "" : tenant + '\0';
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), suppressions_));
  for (it->Seek(prefix); it->Valid() && out.size() < max && it->key().starts_with(prefix);
       it->Next()) {
    std::string key = it->key().ToString();
    v1::Suppression s;
    if (!s.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Fail(ErrorCode::kCorruption, "suppression entry does not parse");
    }
    out.emplace_back(key.substr(0, key.find('\0')), std::move(s));
  }
  if (!it->status().ok()) return std::unexpected(FromRocks(it->status(), "reading suppressions"));
  return out;
}

Status Spool::RemoveSuppression(const std::string& tenant, const std::string& address) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteBatch batch;
  batch.Delete(suppressions_, SuppressionKey(tenant, address));
  return Write(batch, /*sync=*/true);
}

Result<std::optional<v1::JobRecord>> Spool::GetJob(const std::string& tenant,
                                                   const std::string& id) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  return ReadJob(JobKey(tenant, id));
}

Result<std::optional<v1::JobRecord>> Spool::ReadJob(const std::string& key) {
  rocksdb::PinnableSlice record_bytes, body_bytes;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), bodies_, key, &body_bytes);
  if (s.IsNotFound()) return std::optional<v1::JobRecord>();
  if (!s.ok()) return std::unexpected(FromRocks(s, "reading job body"));
  s = db_->Get(rocksdb::ReadOptions(), jobs_, key, &record_bytes);
  if (!s.ok() && !s.IsNotFound()) return std::unexpected(FromRocks(s, "reading job"));
  // A body written by ingest starts with its first record; a stored record
  // (any outcome since) replaces it.
  std::string_view body(body_bytes.data(), body_bytes.size()), first;
  bool parsed = true;
  if (!body.empty() && body.front() == kHeadedBody) {
    body.remove_prefix(1);
    uint64_t n = 0;
    parsed = ReadVarint(body, n) && n <= body.size();
    if (parsed) {
      first = body.substr(0, n);
      body.remove_prefix(n);
    }
  }
  std::string_view stored =
      s.ok() ? std::string_view(record_bytes.data(), record_bytes.size()) : first;
  v1::JobRecord record;
  parsed = parsed && (s.ok() || !first.empty()) &&
           record.ParseFromArray(stored.data(), static_cast<int>(stored.size())) &&
           record.mutable_job()->ParseFromArray(body.data(), static_cast<int>(body.size()));
  if (!parsed) {
    std::string printable = key;
    std::replace(printable.begin(), printable.end(), '\0', '/');
    return Fail(ErrorCode::kCorruption, "job record " + printable + " does not parse");
  }
  return std::optional<v1::JobRecord>(std::move(record));
}

Result<std::vector<OutboxEntry>> Spool::ReadOutbox(size_t max, uint64_t from_seq) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  std::vector<OutboxEntry> entries;
  std::string lower = OutboxKey(from_seq);
  rocksdb::Slice lower_slice(lower);
  rocksdb::ReadOptions options;
  options.iterate_lower_bound = &lower_slice;  // start past deleted entries' tombstones
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, outbox_));
  for (it->Seek(lower_slice); it->Valid() && entries.size() < max; it->Next()) {
    uint64_t seq = DecodeBe64(it->key().data());
    std::string_view value = it->value().ToStringView();
    auto bad = [&] {
      return Fail(ErrorCode::kCorruption,
                  "outbox entry " + std::to_string(seq) + " does not parse");
    };
    if (value.empty() || value.front() != kEventGroup) {
      OutboxEntry entry{seq, {}};
      if (!entry.event.ParseFromArray(value.data(), static_cast<int>(value.size()))) return bad();
      entries.push_back(std::move(entry));
      continue;
    }
    value.remove_prefix(1);
    size_t first = entries.size();
    for (uint64_t n = 0; !value.empty();) {
      if (!ReadVarint(value, n) || n > value.size()) return bad();
      OutboxEntry entry{seq, {}, static_cast<uint32_t>(entries.size() - first)};
      if (!entry.event.ParseFromArray(value.data(), static_cast<int>(n))) return bad();
      value.remove_prefix(n);
      entries.push_back(std::move(entry));
    }
    for (size_t i = first; i < entries.size(); ++i) {
      entries[i].count = static_cast<uint32_t>(entries.size() - first);
    }
  }
  if (!it->status().ok()) return std::unexpected(FromRocks(it->status(), "reading outbox"));
  return entries;
}

Status Spool::DeleteOutbox(const std::map<uint64_t, uint32_t>& events_by_seq) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteBatch batch;
  int64_t events = 0;
  for (const auto& [seq, n] : events_by_seq) {
    batch.Delete(outbox_, OutboxKey(seq));
    events += n;
  }
  batch.Merge(meta_, kOutboxCounter, EncodeCounter(-events));
  return Write(batch, /*sync=*/false);
}

SpoolStats Spool::Stats() {
  SpoolStats stats;
  std::shared_lock lock(db_mu_);
  if (!db_) return stats;
  for (int i = v1::JobState_MIN + 1; i <= v1::JobState_MAX; ++i) {
    auto state = static_cast<v1::JobState>(i);
    int64_t n = Counter(StateCounterKey(state));
    stats.jobs_by_state[state] = n;
    if (!IsFinished(state)) stats.queued_jobs += n;
  }
  stats.outbox_pending = Counter(kOutboxCounter);
  {
    // Finished jobs leave tombstones at the front of the index: start each
    // scan at the last oldest key seen (the oldest only ever moves forward).
    std::lock_guard hint_lock(oldest_mu_);
    rocksdb::Slice lower(oldest_hint_);
    rocksdb::ReadOptions options;
    options.iterate_lower_bound = &lower;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, queued_));
    it->Seek(lower);
    if (it->Valid()) {
      oldest_hint_ = it->key().ToString().substr(0, 8);
      stats.oldest_queued_ms = static_cast<int64_t>(DecodeBe64(it->key().data()));
    }
  }
  for (const char* property : {"rocksdb.total-sst-files-size", "rocksdb.total-blob-file-size",
                               "rocksdb.cur-size-all-mem-tables"}) {
    uint64_t value = 0;
    if (db_->GetAggregatedIntProperty(property, &value)) stats.disk_bytes += value;
  }
  return stats;
}

}  // namespace mailroom
