// The spool's filesystem fills up: ingest pauses without committing offsets,
// loses nothing, and resumes once space is freed.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "ingest/backpressure.h"
#include "support/kafka_helpers.h"

namespace mailroom::testing_support {
namespace {

class SmallFilesystem {
 public:
  explicit SmallFilesystem(const std::string& path) : path_(path) {
    mounted_ = mount("tmpfs", path.c_str(), "tmpfs", 0, "size=48m") == 0;
  }
  ~SmallFilesystem() {
    if (mounted_) umount2(path_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }

 private:
  std::string path_;
  bool mounted_ = false;
};

// Writes a file until only about `leave_free` bytes remain.
void Fill(const std::string& file, uint64_t leave_free) {
  std::ofstream out(file, std::ios::binary);
  std::string chunk(1 << 20, 'f');
  std::string dir = std::filesystem::path(file).parent_path();
  while (FreeDiskBytes(dir) > leave_free + chunk.size()) {
    out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    out.flush();
  }
}

TEST(DiskFullIntegration, IngestPausesWithoutCommittingAndResumesWhenSpaceIsFreed) {
  TempDir mount_point("mailroom-small");
  SmallFilesystem fs(mount_point.path());
  if (!fs.mounted()) GTEST_SKIP() << "needs root (CAP_SYS_ADMIN) to mount a 48 MiB tmpfs";

  std::string s = UniqueSuffix();
  const std::string topic = "mail.jobs.t-" + s;
  constexpr int kJobs = 300;  // 100 KiB each: ~30 MiB, far more than will fit
  // The free-disk floor is off so that the disk really fills.
  MailroomUnderTest mailroom(s, {.kafka = "  batch_max_messages: 20\n",
                                 .spool = "  high_water: {free_disk_bytes: 0}\n"
                                          "  low_water: {free_disk_bytes: 0}\n",
                                 .spool_dir = mount_point / "spool"});
  mailroom.Start();
  std::string filler = mount_point / "filler";
  Fill(filler, 6 << 20);
  {
    TestProducer producer;
    std::mt19937 rng(42);
    for (int i = 0; i < kJobs; ++i) {
      // Random bodies: compression must not make room on the full disk.
      v1::MailJob job = SampleJob("big-" + std::to_string(i), 0);
      std::string body(100 << 10, ' ');
      for (auto& c : body) c = static_cast<char>('a' + rng() % 26);
      job.set_text_body(body);
      producer.SendJob(topic, job);
    }
  }
  ASSERT_TRUE(mailroom.WaitFor(
      [&] { return Metric(mailroom.Metrics(), "mailroom_ingest_spool_write_errors_total") > 0; },
      60000))
      << mailroom.log();
  int status = 0;
  std::string readyz = mailroom.Readyz(&status);
  EXPECT_EQ(status, 503);
  EXPECT_NE(readyz.find("spool: write failing"), std::string::npos) << readyz;
  EXPECT_EQ(Metric(mailroom.Metrics(), "mailroom_ingest_backpressure"), 1);
  // Give auto-commit time to run: offsets must not move past what is spooled.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  int64_t committed = CommittedTotal(mailroom.group(), topic);
  double spooled = Metric(mailroom.Metrics(), "mailroom_spool_jobs{state=\"queued\"}");
  EXPECT_LT(committed, kJobs);
  EXPECT_LE(committed, static_cast<int64_t>(spooled)) << mailroom.log();
  ASSERT_TRUE(mailroom.Running()) << mailroom.log();

  std::filesystem::remove(filler);
  ASSERT_TRUE(mailroom.WaitFor(
      [&] { return Metric(mailroom.Metrics(), "mailroom_spool_jobs{state=\"queued\"}") == kJobs; },
      120000))
      << mailroom.log();
  ASSERT_TRUE(mailroom.WaitFor(
      [&] {
        int st = 0;
        mailroom.Readyz(&st);
        return st == 200;
      },
      10000));
  ASSERT_TRUE(
      mailroom.WaitFor([&] { return CommittedTotal(mailroom.group(), topic) == kJobs; }, 30000));
  ASSERT_EQ(mailroom.Stop(), 0) << mailroom.log();

  auto spool = mailroom.OpenSpoolReadOnly();
  ASSERT_TRUE(spool);
  for (int i = 0; i < kJobs; ++i) {
    auto job = spool->GetJob("t-" + s, "big-" + std::to_string(i));
    ASSERT_TRUE(job && *job) << "missing big-" << i;
  }
}

}  // namespace
}  // namespace mailroom::testing_support
