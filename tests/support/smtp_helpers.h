// SMTP servers for integration tests, on 127.0.0.1 ports of their own: the
// scriptable aiosmtpd server (tests/support/smtp_server.py) and Postfix's
// smtp-sink.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/temp_dir.h"

namespace mailroom::testing_support {

class ScriptedSmtpServer {
 public:
  // `script`: see smtp_server.py; may be changed while the server runs.
  // `extra_args`: e.g. {"--tls-cert", path, "--tls-key", path, "--auth", "u:p"}.
  explicit ScriptedSmtpServer(const std::string& script = "{}",
                              std::vector<std::string> extra_args = {});
  void Start();  // on the same port every time
  void Stop();
  void SetScript(const std::string& script);
  int port() const { return port_; }
  // Accepted messages so far, in arrival order (see smtp_server.py).
  std::vector<nlohmann::json> Messages() const;

 private:
  TempDir dir_;
  int port_;
  std::vector<std::string> extra_args_;
  std::unique_ptr<Process> process_;
};

// Decodes a recorded message's "data_b64" (standard alphabet, padded).
std::string DecodeBase64(const std::string& text);

// Postfix's smtp-sink, dumping every transaction into a file.
class SmtpSink {
 public:
  SmtpSink();
  void Start();
  void Stop();
  int port() const { return port_; }
  std::vector<std::string> Dumps() const;  // the dump files' contents

 private:
  TempDir dir_;
  int port_;
  std::unique_ptr<Process> process_;
};

// Waits until something accepts connections on 127.0.0.1:port.
bool WaitForPort(int port, int timeout_ms);

}  // namespace mailroom::testing_support
