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

struct TenantConfig {
  std::string name;
  // Allowed From addresses: exact ("billing@example.com") or a whole domain
  // ("@example.com" or "example.com"). Empty: the tenant may not send at all.
  std::vector<std::string> allowed_senders;
  // Per-tenant override of limits.max_recipients; 0 keeps the global value.
  uint32_t max_recipients = 0;
  // Per-tenant override of limits.max_message_bytes; 0 keeps the global value.
  uint64_t max_message_bytes = 0;
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

}  // namespace mailroom
