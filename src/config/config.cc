#include "mailroom/config.h"
#include "util/ascii.h"

#include <yaml-cpp/yaml.h>

#include <fmt/format.h>
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

namespace mailroom {
namespace {

// Thrown only inside this file; ParseConfig turns it into an Error.
struct ConfigError {
  std::string message;
};

[[noreturn]] void Throw(const std::string& path, const std::string& why) {
  throw ConfigError{path + ": " + why};
}

// Replaces ${VAR} and ${file:/path} references in a string value.
std::string ExpandSecrets(const std::string& path, const std::string& value) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t start = value.find("${", pos);
    if (start == std::string::npos) break;
    size_t end = value.find('}', start);
    if (end == std::string::npos) Throw(path, "unterminated ${...} reference");
    out.append(value, pos, start - pos);
    std::string ref = value.substr(start + 2, end - start - 2);
    if (ref.rfind("file:", 0) == 0) {
      std::ifstream in(ref.substr(5), std::ios::binary);
      if (!in) Throw(path, "cannot read secret file '" + ref.substr(5) + "'");
      std::stringstream ss;
      ss << in.rdbuf();
      std::string secret = ss.str();
      while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
      out += secret;
    } else {
      const char* env = std::getenv(ref.c_str());
      if (env == nullptr) Throw(path, "environment variable '" + ref + "' is not set");
      out += env;
    }
    pos = end + 1;
  }
  out.append(value, pos);
  return out;
}

// A mapping node whose keys must all be known; reports the first unknown one.
class Section {
 public:
  Section(const YAML::Node& node, std::string path) : node_(node), path_(std::move(path)) {
    if (node_ && !node_.IsNull() && !node_.IsMap()) Throw(path_, "must be a mapping");
  }
  ~Section() noexcept(false) {
    if (!node_ || !node_.IsMap() || std::uncaught_exceptions() > 0) return;
    for (const auto& kv : node_) {
      auto key = kv.first.as<std::string>();
      if (!known_.count(key)) Throw(Key(key), "unknown key");
    }
  }

  std::string Key(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  YAML::Node Get(const std::string& key) {
    known_.insert(key);
    return node_ && node_.IsMap() ? node_[key] : YAML::Node();
  }

  void String(const std::string& key, std::string& out) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    if (!n.IsScalar()) Throw(Key(key), "must be a string");
    out = ExpandSecrets(Key(key), n.Scalar());
  }

  template <typename Int>
  void Integer(const std::string& key, Int& out, long long min, long long max) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    long long v = 0;
    const std::string& s = n.Scalar();
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (!n.IsScalar() || ec != std::errc() || p != s.data() + s.size()) {
      Throw(Key(key), "must be an integer, got '" + s + "'");
    }
    if (v < min || v > max) {
      Throw(Key(key), "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    out = static_cast<Int>(v);
  }

  void Bytes(const std::string& key, uint64_t& out, uint64_t min = 0) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    if (!n.IsScalar()) Throw(Key(key), "must be a size such as 512MiB");
    auto r = ParseByteSize(n.Scalar());
    if (!r) Throw(Key(key), r.error().message);
    if (*r < min) Throw(Key(key), "must be at least " + std::to_string(min) + " bytes");
    out = *r;
  }

  void Duration(const std::string& key, int64_t& out, int64_t min_ms = 0) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    if (!n.IsScalar()) Throw(Key(key), "must be a duration such as 30s");
    auto r = ParseDurationMs(n.Scalar());
    if (!r) Throw(Key(key), r.error().message);
    if (*r < min_ms) Throw(Key(key), "must be at least " + std::to_string(min_ms) + "ms");
    out = *r;
  }

  void RateValue(const std::string& key, Rate& out) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    if (!n.IsScalar()) Throw(Key(key), "must be a rate such as 100/s");
    auto r = ParseRate(n.Scalar());
    if (!r) Throw(Key(key), r.error().message);
    out = *r;
  }

  void Bool(const std::string& key, bool& out) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    const std::string& s = n.Scalar();
    if (n.IsScalar() && (s == "true" || s == "false")) {
      out = s == "true";
      return;
    }
    Throw(Key(key), "must be true or false, got '" + s + "'");
  }

  void Double(const std::string& key, double& out, double min, double max) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    const std::string& s = n.Scalar();
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (!n.IsScalar() || ec != std::errc() || p != s.data() + s.size()) {
      Throw(Key(key), "must be a number, got '" + s + "'");
    }
    if (v < min || v > max) {
      Throw(Key(key),
            "must be between " + fmt::format("{}", min) + " and " + fmt::format("{}", max));
    }
    out = v;
  }

  void StringList(const std::string& key, std::vector<std::string>& out) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    if (!n.IsSequence()) Throw(Key(key), "must be a list of strings");
    out.clear();
    for (size_t i = 0; i < n.size(); ++i) {
      std::string item_path = Key(key) + "[" + std::to_string(i) + "]";
      if (!n[i].IsScalar()) Throw(item_path, "must be a string");
      out.push_back(ExpandSecrets(item_path, n[i].Scalar()));
    }
  }

  void StringMap(const std::string& key, std::map<std::string, std::string>& out) {
    auto n = Get(key);
    if (!n || n.IsNull()) return;
    if (!n.IsMap()) Throw(Key(key), "must be a mapping of strings");
    for (const auto& kv : n) {
      auto name = kv.first.as<std::string>();
      if (!kv.second.IsScalar()) Throw(Key(key) + "." + name, "must be a string");
      out[name] = ExpandSecrets(Key(key) + "." + name, kv.second.Scalar());
    }
  }

 private:
  YAML::Node node_;
  std::string path_;
  std::set<std::string> known_;
};

void ParseWaterMarks(Section& parent, const std::string& key, WaterMarks& marks) {
  Section s(parent.Get(key), parent.Key(key));
  s.Integer("queued_jobs", marks.queued_jobs, 0, INT64_MAX);
  s.Bytes("spool_bytes", marks.spool_bytes);
  s.Bytes("free_disk_bytes", marks.free_disk_bytes);
}

void ParseCarrier(const std::string& path, const YAML::Node& node, CarrierConfig& c) {
  Section s(node, path);
  s.String("type", c.type);
  s.String("url", c.url);
  s.String("starttls", c.starttls);
  s.String("username", c.username);
  s.String("password", c.password);
  s.String("ehlo_name", c.ehlo_name);
  s.String("ca_file", c.ca_file);
  s.Bool("verify_tls", c.verify_tls);
  s.Duration("connect_timeout", c.connect_timeout_ms, 1);
  s.Duration("timeout", c.timeout_ms, 1);
  s.Integer("max_connections", c.max_connections, 1, 10000);
  s.Integer("max_messages_per_connection", c.max_messages_per_connection, 1, 1000000);
  s.Duration("max_connection_age", c.max_connection_age_ms, 1000);
  s.Duration("max_idle", c.max_idle_ms, 1000);
  s.String("directory", c.directory);
  s.RateValue("rate", c.rate);
  if (c.type == "smtp") {
    if (c.url.rfind("smtp://", 0) != 0 && c.url.rfind("smtps://", 0) != 0) {
      Throw(path + ".url", "must start with smtp:// or smtps://, got '" + c.url + "'");
    }
    if (c.starttls != "required" && c.starttls != "off") {
      Throw(path + ".starttls", "must be required or off, got '" + c.starttls + "'");
    }
    if (c.username.empty() != c.password.empty()) {
      Throw(path + (c.username.empty() ? ".username" : ".password"),
            "username and password go together");
    }
  } else if (c.type == "file") {
    if (c.directory.empty()) Throw(path + ".directory", "is required for a file carrier");
  } else {
    Throw(path + ".type", "must be smtp or file, got '" + c.type + "'");
  }
}

void ParseDelivery(Section& top, Config& c) {
  Section d(top.Get("delivery"), "delivery");
  d.String("default_carrier", c.delivery.default_carrier);
  d.Duration("lease", c.delivery.lease_ms, 1000);
  d.Integer("max_in_flight", c.delivery.max_in_flight, 1, 1000000);
  {
    Section b(d.Get("backoff"), "delivery.backoff");
    b.Duration("base", c.delivery.backoff.base_ms, 1);
    b.Double("factor", c.delivery.backoff.factor, 1.0, 100.0);
    b.Duration("cap", c.delivery.backoff.cap_ms, 1);
    b.Double("jitter", c.delivery.backoff.jitter, 0.0, 1.0);
    b.Duration("max_age", c.delivery.backoff.max_age_ms, 1000);
  }
  std::map<std::string, std::string> rates;
  d.StringMap("domain_rates", rates);
  for (const auto& [domain, text] : rates) {
    auto r = ParseRate(text);
    if (!r) Throw("delivery.domain_rates." + domain, r.error().message);
    c.delivery.domain_rates[AsciiLower(domain)] = *r;
  }

  auto carriers = top.Get("carriers");
  if (carriers && !carriers.IsNull()) {
    if (!carriers.IsMap()) Throw("carriers", "must be a mapping of carrier name to settings");
    for (const auto& kv : carriers) {
      CarrierConfig carrier;
      carrier.name = kv.first.as<std::string>();
      ParseCarrier("carriers." + carrier.name, kv.second, carrier);
      c.carriers[carrier.name] = std::move(carrier);
    }
  }
}

void ValidateDelivery(const Config& c) {
  if (c.carriers.empty()) {
    if (!c.delivery.default_carrier.empty()) {
      Throw("delivery.default_carrier", "names a carrier but no carriers are configured");
    }
    return;
  }
  if (c.delivery.default_carrier.empty()) {
    Throw("delivery.default_carrier", "is required when carriers are configured");
  }
  if (!c.carriers.count(c.delivery.default_carrier)) {
    Throw("delivery.default_carrier", "unknown carrier '" + c.delivery.default_carrier + "'");
  }
  for (const auto& [name, t] : c.tenants) {
    if (!t.carrier.empty() && !c.carriers.count(t.carrier)) {
      Throw("tenants." + name + ".carrier", "unknown carrier '" + t.carrier + "'");
    }
    for (const auto& allowed : t.allowed_carriers) {
      if (!c.carriers.count(allowed)) {
        Throw("tenants." + name + ".allowed_carriers", "unknown carrier '" + allowed + "'");
      }
    }
  }
  if (c.delivery.backoff.cap_ms < c.delivery.backoff.base_ms) {
    Throw("delivery.backoff.cap", "must not be below delivery.backoff.base");
  }
}

void Validate(const Config& c) {
  ValidateDelivery(c);
  if (c.kafka.brokers.empty()) Throw("kafka.brokers", "must not be empty");
  if (c.kafka.group_id.empty()) Throw("kafka.group_id", "must not be empty");
  if (c.kafka.topic_regex.empty() || c.kafka.topic_regex[0] != '^') {
    Throw("kafka.topic_regex",
          "must be a regex starting with '^' (librdkafka subscribes by regex)");
  }
  if (c.kafka.deadletter_topic.empty()) Throw("kafka.deadletter_topic", "must not be empty");
  if (c.events.topic.empty()) Throw("events.topic", "must not be empty");
  if (c.spool.path.empty()) Throw("spool.path", "must not be empty");
  auto check = [](const char* what, uint64_t high, uint64_t low, bool floor) {
    if (high == 0) return;
    if (floor ? low < high : low > high) {
      Throw(std::string("spool.low_water.") + what,
            floor ? "must be at least spool.high_water's value (it is a free-space floor)"
                  : "must not exceed spool.high_water's value");
    }
  };
  check("queued_jobs", c.spool.high_water.queued_jobs, c.spool.low_water.queued_jobs, false);
  check("spool_bytes", c.spool.high_water.spool_bytes, c.spool.low_water.spool_bytes, false);
  check("free_disk_bytes", c.spool.high_water.free_disk_bytes, c.spool.low_water.free_disk_bytes,
        true);
  auto colon = c.http.listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == c.http.listen.size()) {
    Throw("http.listen", "must be host:port, got '" + c.http.listen + "'");
  }
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error"};
  if (!kLevels.count(c.log.level))
    Throw("log.level", "must be one of trace, debug, info, warn, error");
}

Config ParseRoot(const YAML::Node& root) {
  Config c;
  Section top(root, "");
  {
    Section k(top.Get("kafka"), "kafka");
    k.String("brokers", c.kafka.brokers);
    k.String("group_id", c.kafka.group_id);
    k.String("group_instance_id", c.kafka.group_instance_id);
    k.String("topic_regex", c.kafka.topic_regex);
    k.String("topic_prefix", c.kafka.topic_prefix);
    k.String("deadletter_topic", c.kafka.deadletter_topic);
    k.Integer("batch_max_messages", c.kafka.batch_max_messages, 1, 100000);
    k.Bytes("batch_max_bytes", c.kafka.batch_max_bytes, 1);
    k.Integer("batch_max_wait_ms", c.kafka.batch_max_wait_ms, 0, 10000);
    k.Integer("session_timeout_ms", c.kafka.session_timeout_ms, 1000, 3600000);
    k.StringMap("properties", c.kafka.properties);
  }
  {
    Section s(top.Get("spool"), "spool");
    s.String("path", c.spool.path);
    s.Bytes("blob_min_bytes", c.spool.blob_min_bytes);
    s.Bytes("block_cache_bytes", c.spool.block_cache_bytes);
    ParseWaterMarks(s, "high_water", c.spool.high_water);
    ParseWaterMarks(s, "low_water", c.spool.low_water);
  }
  {
    Section e(top.Get("events"), "events");
    e.String("topic", c.events.topic);
    e.Integer("batch_max_events", c.events.batch_max_events, 1, 100000);
  }
  {
    Section h(top.Get("http"), "http");
    h.String("listen", c.http.listen);
  }
  {
    Section l(top.Get("limits"), "limits");
    l.Integer("max_id_length", c.limits.max_id_length, 1, 4096);
    l.Integer("max_recipients", c.limits.max_recipients, 1, 100000);
    l.Bytes("max_message_bytes", c.limits.max_message_bytes);
  }
  {
    Section g(top.Get("log"), "log");
    g.String("level", c.log.level);
  }
  ParseDelivery(top, c);
  auto tenants = top.Get("tenants");
  if (tenants && !tenants.IsNull()) {
    if (!tenants.IsMap()) Throw("tenants", "must be a mapping of tenant name to settings");
    for (const auto& kv : tenants) {
      TenantConfig t;
      t.name = kv.first.as<std::string>();
      std::string path = "tenants." + t.name;
      if (t.name.empty() || t.name.find_first_of(" \t\r\n\0", 0, 5) != std::string::npos) {
        Throw(path, "tenant names must be non-empty without whitespace");
      }
      Section s(kv.second, path);
      s.StringList("allowed_senders", t.allowed_senders);
      for (auto& sender : t.allowed_senders) {
        if (sender.empty() || sender.back() == '@') Throw(path + ".allowed_senders", "empty entry");
        for (auto& ch : sender)
          ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      }
      s.Integer("max_recipients", t.max_recipients, 0, 100000);
      s.Bytes("max_message_bytes", t.max_message_bytes);
      s.String("carrier", t.carrier);
      s.StringList("allowed_carriers", t.allowed_carriers);
      s.RateValue("rate", t.rate);
      c.tenants[t.name] = std::move(t);
    }
  }
  Validate(c);
  return c;
}

}  // namespace

Result<uint64_t> ParseByteSize(const std::string& text) {
  uint64_t value = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || p == text.data()) {
    return Fail(ErrorCode::kInvalidArgument,
                "must be a size such as 4096, 64KiB or 2GB, got '" + text + "'");
  }
  std::string unit(p, text.data() + text.size());
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  static const std::pair<const char*, uint64_t> kUnits[] = {{"", 1},
                                                            {"B", 1},
                                                            {"KB", 1000},
                                                            {"KiB", 1ull << 10},
                                                            {"MB", 1000000},
                                                            {"MiB", 1ull << 20},
                                                            {"GB", 1000000000},
                                                            {"GiB", 1ull << 30},
                                                            {"TB", 1000000000000ull},
                                                            {"TiB", 1ull << 40}};
  for (const auto& [name, mult] : kUnits) {
    if (unit == name) {
      if (value > UINT64_MAX / mult) return Fail(ErrorCode::kInvalidArgument, "size too large");
      return value * mult;
    }
  }
  return Fail(ErrorCode::kInvalidArgument,
              "unknown size unit '" + unit + "' (use B, KiB, MiB, GiB, KB, MB, GB)");
}

Result<int64_t> ParseDurationMs(const std::string& text) {
  int64_t value = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  std::string unit(p, text.data() + text.size());
  static const std::pair<const char*, int64_t> kUnits[] = {
      {"ms", 1}, {"s", 1000}, {"m", 60'000}, {"min", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}};
  if (ec == std::errc() && p != text.data() && value >= 0) {
    for (const auto& [name, mult] : kUnits) {
      if (unit == name && value <= INT64_MAX / mult) return value * mult;
    }
  }
  return Fail(ErrorCode::kInvalidArgument,
              "must be a duration such as 500ms, 30s, 5m, 1h or 2d, got '" + text + "'");
}

Result<Rate> ParseRate(const std::string& text) {
  Rate rate;
  rate.text = text;
  auto slash = text.find('/');
  auto [p, ec] = std::from_chars(text.data(), text.data() + slash, rate.count);
  std::string unit = slash == std::string::npos ? "" : text.substr(slash + 1);
  static const std::pair<const char*, int64_t> kPeriods[] = {
      {"s", 1000},         {"sec", 1000},      {"second", 1000},
      {"min", 60'000},     {"minute", 60'000}, {"h", 3'600'000},
      {"hour", 3'600'000}, {"d", 86'400'000},  {"day", 86'400'000}};
  if (slash != std::string::npos && ec == std::errc() && p == text.data() + slash &&
      rate.count > 0) {
    for (const auto& [name, ms] : kPeriods) {
      if (unit == name) {
        rate.period_ms = ms;
        return rate;
      }
    }
  }
  return Fail(ErrorCode::kInvalidArgument,
              "must be a rate such as 100/s, 6000/min or 50000/d, got '" + text + "'");
}

const std::string& CarrierFor(const Config& config, const std::string& tenant,
                              const std::string& job_carrier) {
  auto it = config.tenants.find(tenant);
  if (it != config.tenants.end()) {
    const auto& allowed = it->second.allowed_carriers;
    if (!job_carrier.empty() && std::ranges::find(allowed, job_carrier) != allowed.end()) {
      return job_carrier;
    }
    if (!it->second.carrier.empty()) return it->second.carrier;
  }
  return config.delivery.default_carrier;
}

Result<Config> ParseConfig(const std::string& yaml_text) {
  try {
    return ParseRoot(YAML::Load(yaml_text));
  } catch (const ConfigError& e) {
    return Fail(ErrorCode::kInvalidArgument, e.message);
  } catch (const YAML::Exception& e) {
    return Fail(ErrorCode::kInvalidArgument,
                "YAML syntax error at line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

Result<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(ErrorCode::kNotFound, path + ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = ParseConfig(ss.str());
  if (!config) return Fail(config.error().code, path + ": " + config.error().message);
  return config;
}

}  // namespace mailroom
