// Helpers for integration tests against the real broker (scripts/kafka.sh),
// and a Mailroom instance run as a child process.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mailroom/spool.h"
#include "mailroom/v1/mail_job.pb.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace mailroom::testing_support {

std::string Brokers();       // MAILROOM_TEST_BROKERS, default 127.0.0.1:19092
std::string UniqueSuffix();  // distinct per call and per run

v1::MailJob SampleJob(const std::string& id, size_t body_bytes = 200);

struct Record {
  std::string key;
  std::string payload;
  std::map<std::string, std::string> headers;
};

class TestProducer {
 public:
  TestProducer();
  ~TestProducer();
  void Send(const std::string& topic, const std::string& key, const std::string& payload,
            const std::map<std::string, std::string>& headers = {});
  void SendJob(const std::string& topic, const v1::MailJob& job) {
    Send(topic, job.id(), job.SerializeAsString());
  }
  void Flush();

 private:
  std::unique_ptr<RdKafka::Producer> producer_;
};

// Every record of a topic, from the beginning to the current end.
std::vector<Record> ReadTopic(const std::string& topic);

// Sum over partitions of (committed offset of `group`) and of the high watermark.
int64_t CommittedTotal(const std::string& group, const std::string& topic);
int64_t HighWatermarkTotal(const std::string& topic);

// A mailroom child process with its own spool, HTTP port, group and topics.
class MailroomUnderTest {
 public:
  struct Options {
    std::string kafka;      // extra lines in the kafka: section ("  key: value\n")
    std::string spool;      // extra lines in the spool: section
    std::string top;        // extra top-level sections (tenants:, limits:...)
    std::string spool_dir;  // default: a fresh temporary directory
  };
  explicit MailroomUnderTest(const std::string& suffix, Options options = {});
  void Start();
  int Stop() { return process_ ? process_->Terminate() : -1; }
  void Kill9() {
    if (process_) process_->Kill9();
  }
  bool Running() { return process_ && process_->Running(); }
  std::string Metrics() const { return HttpGet(http_port_, "/metrics"); }
  std::string Readyz(int* status) const { return HttpGet(http_port_, "/readyz", status); }
  // Waits until `pred` holds, polling every 100 ms; false on timeout.
  bool WaitFor(const std::function<bool()>& pred, int timeout_ms);
  std::unique_ptr<Spool> OpenSpoolReadOnly() const;
  const std::string& spool_path() const { return spool_path_; }
  const std::string& group() const { return group_; }
  void set_group(const std::string& group) { group_ = group; }  // before Start()
  std::string log() const;

 private:
  TempDir dir_;
  std::string spool_path_;
  std::string config_path_;
  std::string log_path_;
  std::string group_;
  std::string suffix_;
  Options options_;
  int http_port_;
  std::unique_ptr<Process> process_;
};

}  // namespace mailroom::testing_support
