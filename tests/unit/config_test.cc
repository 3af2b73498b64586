#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "mailroom/config.h"

namespace mailroom {
namespace {

std::string ErrorOf(const std::string& yaml) {
  auto c = ParseConfig(yaml);
  return c ? "" : c.error().message;
}

TEST(Config, EmptyFileGivesDocumentedDefaults) {
  auto c = ParseConfig("");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->kafka.brokers, "127.0.0.1:9092");
  EXPECT_EQ(c->kafka.topic_regex, R"(^mail\.jobs\..+)");
  EXPECT_EQ(c->kafka.deadletter_topic, "mail.deadletter");
  EXPECT_EQ(c->spool.path, "/var/lib/mailroom/spool");
  EXPECT_EQ(c->http.listen, "127.0.0.1:8080");
  EXPECT_EQ(c->limits.max_recipients, 100u);
  EXPECT_TRUE(c->tenants.empty());
}

TEST(Config, ParsesEveryKey) {
  auto c = ParseConfig(R"(
kafka:
  brokers: k1:9092,k2:9092
  group_id: g
  group_instance_id: pod-0
  topic_regex: ^jobs\..+
  topic_prefix: jobs.
  deadletter_topic: dlq
  batch_max_messages: 500
  batch_max_bytes: 4MiB
  batch_max_wait_ms: 5
  session_timeout_ms: 6000
  properties: {security.protocol: SASL_SSL}
spool:
  path: /data/spool
  blob_min_bytes: 8KiB
  block_cache_bytes: 128MiB
  high_water: {queued_jobs: 10, spool_bytes: 1GiB, free_disk_bytes: 100MiB}
  low_water: {queued_jobs: 5, spool_bytes: 512MiB, free_disk_bytes: 200MiB}
http: {listen: 0.0.0.0:9000}
limits: {max_id_length: 64, max_recipients: 5, max_message_bytes: 1MB}
log: {level: debug}
tenants:
  billing:
    allowed_senders: [Billing@Example.com, "@example.org"]
    max_recipients: 2
)");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->kafka.group_instance_id, "pod-0");
  EXPECT_EQ(c->kafka.batch_max_bytes, 4ull << 20);
  EXPECT_EQ(c->kafka.properties.at("security.protocol"), "SASL_SSL");
  EXPECT_EQ(c->spool.blob_min_bytes, 8192u);
  EXPECT_EQ(c->spool.high_water.spool_bytes, 1ull << 30);
  EXPECT_EQ(c->spool.low_water.free_disk_bytes, 200ull << 20);
  EXPECT_EQ(c->limits.max_message_bytes, 1000000u);
  ASSERT_EQ(c->tenants.count("billing"), 1u);
  EXPECT_EQ(c->tenants["billing"].allowed_senders[0], "billing@example.com");
  EXPECT_EQ(c->tenants["billing"].max_recipients, 2u);
}

TEST(Config, ErrorsNameTheKey) {
  EXPECT_EQ(ErrorOf("kafka:\n  brokrs: x\n"), "kafka.brokrs: unknown key");
  EXPECT_EQ(ErrorOf("kafka:\n  batch_max_messages: lots\n"),
            "kafka.batch_max_messages: must be an integer, got 'lots'");
  EXPECT_EQ(ErrorOf("kafka:\n  batch_max_messages: 0\n"),
            "kafka.batch_max_messages: must be between 1 and 100000");
  EXPECT_EQ(ErrorOf("kafka:\n  batch_max_bytes: 0\n"),
            "kafka.batch_max_bytes: must be at least 1 bytes");
  EXPECT_EQ(ErrorOf("spool:\n  block_cache_bytes: 12XB\n"),
            "spool.block_cache_bytes: unknown size unit 'XB' (use B, KiB, MiB, GiB, KB, MB, GB)");
  EXPECT_EQ(ErrorOf("http:\n  listen: nowhere\n"), "http.listen: must be host:port, got 'nowhere'");
  EXPECT_EQ(ErrorOf("tenants:\n  a:\n    allowed_senders: x\n"),
            "tenants.a.allowed_senders: must be a list of strings");
  EXPECT_EQ(ErrorOf("tenants:\n  a:\n    colour: red\n"), "tenants.a.colour: unknown key");
  EXPECT_EQ(ErrorOf("spool:\n  high_water: {queued_jobs: 10}\n  low_water: {queued_jobs: 20}\n"),
            "spool.low_water.queued_jobs: must not exceed spool.high_water's value");
  EXPECT_EQ(
      ErrorOf("kafka:\n  topic_regex: mail.jobs\n"),
      "kafka.topic_regex: must be a regex starting with '^' (librdkafka subscribes by regex)");
  EXPECT_EQ(ErrorOf("log:\n  level: loud\n"),
            "log.level: must be one of trace, debug, info, warn, error");
  EXPECT_NE(ErrorOf("kafka: [1, 2\n").find("YAML syntax error at line"), std::string::npos);
}

TEST(Config, SecretsFromEnvironmentAndFiles) {
  setenv("MAILROOM_TEST_SECRET", "hunter2", 1);
  std::string file = testing::TempDir() + "/secret.txt";
  std::ofstream(file) << "from-file\n";
  auto c = ParseConfig(
      "kafka:\n  properties:\n    sasl.password: ${MAILROOM_TEST_SECRET}\n"
      "    sasl.username: user-${file:" +
      file + "}\n");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->kafka.properties.at("sasl.password"), "hunter2");
  EXPECT_EQ(c->kafka.properties.at("sasl.username"), "user-from-file");
  EXPECT_EQ(ErrorOf("kafka:\n  brokers: ${MAILROOM_TEST_UNSET_VAR}\n"),
            "kafka.brokers: environment variable 'MAILROOM_TEST_UNSET_VAR' is not set");
}

TEST(Config, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("2KiB"), 2048u);
  EXPECT_EQ(*ParseByteSize("3 GB"), 3000000000u);
  EXPECT_FALSE(ParseByteSize("-1"));
  EXPECT_FALSE(ParseByteSize("MiB"));
}

TEST(Config, LoadFileNamesThePath) {
  auto c = LoadConfigFile("/nonexistent/mailroom.yaml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().message, "/nonexistent/mailroom.yaml: cannot open config file");
}

}  // namespace
}  // namespace mailroom
