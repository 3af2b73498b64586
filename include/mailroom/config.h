// Mailroom's configuration: one YAML file, validated once at start-up into an
// immutable Config. Every key, its default and its meaning are documented in
// docs/configuration.md; errors name the key path and the reason.
//
// String values may reference secrets as ${ENV_VAR} or ${file:/path/to/secret}.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mailroom/result.h"

namespace mailroom {

struct KafkaConfig {
  // Bootstrap servers, "host:port[,host:port...]". Default: "127.0.0.1:9092".
  std::string brokers = "127.0.0.1:9092";
  // Consumer group shared by all Mailroom replicas. Default: "mailroom".
  std::string group_id = "mailroom";
  // Static membership (e.g. the pod name); empty disables it. Default: "".
  std::string group_instance_id;
  // Topics to consume; the tenant is the text after `topic_prefix`.
  // Default: "^mail\.jobs\..+".
  std::string topic_regex = R"(^mail\.jobs\..+)";
  // Prefix stripped from a topic name to get its tenant. Default: "mail.jobs.".
  std::string topic_prefix = "mail.jobs.";
  // Where undecodable records are copied. Default: "mail.deadletter".
  std::string deadletter_topic = "mail.deadletter";
  // Largest poll batch written as one synced WriteBatch. Default: 1000.
  int batch_max_messages = 1000;
  // Largest poll batch in payload bytes (a batch closes once it reaches
  // this), so large jobs make short synced writes. Default: 16 MiB.
  uint64_t batch_max_bytes = 16ull << 20;
  // Longest wait to fill a batch, in milliseconds. Default: 20.
  int batch_max_wait_ms = 20;
  // Consumer session timeout (ms). Default: 10000.
  int session_timeout_ms = 10000;
  // Extra librdkafka properties (security.protocol, sasl.*, ssl.*...).
  std::map<std::string, std::string> properties;
};

struct WaterMarks {
  // Queued (not finished) jobs in the spool; 0 disables.
  uint64_t queued_jobs = 0;
  // Bytes of spool data on disk (SST + blob files + memtables); 0 disables.
  uint64_t spool_bytes = 0;
  // Free bytes on the spool's filesystem; pause below high-water floor.
  uint64_t free_disk_bytes = 0;
};

struct SpoolConfig {
  // Directory of the RocksDB spool. Default: "/var/lib/mailroom/spool".
  std::string path = "/var/lib/mailroom/spool";
  // Values of at least this size go to blob files. Default: 4096.
  uint64_t blob_min_bytes = 4096;
  // Block cache size. Default: 64 MiB.
  uint64_t block_cache_bytes = 64ull << 20;
  // Ingest pauses at `high_water` and resumes once back under `low_water`.
  // Defaults: queued 1,000,000 / 900,000; spool bytes off; free disk
  // 1 GiB / 2 GiB.
  WaterMarks high_water{1'000'000, 0, 1ull << 30};
  WaterMarks low_water{900'000, 0, 2ull << 30};
};

struct EventsConfig {
  // Topic that DeliveryEvents are published to, keyed by job id.
  // Default: "mail.events".
  std::string topic = "mail.events";
  // Most events produced per publishing round. Default: 1000.
  int batch_max_events = 1000;
};

struct HttpConfig {
  // Address of the one HTTP listener (/metrics, /healthz, /readyz).
  // Default: "127.0.0.1:8080". Use "0.0.0.0:8080" in a pod.
  std::string listen = "127.0.0.1:8080";
};

struct LimitsConfig {
  // Longest accepted job id, in bytes. Default: 128.
  uint32_t max_id_length = 128;
  // Most recipients (to + cc + bcc) in one job. Default: 100.
  uint32_t max_recipients = 100;
  // Largest encoded job (bodies, attachments, raw MIME). Default: 25 MiB.
  uint64_t max_message_bytes = 25ull << 20;
};

// A rate such as "100/s" or "6000/min": at most `count` per `period_ms`,
// spread evenly (one every period_ms / count). count 0 means unlimited.
struct Rate {
  uint32_t count = 0;
  int64_t period_ms = 1000;
  std::string text;  // as written, for logs and metrics
  bool limited() const { return count > 0; }
};

// One carrier the delivery engine can send through (see docs/delivery.md).
struct CarrierConfig {
  std::string name;
  // "smtp" (a relay such as Postfix or a smarthost) or "file" (writes .eml
  // files into `directory`; development and demos).
  std::string type;
  // smtp: "smtp://host:port" (STARTTLS) or "smtps://host:port" (implicit TLS).
  std::string url;
  // smtp: "required" (default; refuse to send in clear text) or "off" (an
  // explicit opt-out, e.g. for a relay on localhost).
  std::string starttls = "required";
  // smtp: AUTH credentials; usually "${SMTP_PASSWORD}" style secrets.
  std::string username;
  std::string password;
  // smtp: name sent in EHLO. Default: the machine's host name.
  std::string ehlo_name;
  // smtp: CA bundle for the relay's certificate; empty uses the system's.
  std::string ca_file;
  // smtp: check the relay's certificate and name. Default: true.
  bool verify_tls = true;
  int64_t connect_timeout_ms = 10'000;
  // smtp: whole-transaction timeout for one message. Default: 2 min.
  int64_t timeout_ms = 120'000;
  // smtp: concurrency cap: open connections (and messages in flight).
  uint32_t max_connections = 16;
  // smtp: a connection is closed after this many messages. Default: 100.
  uint32_t max_messages_per_connection = 100;
  // smtp: a connection is not reused once this old. Default: 5 min.
  int64_t max_connection_age_ms = 300'000;
  // smtp: an idle connection is not reused after this long. Default: 30 s.
  int64_t max_idle_ms = 30'000;
  // file: directory the .eml files are written to.
  std::string directory;
  // Messages per period through this carrier. Default: unlimited.
  Rate rate;
};

struct BackoffConfig {
  // Delay before retry n: min(cap, base * factor^(n-1)), +/- jitter.
  int64_t base_ms = 60'000;  // 1 min
  double factor = 2.0;
  int64_t cap_ms = 3'600'000;  // 1 h
  double jitter = 0.1;         // +/-10 %
  // A job not finished this long after it was accepted is EXPIRED (or at
  // the job's own expires_at, whichever is sooner). Default: 2 days.
  int64_t max_age_ms = 2 * 86'400'000LL;
};

struct DeliveryConfig {
  // Carrier for tenants that do not name one. Required when carriers exist.
  std::string default_carrier;
  // How long a leased job is held before it falls due again (a crashed
  // worker's jobs come back after this). Default: 5 min.
  int64_t lease_ms = 300'000;
  // Most jobs the dispatcher holds at once (sending or waiting for a rate
  // limit). Default: 1000.
  uint32_t max_in_flight = 1000;
  BackoffConfig backoff;
  // Per recipient-domain rates, e.g. {"gmail.com": "50/s"}.
  std::map<std::string, Rate> domain_rates;
};

struct TenantConfig {
  std::string name;
  // Allowed From addresses: exact ("billing@example.com") or a whole domain
  // ("@example.com" or "example.com"). Empty: the tenant may not send at all.
  std::vector<std::string> allowed_senders;
  // Per-tenant override of limits.max_recipients; 0 keeps the global value.
  uint32_t max_recipients = 0;
  // Per-tenant override of limits.max_message_bytes; 0 keeps the global value.
  uint64_t max_message_bytes = 0;
  // Carrier for this tenant's jobs; empty uses delivery.default_carrier.
  std::string carrier;
  // Carriers a job may pick with its `carrier` field. Empty: none.
  std::vector<std::string> allowed_carriers;
  // Messages per period for this tenant. Default: unlimited.
  Rate rate;
};

struct LogConfig {
  // trace, debug, info, warn, error. Default: "info".
  std::string level = "info";
};

struct Config {
  KafkaConfig kafka;
  SpoolConfig spool;
  EventsConfig events;
  HttpConfig http;
  LimitsConfig limits;
  LogConfig log;
  DeliveryConfig delivery;
  // Carriers by name. None configured: jobs are spooled, not delivered.
  std::map<std::string, CarrierConfig> carriers;
  // Known tenants. When empty, any tenant may send from any address
  // (development only); when set, other tenants' jobs are rejected.
  std::map<std::string, TenantConfig> tenants;
};

// Parses and validates YAML text. Error messages start with the key path,
// e.g. "kafka.batch_max_messages: must be between 1 and 100000".
Result<Config> ParseConfig(const std::string& yaml_text);
Result<Config> LoadConfigFile(const std::string& path);

// "10MiB", "1GB", "4096" → bytes.
Result<uint64_t> ParseByteSize(const std::string& text);
// "500ms", "30s", "5m", "1h", "2d" → milliseconds.
Result<int64_t> ParseDurationMs(const std::string& text);
// "100/s", "6000/min", "50/h", "1000/d".
Result<Rate> ParseRate(const std::string& text);

// The carrier for a job: job.carrier when the tenant allows it, else the
// tenant's carrier, else delivery.default_carrier.
const std::string& CarrierFor(const Config& config, const std::string& tenant,
                              const std::string& job_carrier);

}  // namespace mailroom
