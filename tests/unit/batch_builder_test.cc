#include <gtest/gtest.h>

#include "ingest/batch_builder.h"
#include "support/temp_dir.h"

namespace mailroom {
namespace {

using testing_support::TempDir;
constexpr int64_t kNow = 1'800'000'000'000;

class BatchBuilderTest : public testing::Test {
 protected:
  void SetUp() override {
    SpoolConfig sc;
    sc.path = dir_.path();
    spool_ = std::move(*Spool::Open(sc));
    TenantConfig billing;
    billing.name = "billing";
    billing.allowed_senders = {"example.com"};
    config_.tenants["billing"] = billing;
    config_.tenants["hr"] = TenantConfig{"hr", {"hr@example.com"}};
  }

  std::string Binary(const std::string& id, const std::string& from = "a@example.com") {
    v1::MailJob job;
    job.set_id(id);
    job.mutable_from()->set_email(from);
    job.add_to()->set_email("ada@example.net");
    job.add_bcc()->set_email("audit@example.net");
    (*job.mutable_metadata())["order"] = "42";
    return job.SerializeAsString();
  }

  InboundRecord Record(const std::string& topic, const std::string& payload, int64_t offset,
                       bool json = false) {
    topics_.push_back(std::make_unique<std::string>(topic));
    payloads_.push_back(std::make_unique<std::string>(payload));
    return InboundRecord{*topics_.back(), 3, offset, "", *payloads_.back(), json};
  }

  BuiltBatch Build(const std::vector<InboundRecord>& records) {
    BatchBuilder builder(config_, *spool_);
    auto built = builder.Build(records, kNow);
    if (!built) {
      ADD_FAILURE() << built.error().message;
      return {};
    }
    return std::move(*built);
  }

  TempDir dir_;
  Config config_;
  std::unique_ptr<Spool> spool_;
  std::vector<std::unique_ptr<std::string>> topics_, payloads_;
};

TEST_F(BatchBuilderTest, DecodesBinaryAndProto3Json) {
  v1::MailJob binary;
  ASSERT_TRUE(DecodeJob(Binary("x"), false, binary));
  EXPECT_EQ(binary.id(), "x");
  v1::MailJob json;
  auto decoded = DecodeJob(
      R"({"id":"j","from":{"email":"a@example.com"},"to":[{"email":"b@example.net","name":"B"}],
                          "notBefore":"2027-01-01T00:00:00Z","attachments":[{"filename":"a.txt","content":"aGk="}]})",
      true, json);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(json.to(0).name(), "B");
  EXPECT_EQ(json.not_before().seconds(), 1798761600);
  EXPECT_EQ(json.attachments(0).content(), "hi");

  v1::MailJob bad;
  auto bad_json = DecodeJob(R"({"id": "j", "colour": "red"})", true, bad);
  ASSERT_FALSE(bad_json);
  EXPECT_NE(bad_json.error().message.find("colour"), std::string::npos) << bad_json.error().message;
  EXPECT_FALSE(DecodeJob("\xff\xff\xff garbage", false, bad));
  EXPECT_FALSE(DecodeJob("", false, bad));
}

TEST_F(BatchBuilderTest, AcceptsTenantFromTopicWithRecipientsAndEvents) {
  auto built = Build({Record("mail.jobs.billing", Binary("j1"), 7)});
  ASSERT_EQ(built.batch->jobs.size(), 1u);
  const auto& job = built.batch->jobs[0];
  EXPECT_EQ(job.tenant(), "billing");
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.due_ms(), kNow);
  ASSERT_EQ(job.recipients_size(), 2);
  EXPECT_EQ(job.recipients(1).address(), "audit@example.net");
  EXPECT_EQ(job.source_offset(), 7);
  ASSERT_EQ(built.batch->events.size(), 1u);
  EXPECT_EQ(built.batch->events[0].type(), v1::ACCEPTED);
  EXPECT_EQ(built.batch->events[0].metadata().at("order"), "42");
  EXPECT_EQ(built.tally["billing"].accepted, 1u);
}

TEST_F(BatchBuilderTest, NotBeforeSetsTheDueTime) {
  v1::MailJob job;
  job.ParseFromString(Binary("later"));
  job.mutable_not_before()->set_seconds(kNow / 1000 + 3600);
  auto built = Build({Record("mail.jobs.billing", job.SerializeAsString(), 1)});
  ASSERT_EQ(built.batch->jobs.size(), 1u);
  EXPECT_EQ(built.batch->jobs[0].due_ms(), kNow + 3'600'000);
}

TEST_F(BatchBuilderTest, DropsDuplicatesInBatchAndInSpool) {
  auto first = Build({Record("mail.jobs.billing", Binary("d1"), 1)});
  ASSERT_TRUE(spool_->CommitIngest(*first.batch));
  auto built = Build(
      {Record("mail.jobs.billing", Binary("d1"), 2), Record("mail.jobs.billing", Binary("d2"), 3),
       Record("mail.jobs.billing", Binary("d2"), 4),
       Record("mail.jobs.hr", Binary("d1", "hr@example.com"), 5)});  // other tenant: distinct
  ASSERT_EQ(built.batch->jobs.size(), 2u);
  EXPECT_EQ(built.tally["billing"].duplicates, 2u);
  EXPECT_EQ(built.tally["billing"].accepted, 1u);
  EXPECT_EQ(built.tally["hr"].accepted, 1u);
}

// Binary jobs are stored as the producer sent them, JSON ones serialized:
// both read back whole, between and after rejected and duplicate records.
TEST_F(BatchBuilderTest, StoresBinaryJobsAsSentAndJsonJobsSerialized) {
  std::string sent = Binary("s1");
  auto built =
      Build({Record("mail.jobs.billing", Binary("r1", "boss@evil.example"), 1),
             Record("mail.jobs.billing", sent, 2), Record("mail.jobs.billing", sent, 3),
             Record("mail.jobs.billing",
                    R"({"id":"s2","from":{"email":"a@example.com"},"to":[{"email":"b@example.net"}],
                  "metadata":{"order":"7"}})",
                    4, /*json=*/true)});
  ASSERT_EQ(built.batch->jobs.size(), 2u);
  ASSERT_EQ(built.batch->job_bytes.size(), 2u);
  EXPECT_EQ(built.batch->job_bytes[0], sent);
  EXPECT_TRUE(built.batch->job_bytes[1].empty());
  ASSERT_TRUE(spool_->CommitIngest(*built.batch));

  auto binary = spool_->GetJob("billing", "s1");
  ASSERT_TRUE(binary && *binary);
  EXPECT_EQ((*binary)->job().SerializeAsString(), sent);
  EXPECT_EQ((*binary)->source_offset(), 2);
  EXPECT_EQ((*binary)->recipients_size(), 2);
  auto json = spool_->GetJob("billing", "s2");
  ASSERT_TRUE(json && *json);
  EXPECT_EQ((*json)->job().to(0).email(), "b@example.net");
  EXPECT_EQ((*json)->job().metadata().at("order"), "7");
  EXPECT_EQ((*json)->source_offset(), 4);
}

TEST_F(BatchBuilderTest, JobsOfABatchStillBeingWrittenAreDuplicates) {
  std::unordered_set<std::string> pending = {JobKey("billing", "w1")};
  BatchBuilder builder(config_, *spool_);
  auto built = builder.Build(
      {Record("mail.jobs.billing", Binary("w1"), 1), Record("mail.jobs.billing", Binary("w2"), 2)},
      kNow, {&pending});
  ASSERT_TRUE(built);
  ASSERT_EQ(built->batch->jobs.size(), 1u);
  EXPECT_EQ(built->batch->jobs[0].job().id(), "w2");
  EXPECT_EQ(built->job_keys, (std::unordered_set<std::string>{JobKey("billing", "w2")}));
  EXPECT_EQ(built->tally["billing"].duplicates, 1u);
}

TEST_F(BatchBuilderTest, RejectsWithReasonAndSource) {
  auto built = Build({Record("mail.jobs.billing", Binary("r1", "boss@evil.example"), 11),
                      Record("mail.jobs.billing", "\x08\x96\x01 not protobuf", 12),
                      Record("mail.jobs.billing", "{not json", 13, /*json=*/true),
                      Record("mail.jobs.unknown", Binary("r2"), 14),
                      Record("other.topic", Binary("r3"), 15)});
  EXPECT_TRUE(built.batch->jobs.empty());
  ASSERT_EQ(built.batch->events.size(), 5u);
  const auto& sender = built.batch->events[0];
  EXPECT_EQ(sender.type(), v1::REJECTED);
  EXPECT_EQ(sender.reason(), "sender_not_allowed");
  EXPECT_EQ(sender.job_id(), "r1");
  EXPECT_EQ(sender.source_topic(), "mail.jobs.billing");
  EXPECT_EQ(sender.source_partition(), 3);
  EXPECT_EQ(sender.source_offset(), 11);
  EXPECT_EQ(sender.metadata().at("order"), "42");
  EXPECT_EQ(built.batch->events[1].reason(), "undecodable");
  EXPECT_EQ(built.batch->events[2].reason(), "undecodable");
  EXPECT_EQ(built.batch->events[3].reason(), "unknown_tenant");
  EXPECT_EQ(built.batch->events[4].reason(), "invalid_topic");
  // Only records that cannot be read as jobs go to the dead-letter topic.
  ASSERT_EQ(built.dead_letters.size(), 3u);
  EXPECT_EQ(built.dead_letters[0].record_index, 1u);
  EXPECT_EQ(built.dead_letters[2].reason, "invalid_topic");
  EXPECT_EQ(built.tally["billing"].rejected["undecodable"], 2u);
}

}  // namespace
}  // namespace mailroom
