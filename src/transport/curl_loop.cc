#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "mailroom/transport.h"

namespace mailroom {

CurlLoop::CurlLoop() {
  static const bool initialized = [] { return curl_global_init(CURL_GLOBAL_ALL) == CURLE_OK; }();
  (void)initialized;
  multi_ = curl_multi_init();
}

CurlLoop::~CurlLoop() {
  for (auto& [easy, done] : transfers_) curl_multi_remove_handle(multi_, easy);
  curl_multi_cleanup(multi_);
}

void CurlLoop::Add(CURL* easy, std::function<void(int)> done) {
  transfers_[easy] = std::move(done);
  CURLMcode rc = curl_multi_add_handle(multi_, easy);
  if (rc != CURLM_OK) {
    auto callback = std::move(transfers_[easy]);
    transfers_.erase(easy);
    callback(CURLE_FAILED_INIT);
  }
}

void CurlLoop::Run(int timeout_ms) {
  int running = 0;
  curl_multi_perform(multi_, &running);
  // What just finished (or was posted) frees room for the caller's next
  // jobs: hand it back before sleeping, which would otherwise wait for
  // activity on the other sockets, or the whole timeout when none are left.
  if (Reap() > 0) return;
  // libcurl's own timers (a transfer to start, a timeout) may be due sooner.
  long curl_timeout = -1;
  curl_multi_timeout(multi_, &curl_timeout);
  if (curl_timeout >= 0) timeout_ms = std::min<long>(timeout_ms, curl_timeout);
  if (timeout_ms > 0) curl_multi_poll(multi_, nullptr, 0, timeout_ms, nullptr);
  curl_multi_perform(multi_, &running);
  Reap();
}

size_t CurlLoop::Reap() {
  size_t finished = 0;
  int queued = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    CURLcode code = msg->data.result;
    curl_multi_remove_handle(multi_, easy);
    auto it = transfers_.find(easy);
    if (it == transfers_.end()) continue;
    auto done = std::move(it->second);
    transfers_.erase(it);
    ++finished;
    done(code);  // may Add() the same handle again
  }
  std::vector<std::function<void()>> posted;
  {
    std::lock_guard lock(posted_mu_);
    posted.swap(posted_);
  }
  for (auto& fn : posted) fn();
  return finished + posted.size();
}

void CurlLoop::Post(std::function<void()> fn) {
  bool first;
  {
    std::lock_guard lock(posted_mu_);
    first = posted_.empty();
    posted_.push_back(std::move(fn));
  }
  // Once is enough: the loop has not yet taken the ones before this.
  if (first) Wakeup();
}

void CurlLoop::Wakeup() { curl_multi_wakeup(multi_); }

}  // namespace mailroom
