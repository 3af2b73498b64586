// Ingest against a real Apache Kafka broker (started by the ctest fixture).
#include <gtest/gtest.h>

#include "mailroom/v1/delivery_event.pb.h"
#include "support/kafka_helpers.h"

namespace mailroom::testing_support {
namespace {

std::string TenantsYaml(const std::string& suffix) {
  return "tenants:\n"
         "  billing-" +
         suffix +
         ":\n    allowed_senders: [example.com]\n"
         "  hr-" +
         suffix + ":\n    allowed_senders: [app@example.com]\n";
}

double Queued(const MailroomUnderTest& m) {
  return Metric(m.Metrics(), "mailroom_spool_jobs{state=\"queued\"}");
}

TEST(IngestIntegration, TenThousandJobsFromTwoTenantsLandExactlyOnce) {
  std::string s = UniqueSuffix();
  const std::string billing = "mail.jobs.billing-" + s, hr = "mail.jobs.hr-" + s;
  constexpr int kPerTenant = 5000;
  {
    TestProducer producer;  // another client than the service
    for (int i = 0; i < kPerTenant; ++i) {
      // The same ids in both tenants: the idempotency key is per tenant.
      producer.SendJob(billing, SampleJob("job-" + std::to_string(i)));
      producer.SendJob(hr, SampleJob("job-" + std::to_string(i)));
    }
  }
  MailroomUnderTest mailroom(s, {.top = TenantsYaml(s)});
  mailroom.Start();
  ASSERT_TRUE(mailroom.WaitFor([&] { return Queued(mailroom) >= 2 * kPerTenant; }, 120000))
      << mailroom.log();
  // Offsets are committed after the spool write; wait for the auto-commit.
  ASSERT_TRUE(mailroom.WaitFor(
      [&] {
        return CommittedTotal(mailroom.group(), billing) == kPerTenant &&
               CommittedTotal(mailroom.group(), hr) == kPerTenant;
      },
      30000));
  std::string metrics = mailroom.Metrics();
  EXPECT_EQ(Metric(metrics, "mailroom_ingest_accepted_total{tenant=\"billing-" + s + "\"}"),
            kPerTenant);
  EXPECT_EQ(Metric(metrics, "mailroom_ingest_accepted_total{tenant=\"hr-" + s + "\"}"), kPerTenant);
  EXPECT_EQ(Metric(metrics, "mailroom_ingest_duplicates_total{tenant=\"hr-" + s + "\"}"), 0);
  EXPECT_GT(Metric(metrics, "mailroom_ingest_batch_commit_seconds_count"), 0);
  std::string accepted_events = "mailroom_events_published_total{type=\"accepted\"}";
  ASSERT_TRUE(mailroom.WaitFor(
      [&] { return Metric(mailroom.Metrics(), accepted_events) == 2 * kPerTenant; }, 60000))
      << mailroom.log();
  EXPECT_EQ(ReadTopic("mail.events-" + s).size(), static_cast<size_t>(2 * kPerTenant));
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();

  auto spool = mailroom.OpenSpoolReadOnly();
  ASSERT_TRUE(spool);
  auto stats = spool->Stats();
  EXPECT_EQ(stats.jobs_by_state[v1::JOB_STATE_QUEUED], 2 * kPerTenant);
  EXPECT_EQ(stats.outbox_pending, 0);  // every ACCEPTED event was published
  for (int i = 0; i < kPerTenant; ++i) {
    for (const auto* tenant : {"billing-", "hr-"}) {
      auto job = spool->GetJob(tenant + s, "job-" + std::to_string(i));
      ASSERT_TRUE(job && *job) << tenant << s << " job-" << i;
    }
  }
  EXPECT_EQ(CommittedTotal(mailroom.group(), billing), HighWatermarkTotal(billing));
}

TEST(IngestIntegration, MalformedRecordsAreDeadLetteredAndRejected) {
  std::string s = UniqueSuffix();
  const std::string topic = "mail.jobs.billing-" + s;
  const std::string dlq = "mail.deadletter-" + s;
  // Published with kcat: a client that knows nothing of protobuf.
  std::string kcat = "kcat -P -b " + Brokers() + " -t " + topic;
  ASSERT_EQ(RunCommand("printf 'definitely not protobuf' | " + kcat + " -k bad-1"), 0);
  ASSERT_EQ(RunCommand("printf '{\"id\": \"j\", \"unknownField\": 1}' | " + kcat +
                       " -k bad-2 -H content-type=application/json"),
            0);
  ASSERT_EQ(RunCommand("printf '{\"id\":\"json-ok\",\"from\":{\"email\":\"a@example.com\"},"
                       "\"to\":[{\"email\":\"b@example.net\"}],\"subject\":\"hi\",\"metadata\":{"
                       "\"k\":\"v\"}}' | " +
                       kcat + " -k json-ok -H content-type=application/json"),
            0);
  {
    TestProducer producer;
    v1::MailJob spoof = SampleJob("spoof");
    spoof.mutable_from()->set_email("ceo@elsewhere.example");
    producer.SendJob(topic, spoof);
    v1::MailJob inject = SampleJob("inject");
    inject.set_subject("hello\r\nBcc: everyone@example.net");
    producer.SendJob(topic, inject);
  }
  MailroomUnderTest mailroom(s, {.top = TenantsYaml(s)});
  mailroom.Start();
  std::string received = "mailroom_ingest_received_total{tenant=\"billing-" + s + "\"}";
  std::string dead = "mailroom_ingest_deadletter_total{reason=\"undecodable\"}";
  ASSERT_TRUE(mailroom.WaitFor(
      [&] {
        std::string m = mailroom.Metrics();
        return Metric(m, received) == 5 && Metric(m, dead) == 2;
      },
      60000))
      << mailroom.log();
  std::string metrics = mailroom.Metrics();
  auto rejected = [&](const std::string& reason) {
    return Metric(metrics, "mailroom_ingest_rejected_total{reason=\"" + reason +
                               "\",tenant=\"billing-" + s + "\"}");
  };
  EXPECT_EQ(rejected("undecodable"), 2);
  EXPECT_EQ(rejected("sender_not_allowed"), 1);
  EXPECT_EQ(rejected("header_injection"), 1);
  EXPECT_EQ(Metric(metrics, "mailroom_ingest_deadletter_total{reason=\"undecodable\"}"), 2);

  auto letters = ReadTopic(dlq);
  ASSERT_EQ(letters.size(), 2u);
  std::set<std::string> keys;
  for (const auto& l : letters) {
    keys.insert(l.key);
    EXPECT_EQ(l.headers.at("mailroom-reason"), "undecodable");
    EXPECT_EQ(l.headers.at("mailroom-source-topic"), topic);
    EXPECT_FALSE(l.headers.at("mailroom-source-offset").empty());
    EXPECT_FALSE(l.headers.at("mailroom-detail").empty());
    if (l.key == "bad-1") {
      EXPECT_EQ(l.payload, "definitely not protobuf");
    } else {
      EXPECT_NE(l.headers.at("mailroom-detail").find("unknownField"), std::string::npos);
    }
  }
  EXPECT_EQ(keys, (std::set<std::string>{"bad-1", "bad-2"}));
  std::string rejected_events = "mailroom_events_published_total{type=\"rejected\"}";
  ASSERT_TRUE(
      mailroom.WaitFor([&] { return Metric(mailroom.Metrics(), rejected_events) == 4; }, 30000))
      << mailroom.log();
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();

  auto spool = mailroom.OpenSpoolReadOnly();
  ASSERT_TRUE(spool);
  auto job = spool->GetJob("billing-" + s, "json-ok");
  ASSERT_TRUE(job && *job);
  EXPECT_EQ((*job)->job().metadata().at("k"), "v");
  EXPECT_FALSE(*spool->GetJob("billing-" + s, "spoof"));  // rejected jobs never enter the queue
  // Every event reached the events topic, keyed by job id; the outbox is empty.
  EXPECT_EQ(spool->Stats().outbox_pending, 0);
  std::map<std::string, int> events;
  for (const auto& record : ReadTopic("mail.events-" + s)) {
    v1::DeliveryEvent e;
    ASSERT_TRUE(e.ParseFromString(record.payload));
    EXPECT_EQ(record.key, e.job_id());
    EXPECT_EQ(record.headers.at("mailroom-event-type"), v1::EventType_Name(e.type()));
    events[v1::EventType_Name(e.type()) + ":" + e.reason()]++;
    if (e.type() == v1::REJECTED) {
      EXPECT_EQ(e.source_topic(), topic);
      EXPECT_FALSE(e.detail().empty());
    }
    if (e.job_id() == "json-ok") {
      EXPECT_EQ(e.metadata().at("k"), "v");
    }
  }
  EXPECT_EQ(events, (std::map<std::string, int>{{"ACCEPTED:", 1},
                                                {"REJECTED:header_injection", 1},
                                                {"REJECTED:sender_not_allowed", 1},
                                                {"REJECTED:undecodable", 2}}));
}

TEST(IngestIntegration, RestartOverTheSameSpoolAddsNoDuplicates) {
  std::string s = UniqueSuffix();
  const std::string topic = "mail.jobs.billing-" + s;
  constexpr int kJobs = 1000;
  {
    TestProducer producer;
    for (int i = 0; i < kJobs; ++i) producer.SendJob(topic, SampleJob("r-" + std::to_string(i)));
  }
  TempDir spool_dir("mailroom-spool");
  {
    MailroomUnderTest first(s, {.spool_dir = spool_dir.path()});
    first.Start();
    ASSERT_TRUE(first.WaitFor([&] { return Queued(first) == kJobs; }, 60000)) << first.log();
    ASSERT_EQ(first.Stop(), 0);
  }
  {
    // Same ids published again (a producer retry), then a restart under a new
    // group that re-reads the whole topic: every record is a duplicate.
    TestProducer producer;
    for (int i = 0; i < kJobs / 2; ++i)
      producer.SendJob(topic, SampleJob("r-" + std::to_string(i)));
  }
  MailroomUnderTest second(s, {.spool_dir = spool_dir.path()});
  second.set_group("mailroom-it-rereader-" + s);
  second.Start();
  std::string dups = "mailroom_ingest_duplicates_total{tenant=\"billing-" + s + "\"}";
  ASSERT_TRUE(
      second.WaitFor([&] { return Metric(second.Metrics(), dups) == kJobs + kJobs / 2; }, 60000))
      << second.log();
  EXPECT_EQ(Queued(second), kJobs);
  EXPECT_EQ(
      Metric(second.Metrics(), "mailroom_ingest_accepted_total{tenant=\"billing-" + s + "\"}"), 0);
  ASSERT_EQ(second.Stop(), 0);
}

// Large jobs close a batch by its bytes (kafka.batch_max_bytes), not by its
// count, so a synced write stays short.
TEST(IngestIntegration, BatchesCloseAtTheirByteLimit) {
  std::string s = UniqueSuffix();
  const std::string topic = "mail.jobs.big-" + s;
  constexpr int kJobs = 40;
  {
    TestProducer producer;
    for (int i = 0; i < kJobs; ++i) {
      v1::MailJob job = SampleJob("big-" + std::to_string(i));
      job.set_text_body(std::string(50 * 1024, 'b'));
      producer.SendJob(topic, job);
    }
  }
  MailroomUnderTest mailroom(s, {.kafka = "  batch_max_bytes: 200KiB\n"});
  mailroom.Start();
  ASSERT_TRUE(mailroom.WaitFor(
      [&] { return Metric(mailroom.Metrics(), "mailroom_ingest_batch_records_sum") == kJobs; },
      60000))
      << mailroom.log();
  EXPECT_EQ(Queued(mailroom), kJobs);
  std::string metrics = mailroom.Metrics();
  // At most four 50 KiB jobs a batch (the fourth reaches 200 KiB).
  EXPECT_GE(Metric(metrics, "mailroom_ingest_batch_records_count"), kJobs / 4);
  ASSERT_EQ(mailroom.Stop(), 0);
}

}  // namespace
}  // namespace mailroom::testing_support
