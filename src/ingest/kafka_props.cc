#include "ingest/kafka_props.h"

#include <algorithm>

namespace mailroom {

KafkaProps IngestConsumerProps(const KafkaConfig& k) {
  KafkaProps props = {
      {"bootstrap.servers", k.brokers},
      {"group.id", k.group_id},
      {"client.id", "mailroom"},
      {"partition.assignment.strategy", "cooperative-sticky"},
      {"enable.auto.offset.store", "false"},
      {"enable.auto.commit", "true"},
      {"auto.commit.interval.ms", "1000"},
      {"auto.offset.reset", "earliest"},
      {"session.timeout.ms", std::to_string(k.session_timeout_ms)},
      {"heartbeat.interval.ms", std::to_string(std::max(500, k.session_timeout_ms / 5))},
      {"topic.metadata.refresh.interval.ms", "5000"},
      // Mail jobs can be large: fetch enough per round trip
      // to fill a batch of 100 KiB jobs.
      {"max.partition.fetch.bytes", "8388608"},
      {"fetch.max.bytes", "67108864"}};
  // librdkafka stops fetching while its prefetch queue is over
  // queued.max.messages.kbytes (or queued.min.messages) and looks again
  // only after fetch.queue.backoff.ms, a fixed second before 2.1. Ingest
  // drains a queue of 64 MiB of 2 KiB jobs in well under that, then waits
  // with nothing to spool: look again sooner or, where that cannot be set,
  // queue enough for a second.
  if (RdKafka::version() >= 0x02010000) {
    props["fetch.queue.backoff.ms"] = "20";
  } else {
    props["queued.max.messages.kbytes"] = "262144";
    props["queued.min.messages"] = "1000000";
  }
  if (!k.group_instance_id.empty()) props["group.instance.id"] = k.group_instance_id;
  return props;
}

Result<std::unique_ptr<RdKafka::Conf>> MakeKafkaConf(const KafkaProps& base,
                                                     const KafkaProps& overrides) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string err;
  for (const auto* props : {&base, &overrides}) {
    for (const auto& [key, value] : *props) {
      if (conf->set(key, value, err) != RdKafka::Conf::CONF_OK) {
        return Fail(ErrorCode::kInvalidArgument, "kafka.properties." + key + ": " + err);
      }
    }
  }
  return conf;
}

Result<std::unique_ptr<RdKafka::Producer>> MakeProducer(const std::string& brokers,
                                                        const KafkaProps& overrides,
                                                        RdKafka::DeliveryReportCb* reports) {
  auto conf = MakeKafkaConf({{"bootstrap.servers", brokers},
                             {"client.id", "mailroom"},
                             {"enable.idempotence", "true"},
                             {"acks", "all"},
                             {"linger.ms", "5"}},
                            overrides);
  if (!conf) return std::unexpected(conf.error());
  std::string err;
  if (reports && (*conf)->set("dr_cb", reports, err) != RdKafka::Conf::CONF_OK) {
    return Fail(ErrorCode::kInternal, "setting delivery report callback: " + err);
  }
  std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf->get(), err));
  if (!producer) return Fail(ErrorCode::kInvalidArgument, "creating Kafka producer: " + err);
  return producer;
}

}  // namespace mailroom
