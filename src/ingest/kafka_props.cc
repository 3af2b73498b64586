#include "ingest/kafka_props.h"

namespace mailroom {

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
