// The delivery engine's loop (scheduler + dispatch): leases due jobs from the
// spool, applies expiry, suppressions, rate limits and carrier concurrency,
// sends through the carriers on one curl multi handle, classifies every
// answer and writes each job's new state with its events in one batch.
// See docs/delivery.md.
#pragma once

#include <cstdint>
#include <memory>

#include "mailroom/config.h"
#include "mailroom/health.h"
#include "mailroom/result.h"
#include "mailroom/spool.h"

namespace prometheus {
class Registry;
}

namespace mailroom {

class Dispatcher {
 public:
  Dispatcher(const Config& config, Spool& spool, prometheus::Registry& registry, Health& health);
  ~Dispatcher();

  // Builds the carriers (errors name the config key) and starts the thread.
  Status Start();
  // Stops leasing, hands waiting jobs back to the spool, lets transfers in
  // flight finish for up to `drain_ms`, records their outcomes and stops.
  void Stop(int drain_ms = 10'000);
  // New jobs are spooled, the earliest due at `earliest_due_ms`. Any thread.
  void Wakeup(int64_t earliest_due_ms);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailroom
