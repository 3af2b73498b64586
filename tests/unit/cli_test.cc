// The binaries' command lines: config checking and spool inspection.
#include <gtest/gtest.h>

#include <fstream>

#include "mailroom/spool.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace mailroom::testing_support {
namespace {

int Check(const std::string& yaml, std::string* output) {
  TempDir dir;
  std::string path = dir / "mailroom.yaml";
  std::ofstream(path) << yaml;
  return RunCommand(BinPath("mailroom") + " --check-config " + path + " 2>&1", output);
}

TEST(MailroomCli, CheckConfigAcceptsTheDemoConfig) {
  std::string out;
  EXPECT_EQ(RunCommand(BinPath("mailroom") + " --check-config " + MAILROOM_SOURCE_DIR +
                           "/config/demo.yaml",
                       &out),
            0)
      << out;
  EXPECT_NE(out.find(": ok"), std::string::npos);
}

TEST(MailroomCli, CheckConfigNamesTheBadKey) {
  std::string out;
  EXPECT_EQ(Check("spool:\n  path: /tmp/x\n  colour: red\n", &out), 2);
  EXPECT_NE(out.find("spool.colour: unknown key"), std::string::npos) << out;
  EXPECT_EQ(Check("kafka:\n  properties:\n    sasl.mechanizm: PLAIN\n", &out), 2);
  EXPECT_NE(out.find("kafka.properties.sasl.mechanizm: No such configuration property"),
            std::string::npos)
      << out;
}

TEST(MailroomctlCli, SpoolStatsAndShow) {
  TempDir dir;
  {
    SpoolConfig config;
    config.path = dir / "spool";
    auto spool = Spool::Open(config);
    ASSERT_TRUE(spool);
    IngestBatch batch;
    batch.jobs.Add();
    batch.jobs[0].set_tenant("billing");
    batch.jobs[0].mutable_job()->set_id("invoice-1");
    batch.jobs[0].set_state(v1::JOB_STATE_QUEUED);
    ASSERT_TRUE((*spool)->CommitIngest(batch));
  }
  std::string out;
  ASSERT_EQ(RunCommand(BinPath("mailroomctl") + " spool stats --path " + (dir / "spool"), &out), 0);
  EXPECT_NE(out.find("\"queued\": 1"), std::string::npos) << out;
  EXPECT_NE(out.find("\"total_jobs\": 1"), std::string::npos) << out;
  ASSERT_EQ(RunCommand(BinPath("mailroomctl") + " spool show --path " + (dir / "spool") +
                           " --tenant billing --id invoice-1",
                       &out),
            0);
  EXPECT_NE(out.find("\"id\": \"invoice-1\""), std::string::npos) << out;
  EXPECT_EQ(RunCommand(BinPath("mailroomctl") + " spool show --path " + (dir / "spool") +
                           " --tenant billing --id nope 2>&1",
                       &out),
            1);
  EXPECT_NE(out.find("no job 'nope' for tenant 'billing'"), std::string::npos) << out;
}

}  // namespace
}  // namespace mailroom::testing_support
