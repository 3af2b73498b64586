#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "mailroom/spool.h"
#include "support/temp_dir.h"

namespace mailroom {
namespace {

using testing_support::TempDir;

v1::JobRecord Job(const std::string& tenant, const std::string& id, int64_t due_ms) {
  v1::JobRecord r;
  r.set_tenant(tenant);
  r.mutable_job()->set_id(id);
  r.mutable_job()->set_text_body(std::string(300, 'x'));
  r.set_state(v1::JOB_STATE_QUEUED);
  r.set_due_ms(due_ms);
  return r;
}

v1::DeliveryEvent Accepted(const std::string& tenant, const std::string& id) {
  v1::DeliveryEvent e;
  e.set_tenant(tenant);
  e.set_job_id(id);
  e.set_type(v1::ACCEPTED);
  return e;
}

std::unique_ptr<Spool> OpenAt(const std::string& path, bool read_only = false) {
  SpoolConfig config;
  config.path = path;
  config.blob_min_bytes = 256;  // exercise blob files
  auto spool = Spool::Open(config, read_only);
  EXPECT_TRUE(spool) << spool.error().message;
  return spool ? std::move(*spool) : nullptr;
}

TEST(SpoolKeys, DueIndexSortsByTimeThenJob) {
  EXPECT_LT(DueKey(255, "t", "b"), DueKey(256, "t", "a"));
  EXPECT_LT(DueKey(1, "z", "z"), DueKey(2, "a", "a"));
  EXPECT_LT(DueKey(1'800'000'000'000, "t", "a"), DueKey(1'800'000'000'001, "t", "a"));
  EXPECT_LT(DueKey(5, "t", "a"), DueKey(5, "t", "b"));
  EXPECT_LT(DueKey(5, "a", "zz"), DueKey(5, "ab", "a"));  // \0 separator: tenant "a" before "ab"
  EXPECT_EQ(DueKey(-5, "t", "a"), DueKey(0, "t", "a"));
  EXPECT_EQ(JobKey("t", "id"), std::string("t\0id", 4));
  EXPECT_LT(OutboxKey(255), OutboxKey(256));
}

TEST(Spool, CommitGetContainsAndCounters) {
  TempDir dir;
  auto spool = OpenAt(dir.path());
  IngestBatch batch;
  batch.jobs.Add(Job("a", "1", 10));
  batch.jobs.Add(Job("b", "1", 20));
  batch.events.Add(Accepted("a", "1"));
  batch.events.Add(Accepted("b", "1"));
  ASSERT_TRUE(spool->CommitIngest(batch));

  auto found = spool->ContainsJobs({JobKey("a", "1"), JobKey("a", "2"), JobKey("b", "1")});
  ASSERT_TRUE(found);
  EXPECT_EQ(*found, (std::vector<bool>{true, false, true}));
  auto job = spool->GetJob("b", "1");
  ASSERT_TRUE(job && *job);
  EXPECT_EQ((*job)->job().text_body().size(), 300u);
  EXPECT_FALSE(*spool->GetJob("b", "2"));

  auto stats = spool->Stats();
  EXPECT_EQ(stats.jobs_by_state[v1::JOB_STATE_QUEUED], 2);
  EXPECT_EQ(stats.queued_jobs, 2);
  EXPECT_EQ(stats.outbox_pending, 2);

  // An ingest batch's events share one seq, read (and deleted) whole.
  auto outbox = spool->ReadOutbox(1);
  ASSERT_TRUE(outbox);
  ASSERT_EQ(outbox->size(), 2u);
  EXPECT_EQ((*outbox)[0].event.tenant(), "a");
  EXPECT_EQ((*outbox)[1].event.tenant(), "b");
  EXPECT_EQ((*outbox)[0].seq, (*outbox)[1].seq);
  EXPECT_EQ((*outbox)[1].index, 1u);
  EXPECT_EQ((*outbox)[0].count, 2u);
  IngestBatch single;
  single.events.Add(Accepted("c", "1"));
  ASSERT_TRUE(spool->CommitIngest(single));
  ASSERT_TRUE(spool->DeleteOutbox({{(*outbox)[0].seq, 2}}));
  EXPECT_EQ(spool->Stats().outbox_pending, 1);
  auto left = spool->ReadOutbox(10);
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].event.tenant(), "c");
  EXPECT_EQ((*left)[0].count, 1u);
}

TEST(Spool, SurvivesReopenAndContinuesOutboxSequence) {
  TempDir dir;
  uint64_t last_seq = 0;
  {
    auto spool = OpenAt(dir.path());
    IngestBatch batch;
    batch.jobs.Add(Job("a", "1", 10));
    batch.events.Add(Accepted("a", "1"));
    ASSERT_TRUE(spool->CommitIngest(batch));
    last_seq = (*spool->ReadOutbox(10))[0].seq;
    ASSERT_TRUE(spool->Close());
  }
  auto spool = OpenAt(dir.path());
  IngestBatch batch;
  batch.events.Add(Accepted("a", "2"));
  ASSERT_TRUE(spool->CommitIngest(batch));
  auto outbox = *spool->ReadOutbox(10);
  ASSERT_EQ(outbox.size(), 2u);
  EXPECT_GT(outbox[1].seq, last_seq);
  EXPECT_EQ(spool->Stats().queued_jobs, 1);
}

TEST(Spool, ReadOnlyOpenSeesALiveSpool) {
  TempDir dir;
  auto spool = OpenAt(dir.path());
  IngestBatch batch;
  batch.jobs.Add(Job("a", "1", 10));
  ASSERT_TRUE(spool->CommitIngest(batch));
  auto reader = OpenAt(dir.path(), /*read_only=*/true);
  ASSERT_TRUE(reader);
  EXPECT_TRUE(*reader->GetJob("a", "1"));
}

TEST(Spool, LeaseMovesDueEntries) {
  TempDir dir;
  auto spool = OpenAt(dir.path());
  IngestBatch batch;
  batch.jobs.Add(Job("t", "late", 5000));
  batch.jobs.Add(Job("t", "early", 1000));
  batch.jobs.Add(Job("t", "mid", 2000));
  ASSERT_TRUE(spool->CommitIngest(batch));
  EXPECT_EQ(**spool->NextDueMs(), 1000);

  auto leased = spool->LeaseDue(/*now_ms=*/2000, /*lease_ms=*/60000, 10);
  ASSERT_TRUE(leased);
  ASSERT_EQ(leased->size(), 2u);
  EXPECT_EQ((*leased)[0].job().id(), "early");  // due order
  EXPECT_EQ((*leased)[1].job().id(), "mid");
  EXPECT_EQ((*leased)[0].due_ms(), 62000);
  EXPECT_EQ(**spool->NextDueMs(), 5000);
  // Only the index entry moves: the stored record (and its body) is not rewritten.
  EXPECT_EQ((*spool->GetJob("t", "early"))->due_ms(), 1000);
  // A crashed lease falls due again.
  auto again = spool->LeaseDue(62000, 60000, 10);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->size(), 3u);
}

// Jobs due on acceptance share one due-index entry per batch; leasing takes
// them in order, as many as asked, and the rest stay grouped for the next
// scan. Each job's record comes from its body until an outcome stores one.
TEST(Spool, GroupedJobsLeaseInOrderAndKeepTheirRecords) {
  TempDir dir;
  auto spool = OpenAt(dir.path());
  IngestBatch batch;
  for (const char* id : {"a", "b", "c", "d", "e"}) {
    batch.jobs.Add(Job("t", id, 1000));
    batch.jobs[batch.jobs.size() - 1].set_accepted_ms(1000);
    batch.jobs[batch.jobs.size() - 1].add_recipients()->set_address(std::string(id) +
                                                                    "@example.net");
  }
  batch.jobs.Add(Job("t", "later", 3000));  // not_before: an entry of its own
  batch.jobs[batch.jobs.size() - 1].set_accepted_ms(1000);
  ASSERT_TRUE(spool->CommitIngest(batch));
  EXPECT_EQ(spool->Stats().oldest_queued_ms, 1000);
  auto c = spool->GetJob("t", "c");
  ASSERT_TRUE(c && *c);
  EXPECT_EQ((*c)->state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ((*c)->recipients(0).address(), "c@example.net");
  EXPECT_EQ((*c)->job().text_body(), std::string(300, 'x'));
  EXPECT_EQ(*spool->ContainsJobs({JobKey("t", "e"), JobKey("t", "zz")}),
            (std::vector<bool>{true, false}));

  std::string cursor;
  auto first = spool->LeaseDue(2000, 60000, 2, &cursor);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].job().id(), "a");
  EXPECT_EQ((*first)[1].job().id(), "b");
  EXPECT_EQ((*first)[0].due_ms(), 62000);
  auto rest = spool->LeaseDue(4000, 60000, 10, &cursor);
  ASSERT_TRUE(rest);
  std::vector<std::string> ids;
  for (const auto& r : *rest) ids.push_back(r.job().id());
  EXPECT_EQ(ids, (std::vector<std::string>{"c", "d", "e", "later"}));
  EXPECT_EQ(**spool->NextDueMs(), 62000);            // every one leased, each with its own entry
  EXPECT_EQ(spool->Stats().oldest_queued_ms, 1000);  // still queued

  // An outcome stores the record; it replaces the one the body carries.
  std::vector<JobUpdate> updates(1);
  updates[0].record = (*first)[0];
  updates[0].previous_state = v1::JOB_STATE_QUEUED;
  updates[0].previous_due_ms = 62000;
  updates[0].record.set_state(v1::JOB_STATE_DELIVERED);
  updates[0].record.set_attempts(1);
  ASSERT_TRUE(spool->CommitUpdates(updates, true));
  auto a = spool->GetJob("t", "a");
  ASSERT_TRUE(a && *a);
  EXPECT_EQ((*a)->state(), v1::JOB_STATE_DELIVERED);
  EXPECT_EQ((*a)->attempts(), 1u);
  EXPECT_EQ((*a)->job().text_body(), std::string(300, 'x'));
  // Crashed leases fall due again, one entry a job.
  auto again = spool->LeaseDue(70000, 60000, 10);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->size(), 5u);
}

// kill -9 a writer mid-stream: every batch is all there or not there at all,
// and the counters agree with the data.
TEST(Spool, BatchesAreAtomicAcrossKill) {
  TempDir dir;
  constexpr int kBatch = 50;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    SpoolConfig config;
    config.path = dir.path();
    auto spool = Spool::Open(config);
    if (!spool) _exit(1);
    for (int b = 0;; ++b) {
      IngestBatch batch;
      for (int i = 0; i < kBatch; ++i) {
        std::string id = std::to_string(b) + "-" + std::to_string(i);
        batch.jobs.Add(Job("t", id, b));
        batch.events.Add(Accepted("t", id));
      }
      if (!(*spool)->CommitIngest(batch)) _exit(2);
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "writer failed early with status " << status;

  auto spool = OpenAt(dir.path());
  auto stats = spool->Stats();
  ASSERT_GT(stats.queued_jobs, 0);
  EXPECT_EQ(stats.queued_jobs % kBatch, 0) << "a batch was torn";
  EXPECT_EQ(stats.outbox_pending, stats.queued_jobs);
  auto leased = spool->LeaseDue(INT64_MAX / 2, 1, 100'000'000);
  ASSERT_TRUE(leased);
  EXPECT_EQ(static_cast<int64_t>(leased->size()), stats.queued_jobs);
  auto outbox = spool->ReadOutbox(100'000'000);
  ASSERT_TRUE(outbox);
  EXPECT_EQ(static_cast<int64_t>(outbox->size()), stats.outbox_pending);
}

}  // namespace
}  // namespace mailroom
