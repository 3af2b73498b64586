#include "mailroom/dispatcher.h"

#include <google/protobuf/util/time_util.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <random>
#include <thread>
#include <unordered_map>

#include "mailroom/message.h"
#include "mailroom/outcome.h"
#include "mailroom/transport.h"
#include "scheduler/committer.h"
#include "scheduler/delivery_metrics.h"
#include "scheduler/job_updates.h"
#include "scheduler/rate_limiter.h"
#include "util/thread_name.h"

namespace mailroom {
namespace {

using google::protobuf::util::TimeUtil;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

class Dispatcher::Impl {
 public:
  Impl(const Config& config, Spool& spool, prometheus::Registry& registry, Health& health)
      : config_(config), spool_(spool), metrics_(registry), health_(health) {}

  ~Impl() { Stop(0); }

  Status Start() {
    for (const auto& [name, carrier_config] : config_.carriers) {
      auto carrier = MakeCarrier(carrier_config, loop_);
      if (!carrier) return std::unexpected(carrier.error());
      carriers_[name] = std::move(*carrier);
    }
    committer_ = std::make_unique<Committer>(spool_, [this](const Status& s) { OnCommit(s); });
    thread_ = std::thread([this] { Loop(); });
    spdlog::info("delivery: {} carrier(s), default {}, {} rate limit(s)", carriers_.size(),
                 config_.delivery.default_carrier, limits_.size());
    return {};
  }

  void Stop(int drain_ms) {
    if (!thread_.joinable()) return;
    drain_ms_ = drain_ms;
    stop_ = true;
    loop_.Wakeup();
    thread_.join();
    committer_.reset();  // writes what is still queued
  }

  void Wakeup(int64_t earliest_due_ms) {
    int64_t current = spooled_from_.load();
    while (earliest_due_ms < current &&
           !spooled_from_.compare_exchange_weak(current, earliest_due_ms)) {
    }
    loop_.Wakeup();
  }

 private:
  struct Work {
    v1::JobRecord record;
    v1::JobState leased_state = v1::JOB_STATE_UNSPECIFIED;
    int64_t leased_due_ms = 0;
    std::string carrier;
    std::vector<int> pending;  // indexes of the recipients this attempt sends to
    std::vector<RateLimiter*> limiters;
    std::string message_id;
    // Events of recipients finished before sending (suppressed), written
    // with the attempt's outcome.
    std::vector<v1::DeliveryEvent> early_events;
  };

  void Loop() {
    NameThisThread("mr-dispatch");
    while (!stop_) {
      RenewLeases(NowUs() / 1000);
      if (CanLease()) Lease(NowUs() / 1000);
      int64_t limiter_wait_us = Dispatch();
      committer_->Submit(updates_);
      loop_.Run(Timeout(limiter_wait_us));
      committer_->Submit(updates_);
      UpdateGauges();
    }
    Drain();
  }

  // Jobs in hand: being sent, waiting for a limit, or with an outcome not
  // yet written. At most delivery.max_in_flight.
  size_t Held() const { return work_.size() + committer_->pending(); }

  // Room to lease a whole chunk (or an eighth of a small window), and
  // outcomes can be written.
  bool CanLease() const {
    size_t window = config_.delivery.max_in_flight, held = Held();
    return held < window && window - held >= std::clamp<size_t>(window / 8, 1, kLeaseChunk) &&
           !committer_->failing();
  }

  // On the committer thread: written outcomes free room in the window, so
  // the loop may lease again.
  void OnCommit(const Status& written) {
    loop_.Wakeup();
    if (!written) {
      metrics_.commit_errors.Increment();
      if (!commit_failing_.exchange(true)) {
        spdlog::error("delivery: writing outcomes failed (kept, retrying): {}",
                      written.error().message);
        health_.SetNotReady("delivery", "spool write failing: " + written.error().message);
      }
    } else if (commit_failing_.exchange(false)) {
      spdlog::info("delivery: spool writable again");
      health_.SetReady("delivery");
    }
  }

  // Sleep until the next due job, a rate limit's next slot, socket activity
  // or a wakeup; at most a second.
  int Timeout(int64_t limiter_wait_us) {
    int64_t timeout_ms = 1000;
    if (limiter_wait_us >= 0) timeout_ms = std::min(timeout_ms, (limiter_wait_us + 999) / 1000);
    if (CanLease()) {
      if (more_due_) return 0;
      auto next = spool_.NextDueMs(std::min(CursorMs(), spooled_from_.load()));
      if (next && next->has_value()) {
        timeout_ms = std::min(timeout_ms, std::max<int64_t>(0, **next - NowUs() / 1000));
      }
    }
    return static_cast<int>(std::max<int64_t>(timeout_ms, 0));
  }

  void Lease(int64_t now_ms) {
    // A chunk at a time: reading a lease's jobs holds up the results of
    // transfers, so the loop turns between chunks. A chunk of 128 left SMTP
    // connections without a next message one time in five at 2 KiB.
    size_t room = std::min(config_.delivery.max_in_flight - Held(), kLeaseChunk);
    // Jobs spooled since the last scan may be due earlier than where it
    // stopped; a wakeup arriving during this scan is kept for the next one.
    if (int64_t spooled = spooled_from_.exchange(INT64_MAX); spooled <= CursorMs()) {
      cursor_ = DueKey(spooled, "", "");
    }
    auto leased = spool_.LeaseDue(now_ms, config_.delivery.lease_ms, room, &cursor_);
    if (!leased) {
      spdlog::error("delivery: leasing due jobs failed: {}", leased.error().message);
      return;
    }
    // Everything due up to now was taken unless the chunk filled (then the
    // cursor is at the last job taken): later scans start past it and so
    // skip the tombstones of what was leased.
    more_due_ = leased->size() == room;
    if (!more_due_) cursor_ = DueKey(now_ms + 1, "", "");
    for (auto& record : *leased) Admit(std::move(record), now_ms);
  }

  // Jobs held longer than half a lease (queued behind a busy carrier or a
  // rate limit) get their lease extended, so it never runs out while this
  // process still has them (or while their outcome is being written).
  void RenewLeases(int64_t now_ms) {
    int64_t lease = config_.delivery.lease_ms;
    if (now_ms < next_renewal_ms_) return;
    next_renewal_ms_ = now_ms + std::max<int64_t>(100, lease / 4);
    std::vector<Spool::LeaseRenewal> renewals;
    for (auto& [key, w] : work_) {
      if (w.leased_due_ms - now_ms >= lease / 2) continue;
      renewals.push_back({w.record.tenant(), w.record.job().id(), w.leased_due_ms, now_ms + lease});
    }
    if (renewals.empty()) return;
    if (auto s = spool_.RenewLeases(renewals); !s) {
      spdlog::error("delivery: renewing leases failed: {}", s.error().message);
      return;
    }
    for (const auto& r : renewals) work_.at(JobKey(r.tenant, r.id)).leased_due_ms = r.to_ms;
  }

  int64_t ExpiryMs(const v1::JobRecord& record) const {
    int64_t expiry = record.accepted_ms() + config_.delivery.backoff.max_age_ms;
    if (record.job().has_expires_at()) {
      expiry = std::min(expiry, TimeUtil::TimestampToMilliseconds(record.job().expires_at()));
    }
    return expiry;
  }

  // Finishes recipients without sending (expiry, suppression) and, when no
  // recipient is left to send to, the job.
  void Finish(Work& w, const std::vector<int>& which, v1::JobState state, int64_t now_ms,
              JobUpdate& update, const std::string& category, const std::string& detail) {
    if (which.empty()) return;
    FinishUnsent(w.record, which, state, now_ms, category, detail, update);
    auto& family = state == v1::JOB_STATE_EXPIRED ? metrics_.expired : metrics_.suppressed;
    const std::string& tenant = w.record.tenant();
    family.Add({{"tenant", tenant}}).Increment(static_cast<double>(which.size()));
    metrics_.deliveries
        .Add({{"carrier", w.carrier}, {"tenant", tenant}, {"outcome", StateLabel(state)}})
        .Increment(static_cast<double>(which.size()));
  }

  void Admit(v1::JobRecord record, int64_t now_ms) {
    std::string key = JobKey(record.tenant(), record.job().id());
    if (auto it = work_.find(key); it != work_.end()) {
      it->second.leased_due_ms = record.due_ms();  // a job still sending whose lease ran out
      return;
    }
    Work w;
    w.leased_state = record.state();
    w.leased_due_ms = record.due_ms();
    w.record = std::move(record);
    w.carrier = CarrierFor(config_, w.record.tenant(), w.record.job().carrier());
    for (int i = 0; i < w.record.recipients_size(); ++i) {
      if (!IsFinished(w.record.recipients(i).state())) w.pending.push_back(i);
    }
    JobUpdate update;
    if (now_ms >= ExpiryMs(w.record)) {
      Finish(w, w.pending, v1::JOB_STATE_EXPIRED, now_ms, update, "expired",
             "not delivered before the job's expiry");
      w.pending.clear();
    }
    if (!w.pending.empty()) {
      std::vector<std::string> addresses;
      for (int i : w.pending) addresses.push_back(w.record.recipients(i).address());
      auto suppressed = spool_.Suppressed(w.record.tenant(), addresses);
      if (!suppressed) {
        spdlog::error("delivery: reading suppressions: {}", suppressed.error().message);
        return;  // the lease runs out and the job comes back
      }
      std::vector<int> hit, keep;
      for (size_t n = 0; n < w.pending.size(); ++n) {
        ((*suppressed)[n] ? hit : keep).push_back(w.pending[n]);
      }
      Finish(w, hit, v1::JOB_STATE_SUPPRESSED, now_ms, update, "suppressed",
             "the recipient is on the tenant's suppression list");
      w.pending = std::move(keep);
    }
    if (w.pending.empty()) {
      CompleteWithoutSending(w, std::move(update), now_ms);
      return;
    }
    w.early_events = std::move(update.events);
    std::vector<std::string> recipients;
    for (int i : w.pending) recipients.push_back(w.record.recipients(i).address());
    w.limiters = limits_.For(w.carrier, w.record.tenant(), recipients);
    work_.emplace(key, std::move(w));
    ready_.push_back(key);
  }

  void CompleteWithoutSending(Work& w, JobUpdate update, int64_t now_ms) {
    w.record.set_state(JobStateOf(w.record));
    if (IsFinished(w.record.state())) w.record.set_finished_ms(now_ms);
    AddHistory(w.record, now_ms, "finished without sending");
    update.previous_state = w.leased_state;
    update.previous_due_ms = w.leased_due_ms;
    update.record = std::move(w.record);
    updates_.push_back(std::move(update));
  }

  // Starts what the limits allow; returns microseconds until a waiting job's
  // limit frees up, or -1 when nothing waits.
  int64_t Dispatch() {
    int64_t now_us = NowUs();
    int64_t next_us = -1;
    auto note_wait = [&](int64_t wait) { next_us = next_us < 0 ? wait : std::min(next_us, wait); };
    // Returns false when the job stays where it is (first in queue_of).
    auto try_start = [&](const std::string& key, RateLimiter* queue_of) -> bool {
      Work& w = work_.at(key);
      if (const Carrier& c = *carriers_.at(w.carrier); c.in_flight() >= c.backlog()) {
        if (queue_of == nullptr) parked_[w.carrier].push_back(key);
        return queue_of == nullptr;
      }
      int64_t wait = 0;
      RateLimiter* blocker = RateLimits::Blocker(w.limiters, now_us, wait);
      if (blocker == nullptr) {
        for (auto* limiter : w.limiters) limiter->Take(now_us);
        Send(key, w);
        return true;
      }
      if (blocker == queue_of) {
        note_wait(wait);
        return false;
      }
      if (Wait(key, w, blocker, now_us, wait)) note_wait(wait);
      return true;
    };
    for (auto& [name, limiter] : limits_) {
      while (!limiter->waiting.empty()) {
        std::string key = limiter->waiting.front();
        if (!try_start(key, limiter.get())) break;
        // Started or moved to another limit's queue: not waiting here any more.
        if (!limiter->waiting.empty() && limiter->waiting.front() == key) {
          limiter->waiting.pop_front();
        }
      }
    }
    // Jobs a busy carrier turned away go first, in their order.
    for (auto& [name, parked] : parked_) {
      const Carrier& c = *carriers_.at(name);
      while (!parked.empty() && c.in_flight() < c.backlog()) {
        std::string key = std::move(parked.front());
        parked.pop_front();
        try_start(key, nullptr);
      }
    }
    while (!ready_.empty()) {
      std::string key = std::move(ready_.front());
      ready_.pop_front();
      try_start(key, nullptr);
    }
    return next_us;
  }

  // Queues a job behind a limit, or hands it back to the spool when the
  // queue is long (so one slow tenant cannot fill the dispatcher). Returns
  // whether the job waits in memory.
  bool Wait(const std::string& key, Work& w, RateLimiter* limiter, int64_t now_us,
            int64_t wait_us) {
    metrics_.rate_limited.Add({{"limiter", limiter->kind()}, {"name", limiter->name()}})
        .Increment();
    size_t cap = std::max<size_t>(100, static_cast<size_t>(2'000'000 / limiter->interval_us()));
    if (limiter->waiting.size() < cap) {
      limiter->waiting.push_back(key);
      return true;
    }
    int64_t later_us =
        now_us + wait_us + static_cast<int64_t>(limiter->waiting.size()) * limiter->interval_us();
    JobUpdate update;
    update.previous_state = w.leased_state;
    update.previous_due_ms = w.leased_due_ms;
    update.record = std::move(w.record);
    update.record.set_due_ms(later_us / 1000);
    update.events = std::move(w.early_events);
    updates_.push_back(std::move(update));
    work_.erase(key);
    return false;
  }

  // Rendered only now, as the carrier is about to take it: a rendered
  // message lives for its transfer, not for all the time its job waits.
  void Send(const std::string& key, Work& w) {
    auto rendered = RenderMessage(w.record);
    if (!rendered) {
      spdlog::error("delivery: cannot render {}: {}", key, rendered.error().message);
      work_.erase(key);  // the lease runs out and the job comes back
      return;
    }
    w.message_id = std::move(rendered->message_id);
    // The body is in the message now, and the outcome's record update does
    // not need it (the spool keeps it apart).
    v1::MailJob& job = *w.record.mutable_job();
    job.clear_text_body();
    job.clear_html_body();
    job.clear_attachments();
    job.clear_raw_mime();
    SendRequest request;
    request.message = std::make_shared<const std::string>(std::move(rendered->data));
    request.mail_from = w.record.job().from().email();
    for (int i : w.pending) request.recipients.push_back(w.record.recipients(i).address());
    request.label = w.record.tenant() + "/" + w.record.job().id();
    carriers_.at(w.carrier)->Send(
        std::move(request), [this, key](SendResult result) { OnResult(key, std::move(result)); });
  }

  void OnResult(const std::string& key, SendResult result) {
    auto it = work_.find(key);
    if (it == work_.end()) return;
    Work& w = it->second;
    v1::JobRecord& record = w.record;
    int64_t now_ms = NowUs() / 1000;
    uint32_t attempt = record.attempts() + 1;
    record.set_attempts(attempt);
    record.set_carrier(w.carrier);
    record.set_message_id(w.message_id);
    DeliveryMetrics::Hot& hot = metrics_.HotFor(w.carrier, record.tenant());
    hot.attempt_seconds->Observe(result.seconds);

    JobUpdate update;
    update.events = std::move(w.early_events);
    // Never past the expiry (then it expires), never before now (the due
    // index scan has moved on).
    int64_t retry_at = std::max(
        now_ms + 1, std::min(now_ms + BackoffMs(config_.delivery.backoff, attempt, unit_(rng_)),
                             ExpiryMs(record)));
    auto verdicts = ApplyAttempt(record, w.pending, result.replies, now_ms, retry_at, update);
    size_t delivered = 0, deferred = 0, bounced = 0;
    for (const Classification& c : verdicts) {
      if (c.verdict == Verdict::kDelivered) {
        hot.queue_latency->Observe(static_cast<double>(now_ms - record.accepted_ms()) / 1000.0);
        hot.delivered->Increment();
        ++delivered;
        continue;
      }
      bool hard = c.verdict == Verdict::kPermanent;
      ++(hard ? bounced : deferred);
      std::string category(c.category);
      if (!hard) metrics_.retries.Add({{"carrier", w.carrier}, {"category", category}}).Increment();
      metrics_.bounces
          .Add({{"carrier", w.carrier},
                {"tenant", record.tenant()},
                {"type", hard ? "hard" : "soft"},
                {"category", category}})
          .Increment();
      metrics_.deliveries
          .Add({{"carrier", w.carrier},
                {"tenant", record.tenant()},
                {"outcome", hard ? "bounced" : "deferred"}})
          .Increment();
    }
    record.set_state(JobStateOf(record));
    if (IsFinished(record.state())) {
      record.set_finished_ms(now_ms);
    } else {
      record.set_due_ms(retry_at);
    }
    AddHistory(record, now_ms,
               "attempt " + std::to_string(attempt) + " via " + w.carrier + ": " +
                   std::to_string(delivered) + " delivered, " + std::to_string(deferred) +
                   " deferred, " + std::to_string(bounced) + " bounced");
    update.previous_state = w.leased_state;
    update.previous_due_ms = w.leased_due_ms;
    update.record = std::move(record);
    updates_.push_back(std::move(update));
    work_.erase(it);
  }

  void UpdateGauges() {
    metrics_.held.Set(static_cast<double>(Held()));
    for (const auto& [name, carrier] : carriers_) {
      metrics_.connections.Add({{"carrier", name}})
          .Set(static_cast<double>(carrier->open_connections()));
      metrics_.carrier_in_flight.Add({{"carrier", name}})
          .Set(static_cast<double>(carrier->in_flight()));
    }
  }

  // Shutdown: jobs not yet sent go back to the spool due now; transfers in
  // flight get drain_ms to finish and their outcomes are written.
  void Drain() {
    for (auto& [name, limiter] : limits_) limiter->waiting.clear();
    ready_.clear();
    parked_.clear();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(drain_ms_);
    size_t sending = 0;
    for (const auto& [name, carrier] : carriers_) sending += carrier->in_flight();
    while (sending > 0 && std::chrono::steady_clock::now() < deadline) {
      loop_.Run(100);
      sending = 0;
      for (const auto& [name, carrier] : carriers_) sending += carrier->in_flight();
    }
    // Carriers stop sending; results they handed back meanwhile are taken.
    for (const auto& [name, carrier] : carriers_) carrier->Stop();
    loop_.Run(0);
    // What is left was never sent, or did not finish in time.
    int64_t now_ms = NowUs() / 1000;
    for (auto& [key, w] : work_) {
      JobUpdate update;
      update.previous_state = w.leased_state;
      update.previous_due_ms = w.leased_due_ms;
      update.record = std::move(w.record);
      update.record.set_due_ms(now_ms);
      update.events = std::move(w.early_events);
      updates_.push_back(std::move(update));
    }
    size_t handed_back = work_.size();
    committer_->Submit(updates_);
    if (!committer_->Flush(10'000)) spdlog::warn("delivery: outcomes still unwritten at shutdown");
    spdlog::info("delivery: stopped ({} job(s) handed back to the spool)", handed_back);
  }

  const Config& config_;
  Spool& spool_;
  DeliveryMetrics metrics_;
  Health& health_;
  // Carriers before the loop: the loop (destroyed first) detaches their
  // transfers before the carriers free them.
  std::map<std::string, std::unique_ptr<Carrier>> carriers_;
  CurlLoop loop_;
  RateLimits limits_{config_};
  std::unordered_map<std::string, Work> work_;
  std::deque<std::string> ready_;
  // Per carrier: jobs ready to go while it already holds its backlog.
  std::map<std::string, std::deque<std::string>> parked_;
  std::vector<JobUpdate> updates_;  // outcomes of this loop turn, for the committer
  std::unique_ptr<Committer> committer_;
  int64_t next_renewal_ms_ = 0;
  std::atomic<bool> commit_failing_{false};
  static constexpr size_t kLeaseChunk = 512;
  bool more_due_ = false;  // the last lease filled its chunk: more may be due now
  // The due index holds nothing earlier than this key (but spooled_from_).
  std::string cursor_ = DueKey(0, "", "");
  int64_t CursorMs() const { return DueKeyMs(cursor_); }
  std::atomic<int64_t> spooled_from_{INT64_MAX};  // earliest due among newly spooled jobs
  std::atomic<bool> stop_{false};
  int drain_ms_ = 0;
  std::thread thread_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::uniform_real_distribution<double> unit_{0.0, 1.0};
};

Dispatcher::Dispatcher(const Config& config, Spool& spool, prometheus::Registry& registry,
                       Health& health)
    : impl_(std::make_unique<Impl>(config, spool, registry, health)) {}
Dispatcher::~Dispatcher() = default;
Status Dispatcher::Start() { return impl_->Start(); }
void Dispatcher::Stop(int drain_ms) { impl_->Stop(drain_ms); }
void Dispatcher::Wakeup(int64_t earliest_due_ms) { impl_->Wakeup(earliest_due_ms); }

}  // namespace mailroom
