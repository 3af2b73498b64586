// Mailroom's one HTTP listener: /metrics (Prometheus text format), /healthz,
// /readyz. Later parts add webhooks and the admin API here.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "mailroom/health.h"
#include "mailroom/result.h"

namespace httplib {
class Server;
}
namespace prometheus {
class Registry;
}

namespace mailroom {

class HttpServer {
 public:
  // `before_scrape` refreshes gauges that are read on demand (spool stats).
  HttpServer(prometheus::Registry& registry, Health& health, std::function<void()> before_scrape);
  ~HttpServer();

  // Binds `listen` ("host:port") and serves on a background thread.
  Status Start(const std::string& listen);
  void Stop();

 private:
  prometheus::Registry& registry_;
  Health& health_;
  std::function<void()> before_scrape_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace mailroom
