// mailroom: the outbound mail service. See README.md and docs/.
#include <prometheus/registry.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <atomic>
#include <iostream>
#include <thread>

#include "http/http_server.h"
#include "ingest/backpressure.h"
#include "ingest/kafka_props.h"
#include "mailroom/config.h"
#include "mailroom/dispatcher.h"
#include "mailroom/events.h"
#include "mailroom/health.h"
#include "mailroom/ingest.h"
#include "mailroom/spool.h"
#include "metrics/ingest_probe.h"

namespace {

// The YAML file, plus kafka.properties checked by librdkafka itself.
mailroom::Result<mailroom::Config> Load(const std::string& path) {
  auto config = mailroom::LoadConfigFile(path);
  if (!config) return config;
  if (auto conf = mailroom::MakeKafkaConf({}, config->kafka.properties); !conf) {
    return std::unexpected(mailroom::Error{conf.error().code, path + ": " + conf.error().message});
  }
  return config;
}

int Run(const mailroom::Config& config) {
  spdlog::set_level(spdlog::level::from_str(config.log.level));

  // SIGTERM/SIGINT are taken by a waiting thread, so the loops see a flag.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::atomic<bool> stop{false};
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("received signal {}; shutting down", sig);
    stop = true;
  });
  signal_thread.detach();

  auto spool = mailroom::Spool::Open(config.spool);
  if (!spool) {
    spdlog::critical("{}", spool.error().message);
    return 1;
  }
  prometheus::Registry registry;
  mailroom::Health health;
  mailroom::IngestProbe probe(registry);
  mailroom::HttpServer http(registry, health, [&] {
    probe.SpoolStats((*spool)->Stats(), mailroom::FreeDiskBytes(config.spool.path));
  });
  if (auto s = http.Start(config.http.listen); !s) {
    spdlog::critical("{}", s.error().message);
    return 1;
  }
  spdlog::info("mailroom {} listening on http://{} (spool {})", MAILROOM_VERSION,
               config.http.listen, config.spool.path);

  mailroom::EventPublisher events(config, **spool, registry);
  if (auto s = events.Start(); !s) {
    spdlog::critical("{}", s.error().message);
    return 1;
  }
  std::unique_ptr<mailroom::Dispatcher> dispatcher;
  if (config.carriers.empty()) {
    spdlog::warn("no carriers configured: jobs are spooled but not delivered");
  } else {
    dispatcher = std::make_unique<mailroom::Dispatcher>(config, **spool, registry, health);
    if (auto s = dispatcher->Start(); !s) {
      spdlog::critical("{}", s.error().message);
      return 1;
    }
  }
  mailroom::IngestService ingest(config, **spool, probe, health);
  if (dispatcher) ingest.OnSpooled([&](int64_t due_ms) { dispatcher->Wakeup(due_ms); });
  if (auto s = ingest.Start(); !s) {
    spdlog::critical("{}", s.error().message);
    return 1;
  }
  auto ran = ingest.Run(stop);
  if (dispatcher) dispatcher->Stop(/*drain_ms=*/10000);
  events.Stop(/*drain_ms=*/5000);
  http.Stop();
  if (auto s = (*spool)->Close(); !s) {
    spdlog::error("{}", s.error().message);
    return 1;
  }
  spdlog::info("mailroom stopped cleanly");
  return ran ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "mailroom: outbound mail service. Consumes MailJob records from Kafka topics\n"
      "mail.jobs.<tenant>, spools them durably in RocksDB and reports DeliveryEvents.\n"
      "Configuration reference: docs/configuration.md"};
  std::string config_path, check_path;
  auto* run =
      app.add_option("-c,--config", config_path, "Run the service with this YAML config file")
          ->check(CLI::ExistingFile);
  app.add_option("--check-config", check_path,
                 "Validate a config file and exit: 0 if valid, 2 naming the offending key if not")
      ->excludes(run);
  app.set_version_flag("--version", std::string("mailroom ") + MAILROOM_VERSION);
  app.footer(
      "HTTP (http.listen): /metrics (Prometheus), /healthz (liveness), /readyz (readiness).\n"
      "SIGTERM/SIGINT: finish the batch in hand, commit offsets, close the spool, exit 0.\n"
      "Exit codes: 0 clean stop; 1 runtime failure (spool, listener, Kafka setup); 2 bad\n"
      "command line or configuration (the message names the key).");
  CLI11_PARSE(app, argc, argv);

  if (!check_path.empty()) {
    auto config = Load(check_path);
    if (!config) {
      std::cerr << "invalid config: " << config.error().message << "\n";
      return 2;
    }
    std::cout << check_path << ": ok\n";
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << app.help();
    return 2;
  }
  auto config = Load(config_path);
  if (!config) {
    std::cerr << "invalid config: " << config.error().message << "\n";
    return 2;
  }
  return Run(*config);
}
