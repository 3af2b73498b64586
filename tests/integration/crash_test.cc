// kill -9 the service at random moments while jobs stream in; restart each
// time. Offsets are committed only after the synced spool write, and the
// spool dedupes re-read records, so every job lands exactly once.
#include <gtest/gtest.h>

#include <iostream>
#include <map>
#include <random>
#include <thread>

#include "support/kafka_helpers.h"
#include "support/smtp_helpers.h"

namespace mailroom::testing_support {
namespace {

TEST(CrashIntegration, KillNineDuringIngestLosesAndDuplicatesNothing) {
  std::string s = UniqueSuffix();
  const std::string topics[] = {"mail.jobs.a-" + s, "mail.jobs.b-" + s};
  constexpr int kJobs = 20000;
  TempDir spool_dir("mailroom-crash");
  // Small batches: more commits, more moments for a kill to land between
  // them. Static membership: a restarted pod gets its partitions back at once.
  MailroomUnderTest service(
      s, {.kafka = "  batch_max_messages: 200\n  group_instance_id: crash-" + s + "\n",
          .spool_dir = spool_dir.path()});

  // Publish steadily in the background (about 4,000 jobs/s) while the
  // service is killed.
  std::thread publisher([&] {
    TestProducer producer;
    for (int i = 0; i < kJobs; ++i) {
      producer.SendJob(topics[i % 2], SampleJob("c-" + std::to_string(i), 1024));
      if (i % 1000 == 999) {
        producer.Flush();
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      }
    }
  });

  auto queued = [&] { return Metric(service.Metrics(), "mailroom_spool_jobs{state=\"queued\"}"); };
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(0, 300);
  int mid_ingest_kills = 0;
  std::string spooled_at_kills;
  double last = 0;
  for (int round = 0; round < 6; ++round) {
    service.Start();
    // Kill only once this incarnation is ingesting, at a random moment.
    service.WaitFor([&] { return queued() > last; }, 10000);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    last = queued();
    service.Kill9();
    spooled_at_kills += " " + std::to_string(static_cast<int>(last));
    if (last > 0 && last < kJobs) ++mid_ingest_kills;
  }
  std::cout << "spooled jobs seen just before each kill -9:" << spooled_at_kills << "\n";
  publisher.join();
  service.Start();
  ASSERT_TRUE(service.WaitFor([&] { return queued() >= kJobs; }, 180000))
      << "spooled " << queued() << " of " << kJobs << "\n"
      << service.log();
  ASSERT_EQ(service.Stop(), 0) << service.log();

  auto spool = service.OpenSpoolReadOnly();
  ASSERT_TRUE(spool);
  EXPECT_EQ(spool->Stats().jobs_by_state[v1::JOB_STATE_QUEUED], kJobs);
  for (int i = 0; i < kJobs; ++i) {
    auto job = spool->GetJob(topics[i % 2].substr(10), "c-" + std::to_string(i));
    ASSERT_TRUE(job && *job) << "missing c-" << i;
  }
  EXPECT_GE(mid_ingest_kills, 1) << "no kill landed while jobs were streaming in";
}

// kill -9 while 10,000 jobs are being delivered into Postfix's smtp-sink,
// three times, restarting each time. Every job must end DELIVERED; a job can
// reach the sink twice only if it was in flight at a kill (sent, its outcome
// not yet durable), and the dispatcher never holds more than
// delivery.max_in_flight jobs.
TEST(CrashIntegration, KillNineDuringDeliveryEndsWithEveryJobDelivered) {
  std::string s = UniqueSuffix();
  constexpr int kJobs = 10000;
  constexpr int kConnections = 8;
  constexpr int kWindow = 64;  // delivery.max_in_flight
  constexpr int kKills = 3;
  SmtpSink sink;
  sink.Start();
  TempDir spool_dir("mailroom-crash-delivery");
  MailroomUnderTest service(
      s, {.kafka = "  group_instance_id: crash-delivery-" + s + "\n",
          .top = "delivery:\n  default_carrier: sink\n  lease: 2s\n  max_in_flight: " +
                 std::to_string(kWindow) +
                 "\n"
                 "carriers:\n  sink:\n    type: smtp\n    url: smtp://127.0.0.1:" +
                 std::to_string(sink.port()) + "\n    starttls: \"off\"\n    max_connections: " +
                 std::to_string(kConnections) + "\n",
          .spool_dir = spool_dir.path()});
  {
    TestProducer producer;
    for (int i = 0; i < kJobs; ++i) {
      producer.SendJob("mail.jobs.crash-" + s, SampleJob("m-" + std::to_string(i), 1024));
    }
  }
  auto delivered = [&] {
    return Metric(service.Metrics(), "mailroom_spool_jobs{state=\"delivered\"}");
  };
  std::mt19937 rng(std::random_device{}());
  std::string delivered_at_kills;
  double last = 0;
  for (int kill = 0; kill < kKills; ++kill) {
    service.Start();
    // Kill at a random point once this incarnation has delivered some more.
    double target = last + std::uniform_int_distribution<int>(200, 2500)(rng);
    service.WaitFor([&] { return delivered() >= target; }, 60000);
    last = delivered();
    service.Kill9();
    delivered_at_kills += " " + std::to_string(static_cast<int>(last));
  }
  service.Start();
  ASSERT_TRUE(service.WaitFor([&] { return delivered() >= kJobs; }, 180000))
      << "delivered " << delivered() << " of " << kJobs << "\n"
      << service.log();
  ASSERT_EQ(service.Stop(), 0) << service.log();

  auto spool = service.OpenSpoolReadOnly();
  ASSERT_TRUE(spool);
  auto stats = spool->Stats();
  EXPECT_EQ(stats.jobs_by_state[v1::JOB_STATE_DELIVERED], kJobs);
  EXPECT_EQ(stats.queued_jobs, 0);
  std::map<std::string, int> copies;
  for (const auto& dump : sink.Dumps()) {
    auto at = dump.find("\nMessage-ID: ");
    ASSERT_NE(at, std::string::npos);
    copies[dump.substr(at + 13, dump.find('\r', at + 1) - at - 13)]++;
  }
  int duplicates = 0;
  for (const auto& [id, n] : copies) duplicates += n - 1;
  std::cout << "delivered jobs seen just before each kill -9:" << delivered_at_kills
            << "; duplicates at the sink: " << duplicates << "\n";
  EXPECT_EQ(copies.size(), static_cast<size_t>(kJobs));
  EXPECT_LE(duplicates, kKills * kWindow);
}

}  // namespace
}  // namespace mailroom::testing_support
