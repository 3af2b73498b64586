// Builds librdkafka configurations; errors name the offending property.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <map>
#include <memory>
#include <string>

#include "mailroom/config.h"
#include "mailroom/result.h"

namespace mailroom {

using KafkaProps = std::map<std::string, std::string>;

// Applies `base`, then `overrides` (config kafka.properties win).
Result<std::unique_ptr<RdKafka::Conf>> MakeKafkaConf(const KafkaProps& base,
                                                     const KafkaProps& overrides = {});

// Ingest's consumer: a consumer group storing offsets only once written,
// with fetches and a prefetch queue sized for mail jobs.
KafkaProps IngestConsumerProps(const KafkaConfig& kafka);

// An idempotent producer (acks=all) for dead letters and tools; `reports`,
// when given, receives every delivery report.
Result<std::unique_ptr<RdKafka::Producer>> MakeProducer(
    const std::string& brokers, const KafkaProps& overrides = {},
    RdKafka::DeliveryReportCb* reports = nullptr);

}  // namespace mailroom
