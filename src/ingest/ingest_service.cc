#include "mailroom/ingest.h"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <future>
#include <optional>
#include <set>
#include <thread>

#include "ingest/backpressure.h"
#include "ingest/batch_builder.h"
#include "ingest/deadletter.h"
#include "ingest/kafka_props.h"
#include "metrics/ingest_probe.h"

namespace mailroom {
namespace {

using Clock = std::chrono::steady_clock;
using MessagePtr = std::unique_ptr<RdKafka::Message>;
using Messages = std::vector<MessagePtr>;
using PartitionKey = std::pair<std::string, int32_t>;

constexpr std::chrono::milliseconds kFirstRetry(100);
// Ingest batches being written at once: while one is written, the next ones
// wait in RocksDB's write queue and go together (one WAL write, one fsync),
// so the WAL never idles between batches. In paired runs at 2 KiB, 3 beat 2
// by ~10 % and 2 beat 1 by ~15 %; 4 was no better. Past kBytesInFlight the
// writes are large enough on their own: large batches (16 MiB of 100 KiB
// jobs) go one at a time, and memory stays bounded.
constexpr size_t kWritesInFlight = 3;
constexpr uint64_t kBytesInFlight = 8 << 20;
constexpr std::chrono::milliseconds kMaxRetry(5000);

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsJsonRecord(RdKafka::Message& m) {
  RdKafka::Headers* headers = m.headers();
  if (!headers) return false;
  for (const auto& h : headers->get_all()) {
    std::string key = h.key();
    std::transform(key.begin(), key.end(), key.begin(), ::tolower);
    if (key != "content-type" || !h.value()) continue;
    std::string value(static_cast<const char*>(h.value()), h.value_size());
    std::transform(value.begin(), value.end(), value.begin(), ::tolower);
    if (value.rfind("application/json", 0) == 0) return true;
  }
  return false;
}

struct PartitionList {
  std::vector<RdKafka::TopicPartition*> parts;
  ~PartitionList() { RdKafka::TopicPartition::destroy(parts); }
};

// A batch whose synced spool write runs on another thread while the next
// batch is polled, built and serialized.
struct InflightBatch {
  Messages messages;
  BuiltBatch built;
  PreparedIngest prepared;
  std::map<PartitionKey, int64_t> next_offsets;  // last offset + 1, by partition
  int64_t earliest_due_ms = INT64_MAX;           // of the batch's jobs
  size_t records = 0;                            // messages.size() before the writer frees them
  uint64_t bytes = 0;                            // the records' payloads
  std::future<Status> written;
  Clock::time_point started;
};

}  // namespace

class IngestService::Impl : public RdKafka::RebalanceCb, public RdKafka::EventCb {
 public:
  Impl(const Config& config, Spool& spool, IngestProbe& probe, Health& health)
      : config_(config),
        spool_(spool),
        probe_(probe),
        health_(health),
        builder_(config, spool),
        backpressure_(config.spool.high_water, config.spool.low_water) {}

  std::function<void(int64_t)> on_spooled_;

  ~Impl() override {
    for (auto& b : inflight_) b.written.wait();
    if (consumer_) consumer_->close();
  }

  Status Start() {
    const auto& k = config_.kafka;
    auto conf = MakeKafkaConf(IngestConsumerProps(k), k.properties);
    if (!conf) return std::unexpected(conf.error());
    std::string err;
    if ((*conf)->set("rebalance_cb", static_cast<RdKafka::RebalanceCb*>(this), err) !=
            RdKafka::Conf::CONF_OK ||
        (*conf)->set("event_cb", static_cast<RdKafka::EventCb*>(this), err) !=
            RdKafka::Conf::CONF_OK) {
      return Fail(ErrorCode::kInternal, "configuring Kafka callbacks: " + err);
    }
    consumer_.reset(RdKafka::KafkaConsumer::create(conf->get(), err));
    if (!consumer_) return Fail(ErrorCode::kInvalidArgument, "creating Kafka consumer: " + err);

    auto deadletter = DeadLetterPublisher::Create(k.deadletter_topic, k.brokers, k.properties);
    if (!deadletter) return std::unexpected(deadletter.error());
    deadletter_ = std::move(*deadletter);

    RdKafka::ErrorCode rc = consumer_->subscribe({k.topic_regex});
    if (rc != RdKafka::ERR_NO_ERROR) {
      return Fail(ErrorCode::kInvalidArgument,
                  "kafka.topic_regex: subscribe failed: " + RdKafka::err2str(rc));
    }
    spdlog::info("ingest: consuming {} from {} as group {}", k.topic_regex, k.brokers, k.group_id);
    return {};
  }

  // Each turn polls a batch and prepares it while earlier batches' synced
  // writes run (up to kWritesInFlight: RocksDB starts the next as soon as one
  // ends), settles the writes that are done (the oldest, if the pipeline is
  // full; all, once polling comes back empty) and submits the new batch.
  // Records that could not be written wait in carry_, in order, for the next
  // turn.
  Status Run(const std::atomic<bool>& stop) {
    stop_ = &stop;
    Messages batch;
    while (!stop.load()) {
      health_.Beat();
      CheckLoad();
      if (failing_ && !RetryDue()) continue;
      Poll(batch);
      DropRevoked(batch);
      std::optional<Result<InflightBatch>> next;
      if (!batch.empty()) next = Prepare(batch);
      if (!SettleWrites(/*all=*/batch.empty())) break;
      if (!carry_.empty() || batch.empty()) {
        // The previous write failed: its records go first and all are rebuilt.
        std::move(batch.begin(), batch.end(), std::back_inserter(carry_));
        batch.clear();
        continue;
      }
      if (!*next) {
        OnWriteFailure(next->error());
        carry_ = std::move(batch);
        batch.clear();
        continue;
      }
      Submit(std::move(batch), std::move(**next));
      batch.clear();
    }
    SettleWrites(/*all=*/true);
    spdlog::info("ingest: stopping; committing offsets");
    RdKafka::ErrorCode rc = consumer_->commitSync();
    if (rc != RdKafka::ERR_NO_ERROR && rc != RdKafka::ERR__NO_OFFSET) {
      spdlog::warn("ingest: final commit failed: {}", RdKafka::err2str(rc));
    }
    consumer_->close();
    consumer_.reset();
    deadletter_->Flush(5000);
    return {};
  }

  // --- librdkafka callbacks (called on this thread from consume()) ---------

  void rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode err,
                    std::vector<RdKafka::TopicPartition*>& parts) override {
    bool cooperative = consumer->rebalance_protocol() == "COOPERATIVE";
    if (err == RdKafka::ERR__ASSIGN_PARTITIONS) {
      RdKafka::Error* e = cooperative ? consumer->incremental_assign(parts) : nullptr;
      if (!cooperative) consumer->assign(parts);
      if (e) {
        spdlog::error("ingest: assign failed: {}", e->str());
        delete e;
      }
      for (auto* p : parts) {
        assigned_.insert({p->topic(), p->partition()});
        spdlog::info("ingest: assigned {}/{}", p->topic(), p->partition());
      }
      if (paused_) consumer->pause(parts);
    } else {
      // Finish the write in flight so its offsets are stored, then commit:
      // the next owner starts exactly after what this spool holds. Unwritten
      // records of these partitions are dropped; the next owner reads them.
      in_callback_ = true;
      SettleWrites(/*all=*/true);
      in_callback_ = false;
      RdKafka::ErrorCode rc = consumer->commitSync();
      if (rc != RdKafka::ERR_NO_ERROR && rc != RdKafka::ERR__NO_OFFSET) {
        spdlog::warn("ingest: commit on revoke failed: {}", RdKafka::err2str(rc));
      }
      for (auto* p : parts) {
        assigned_.erase({p->topic(), p->partition()});
        revoked_.insert({p->topic(), p->partition()});
        probe_.ForgetPartition(p->topic(), p->partition());
        spdlog::info("ingest: revoked {}/{}", p->topic(), p->partition());
      }
      DropRevoked(carry_);
      RdKafka::Error* e = cooperative ? consumer->incremental_unassign(parts) : nullptr;
      if (!cooperative) consumer->unassign();
      if (e) {
        spdlog::error("ingest: unassign failed: {}", e->str());
        delete e;
      }
    }
    probe_.PausedPartitions(paused_ ? assigned_.size() : 0);
  }

  void event_cb(RdKafka::Event& event) override {
    switch (event.type()) {
      case RdKafka::Event::EVENT_ERROR:
        spdlog::log(event.fatal() ? spdlog::level::critical : spdlog::level::warn, "kafka: {} ({})",
                    event.str(), RdKafka::err2str(event.err()));
        break;
      case RdKafka::Event::EVENT_LOG:
        if (event.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING) {
          spdlog::warn("kafka: {} {}", event.fac(), event.str());
        }
        break;
      default:
        break;
    }
  }

 private:
  // Collects up to batch_max_messages records (carried-over ones first),
  // waiting at most batch_max_wait_ms once the first one is in hand.
  void Poll(Messages& batch) {
    batch = std::move(carry_);
    carry_.clear();
    const auto& k = config_.kafka;
    auto deadline = batch.empty() ? Clock::time_point::max()
                                  : Clock::now() + std::chrono::milliseconds(k.batch_max_wait_ms);
    uint64_t bytes = 0;
    for (const auto& m : batch) bytes += m->len();
    while (batch.size() < static_cast<size_t>(k.batch_max_messages) && bytes < k.batch_max_bytes) {
      int timeout = 100;
      if (deadline != Clock::time_point::max()) {
        timeout = static_cast<int>(std::max<int64_t>(
            0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now())
                   .count()));
      }
      MessagePtr msg(consumer_->consume(timeout));
      if (msg->err() == RdKafka::ERR__TIMED_OUT) break;
      if (msg->err() != RdKafka::ERR_NO_ERROR) {
        if (msg->err() != RdKafka::ERR__PARTITION_EOF)
          spdlog::warn("ingest: consume: {}", msg->errstr());
        if (deadline == Clock::time_point::max()) break;
        continue;
      }
      bytes += msg->len();
      batch.push_back(std::move(msg));
      if (deadline == Clock::time_point::max()) {
        deadline = Clock::now() + std::chrono::milliseconds(k.batch_max_wait_ms);
      }
      if (timeout == 0) break;
    }
  }

  // Views of the records for the builder, valid while the messages live.
  const std::vector<InboundRecord>& Records(Messages& batch) {
    records_.clear();
    for (const auto& m : batch) {
      // The C name (alive as long as the message), not a copy per message.
      std::string_view topic = rd_kafka_topic_name(m->c_ptr()->rkt);
      records_.push_back(InboundRecord{
          topic, m->partition(), m->offset(),
          std::string_view(static_cast<const char*>(m->key_pointer()), m->key_len()),
          std::string_view(static_cast<const char*>(m->payload()), m->len()), IsJsonRecord(*m)});
    }
    return records_;
  }

  // Decodes, validates and dedupes a poll batch, then serializes its write.
  Result<InflightBatch> Prepare(Messages& batch) {
    InflightBatch next;
    std::vector<const std::unordered_set<std::string>*> writing;
    for (const auto& b : inflight_) writing.push_back(&b.built.job_keys);
    auto built = builder_.Build(Records(batch), WallMs(), writing);
    if (!built) return std::unexpected(built.error());
    next.built = std::move(*built);
    auto prepared = spool_.PrepareIngest(*next.built.batch);
    if (!prepared) return std::unexpected(prepared.error());
    next.prepared = std::move(*prepared);
    for (const auto& job : next.built.batch->jobs) {
      next.earliest_due_ms = std::min(next.earliest_due_ms, job.due_ms());
    }
    const char* topic = nullptr;  // records come in runs of one partition
    int32_t partition = -1;
    int64_t* next_offset = nullptr;
    next.records = batch.size();
    for (const auto& m : batch) {
      next.bytes += m->len();
      const char* t = rd_kafka_topic_name(m->c_ptr()->rkt);
      if (t != topic || m->partition() != partition) {
        topic = t;
        partition = m->partition();
        next_offset = &next.next_offsets[{topic, partition}];
      }
      *next_offset = std::max(*next_offset, m->offset() + 1);
    }
    return next;
  }

  // The writer also frees what a written batch no longer needs (thousands of
  // messages), off the ingest thread. A failed batch is kept whole, to retry.
  void Submit(Messages batch, InflightBatch next) {
    InflightBatch* b = &inflight_.emplace_back(std::move(next));  // a deque: b stays put
    b->messages = std::move(batch);
    b->started = Clock::now();
    // Not touched here until Settle() has waited.
    b->written = std::async(std::launch::async, [this, b] {
      Status written = spool_.CommitIngest(b->prepared);
      if (written) {
        b->built.batch.reset();
        b->prepared = {};
        if (b->built.dead_letters.empty()) b->messages.clear();
      }
      return written;
    });
  }

  // Settles writes in flight, oldest first: those already done, the oldest
  // while kWritesInFlight or kBytesInFlight are in flight, and every one when
  // `all`.
  bool SettleWrites(bool all) {
    while (!inflight_.empty()) {
      bool done =
          inflight_.front().written.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
      uint64_t bytes = 0;
      for (const auto& b : inflight_) bytes += b.bytes;
      if (!done && !all && inflight_.size() < kWritesInFlight && bytes < kBytesInFlight) break;
      if (!Settle()) return false;
    }
    return true;
  }

  // Waits for the oldest write in flight. Written: counts it, dead-letters,
  // stores offsets. Failed: its records go to carry_ to be retried, followed
  // by those of the later batches that were not written either; a later one
  // that was is counted but its offsets are not stored (they would pass the
  // failed batch's), and its jobs are duplicates when read again. Returns
  // false only when stopping with dead letters unpublished.
  bool Settle() {
    if (inflight_.empty()) return true;
    Status written = inflight_.front().written.get();  // before moving: the writer uses it
    InflightBatch batch = std::move(inflight_.front());
    inflight_.pop_front();
    if (!written) {
      OnWriteFailure(written.error());
      Messages retry = std::move(batch.messages);
      for (auto& later : inflight_) {
        if (later.written.get()) Count(later);
        std::move(later.messages.begin(), later.messages.end(), std::back_inserter(retry));
      }
      inflight_.clear();
      std::move(carry_.begin(), carry_.end(), std::back_inserter(retry));
      carry_ = std::move(retry);
      return true;
    }
    if (failing_) {
      spdlog::info("ingest: spool writable again; resuming");
      health_.SetReady("spool");
      failing_ = false;
      ApplyPause();
    }
    Count(batch);
    if (!PublishDeadLetters(batch.messages, batch.built.dead_letters)) return false;
    StoreOffsets(batch.next_offsets);
    return true;
  }

  // A written batch: metrics, and the dispatcher told of its jobs.
  void Count(const InflightBatch& batch) {
    probe_.BatchCommitted(std::chrono::duration<double>(Clock::now() - batch.started).count(),
                          batch.records);
    probe_.BatchTally(batch.built.tally);
    if (on_spooled_ && batch.earliest_due_ms != INT64_MAX) on_spooled_(batch.earliest_due_ms);
  }

  void OnWriteFailure(const Error& error) {
    probe_.WriteError();
    if (!failing_) {
      spdlog::error("ingest: spool write failed, pausing ingest (offsets not committed): {}",
                    error.message);
      health_.SetNotReady("spool", "write failing: " + error.message);
      failing_ = true;
      retry_backoff_ = kFirstRetry;
      ApplyPause();
    } else {
      retry_backoff_ = std::min(retry_backoff_ * 2, kMaxRetry);
    }
    retry_at_ = Clock::now() + retry_backoff_;
  }

  // While writes fail: serve the group until the retry is due, then reopen
  // the spool (RocksDB never writes again to a WAL that failed).
  bool RetryDue() {
    if (Clock::now() < retry_at_) {
      MessagePtr msg(consumer_->consume(100));  // partitions are paused; keeps membership
      if (msg->err() == RdKafka::ERR_NO_ERROR) carry_.push_back(std::move(msg));
      return false;
    }
    if (auto recovered = spool_.Recover(); !recovered) {
      spdlog::warn("ingest: spool not writable yet: {}", recovered.error().message);
      OnWriteFailure(recovered.error());
      return false;
    }
    return true;
  }

  void DropRevoked(Messages& batch) {
    if (revoked_.empty()) return;
    std::erase_if(batch, [this](const MessagePtr& m) {
      return revoked_.count({m->topic_name(), m->partition()}) > 0;
    });
    if (&batch != &carry_) revoked_.clear();
  }

  // Retries until the broker acknowledges every copy, so none is lost before
  // offsets are stored; a retry may duplicate a copy.
  bool PublishDeadLetters(const Messages& batch, const std::vector<DeadLetter>& letters) {
    if (letters.empty()) return true;
    std::chrono::milliseconds backoff(200);
    while (true) {
      Status published = deadletter_->Publish(batch, letters, 10000);
      if (published) break;
      spdlog::warn("ingest: {}; retrying", published.error().message);
      if (stop_->load()) return false;
      health_.Beat();
      if (in_callback_) {
        std::this_thread::sleep_for(backoff);
      } else {
        MessagePtr msg(consumer_->consume(static_cast<int>(backoff.count())));  // keep membership
        if (msg->err() == RdKafka::ERR_NO_ERROR) carry_.push_back(std::move(msg));
      }
      backoff = std::min(backoff * 2, kMaxRetry);
    }
    std::map<std::string, uint64_t> by_reason;
    for (const auto& l : letters) by_reason[l.reason]++;
    for (const auto& [reason, n] : by_reason) probe_.DeadLettered(reason, n);
    return true;
  }

  void StoreOffsets(const std::map<PartitionKey, int64_t>& next) {
    PartitionList list;
    for (const auto& [tp, offset] : next) {
      list.parts.push_back(RdKafka::TopicPartition::create(tp.first, tp.second, offset));
    }
    RdKafka::ErrorCode rc = consumer_->offsets_store(list.parts);
    if (rc != RdKafka::ERR_NO_ERROR) {
      // Partitions revoked meanwhile: their new owner re-reads and dedupes.
      spdlog::debug("ingest: offsets_store: {}", RdKafka::err2str(rc));
    }
  }

  // Partitions are paused while the spool is over a high-water mark or failing.
  void ApplyPause() {
    bool paused = backpressure_.paused() || failing_;
    if (paused == paused_) return;
    paused_ = paused;
    PartitionList list;
    consumer_->assignment(list.parts);
    RdKafka::ErrorCode rc = paused ? consumer_->pause(list.parts) : consumer_->resume(list.parts);
    if (rc != RdKafka::ERR_NO_ERROR) spdlog::warn("ingest: pause/resume: {}", RdKafka::err2str(rc));
    probe_.PausedPartitions(paused ? list.parts.size() : 0);
    probe_.Backpressure(paused);
  }

  // Every 250 ms: spool load against the water marks, and consumer lag.
  void CheckLoad() {
    auto now = Clock::now();
    if (now - last_check_ < std::chrono::milliseconds(250)) return;
    last_check_ = now;
    SpoolStats stats = spool_.Stats();
    SpoolLoad load{static_cast<uint64_t>(std::max<int64_t>(0, stats.queued_jobs)), stats.disk_bytes,
                   FreeDiskBytes(spool_.path())};
    bool was = backpressure_.paused();
    bool pause = backpressure_.Update(load);
    if (pause != was) {
      if (pause) {
        spdlog::warn("ingest: pausing: {}", backpressure_.reason());
        health_.SetNotReady("backpressure", backpressure_.reason());
      } else {
        spdlog::info("ingest: load back under low-water marks; resuming");
        health_.SetReady("backpressure");
      }
      ApplyPause();
    }
    PartitionList list;
    if (consumer_->assignment(list.parts) != RdKafka::ERR_NO_ERROR) return;
    consumer_->position(list.parts);
    for (auto* p : list.parts) {
      int64_t low = 0, high = 0;
      if (consumer_->get_watermark_offsets(p->topic(), p->partition(), &low, &high) !=
              RdKafka::ERR_NO_ERROR ||
          high < 0) {
        continue;
      }
      int64_t pos = p->offset() >= 0 ? p->offset() : low;
      probe_.ConsumerLag(p->topic(), p->partition(), std::max<int64_t>(0, high - pos));
    }
  }

  const Config& config_;
  Spool& spool_;
  IngestProbe& probe_;
  Health& health_;
  BatchBuilder builder_;
  Backpressure backpressure_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  std::unique_ptr<DeadLetterPublisher> deadletter_;
  const std::atomic<bool>* stop_ = nullptr;
  std::deque<InflightBatch> inflight_;  // oldest first
  Messages carry_;                      // polled, not yet written; first in the next batch
  std::vector<InboundRecord> records_;
  std::set<PartitionKey> assigned_;
  std::set<PartitionKey> revoked_;
  bool paused_ = false;
  bool failing_ = false;  // spool writes failing
  bool in_callback_ = false;
  std::chrono::milliseconds retry_backoff_ = kFirstRetry;
  Clock::time_point retry_at_{};
  Clock::time_point last_check_{};
};

IngestService::IngestService(const Config& config, Spool& spool, IngestProbe& probe, Health& health)
    : impl_(std::make_unique<Impl>(config, spool, probe, health)) {}

IngestService::~IngestService() = default;

Status IngestService::Start() { return impl_->Start(); }

Status IngestService::Run(const std::atomic<bool>& stop) { return impl_->Run(stop); }

void IngestService::OnSpooled(std::function<void(int64_t)> callback) {
  impl_->on_spooled_ = std::move(callback);
}

}  // namespace mailroom
