// The delivery engine's instruments (catalogue in docs/metrics.md).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>
#include <unordered_map>

namespace mailroom {

inline const prometheus::Histogram::BucketBoundaries kAttemptBuckets = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
inline const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400};

struct DeliveryMetrics {
  explicit DeliveryMetrics(prometheus::Registry& r)
      : deliveries(prometheus::BuildCounter()
                       .Name("mailroom_deliveries_total")
                       .Help("Delivery outcomes per recipient: delivered, deferred, bounced, "
                             "expired, suppressed")
                       .Register(r)),
        retries(prometheus::BuildCounter()
                    .Name("mailroom_delivery_retries_total")
                    .Help("Recipients deferred for a retry, by carrier and category")
                    .Register(r)),
        bounces(prometheus::BuildCounter()
                    .Name("mailroom_bounces_total")
                    .Help("Bounces by carrier, tenant, type (hard: permanent, soft: transient) "
                          "and category")
                    .Register(r)),
        suppressed(prometheus::BuildCounter()
                       .Name("mailroom_suppressed_total")
                       .Help("Recipients not sent to because they are on the suppression list")
                       .Register(r)),
        expired(prometheus::BuildCounter()
                    .Name("mailroom_expired_total")
                    .Help("Recipients given up on at the job's expiry")
                    .Register(r)),
        rate_limited(prometheus::BuildCounter()
                         .Name("mailroom_rate_limited_total")
                         .Help("Times a job had to wait for a rate limit, by limiter")
                         .Register(r)),
        attempt_seconds(prometheus::BuildHistogram()
                            .Name("mailroom_delivery_attempt_seconds")
                            .Help("Duration of one delivery attempt, by carrier")
                            .Register(r)),
        queue_latency(prometheus::BuildHistogram()
                          .Name("mailroom_delivery_queue_latency_seconds")
                          .Help("Time from acceptance to delivery, per delivered recipient")
                          .Register(r)),
        connections(prometheus::BuildGauge()
                        .Name("mailroom_carrier_connections")
                        .Help("Open connections per carrier")
                        .Register(r)),
        carrier_in_flight(prometheus::BuildGauge()
                              .Name("mailroom_carrier_in_flight")
                              .Help("Messages handed to a carrier and not yet answered")
                              .Register(r)),
        held(prometheus::BuildGauge()
                 .Name("mailroom_dispatch_jobs_held")
                 .Help("Jobs leased by the dispatcher: sending or waiting for a rate limit")
                 .Register(r)
                 .Add({})),
        commit_errors(prometheus::BuildCounter()
                          .Name("mailroom_dispatch_commit_errors_total")
                          .Help("Failed spool writes of delivery outcomes (retried)")
                          .Register(r)
                          .Add({})) {}

  prometheus::Family<prometheus::Counter>& deliveries;
  prometheus::Family<prometheus::Counter>& retries;
  prometheus::Family<prometheus::Counter>& bounces;
  prometheus::Family<prometheus::Counter>& suppressed;
  prometheus::Family<prometheus::Counter>& expired;
  prometheus::Family<prometheus::Counter>& rate_limited;
  prometheus::Family<prometheus::Histogram>& attempt_seconds;
  prometheus::Family<prometheus::Histogram>& queue_latency;
  prometheus::Family<prometheus::Gauge>& connections;
  prometheus::Family<prometheus::Gauge>& carrier_in_flight;
  prometheus::Gauge& held;
  prometheus::Counter& commit_errors;

  // The instruments of every delivery, looked up once per carrier and tenant
  // (Family::Add builds and hashes a label map on each call).
  struct Hot {
    prometheus::Counter* delivered;
    prometheus::Histogram* attempt_seconds;
    prometheus::Histogram* queue_latency;
  };
  Hot& HotFor(const std::string& carrier, const std::string& tenant) {
    auto [it, added] = hot_.try_emplace(carrier + '\0' + tenant);
    if (added) {
      it->second = {
          &deliveries.Add({{"carrier", carrier}, {"tenant", tenant}, {"outcome", "delivered"}}),
          &attempt_seconds.Add({{"carrier", carrier}}, kAttemptBuckets),
          &queue_latency.Add({{"carrier", carrier}}, kLatencyBuckets)};
    }
    return it->second;
  }

 private:
  std::unordered_map<std::string, Hot> hot_;  // dispatch thread only
};

}  // namespace mailroom
