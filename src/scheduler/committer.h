// Writes delivery outcomes on a thread of its own, so the dispatch loop keeps
// the carriers busy while the WAL syncs. Whatever queued up during one sync
// goes into the next batch (group commit). A failed write is kept, the spool
// reopened, and the write retried; nothing is dropped.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "mailroom/spool.h"

namespace mailroom {

class Committer {
 public:
  // `on_status` is called (on the committer thread) with each write's result.
  Committer(Spool& spool, std::function<void(const Status&)> on_status);
  ~Committer();

  void Submit(std::vector<JobUpdate>& updates);  // takes the updates
  // Jobs whose outcome is queued or being written (not yet durable).
  size_t pending() const;
  bool failing() const;
  // Waits until everything submitted is written (or `timeout_ms` passed).
  bool Flush(int timeout_ms);

 private:
  void Loop();

  Spool& spool_;
  std::function<void(const Status&)> on_status_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::vector<JobUpdate> queue_;  // guarded by mu_
  size_t writing_ = 0;            // guarded by mu_
  bool failing_ = false;          // guarded by mu_
  bool stop_ = false;             // guarded by mu_
  std::thread thread_;
};

}  // namespace mailroom
