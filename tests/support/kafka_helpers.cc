#include "support/kafka_helpers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "ingest/kafka_props.h"

namespace mailroom::testing_support {
namespace {

std::unique_ptr<RdKafka::KafkaConsumer> Consumer(const std::string& group, bool eof) {
  auto conf = MakeKafkaConf({{"bootstrap.servers", Brokers()},
                             {"group.id", group},
                             {"enable.auto.commit", "false"},
                             {"enable.partition.eof", eof ? "true" : "false"},
                             {"auto.offset.reset", "earliest"}});
  std::string err;
  std::unique_ptr<RdKafka::KafkaConsumer> c(RdKafka::KafkaConsumer::create(conf->get(), err));
  EXPECT_TRUE(c) << err;
  return c;
}

std::vector<RdKafka::TopicPartition*> Partitions(RdKafka::KafkaConsumer& c,
                                                 const std::string& topic) {
  std::string err;
  std::unique_ptr<RdKafka::Topic> t(RdKafka::Topic::create(&c, topic, nullptr, err));
  RdKafka::Metadata* md = nullptr;
  std::vector<RdKafka::TopicPartition*> parts;
  if (c.metadata(false, t.get(), &md, 10000) != RdKafka::ERR_NO_ERROR) return parts;
  for (const auto* tm : *md->topics()) {
    for (const auto* pm : *tm->partitions()) {
      parts.push_back(
          RdKafka::TopicPartition::create(topic, pm->id(), RdKafka::Topic::OFFSET_BEGINNING));
    }
  }
  delete md;
  return parts;
}

}  // namespace

std::string Brokers() {
  const char* b = std::getenv("MAILROOM_TEST_BROKERS");
  return b ? b : "127.0.0.1:19092";
}

std::string UniqueSuffix() {
  static std::atomic<int> counter{0};
  std::random_device rd;
  return std::to_string(rd() % 1000000) + "x" + std::to_string(counter++);
}

v1::MailJob SampleJob(const std::string& id, size_t body_bytes) {
  v1::MailJob job;
  job.set_id(id);
  job.mutable_from()->set_email("app@example.com");
  job.mutable_from()->set_name("App");
  job.add_to()->set_email("user-" + id + "@example.net");
  job.set_subject("Job " + id);
  job.set_text_body(std::string(body_bytes, 'm'));
  return job;
}

TestProducer::TestProducer() {
  auto p = MakeProducer(Brokers(), {{"linger.ms", "20"}});
  EXPECT_TRUE(p) << p.error().message;
  producer_ = std::move(*p);
}

TestProducer::~TestProducer() { Flush(); }

void TestProducer::Send(const std::string& topic, const std::string& key,
                        const std::string& payload,
                        const std::map<std::string, std::string>& headers) {
  RdKafka::Headers* h = nullptr;
  if (!headers.empty()) {
    h = RdKafka::Headers::create();
    for (const auto& [k, v] : headers) h->add(k, v);
  }
  while (true) {
    auto rc = producer_->produce(topic, RdKafka::Topic::PARTITION_UA,
                                 RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(payload.data()),
                                 payload.size(), key.data(), key.size(), 0, h, nullptr);
    if (rc == RdKafka::ERR_NO_ERROR) return;
    ASSERT_EQ(rc, RdKafka::ERR__QUEUE_FULL) << RdKafka::err2str(rc);
    producer_->poll(50);
  }
}

void TestProducer::Flush() { ASSERT_EQ(producer_->flush(60000), RdKafka::ERR_NO_ERROR); }

std::vector<Record> ReadTopic(const std::string& topic) {
  auto c = Consumer("reader-" + UniqueSuffix(), true);
  auto parts = Partitions(*c, topic);
  std::vector<Record> out;
  if (parts.empty()) return out;
  c->assign(parts);
  size_t eofs = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (eofs < parts.size() && std::chrono::steady_clock::now() < deadline) {
    std::unique_ptr<RdKafka::Message> m(c->consume(500));
    if (m->err() == RdKafka::ERR__PARTITION_EOF) {
      ++eofs;
    } else if (m->err() == RdKafka::ERR_NO_ERROR) {
      Record r;
      if (m->key()) r.key = *m->key();
      r.payload.assign(static_cast<const char*>(m->payload()), m->len());
      if (m->headers()) {
        for (const auto& h : m->headers()->get_all()) {
          r.headers[h.key()] = std::string(static_cast<const char*>(h.value()), h.value_size());
        }
      }
      out.push_back(std::move(r));
    }
  }
  RdKafka::TopicPartition::destroy(parts);
  c->close();
  return out;
}

int64_t CommittedTotal(const std::string& group, const std::string& topic) {
  auto c = Consumer(group, false);
  auto parts = Partitions(*c, topic);
  int64_t total = 0;
  if (c->committed(parts, 10000) == RdKafka::ERR_NO_ERROR) {
    for (auto* p : parts) total += std::max<int64_t>(0, p->offset());
  }
  RdKafka::TopicPartition::destroy(parts);
  c->close();
  return total;
}

int64_t HighWatermarkTotal(const std::string& topic) {
  auto c = Consumer("hw-" + UniqueSuffix(), false);
  auto parts = Partitions(*c, topic);
  int64_t total = 0;
  for (auto* p : parts) {
    int64_t low = 0, high = 0;
    if (c->query_watermark_offsets(topic, p->partition(), &low, &high, 10000) ==
        RdKafka::ERR_NO_ERROR) {
      total += high;
    }
  }
  RdKafka::TopicPartition::destroy(parts);
  c->close();
  return total;
}

MailroomUnderTest::MailroomUnderTest(const std::string& suffix, Options options)
    : dir_("mailroom-it"), options_(std::move(options)) {
  spool_path_ = options_.spool_dir.empty() ? dir_ / "spool" : options_.spool_dir;
  config_path_ = dir_ / "mailroom.yaml";
  log_path_ = dir_ / "mailroom.log";
  group_ = "mailroom-it-" + suffix;
  http_port_ = FreePort();
  suffix_ = suffix;
}

void MailroomUnderTest::Start() {
  std::ofstream out(config_path_);
  const std::string& suffix = suffix_;
  out << "kafka:\n"
      << "  brokers: " << Brokers() << "\n"
      << "  group_id: " << group_ << "\n"
      << "  topic_regex: ^mail\\.jobs\\..*-" << suffix << "$\n"
      << "  deadletter_topic: mail.deadletter-" << suffix << "\n"
      << "  session_timeout_ms: 6000\n"
      << options_.kafka << "spool:\n  path: " << spool_path_ << "\n"
      << options_.spool << "events:\n  topic: mail.events-" << suffix << "\n"
      << "http:\n  listen: 127.0.0.1:" << http_port_ << "\n"
      << options_.top;
  out.close();
  process_ = std::make_unique<Process>(
      std::vector<std::string>{BinPath("mailroom"), "--config", config_path_}, log_path_);
  ASSERT_TRUE(WaitFor(
      [&] {
        int status = 0;
        HttpGet(http_port_, "/healthz", &status);
        return status == 200;
      },
      20000))
      << log();
}

bool MailroomUnderTest::WaitFor(const std::function<bool()>& pred, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

std::unique_ptr<Spool> MailroomUnderTest::OpenSpoolReadOnly() const {
  SpoolConfig config;
  config.path = spool_path_;
  auto spool = Spool::Open(config, true);
  return spool ? std::move(*spool) : nullptr;
}

std::string MailroomUnderTest::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > 6000 ? "..." + s.substr(s.size() - 6000) : s;
}

}  // namespace mailroom::testing_support
