// The event publisher: drains the spool's outbox to the events topic with an
// idempotent producer (acks=all), keyed by job id, polling the outbox every
// 100 ms when it is empty. An outbox entry is deleted
// only after the broker acknowledged it, so a broker outage loses nothing
// (an event may be published twice around a crash; consumers dedupe on
// job_id + type + recipient + attempt).
#pragma once

#include <memory>

#include "mailroom/config.h"
#include "mailroom/result.h"
#include "mailroom/spool.h"

namespace prometheus {
class Registry;
}

namespace mailroom {

class EventPublisher {
 public:
  EventPublisher(const Config& config, Spool& spool, prometheus::Registry& registry);
  ~EventPublisher();

  // Creates the producer (errors name the property) and starts the thread.
  Status Start();
  // Publishes what is pending (for up to `drain_ms`), then stops.
  void Stop(int drain_ms = 5000);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailroom
