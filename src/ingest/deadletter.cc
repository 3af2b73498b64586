#include "ingest/deadletter.h"

namespace mailroom {

Result<std::unique_ptr<DeadLetterPublisher>> DeadLetterPublisher::Create(
    const std::string& topic, const std::string& brokers, const KafkaProps& properties) {
  std::unique_ptr<DeadLetterPublisher> publisher(new DeadLetterPublisher());
  publisher->topic_ = topic;
  auto producer = MakeProducer(brokers, properties, publisher.get());
  if (!producer) return std::unexpected(producer.error());
  publisher->producer_ = std::move(*producer);
  return publisher;
}

void DeadLetterPublisher::dr_cb(RdKafka::Message& message) {
  if (message.err() == RdKafka::ERR_NO_ERROR) return;
  ++failures_;
  last_failure_ = message.errstr();
}

Status DeadLetterPublisher::Publish(const std::vector<std::unique_ptr<RdKafka::Message>>& records,
                                    const std::vector<DeadLetter>& letters, int timeout_ms) {
  failures_ = 0;
  for (const auto& letter : letters) {
    RdKafka::Message& m = *records[letter.record_index];
    RdKafka::Headers* headers = RdKafka::Headers::create();
    headers->add("mailroom-reason", letter.reason);
    headers->add("mailroom-detail", letter.detail);
    headers->add("mailroom-source-topic", m.topic_name());
    headers->add("mailroom-source-partition", std::to_string(m.partition()));
    headers->add("mailroom-source-offset", std::to_string(m.offset()));
    RdKafka::ErrorCode rc =
        producer_->produce(topic_, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
                           m.payload(), m.len(), m.key_pointer(), m.key_len(), 0, headers, nullptr);
    if (rc != RdKafka::ERR_NO_ERROR) {
      delete headers;  // ownership passes to librdkafka only on success
      return Fail(ErrorCode::kUnavailable, "producing to " + topic_ + ": " + RdKafka::err2str(rc));
    }
  }
  if (producer_->flush(timeout_ms) != RdKafka::ERR_NO_ERROR) {
    return Fail(ErrorCode::kUnavailable, "dead-letter topic " + topic_ +
                                             " did not acknowledge within " +
                                             std::to_string(timeout_ms) + " ms");
  }
  if (failures_ > 0) {
    return Fail(ErrorCode::kUnavailable, std::to_string(failures_) +
                                             " dead letters not delivered to " + topic_ + ": " +
                                             last_failure_);
  }
  return {};
}

}  // namespace mailroom
