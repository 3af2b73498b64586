// The due index: leasing due jobs (expanding ingest groups), renewing
// leases, the next due time.
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <algorithm>

#include "mailroom/spool.h"
#include "spool/errors.h"
#include "spool/keys.h"

namespace mailroom {

Result<std::vector<v1::JobRecord>> Spool::LeaseDue(int64_t now_ms, int64_t lease_ms, size_t max,
                                                   std::string* cursor) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  std::vector<v1::JobRecord> leased;
  rocksdb::WriteBatch batch;
  std::string lower = cursor ? *cursor : std::string();
  rocksdb::Slice lower_slice(lower);
  rocksdb::ReadOptions options;
  options.iterate_lower_bound = &lower_slice;  // skip the tombstones of earlier leases
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, due_));
  std::string upper = EncodeBe64(static_cast<uint64_t>(now_ms) + 1);
  int64_t until = now_ms + lease_ms;
  // Only due entries move (and an expanded group's jobs get age entries);
  // a returned record's due_ms names its entry, the stored record stays.
  auto lease = [&](v1::JobRecord& record) {
    record.set_due_ms(until);
    batch.Put(due_, DueKey(until, record.tenant(), record.job().id()), rocksdb::Slice());
    leased.push_back(std::move(record));
  };
  for (it->Seek(lower_slice); it->Valid() && leased.size() < max; it->Next()) {
    if (it->key().compare(upper) >= 0) break;
    if (cursor) cursor->assign(it->key().data(), it->key().size());
    if (IsGroupKey(it->key().ToStringView())) {
      // A batch's jobs: as many as fit, the rest stay listed under the key.
      std::string_view keys = it->value().ToStringView();
      uint64_t n = 0;
      while (leased.size() < max && !keys.empty()) {
        if (!ReadVarint(keys, n) || n > keys.size()) {
          return Fail(ErrorCode::kCorruption, "due-index group does not parse");
        }
        std::string job_key(keys.substr(0, n));
        keys.remove_prefix(n);
        auto record = ReadJob(job_key);
        if (!record) return std::unexpected(record.error());
        if (!*record || IsFinished((*record)->state())) continue;
        batch.Put(queued_, QueuedKey((*record)->accepted_ms(), job_key), rocksdb::Slice());
        lease(**record);
      }
      if (keys.empty()) {
        batch.Delete(due_, it->key());
        batch.Delete(queued_, it->key());
      } else {
        batch.Put(due_, it->key(), rocksdb::Slice(keys.data(), keys.size()));
      }
      continue;
    }
    std::string job_key = it->key().ToString().substr(8);
    auto record = ReadJob(job_key);
    if (!record) return std::unexpected(record.error());
    batch.Delete(due_, it->key());
    // A stale entry (no such job, or a finished one) is dropped.
    if (!*record || IsFinished((*record)->state())) continue;
    lease(**record);
  }
  if (!it->status().ok()) return std::unexpected(FromRocks(it->status(), "scanning due index"));
  if (batch.Count() > 0) {
    if (auto s = Write(batch, /*sync=*/false); !s) return std::unexpected(s.error());
  }
  return leased;
}

Status Spool::RenewLeases(const std::vector<LeaseRenewal>& renewals) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  rocksdb::WriteBatch batch;
  for (const auto& r : renewals) {
    batch.Delete(due_, DueKey(r.from_ms, r.tenant, r.id));
    batch.Put(due_, DueKey(r.to_ms, r.tenant, r.id), rocksdb::Slice());
  }
  return Write(batch, /*sync=*/false);  // lost at a crash: the old lease runs out, as it should
}

Result<std::optional<int64_t>> Spool::NextDueMs(int64_t from_ms) {
  std::shared_lock lock(db_mu_);
  if (!db_) return Closed();
  std::string lower = EncodeBe64(static_cast<uint64_t>(std::max<int64_t>(0, from_ms)));
  rocksdb::Slice lower_slice(lower);
  rocksdb::ReadOptions options;
  options.iterate_lower_bound = &lower_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, due_));
  it->Seek(lower_slice);
  if (!it->status().ok()) return std::unexpected(FromRocks(it->status(), "scanning due index"));
  if (!it->Valid()) return std::optional<int64_t>();
  return std::optional<int64_t>(static_cast<int64_t>(DecodeBe64(it->key().data())));
}

}  // namespace mailroom
