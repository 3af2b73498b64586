// Routes RocksDB's info log to spdlog. Besides keeping one log stream, this
// keeps the LOG file off the spool's filesystem: when that disk is full,
// RocksDB's file logger fails (and, built with assertions, aborts).
#pragma once

#include <rocksdb/env.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>

namespace mailroom {

class SpdlogLogger : public rocksdb::Logger {
 public:
  explicit SpdlogLogger(rocksdb::InfoLogLevel level) : rocksdb::Logger(level) {}

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override { Logv(rocksdb::INFO_LEVEL, format, ap); }

  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buf[1024];
    int n = vsnprintf(buf, sizeof buf, format, ap);
    size_t len = n < 0 ? 0 : std::min(static_cast<size_t>(n), sizeof buf - 1);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) buf[--len] = '\0';
    spdlog::log(level >= rocksdb::ERROR_LEVEL  ? spdlog::level::err
                : level >= rocksdb::WARN_LEVEL ? spdlog::level::warn
                : level >= rocksdb::INFO_LEVEL ? spdlog::level::info
                                               : spdlog::level::debug,
                "rocksdb: {}", buf);
  }
};

}  // namespace mailroom
