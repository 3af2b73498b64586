// Ingest throughput: jobs/s from Kafka into the synced spool, beside raw
// RocksDB synced WriteBatches of the same bytes on the same disk, in one run.
//   ingest_bench --brokers HOST:PORT --dir DIR [--sizes 2048,102400] [--jobs N,N]
//                [--rounds 3] [--phases raw,shaped,consume,ingest]
#include <librdkafka/rdkafka.h>
#include <prometheus/registry.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "ingest/kafka_props.h"
#include "mailroom/ingest.h"
#include "mailroom/spool.h"
#include "metrics/ingest_probe.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU time of this process, every thread (RocksDB's and librdkafka's too).
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

// A measured rate and the CPU it took, in microseconds a job.
struct Rate {
  double jobs_per_s = 0;
  double cpu_us = 0;
};

mailroom::v1::MailJob Job(const std::string& id, size_t bytes) {
  mailroom::v1::MailJob job;
  job.set_id(id);
  job.mutable_from()->set_email("app@example.com");
  job.add_to()->set_email("user@example.net");
  job.set_subject("Benchmark " + id);
  size_t base = job.ByteSizeLong() + 8;
  job.set_text_body(std::string(bytes > base ? bytes - base : 1, 'b'));
  return job;
}

// Raw RocksDB: `jobs` values of `bytes` in synced batches of `batch`. With
// `spool_shaped`, what Spool::CommitIngest writes besides: each value also
// carries a ~200-byte job record, and each batch adds a due-index group (the
// jobs' keys), an age-index group and its ~150-byte ACCEPTED events.
Rate RawRocksDb(const std::string& dir, int jobs, size_t bytes, int batch, bool spool_shaped) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(options, dir, &raw).ok()) return {};
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string value(bytes + (spool_shaped ? 200 : 0), 'v');
  rocksdb::WriteOptions wo;
  wo.sync = true;
  auto start = Clock::now();
  double cpu = CpuSeconds();
  for (int i = 0; i < jobs;) {
    rocksdb::WriteBatch wb;
    std::string keys, events;
    for (int j = 0; j < batch && i < jobs; ++j, ++i) {
      std::string key = "bench\0job-" + std::to_string(i);
      wb.Put(key, value);
      keys += key;
      events += std::string(150, 'e');
    }
    if (spool_shaped) {
      std::string group = "group-" + std::to_string(i);
      wb.Put("due" + group, keys);
      wb.Put("age" + group, "");
      wb.Put("evt" + group, events);
    }
    if (!db->Write(wo, &wb).ok()) return {};
  }
  Rate rate{jobs / Seconds(start, Clock::now()), (CpuSeconds() - cpu) * 1e6 / jobs};
  db->Close();
  std::filesystem::remove_all(dir);
  return rate;
}

bool Publish(const std::string& brokers, const std::string& topic, int jobs, size_t bytes) {
  auto producer = mailroom::MakeProducer(brokers, {{"linger.ms", "50"}, {"batch.size", "1000000"}});
  if (!producer) return false;
  std::string payload;
  for (int i = 0; i < jobs; ++i) {
    Job("job-" + std::to_string(i), bytes).SerializeToString(&payload);
    while ((*producer)->produce(topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
                                payload.data(), payload.size(), nullptr, 0, 0, nullptr,
                                nullptr) == RdKafka::ERR__QUEUE_FULL) {
      (*producer)->poll(10);
    }
  }
  return (*producer)->flush(120000) == RdKafka::ERR_NO_ERROR;
}

// Deletes a round's topic, so the broker's disk does not fill run after run.
void DeleteTopic(const std::string& brokers, const std::string& topic) {
  auto producer = mailroom::MakeProducer(brokers, {});
  if (!producer) return;
  rd_kafka_t* rk = (*producer)->c_ptr();
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_DeleteTopic_t* del = rd_kafka_DeleteTopic_new(topic.c_str());
  rd_kafka_DeleteTopics(rk, &del, 1, nullptr, queue);
  if (rd_kafka_event_t* done = rd_kafka_queue_poll(queue, 30000)) rd_kafka_event_destroy(done);
  rd_kafka_DeleteTopic_destroy(del);
  rd_kafka_queue_destroy(queue);
}

// The ceiling Kafka sets on this machine: a bare consumer with ingest's fetch
// settings, reading the same topic and doing nothing with the records.
double ConsumeOnly(const std::string& brokers, const std::string& tag, int jobs) {
  mailroom::KafkaConfig kafka;
  kafka.brokers = brokers;
  kafka.group_id = "bench-consume-" + tag;
  auto conf = mailroom::MakeKafkaConf(mailroom::IngestConsumerProps(kafka));
  if (!conf) return 0;
  std::string err;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(
      RdKafka::KafkaConsumer::create(conf->get(), err));
  if (!consumer || consumer->subscribe({"mail.jobs.bench" + tag}) != RdKafka::ERR_NO_ERROR) {
    return 0;
  }
  Clock::time_point first{};
  int seen = 0;
  size_t bytes = 0;
  auto deadline = Clock::now() + std::chrono::minutes(5);
  while (seen < jobs && Clock::now() < deadline) {
    std::unique_ptr<RdKafka::Message> msg(consumer->consume(100));
    if (msg->err() != RdKafka::ERR_NO_ERROR) continue;
    if (seen++ == 0) first = Clock::now();
    bytes += msg->len();
  }
  auto end = Clock::now();
  consumer->close();
  return seen < jobs || bytes == 0 ? 0 : (jobs - 1) / Seconds(first, end);
}

// Mailroom ingest: time from the first spooled job to the last.
Rate Ingest(const std::string& brokers, const std::string& dir, const std::string& tag, int jobs) {
  std::filesystem::remove_all(dir);
  mailroom::Config config;
  config.kafka.brokers = brokers;
  config.kafka.group_id = "bench-" + tag;
  config.kafka.topic_regex = "^mail\\.jobs\\.bench" + tag + "$";
  config.spool.path = dir;
  config.spool.high_water = config.spool.low_water = {};
  auto spool = mailroom::Spool::Open(config.spool);
  if (!spool) return {};
  prometheus::Registry registry;
  mailroom::IngestProbe probe(registry);
  mailroom::Health health;
  mailroom::IngestService ingest(config, **spool, probe, health);
  if (!ingest.Start()) return {};
  std::atomic<bool> stop{false};
  std::thread runner([&] { (void)ingest.Run(stop); });
  Clock::time_point first{};
  int64_t at_first = 0;
  double cpu = 0;
  auto deadline = Clock::now() + std::chrono::minutes(5);
  while (Clock::now() < deadline) {
    int64_t n = (*spool)->Stats().queued_jobs;
    if (n > 0 && at_first == 0) {
      first = Clock::now();
      cpu = CpuSeconds();
      at_first = n;
    }
    if (n >= jobs) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto end = Clock::now();
  cpu = CpuSeconds() - cpu;
  int64_t done = (*spool)->Stats().queued_jobs;
  stop = true;
  runner.join();
  (void)(*spool)->Close();
  std::filesystem::remove_all(dir);
  if (done < jobs) return {};
  return {(jobs - at_first) / Seconds(first, end),
          cpu * 1e6 / static_cast<double>(jobs - at_first)};
}

std::vector<long> ParseList(const std::string& s) {
  std::vector<long> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    out.push_back(std::stol(s.substr(pos, comma - pos)));
    pos = comma == std::string::npos ? s.size() : comma + 1;
  }
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// The median rate, and the CPU of the run that measured it.
Rate Median(std::vector<Rate> v) {
  std::sort(v.begin(), v.end(),
            [](const Rate& a, const Rate& b) { return a.jobs_per_s < b.jobs_per_s; });
  return v.empty() ? Rate{} : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string brokers = "127.0.0.1:9092", dir = "/tmp/mailroom-bench";
  std::vector<long> sizes = {2048, 102400}, counts = {100000, 3000};
  int rounds = 3;
  std::string phases = "raw,shaped,consume,ingest";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--brokers") brokers = argv[i + 1];
    if (flag == "--dir") dir = argv[i + 1];
    if (flag == "--sizes") sizes = ParseList(argv[i + 1]);
    if (flag == "--jobs") counts = ParseList(argv[i + 1]);
    if (flag == "--rounds") rounds = std::stoi(argv[i + 1]);
    if (flag == "--phases") phases = argv[i + 1];
  }
  spdlog::set_level(spdlog::level::warn);
  std::string tag =
      std::to_string(std::chrono::system_clock::now().time_since_epoch().count() % 1000000);
  std::printf(
      "Medians of %d rounds; batches of 1000 jobs (kafka.batch_max_messages), WAL synced.\n\n",
      rounds);
  std::printf(
      "| job size | jobs | raw RocksDB, same job bytes (jobs/s) | raw RocksDB, spool's write set "
      "(jobs/s) | Kafka consumer alone (jobs/s) "
      "| Kafka → mailroom spool (jobs/s) | ingest / raw | ingest / raw write set "
      "| ingest / Kafka alone | CPU µs/job: raw, ingest |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < sizes.size(); ++i) {
    int jobs = static_cast<int>(counts[std::min(i, counts.size() - 1)]);
    size_t bytes = static_cast<size_t>(sizes[i]);
    std::vector<Rate> raw, shaped, ingest;
    std::vector<double> consume;
    for (int r = 0; r < rounds; ++r) {
      std::string topic_tag = tag + "s" + std::to_string(bytes) + "r" + std::to_string(r);
      if (!Publish(brokers, "mail.jobs.bench" + topic_tag, jobs, bytes)) {
        std::fprintf(stderr, "publishing to %s failed\n", brokers.c_str());
        return 1;
      }
      // Every run starts on a quiet disk: the broker's new log segments are
      // written back first, so no run pays for another's writes.
      sync();
      auto on = [&](const char* phase) { return phases.find(phase) != std::string::npos; };
      if (on("raw")) raw.push_back(RawRocksDb(dir + "/raw", jobs, bytes, 1000, false));
      sync();
      if (on("shaped")) shaped.push_back(RawRocksDb(dir + "/raw", jobs, bytes, 1000, true));
      sync();
      if (on("consume")) consume.push_back(ConsumeOnly(brokers, topic_tag, jobs));
      if (on("ingest")) ingest.push_back(Ingest(brokers, dir + "/spool", topic_tag, jobs));
      DeleteTopic(brokers, "mail.jobs.bench" + topic_tag);
      sync();
    }
    Rate m_raw = Median(raw), m_shaped = Median(shaped), m_ingest = Median(ingest);
    double m_consume = Median(consume);
    auto pct = [](double a, double b) { return b > 0 ? 100 * a / b : 0; };
    std::printf(
        "| %zu B | %d | %.0f | %.0f | %.0f | %.0f | %.0f %% | %.0f %% | %.0f %% | %.1f, %.1f |\n",
        bytes, jobs, m_raw.jobs_per_s, m_shaped.jobs_per_s, m_consume, m_ingest.jobs_per_s,
        pct(m_ingest.jobs_per_s, m_raw.jobs_per_s), pct(m_ingest.jobs_per_s, m_shaped.jobs_per_s),
        pct(m_ingest.jobs_per_s, m_consume), m_raw.cpu_us, m_ingest.cpu_us);
    std::fflush(stdout);
  }
  return 0;
}
