// Copies undecodable records to the dead-letter topic, with headers naming the
// reason and the source topic, partition and offset.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <memory>
#include <string>
#include <vector>

#include "ingest/batch_builder.h"
#include "ingest/kafka_props.h"
#include "mailroom/result.h"

namespace mailroom {

class DeadLetterPublisher : public RdKafka::DeliveryReportCb {
 public:
  // Creates the idempotent producer; errors name the offending property.
  static Result<std::unique_ptr<DeadLetterPublisher>> Create(const std::string& topic,
                                                             const std::string& brokers,
                                                             const KafkaProps& properties);

  // Produces one copy per letter (`letters[i].record_index` into `records`)
  // and waits for the broker's acknowledgement (acks=all). On error some
  // copies may have been delivered: a retry may duplicate, never lose.
  Status Publish(const std::vector<std::unique_ptr<RdKafka::Message>>& records,
                 const std::vector<DeadLetter>& letters, int timeout_ms);

  void Flush(int timeout_ms) { producer_->flush(timeout_ms); }
  const std::string& topic() const { return topic_; }

 private:
  DeadLetterPublisher() = default;
  void dr_cb(RdKafka::Message& message) override;

  std::string topic_;
  std::unique_ptr<RdKafka::Producer> producer_;
  std::string last_failure_;  // delivery reports arrive during flush(), on the caller's thread
  size_t failures_ = 0;
};

}  // namespace mailroom
