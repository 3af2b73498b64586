#include "mailroom/events.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ingest/kafka_props.h"
#include "util/thread_name.h"

namespace mailroom {
namespace {

std::string TypeLabel(v1::EventType type) {
  std::string label = v1::EventType_Name(type);
  for (auto& c : label) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return label;
}

}  // namespace

class EventPublisher::Impl : public RdKafka::DeliveryReportCb {
 public:
  Impl(const Config& config, Spool& spool, prometheus::Registry& registry)
      : config_(config),
        spool_(spool),
        published_(prometheus::BuildCounter()
                       .Name("mailroom_events_published_total")
                       .Help("Delivery events acknowledged by the events topic, by type")
                       .Register(registry)),
        errors_(prometheus::BuildCounter()
                    .Name("mailroom_events_publish_errors_total")
                    .Help("Events the broker did not acknowledge (they stay in the outbox)")
                    .Register(registry)
                    .Add({})) {}

  ~Impl() override { Stop(0); }

  Status Start() {
    auto producer = MakeProducer(config_.kafka.brokers, config_.kafka.properties, this);
    if (!producer) return std::unexpected(producer.error());
    producer_ = std::move(*producer);
    thread_ = std::thread([this] { Loop(); });
    spdlog::info("events: publishing the outbox to {}", config_.events.topic);
    return {};
  }

  void Stop(int drain_ms) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      drain_deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(drain_ms);
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // Delivery reports arrive on the publisher thread, inside flush()/poll().
  void dr_cb(RdKafka::Message& message) override {
    auto token = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(message.msg_opaque()));
    auto it = in_flight_.find(token);
    if (it == in_flight_.end()) return;
    if (message.err() == RdKafka::ERR_NO_ERROR) {
      delivered_.push_back(it->second);
    } else {
      errors_.Increment();
      last_error_ = message.errstr();  // it stays in the outbox: retried next round
      sent_.erase({it->second.seq, it->second.index});
    }
    in_flight_.erase(it);
  }

 private:
  void Loop() {
    NameThisThread("mr-events");
    std::chrono::milliseconds backoff(100);
    while (true) {
      size_t published = PublishRound();
      std::unique_lock lock(mu_);
      if (stopping_ && (published == 0 || std::chrono::steady_clock::now() >= drain_deadline_))
        break;
      if (published > 0 && last_error_.empty()) {
        backoff = std::chrono::milliseconds(100);
        continue;  // more may be waiting
      }
      // Idle, or the broker is failing: wait for the next try (or Stop).
      wake_.wait_for(lock, last_error_.empty() ? std::chrono::milliseconds(100) : backoff,
                     [this] { return stopping_; });
      if (!last_error_.empty()) backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
  }

  // One round: read, produce what is not already in flight, wait for
  // acknowledgements, delete what landed. Returns how many events landed.
  size_t PublishRound() {
    last_error_.clear();
    auto entries =
        spool_.ReadOutbox(static_cast<size_t>(config_.events.batch_max_events), next_seq_);
    if (!entries) {
      last_error_ = entries.error().message;
      spdlog::warn("events: reading the outbox: {}", last_error_);
      return 0;
    }
    if (entries->empty() && in_flight_.empty()) return 0;
    std::string value;
    for (const auto& entry : *entries) {
      const v1::DeliveryEvent& event = entry.event;
      // Produced in an earlier round: in flight, or landed while the rest of
      // its seq had not.
      if (sent_.count({entry.seq, entry.index})) continue;
      event.SerializeToString(&value);
      RdKafka::Headers* headers = RdKafka::Headers::create();
      headers->add("mailroom-event-type", v1::EventType_Name(event.type()));
      headers->add("mailroom-tenant", event.tenant());
      uint64_t token = next_token_++;
      void* opaque = reinterpret_cast<void*>(static_cast<uintptr_t>(token));
      RdKafka::ErrorCode rc;
      while ((rc = producer_->produce(config_.events.topic, RdKafka::Topic::PARTITION_UA,
                                      RdKafka::Producer::RK_MSG_COPY, value.data(), value.size(),
                                      event.job_id().data(), event.job_id().size(), 0, headers,
                                      opaque)) == RdKafka::ERR__QUEUE_FULL) {
        producer_->poll(50);
      }
      if (rc != RdKafka::ERR_NO_ERROR) {
        delete headers;
        last_error_ = RdKafka::err2str(rc);
        break;
      }
      in_flight_.emplace(token, Produced{entry.seq, entry.index, entry.count, event.type()});
      sent_.insert({entry.seq, entry.index});
    }
    if (producer_->flush(10000) != RdKafka::ERR_NO_ERROR && last_error_.empty()) {
      last_error_ = "events topic did not acknowledge within 10 s";
    }
    size_t landed = delivered_.size();
    if (!delivered_.empty()) {
      std::map<uint64_t, uint32_t> done;  // seq -> its events, all landed
      std::map<v1::EventType, double> by_type;
      for (const Produced& p : delivered_) {
        by_type[p.type]++;
        if (++landed_[p.seq] < p.count) continue;
        done[p.seq] = p.count;
        landed_.erase(p.seq);
        for (uint32_t i = 0; i < p.count; ++i) sent_.erase({p.seq, i});
      }
      delivered_.clear();
      if (!done.empty()) {
        if (auto s = spool_.DeleteOutbox(done); !s) {
          // Published again later: a duplicate, never a loss.
          spdlog::warn("events: deleting published events: {}", s.error().message);
        }
      }
      for (const auto& [type, n] : by_type)
        published_.Add({{"type", TypeLabel(type)}}).Increment(n);
    }
    // Scans start after the oldest event still owed to the topic.
    if (in_flight_.empty() && landed_.empty() && last_error_.empty() && !entries->empty()) {
      next_seq_ = entries->back().seq + 1;
    }
    if (!last_error_.empty()) {
      spdlog::warn("events: publishing to {}: {}", config_.events.topic, last_error_);
    }
    return landed;
  }

  const Config& config_;
  Spool& spool_;
  prometheus::Family<prometheus::Counter>& published_;
  prometheus::Counter& errors_;
  std::unique_ptr<RdKafka::Producer> producer_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point drain_deadline_;
  // Publisher thread only (delivery reports run on it, inside flush()).
  uint64_t next_seq_ = 0;
  struct Produced {
    uint64_t seq;
    uint32_t index, count;
    v1::EventType type;
  };
  uint64_t next_token_ = 1;
  std::map<uint64_t, Produced> in_flight_;        // by token: produced, not yet reported
  std::vector<Produced> delivered_;               // reported since the round began
  std::set<std::pair<uint64_t, uint32_t>> sent_;  // (seq, index) in flight or landed
  std::map<uint64_t, uint32_t> landed_;           // seq -> its events landed so far
  std::string last_error_;
};

EventPublisher::EventPublisher(const Config& config, Spool& spool, prometheus::Registry& registry)
    : impl_(std::make_unique<Impl>(config, spool, registry)) {}

EventPublisher::~EventPublisher() = default;

Status EventPublisher::Start() { return impl_->Start(); }

void EventPublisher::Stop(int drain_ms) { impl_->Stop(drain_ms); }

}  // namespace mailroom
