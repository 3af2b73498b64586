// Fills a spool with N queued jobs of a given body size, as ingest would
// write them, so bench/deliver can time delivery alone.
//   spool_fill --path DIR --jobs N --bytes B [--tenant T]
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <memory>

#include "mailroom/spool.h"

int main(int argc, char** argv) {
  CLI::App app{"Fill a spool with queued jobs (benchmark helper)"};
  std::string path, tenant = "bench";
  int jobs = 10000;
  size_t bytes = 2048;
  app.add_option("--path", path)->required();
  app.add_option("--jobs", jobs);
  app.add_option("--bytes", bytes);
  app.add_option("--tenant", tenant);
  CLI11_PARSE(app, argc, argv);

  mailroom::SpoolConfig config;
  config.path = path;
  auto spool = mailroom::Spool::Open(config);
  if (!spool) {
    std::cerr << spool.error().message << "\n";
    return 1;
  }
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  // Lines of 78 characters, as in smtp-source's messages: smtp-sink's work
  // grows with the lines it parses, so both clients give it the same number.
  std::string body;
  const std::string filler =
      " of a benchmark message body, in plain ASCII text, cut to 78 characters on every line.";
  for (size_t i = 0; body.size() < bytes; ++i) {
    body += ("Line " + std::to_string(i) + filler).substr(0, 78) + "\n";
  }
  body.resize(bytes);
  auto batch = std::make_unique<mailroom::IngestBatch>();
  for (int i = 0; i < jobs; ++i) {
    mailroom::v1::JobRecord r;
    r.set_tenant(tenant);
    r.set_state(mailroom::v1::JOB_STATE_QUEUED);
    r.set_accepted_ms(now);
    r.set_due_ms(now);
    auto* job = r.mutable_job();
    job->set_id("bench-" + std::to_string(i));
    job->mutable_from()->set_email("bench@example.com");
    std::string to = "user" + std::to_string(i) + "@example.net";
    job->add_to()->set_email(to);
    job->set_subject("Benchmark message " + std::to_string(i));
    job->set_text_body(body);
    auto* rcpt = r.add_recipients();
    rcpt->set_address(to);
    rcpt->set_state(mailroom::v1::JOB_STATE_QUEUED);
    batch->jobs.Add(std::move(r));
    if (batch->jobs.size() == 1000 || i + 1 == jobs) {
      if (auto s = (*spool)->CommitIngest(*batch); !s) {
        std::cerr << s.error().message << "\n";
        return 1;
      }
      batch = std::make_unique<mailroom::IngestBatch>();
    }
  }
  return (*spool)->Close() ? 0 : 1;
}
