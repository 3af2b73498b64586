// The event publisher against a real broker that goes away and comes back.
#include <gtest/gtest.h>

#include "mailroom/v1/delivery_event.pb.h"
#include "support/kafka_helpers.h"

namespace mailroom::testing_support {
namespace {

std::string KafkaScript(const std::string& verb) {
  std::string port = Brokers().substr(Brokers().rfind(':') + 1);
  return "KAFKA_PORT=" + port + " " + MAILROOM_SOURCE_DIR + "/scripts/kafka.sh " + verb +
         " >/dev/null 2>&1";
}

TEST(EventsIntegration, ABrokerOutageLosesNoEvent) {
  std::string s = UniqueSuffix();
  constexpr int kEvents = 200;
  TempDir spool_dir("mailroom-events");
  {
    // Events already in the outbox, as a crash or an outage would leave them.
    SpoolConfig config;
    config.path = spool_dir.path();
    auto spool = Spool::Open(config);
    ASSERT_TRUE(spool);
    IngestBatch batch;
    for (int i = 0; i < kEvents; ++i) {
      v1::DeliveryEvent e;
      e.set_job_id("e-" + std::to_string(i));
      e.set_tenant("t");
      e.set_type(v1::ACCEPTED);
      batch.events.Add(std::move(e));
    }
    ASSERT_TRUE((*spool)->CommitIngest(batch));
  }
  ASSERT_EQ(RunCommand(KafkaScript("stop")), 0);
  MailroomUnderTest mailroom(s, {.spool_dir = spool_dir.path()});
  mailroom.Start();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(Metric(mailroom.Metrics(), "mailroom_spool_outbox_pending"), kEvents)
      << "nothing may leave the outbox while the broker is down";
  ASSERT_EQ(RunCommand(KafkaScript("start")), 0);
  ASSERT_TRUE(mailroom.WaitFor(
      [&] { return Metric(mailroom.Metrics(), "mailroom_spool_outbox_pending") == 0; }, 90000))
      << mailroom.log();
  ASSERT_EQ(mailroom.Stop(), 0) << mailroom.log();

  std::set<std::string> ids;
  for (const auto& record : ReadTopic("mail.events-" + s)) {
    v1::DeliveryEvent e;
    ASSERT_TRUE(e.ParseFromString(record.payload));
    ids.insert(e.job_id());
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kEvents));
}

}  // namespace
}  // namespace mailroom::testing_support
