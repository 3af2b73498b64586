// mailroomctl: publish mail jobs and inspect a spool.
#include <google/protobuf/util/json_util.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <iostream>
#include <random>

#include "cli/job_from_flags.h"
#include "ingest/kafka_props.h"
#include "mailroom/spool.h"

namespace {

using mailroom::v1::JobState;

std::string RandomId() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                      std::chrono::steady_clock::now().time_since_epoch().count());
  char buf[33];
  snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(gen()),
           static_cast<unsigned long long>(gen()));
  return buf;
}

std::string ToJson(const google::protobuf::Message& m, bool pretty) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

struct SendOptions {
  std::string brokers = "127.0.0.1:9092";
  std::string tenant;
  std::string topic_prefix = "mail.jobs.";
  std::string json_file;
  bool as_json = false;
  int count = 1;
  mailroom::SendFlags job;
};

int Send(const SendOptions& o) {
  auto job =
      o.json_file.empty() ? mailroom::JobFromFlags(o.job) : mailroom::JobFromJsonFile(o.json_file);
  if (!job) {
    std::cerr << "mailroomctl send: " << job.error().message << "\n";
    return 2;
  }
  std::string base_id = job->id().empty() ? RandomId() : job->id();
  auto producer = mailroom::MakeProducer(o.brokers);
  if (!producer) {
    std::cerr << "mailroomctl send: " << producer.error().message << "\n";
    return 1;
  }
  std::string topic = o.topic_prefix + o.tenant;
  std::string payload;
  for (int i = 0; i < o.count; ++i) {
    job->set_id(o.count == 1 ? base_id : base_id + "-" + std::to_string(i + 1));
    RdKafka::Headers* headers = nullptr;
    if (o.as_json) {
      payload = ToJson(*job, false);
      headers = RdKafka::Headers::create();
      headers->add("content-type", "application/json");
    } else {
      job->SerializeToString(&payload);
    }
    while (true) {
      RdKafka::ErrorCode rc = (*producer)->produce(
          topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY, payload.data(),
          payload.size(), job->id().data(), job->id().size(), 0, headers, nullptr);
      if (rc == RdKafka::ERR_NO_ERROR) break;
      if (rc != RdKafka::ERR__QUEUE_FULL) {
        delete headers;
        std::cerr << "mailroomctl send: " << RdKafka::err2str(rc) << "\n";
        return 1;
      }
      (*producer)->poll(100);
    }
    (*producer)->poll(0);
  }
  if ((*producer)->flush(30000) != RdKafka::ERR_NO_ERROR) {
    std::cerr << "mailroomctl send: not all records were delivered to " << o.brokers
              << " within 30 s\n";
    return 1;
  }
  if (o.count == 1) {
    std::cout << "published job " << base_id << " to " << topic << "\n";
  } else {
    std::cout << "published " << o.count << " jobs " << base_id << "-1.." << base_id << "-"
              << o.count << " to " << topic << "\n";
  }
  return 0;
}

std::unique_ptr<mailroom::Spool> OpenSpool(const std::string& path) {
  mailroom::SpoolConfig config;
  config.path = path;
  auto spool = mailroom::Spool::Open(config, /*read_only=*/true);
  if (!spool) {
    std::cerr << "mailroomctl: " << spool.error().message << "\n";
    return nullptr;
  }
  return std::move(*spool);
}

int SpoolStats(const std::string& path) {
  auto spool = OpenSpool(path);
  if (!spool) return 1;
  auto stats = spool->Stats();
  nlohmann::ordered_json out;
  out["path"] = path;
  int64_t total = 0;
  for (const auto& [state, n] : stats.jobs_by_state) {
    out["jobs"][mailroom::StateLabel(state)] = n;
    total += n;
  }
  out["total_jobs"] = total;
  out["queued_jobs"] = stats.queued_jobs;
  out["outbox_pending"] = stats.outbox_pending;
  out["disk_bytes"] = stats.disk_bytes;
  std::cout << out.dump(2) << "\n";
  return 0;
}

int SpoolShow(const std::string& path, const std::string& tenant, const std::string& id) {
  auto spool = OpenSpool(path);
  if (!spool) return 1;
  auto record = spool->GetJob(tenant, id);
  if (!record) {
    std::cerr << "mailroomctl spool show: " << record.error().message << "\n";
    return 1;
  }
  if (!*record) {
    std::cerr << "mailroomctl spool show: no job '" << id << "' for tenant '" << tenant << "'\n";
    return 1;
  }
  std::cout << ToJson(**record, true);
  return 0;
}

int SpoolSuppressions(const std::string& path, const std::string& tenant, size_t limit) {
  auto spool = OpenSpool(path);
  if (!spool) return 1;
  auto entries = spool->ListSuppressions(tenant, limit);
  if (!entries) {
    std::cerr << "mailroomctl spool suppressions: " << entries.error().message << "\n";
    return 1;
  }
  for (const auto& [entry_tenant, s] : *entries) {
    std::string json = ToJson(s, false);
    std::cout << "{\"tenant\":\"" << entry_tenant << "\"," << json.substr(1) << "\n";
  }
  return 0;
}

int SpoolOutbox(const std::string& path, size_t limit) {
  auto spool = OpenSpool(path);
  if (!spool) return 1;
  auto entries = spool->ReadOutbox(limit);
  if (!entries) {
    std::cerr << "mailroomctl spool outbox: " << entries.error().message << "\n";
    return 1;
  }
  for (const auto& e : *entries) std::cout << ToJson(e.event, false) << "\n";
  return 0;
}

// Prints the events topic from its beginning as JSON lines; with `follow`,
// keeps printing new events until interrupted.
int Events(const std::string& brokers, const std::string& topic, bool follow) {
  auto conf = mailroom::MakeKafkaConf({{"bootstrap.servers", brokers},
                                       {"group.id", "mailroomctl-" + RandomId()},
                                       {"enable.auto.commit", "false"},
                                       {"enable.partition.eof", "true"}});
  std::string err;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(
      conf ? RdKafka::KafkaConsumer::create(conf->get(), err) : nullptr);
  if (!consumer) {
    std::cerr << "mailroomctl events: " << (conf ? err : conf.error().message) << "\n";
    return 1;
  }
  std::unique_ptr<RdKafka::Topic> handle(
      RdKafka::Topic::create(consumer.get(), topic, nullptr, err));
  RdKafka::Metadata* md = nullptr;
  if (!handle || consumer->metadata(false, handle.get(), &md, 10000) != RdKafka::ERR_NO_ERROR) {
    std::cerr << "mailroomctl events: no metadata for " << topic << " from " << brokers << "\n";
    return 1;
  }
  std::vector<RdKafka::TopicPartition*> parts;
  for (const auto* t : *md->topics()) {
    for (const auto* p : *t->partitions()) {
      parts.push_back(
          RdKafka::TopicPartition::create(topic, p->id(), RdKafka::Topic::OFFSET_BEGINNING));
    }
  }
  delete md;
  consumer->assign(parts);
  size_t eofs = 0;
  while (follow || eofs < parts.size()) {
    std::unique_ptr<RdKafka::Message> m(consumer->consume(1000));
    if (m->err() == RdKafka::ERR__PARTITION_EOF) {
      ++eofs;
    } else if (m->err() == RdKafka::ERR_NO_ERROR) {
      mailroom::v1::DeliveryEvent event;
      if (event.ParseFromArray(m->payload(), static_cast<int>(m->len()))) {
        std::cout << ToJson(event, false) << std::endl;
      }
    } else if (m->err() != RdKafka::ERR__TIMED_OUT) {
      std::cerr << "mailroomctl events: " << m->errstr() << "\n";
      if (parts.empty()) break;
    }
    if (parts.empty()) break;
  }
  RdKafka::TopicPartition::destroy(parts);
  consumer->close();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mailroomctl: publish mail jobs to Mailroom and inspect its spool"};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  mailroomctl send --tenant billing --from billing@example.com --to ada@example.net \\\n"
      "      --subject 'Your invoice' --text 'Thanks' --attach invoice.pdf\n"
      "  mailroomctl send --tenant billing --json job.json --as-json\n"
      "  mailroomctl spool stats --path /var/lib/mailroom/spool\n"
      "  mailroomctl events --follow\n"
      "  mailroomctl spool show --path /var/lib/mailroom/spool --tenant billing --id invoice-42\n"
      "Exit codes: 0 success; 1 failure (broker, spool, not found); 2 bad arguments or job file.");

  SendOptions send;
  auto* s = app.add_subcommand(
      "send", "Publish a MailJob to mail.jobs.<tenant>, built from flags or a JSON file");
  s->add_option("--brokers", send.brokers, "Kafka bootstrap servers")->capture_default_str();
  s->add_option("--tenant", send.tenant, "Tenant: the job goes to topic <topic-prefix><tenant>")
      ->required();
  s->add_option("--topic-prefix", send.topic_prefix, "Topic prefix")->capture_default_str();
  s->add_option("--id", send.job.id, "Job id (idempotency key); random when omitted");
  s->add_option("--from", send.job.from, "Sender, 'Name <addr>' or 'addr'");
  s->add_option("--to", send.job.to, "Recipient (repeatable)");
  s->add_option("--cc", send.job.cc, "Cc recipient (repeatable)");
  s->add_option("--bcc", send.job.bcc, "Bcc recipient (repeatable)");
  s->add_option("--reply-to", send.job.reply_to, "Reply-To address (repeatable)");
  s->add_option("--subject", send.job.subject, "Subject");
  s->add_option("--text", send.job.text, "Plain-text body");
  s->add_option("--html", send.job.html, "HTML body");
  s->add_option("--attach", send.job.attach, "Attach a file (repeatable)")
      ->check(CLI::ExistingFile);
  s->add_option("--header", send.job.headers, "Extra header 'Name: value' (repeatable)");
  s->add_option("--metadata", send.job.metadata,
                "Metadata key=value echoed in events (repeatable)");
  s->add_option("--category", send.job.categories, "Category (repeatable)");
  s->add_option("--carrier", send.job.carrier,
                "Carrier to use, if the tenant's allowed_carriers lists it");
  s->add_option("--json", send.json_file, "Read the job from a proto3 JSON file instead of flags")
      ->check(CLI::ExistingFile);
  s->add_flag("--as-json", send.as_json,
              "Publish proto3 JSON with header content-type: application/json instead of binary");
  s->add_option("--count", send.count, "Publish N copies with ids <id>-1..<id>-N")
      ->check(CLI::Range(1, 10000000));

  auto* spool = app.add_subcommand("spool", "Inspect a spool directory (safe while mailroom runs)");
  spool->require_subcommand(1);
  std::string path, tenant, id;
  size_t limit = 100;
  auto* stats = spool->add_subcommand("stats", "Print job counts by state as JSON");
  stats->add_option("--path", path, "Spool directory (spool.path)")->required();
  auto* show = spool->add_subcommand("show", "Print one job record as JSON");
  show->add_option("--path", path, "Spool directory (spool.path)")->required();
  show->add_option("--tenant", tenant, "Tenant")->required();
  show->add_option("--id", id, "Job id")->required();
  auto* outbox =
      spool->add_subcommand("outbox", "Print unpublished events, one JSON object per line");
  outbox->add_option("--path", path, "Spool directory (spool.path)")->required();
  outbox->add_option("--limit", limit, "Most events to print")->capture_default_str();

  auto* suppressions =
      spool->add_subcommand("suppressions", "Print suppressed addresses, one JSON object per line");
  suppressions->add_option("--path", path, "Spool directory (spool.path)")->required();
  suppressions->add_option("--tenant", tenant, "Only this tenant's list");
  suppressions->add_option("--limit", limit, "Most entries to print")->capture_default_str();

  std::string event_brokers = "127.0.0.1:9092", event_topic = "mail.events";
  bool follow = false;
  auto* events =
      app.add_subcommand("events", "Print delivery events from the events topic as JSON lines");
  events->add_option("--brokers", event_brokers, "Kafka bootstrap servers")->capture_default_str();
  events->add_option("--topic", event_topic, "Events topic (events.topic)")->capture_default_str();
  events->add_flag("-f,--follow", follow, "Keep printing new events until interrupted");

  CLI11_PARSE(app, argc, argv);
  if (s->parsed()) return Send(send);
  if (stats->parsed()) return SpoolStats(path);
  if (show->parsed()) return SpoolShow(path, tenant, id);
  if (outbox->parsed()) return SpoolOutbox(path, limit);
  if (suppressions->parsed()) return SpoolSuppressions(path, tenant, limit);
  if (events->parsed()) return Events(event_brokers, event_topic, follow);
  return 2;
}
