// kill -9 the service at random moments while jobs stream in; restart each
// time. Offsets are committed only after the synced spool write, and the
// spool dedupes re-read records, so every job lands exactly once.
#include <gtest/gtest.h>

#include <iostream>
#include <random>
#include <thread>

#include "support/kafka_helpers.h"

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

}  // namespace
}  // namespace mailroom::testing_support
