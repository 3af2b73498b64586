#include "support/smtp_helpers.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace mailroom::testing_support {

std::string DecodeBase64(const std::string& text) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    size_t v = kAlphabet.find(c);
    if (v == std::string::npos) continue;  // padding, line breaks
    bits = (bits << 6) | static_cast<uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xff));
    }
  }
  return out;
}

bool WaitForPort(int port, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    if (ok) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

ScriptedSmtpServer::ScriptedSmtpServer(const std::string& script,
                                       std::vector<std::string> extra_args)
    : dir_("mailroom-smtp"), port_(FreePort()), extra_args_(std::move(extra_args)) {
  SetScript(script);
}

void ScriptedSmtpServer::SetScript(const std::string& script) {
  std::string tmp = dir_ / "script.json.tmp";
  std::ofstream(tmp) << script;
  std::filesystem::rename(tmp, dir_ / "script.json");
}

void ScriptedSmtpServer::Start() {
  std::vector<std::string> argv{
      "/usr/bin/python3", std::string(MAILROOM_SOURCE_DIR) + "/tests/support/smtp_server.py",
      "--port",           std::to_string(port_),
      "--record",         dir_ / "messages.jsonl",
      "--script",         dir_ / "script.json"};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  process_ = std::make_unique<Process>(argv, dir_ / "server.log");
  ASSERT_TRUE(WaitForPort(port_, 20000)) << "aiosmtpd did not start";
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(process_->Running()) << "aiosmtpd exited (port " << port_ << " taken?)";
}

void ScriptedSmtpServer::Stop() {
  if (process_) process_->Terminate();
  process_.reset();
}

std::vector<nlohmann::json> ScriptedSmtpServer::Messages() const {
  std::vector<nlohmann::json> out;
  std::ifstream in(dir_ / "messages.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

SmtpSink::SmtpSink() : dir_("mailroom-sink"), port_(FreePort()) {
  std::filesystem::create_directories(dir_ / "dump");
  chmod((dir_ / "dump").c_str(), 0777);  // smtp-sink drops privileges to nobody
  chmod(dir_.path().c_str(), 0755);
}

void SmtpSink::Start() {
  process_ = std::make_unique<Process>(
      std::vector<std::string>{"/usr/sbin/smtp-sink", "-u", "nobody", "-d", dir_ / "dump/%H%M%S.",
                               "127.0.0.1:" + std::to_string(port_), "256"},
      dir_ / "sink.log");
  ASSERT_TRUE(WaitForPort(port_, 20000)) << "smtp-sink did not start";
}

void SmtpSink::Stop() {
  if (process_) process_->Terminate();
  process_.reset();
}

std::vector<std::string> SmtpSink::Dumps() const {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ / "dump")) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    out.push_back(ss.str());
  }
  return out;
}

}  // namespace mailroom::testing_support
