// Liveness and readiness shared between the loops and the HTTP listener.
// Each component reports itself not ready with a reason; /readyz lists them.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>

namespace mailroom {

class Health {
 public:
  // An empty reason marks the component ready.
  void SetNotReady(const std::string& component, const std::string& reason) {
    std::lock_guard lock(mu_);
    if (reason.empty()) {
      not_ready_.erase(component);
    } else {
      not_ready_[component] = reason;
    }
  }
  void SetReady(const std::string& component) { SetNotReady(component, ""); }

  // Empty when ready; otherwise one "component: reason" line each.
  std::string NotReadyReasons() const {
    std::lock_guard lock(mu_);
    std::string out;
    for (const auto& [c, r] : not_ready_) out += c + ": " + r + "\n";
    return out;
  }

  // The main loop beats; /healthz fails when it has been silent too long.
  void Beat() { last_beat_ms_.store(NowMs(), std::memory_order_relaxed); }
  bool Alive(int64_t max_silence_ms) const {
    return NowMs() - last_beat_ms_.load(std::memory_order_relaxed) <= max_silence_ms;
  }

 private:
  static int64_t NowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  mutable std::mutex mu_;
  std::map<std::string, std::string> not_ready_;
  std::atomic<int64_t> last_beat_ms_{NowMs()};
};

}  // namespace mailroom
