#include "mailroom/ingest.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>

#include "ingest/backpressure.h"
#include "ingest/batch_builder.h"
#include "ingest/kafka_props.h"
#include "metrics/ingest_probe.h"

namespace mailroom {
namespace {

using Clock = std::chrono::steady_clock;
using MessagePtr = std::unique_ptr<RdKafka::Message>;
using PartitionKey = std::pair<std::string, int32_t>;

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

  ~Impl() override {
    if (consumer_) consumer_->close();
  }

  Status Start() {
    const auto& k = config_.kafka;
    KafkaProps props = {{"bootstrap.servers", k.brokers},
                        {"group.id", k.group_id},
                        {"client.id", "mailroom"},
                        {"partition.assignment.strategy", "cooperative-sticky"},
                        {"enable.auto.offset.store", "false"},
                        {"enable.auto.commit", "true"},
                        {"auto.commit.interval.ms", "1000"},
                        {"auto.offset.reset", "earliest"},
                        {"session.timeout.ms", std::to_string(k.session_timeout_ms)},
                        {"heartbeat.interval.ms", std::to_string(std::max(500, k.session_timeout_ms / 5))},
                        {"topic.metadata.refresh.interval.ms", "5000"}};
    if (!k.group_instance_id.empty()) props["group.instance.id"] = k.group_instance_id;
    auto conf = MakeKafkaConf(props, k.properties);
    if (!conf) return std::unexpected(conf.error());
    std::string err;
    if ((*conf)->set("rebalance_cb", static_cast<RdKafka::RebalanceCb*>(this), err) != RdKafka::Conf::CONF_OK ||
        (*conf)->set("event_cb", static_cast<RdKafka::EventCb*>(this), err) != RdKafka::Conf::CONF_OK) {
      return Fail(ErrorCode::kInternal, "configuring Kafka callbacks: " + err);
    }
    consumer_.reset(RdKafka::KafkaConsumer::create(conf->get(), err));
    if (!consumer_) return Fail(ErrorCode::kInvalidArgument, "creating Kafka consumer: " + err);

    auto producer = MakeProducer(k.brokers, k.properties);
    if (!producer) return std::unexpected(producer.error());
    deadletter_ = std::move(*producer);

    RdKafka::ErrorCode rc = consumer_->subscribe({k.topic_regex});
    if (rc != RdKafka::ERR_NO_ERROR) {
      return Fail(ErrorCode::kInvalidArgument,
                  "kafka.topic_regex: subscribe failed: " + RdKafka::err2str(rc));
    }
    spdlog::info("ingest: consuming {} from {} as group {}", k.topic_regex, k.brokers, k.group_id);
    return {};
  }

  Status Run(const std::atomic<bool>& stop) {
    std::vector<MessagePtr> batch;
    while (!stop.load()) {
      health_.Beat();
      CheckLoad();
      Poll(batch);
      if (batch.empty()) continue;
      if (!Commit(batch, stop)) break;  // stopping with the batch unwritten: offsets not stored
      batch.clear();
    }
    spdlog::info("ingest: stopping; committing offsets");
    RdKafka::ErrorCode rc = consumer_->commitSync();
    if (rc != RdKafka::ERR_NO_ERROR && rc != RdKafka::ERR__NO_OFFSET) {
      spdlog::warn("ingest: final commit failed: {}", RdKafka::err2str(rc));
    }
    consumer_->close();
    consumer_.reset();
    deadletter_->flush(5000);
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
      // Everything polled so far is in the spool (batches are written before
      // the next poll), except a batch held by a failing write: drop its
      // records of these partitions; their next owner reads them again.
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
        spdlog::log(event.fatal() ? spdlog::level::critical : spdlog::level::warn,
                    "kafka: {} ({})", event.str(), RdKafka::err2str(event.err()));
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
  // Collects up to batch_max_messages records, waiting at most
  // batch_max_wait_ms once the first one arrived.
  void Poll(std::vector<MessagePtr>& batch) {
    const auto& k = config_.kafka;
    auto deadline = Clock::time_point::max();
    while (batch.size() < static_cast<size_t>(k.batch_max_messages)) {
      int timeout = 100;
      if (deadline != Clock::time_point::max()) {
        timeout = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       deadline - Clock::now())
                                       .count());
        if (timeout < 0) timeout = 0;
      }
      MessagePtr msg(consumer_->consume(timeout));
      if (msg->err() == RdKafka::ERR__TIMED_OUT) break;
      if (msg->err() != RdKafka::ERR_NO_ERROR) {
        if (msg->err() != RdKafka::ERR__PARTITION_EOF) {
          spdlog::warn("ingest: consume: {}", msg->errstr());
        }
        if (deadline == Clock::time_point::max()) break;
        continue;
      }
      batch.push_back(std::move(msg));
      if (deadline == Clock::time_point::max()) {
        deadline = Clock::now() + std::chrono::milliseconds(k.batch_max_wait_ms);
      }
      if (timeout == 0) break;
    }
  }

  // Writes the batch to the spool, retrying (with partitions paused) until it
  // lands or the service stops; then dead-letters, then stores offsets.
  // Returns false when stopping before the batch was written.
  bool Commit(std::vector<MessagePtr>& batch, const std::atomic<bool>& stop) {
    std::chrono::milliseconds backoff(100);
    bool failing = false;
    BuiltBatch built;
    std::vector<InboundRecord> records;
    std::vector<std::string> topics;
    while (true) {
      DropRevoked(batch);
      if (batch.empty()) return true;
      records.clear();
      topics.clear();
      topics.reserve(batch.size());  // InboundRecord views these names
      for (const auto& m : batch) {
        topics.push_back(m->topic_name());
        records.push_back(InboundRecord{
            topics.back(), m->partition(), m->offset(),
            std::string_view(static_cast<const char*>(m->key_pointer()), m->key_len()),
            std::string_view(static_cast<const char*>(m->payload()), m->len()), IsJsonRecord(*m)});
      }
      auto start = Clock::now();
      auto result = builder_.Build(records, WallMs());
      Status written = result ? spool_.CommitIngest(result->batch) : std::unexpected(result.error());
      if (written) {
        probe_.BatchCommitted(std::chrono::duration<double>(Clock::now() - start).count(),
                              batch.size());
        built = std::move(*result);
        break;
      }
      probe_.WriteError();
      if (!failing) {
        spdlog::error("ingest: spool write failed, pausing ingest (offsets not committed): {}",
                      written.error().message);
        health_.SetNotReady("spool", "write failing: " + written.error().message);
        failing = write_failing_ = true;
        ApplyPause();
      }
      // Keep serving the group while waiting, so the assignment survives.
      for (auto waited = std::chrono::milliseconds(0); waited < backoff && !stop.load();
           waited += std::chrono::milliseconds(100)) {
        health_.Beat();
        MessagePtr msg(consumer_->consume(100));
        if (msg->err() == RdKafka::ERR_NO_ERROR) batch.push_back(std::move(msg));
      }
      if (stop.load()) return false;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      if (auto recovered = spool_.Recover(); !recovered) {
        spdlog::warn("ingest: spool not writable yet: {}", recovered.error().message);
      }
    }
    if (failing) {
      spdlog::info("ingest: spool writable again; resuming");
      health_.SetReady("spool");
      write_failing_ = false;
      ApplyPause();
    }
    probe_.BatchTally(built.tally);
    if (!DeadLetter(batch, built.dead_letters, stop)) return false;
    StoreOffsets(batch);
    return true;
  }

  void DropRevoked(std::vector<MessagePtr>& batch) {
    if (revoked_.empty()) return;
    std::erase_if(batch, [this](const MessagePtr& m) {
      return revoked_.count({m->topic_name(), m->partition()}) > 0;
    });
    revoked_.clear();
  }

  // Copies undecodable records to the dead-letter topic and waits for their
  // delivery; retries until delivered so none is lost before offsets commit.
  bool DeadLetter(const std::vector<MessagePtr>& batch, const std::vector<DeadLetter>& letters,
                  const std::atomic<bool>& stop) {
    if (letters.empty()) return true;
    const std::string& topic = config_.kafka.deadletter_topic;
    std::chrono::milliseconds backoff(200);
    while (!stop.load()) {
      bool ok = true;
      for (const auto& letter : letters) {
        const RdKafka::Message& m = *batch[letter.record_index];
        RdKafka::Headers* headers = RdKafka::Headers::create();
        headers->add("mailroom-reason", letter.reason);
        headers->add("mailroom-detail", letter.detail);
        headers->add("mailroom-source-topic", m.topic_name());
        headers->add("mailroom-source-partition", std::to_string(m.partition()));
        headers->add("mailroom-source-offset", std::to_string(m.offset()));
        RdKafka::ErrorCode rc = deadletter_->produce(
            topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
            const_cast<void*>(m.payload()), m.len(), m.key_pointer(), m.key_len(), 0, headers, nullptr);
        if (rc != RdKafka::ERR_NO_ERROR) {
          delete headers;
          ok = false;
          spdlog::warn("ingest: dead-letter produce failed: {}", RdKafka::err2str(rc));
          break;
        }
      }
      if (ok && deadletter_->flush(10000) == RdKafka::ERR_NO_ERROR) {
        std::map<std::string, uint64_t> by_reason;
        for (const auto& l : letters) by_reason[l.reason]++;
        for (const auto& [reason, n] : by_reason) probe_.DeadLettered(reason, n);
        return true;
      }
      // The idempotent producer retries internally; a failed flush means the
      // broker is away. Records may reach the topic twice; none is lost.
      spdlog::warn("ingest: dead-letter topic {} not reachable; retrying", topic);
      health_.Beat();
      consumer_->consume(static_cast<int>(backoff.count()));  // keep group membership
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
    return false;
  }

  void StoreOffsets(const std::vector<MessagePtr>& batch) {
    std::map<PartitionKey, int64_t> next;
    for (const auto& m : batch) {
      auto& o = next[{m->topic_name(), m->partition()}];
      o = std::max(o, m->offset() + 1);
    }
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
    bool paused = backpressure_.paused() || write_failing_;
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
    SpoolLoad load{static_cast<uint64_t>(std::max<int64_t>(0, stats.queued_jobs)),
                   stats.disk_bytes, FreeDiskBytes(spool_.path())};
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
  std::unique_ptr<RdKafka::Producer> deadletter_;
  std::set<PartitionKey> assigned_;
  std::set<PartitionKey> revoked_;
  bool paused_ = false;
  bool write_failing_ = false;
  Clock::time_point last_check_{};
};

IngestService::IngestService(const Config& config, Spool& spool, IngestProbe& probe, Health& health)
    : impl_(std::make_unique<Impl>(config, spool, probe, health)) {}

IngestService::~IngestService() = default;

Status IngestService::Start() { return impl_->Start(); }

Status IngestService::Run(const std::atomic<bool>& stop) { return impl_->Run(stop); }

}  // namespace mailroom

