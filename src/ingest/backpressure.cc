#include "ingest/backpressure.h"

#include <sys/statvfs.h>

namespace mailroom {

std::string Backpressure::Exceeded(const SpoolLoad& load, const WaterMarks& marks) const {
  // A mark is active when the high-water value is set; the low-water value of
  // the same measure then decides resumption.
  if (high_.queued_jobs && load.queued_jobs >= marks.queued_jobs) {
    return "queued jobs " + std::to_string(load.queued_jobs) +
           " >= " + std::to_string(marks.queued_jobs);
  }
  if (high_.spool_bytes && load.spool_bytes >= marks.spool_bytes) {
    return "spool bytes " + std::to_string(load.spool_bytes) +
           " >= " + std::to_string(marks.spool_bytes);
  }
  if (high_.free_disk_bytes && load.free_disk_bytes < marks.free_disk_bytes) {
    return "free disk " + std::to_string(load.free_disk_bytes) + " < " +
           std::to_string(marks.free_disk_bytes);
  }
  return "";
}

bool Backpressure::Update(const SpoolLoad& load) {
  if (!paused_) {
    reason_ = Exceeded(load, high_);
    paused_ = !reason_.empty();
  } else {
    std::string still = Exceeded(load, low_);
    if (still.empty()) {
      paused_ = false;
      reason_.clear();
    } else {
      reason_ = still;
    }
  }
  return paused_;
}

uint64_t FreeDiskBytes(const std::string& path) {
  struct statvfs vfs {};
  if (statvfs(path.c_str(), &vfs) != 0) return UINT64_MAX;  // unknown: do not pause on it
  return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

}  // namespace mailroom
