// Transport: carriers behind one interface, driven by one libcurl multi
// handle on the dispatch thread. A carrier takes a rendered message and an
// envelope and answers, per recipient, with the server's reply.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mailroom/config.h"
#include "mailroom/outcome.h"
#include "mailroom/result.h"

typedef void CURL;
typedef void CURLM;

namespace mailroom {

struct SendRequest {
  std::string mail_from;                       // envelope sender
  std::vector<std::string> recipients;         // envelope recipients
  std::shared_ptr<const std::string> message;  // CRLF line endings
  std::string label;                           // for logs and file names: tenant/job id
};

struct SendResult {
  std::vector<Reply> replies;  // one per request recipient, same order
  double seconds = 0;          // the attempt's duration
  std::string provider_id;     // e.g. "queued as 4Xyz" text, when the carrier says
};

using SendCallback = std::function<void(SendResult)>;

// One libcurl multi handle for every carrier. Not thread-safe except Wakeup.
class CurlLoop {
 public:
  CurlLoop();
  ~CurlLoop();
  CurlLoop(const CurlLoop&) = delete;
  CurlLoop& operator=(const CurlLoop&) = delete;

  // Starts a transfer; `done` runs inside Run() with its result code.
  void Add(CURL* easy, std::function<void(int curl_code)> done);
  // Waits up to timeout_ms for socket activity or Wakeup(), drives the
  // transfers and runs the callbacks of those that finished.
  void Run(int timeout_ms);
  // Interrupts Run() from any thread.
  void Wakeup();
  // Runs `fn` on the loop's thread, inside Run(); callable from any thread.
  void Post(std::function<void()> fn);

 private:
  // Runs the callbacks of finished transfers and posted functions; returns
  // how many ran.
  size_t Reap();

  CURLM* multi_;
  std::unordered_map<CURL*, std::function<void(int)>> transfers_;
  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;  // guarded by posted_mu_
};

class Carrier {
 public:
  virtual ~Carrier() = default;
  // `done` runs on the dispatch thread, possibly before Send returns.
  virtual void Send(SendRequest request, SendCallback done) = 0;
  // Ends the carrier's own threads, if any: no callback runs after it.
  virtual void Stop() {}
  virtual size_t open_connections() const { return 0; }
  // Messages accepted by Send and not yet answered (queued or in transfer).
  virtual size_t in_flight() const = 0;
  // How many in flight keep the carrier busy. The dispatcher hands over no
  // more: each holds a rendered message, and more would not go out sooner.
  virtual size_t backlog() const { return 64; }
};

// Builds the carrier a config describes (type smtp or file).
Result<std::unique_ptr<Carrier>> MakeCarrier(const CarrierConfig& config, CurlLoop& loop);

}  // namespace mailroom
