// Decides when ingest pauses its partitions: past a high-water mark (queued
// jobs, spool bytes, or free disk under a floor) it pauses; it resumes only
// once every measure is back within its low-water mark (hysteresis).
#pragma once

#include <cstdint>
#include <string>

#include "mailroom/config.h"

namespace mailroom {

struct SpoolLoad {
  uint64_t queued_jobs = 0;
  uint64_t spool_bytes = 0;
  uint64_t free_disk_bytes = 0;
};

class Backpressure {
 public:
  Backpressure(const WaterMarks& high, const WaterMarks& low) : high_(high), low_(low) {}

  // Returns true when ingest should be paused after seeing `load`.
  bool Update(const SpoolLoad& load);
  bool paused() const { return paused_; }
  const std::string& reason() const { return reason_; }  // why paused

 private:
  std::string Exceeded(const SpoolLoad& load, const WaterMarks& marks) const;

  WaterMarks high_;
  WaterMarks low_;
  bool paused_ = false;
  std::string reason_;
};

// Free bytes available to an unprivileged writer on the filesystem of `path`.
uint64_t FreeDiskBytes(const std::string& path);

}  // namespace mailroom
