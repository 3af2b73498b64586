#include "scheduler/rate_limiter.h"

#include "util/ascii.h"

namespace mailroom {

RateLimits::RateLimits(const Config& config) {
  auto add = [&](const char* kind, const std::string& name, const Rate& rate) {
    if (rate.limited()) {
      limits_[std::string(kind) + ":" + name] = std::make_unique<RateLimiter>(kind, name, rate);
    }
  };
  for (const auto& [name, carrier] : config.carriers) add("carrier", name, carrier.rate);
  for (const auto& [name, tenant] : config.tenants) add("tenant", name, tenant.rate);
  for (const auto& [domain, rate] : config.delivery.domain_rates) add("domain", domain, rate);
}

std::vector<RateLimiter*> RateLimits::For(const std::string& carrier, const std::string& tenant,
                                          const std::vector<std::string>& recipients) const {
  std::vector<RateLimiter*> out;
  auto use = [&](const std::string& key) {
    auto it = limits_.find(key);
    if (it != limits_.end() && std::ranges::find(out, it->second.get()) == out.end()) {
      out.push_back(it->second.get());
    }
  };
  use("carrier:" + carrier);
  use("tenant:" + tenant);
  for (const auto& address : recipients) {
    use("domain:" + AsciiLower(std::string_view(address).substr(address.rfind('@') + 1)));
  }
  return out;
}

RateLimiter* RateLimits::Blocker(const std::vector<RateLimiter*>& limits, int64_t now_us,
                                 int64_t& wait_us) {
  RateLimiter* blocker = nullptr;
  wait_us = 0;
  for (auto* limiter : limits) {
    int64_t wait = limiter->WaitUs(now_us);
    if (wait > wait_us) {
      wait_us = wait;
      blocker = limiter;
    }
  }
  return blocker;
}

}  // namespace mailroom
