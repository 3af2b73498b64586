// A rate limit as GCRA (the generic cell rate algorithm, a token bucket in
// one number): one message per `interval`, with a burst tolerance of 20 ms
// worth of messages (at least one) so a dispatch loop waking on millisecond
// timers still reaches high rates. A message is sent only when every limit
// that applies to it conforms; waiting uses no tokens.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailroom/config.h"

namespace mailroom {

class RateLimiter {
 public:
  RateLimiter(std::string kind, std::string name, const Rate& rate)
      : kind_(std::move(kind)),
        name_(std::move(name)),
        interval_us_(std::max<int64_t>(1, rate.period_ms * 1000 / rate.count)),
        tolerance_us_(std::max<int64_t>(0, 20'000 - interval_us_)) {}

  // Microseconds until a message conforms (0: now).
  int64_t WaitUs(int64_t now_us) const {
    return std::max<int64_t>(0, tat_us_ - tolerance_us_ - now_us);
  }
  // Takes one message's slot; call only when WaitUs() is 0.
  void Take(int64_t now_us) { tat_us_ = std::max(tat_us_, now_us) + interval_us_; }

  const std::string& kind() const { return kind_; }  // carrier, tenant or domain
  const std::string& name() const { return name_; }
  int64_t interval_us() const { return interval_us_; }

  // Jobs waiting for this limit, oldest first (owned by the dispatcher).
  std::deque<std::string> waiting;

 private:
  std::string kind_;
  std::string name_;
  int64_t interval_us_;
  int64_t tolerance_us_;
  int64_t tat_us_ = 0;  // theoretical arrival time of the next message
};

// Every limit the config sets: per carrier, per tenant, per recipient domain.
class RateLimits {
 public:
  explicit RateLimits(const Config& config);

  // The limits a message from `tenant` through `carrier` to these recipients
  // is subject to, each once.
  std::vector<RateLimiter*> For(const std::string& carrier, const std::string& tenant,
                                const std::vector<std::string>& recipients) const;
  // The one of `limits` a message waits for longest (nullptr: none, it may
  // go now), and how long.
  static RateLimiter* Blocker(const std::vector<RateLimiter*>& limits, int64_t now_us,
                              int64_t& wait_us);

  auto begin() { return limits_.begin(); }
  auto end() { return limits_.end(); }
  size_t size() const { return limits_.size(); }

 private:
  std::map<std::string, std::unique_ptr<RateLimiter>> limits_;  // by "kind:name"
};

}  // namespace mailroom
