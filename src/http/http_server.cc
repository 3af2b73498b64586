#include "http/http_server.h"

#include <httplib.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace mailroom {

HttpServer::HttpServer(prometheus::Registry& registry, Health& health,
                       std::function<void()> before_scrape)
    : registry_(registry), health_(health), before_scrape_(std::move(before_scrape)) {}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Start(const std::string& listen) {
  auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  int port = std::atoi(listen.c_str() + colon + 1);

  server_ = std::make_unique<httplib::Server>();
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    if (before_scrape_) before_scrape_();
    res.set_content(prometheus::TextSerializer().Serialize(registry_.Collect()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  server_->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    bool alive = health_.Alive(30'000);
    res.status = alive ? 200 : 503;
    res.set_content(alive ? "ok\n" : "main loop stalled for over 30 s\n", "text/plain");
  });
  server_->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    std::string reasons = health_.NotReadyReasons();
    res.status = reasons.empty() ? 200 : 503;
    res.set_content(reasons.empty() ? "ready\n" : "not ready\n" + reasons, "text/plain");
  });
  if (!server_->bind_to_port(host, port)) {
    return Fail(ErrorCode::kUnavailable, "http.listen: cannot bind " + listen);
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return {};
}

void HttpServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace mailroom
