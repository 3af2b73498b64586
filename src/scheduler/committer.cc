#include "scheduler/committer.h"

#include <chrono>

#include "util/thread_name.h"

namespace mailroom {

Committer::Committer(Spool& spool, std::function<void(const Status&)> on_status)
    : spool_(spool), on_status_(std::move(on_status)), thread_([this] { Loop(); }) {}

Committer::~Committer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Committer::Submit(std::vector<JobUpdate>& updates) {
  if (updates.empty()) return;
  {
    std::lock_guard lock(mu_);
    for (auto& u : updates) queue_.push_back(std::move(u));
  }
  updates.clear();
  wake_.notify_one();
}

size_t Committer::pending() const {
  std::lock_guard lock(mu_);
  return queue_.size() + writing_;
}

bool Committer::failing() const {
  std::lock_guard lock(mu_);
  return failing_;
}

bool Committer::Flush(int timeout_ms) {
  std::unique_lock lock(mu_);
  return idle_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                        [&] { return queue_.empty() && writing_ == 0; });
}

void Committer::Loop() {
  NameThisThread("mr-commit");
  auto backoff = std::chrono::milliseconds(100);
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping with nothing left
    std::vector<JobUpdate> batch;
    batch.swap(queue_);
    writing_ = batch.size();
    lock.unlock();
    Status written = spool_.CommitUpdates(batch, /*sync=*/true);
    if (!written) (void)spool_.Recover();  // a failed WAL is not written again
    lock.lock();
    writing_ = 0;
    failing_ = !written;
    // Told after pending() has dropped, so the woken loop sees the room.
    lock.unlock();
    on_status_(written);
    lock.lock();
    if (!written) {
      // Keep the outcomes, ahead of newer ones, and try again shortly.
      for (auto& u : queue_) batch.push_back(std::move(u));
      queue_.swap(batch);
      if (stop_) return;
      wake_.wait_for(lock, backoff, [&] { return stop_; });
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    } else {
      backoff = std::chrono::milliseconds(100);
      if (queue_.empty()) idle_.notify_all();
    }
  }
}

}  // namespace mailroom
