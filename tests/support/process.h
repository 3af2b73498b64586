// Child processes for integration tests: the mailroom binary and tools.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace mailroom::testing_support {

class Process {
 public:
  // Starts argv[0] (a path) with stdout and stderr appended to `log_path`.
  Process(std::vector<std::string> argv, const std::string& log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  void Kill9();
  // SIGTERM and wait; returns the exit status (-1 if it had to be killed).
  int Terminate(int timeout_ms = 30000);

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

// Runs a command to completion; returns its exit code and stdout.
int RunCommand(const std::string& command, std::string* output = nullptr);

std::string BinPath(const std::string& name);  // a binary of this build

// Blocking HTTP GET on 127.0.0.1; returns the body (status into *status).
std::string HttpGet(int port, const std::string& path, int* status = nullptr);

// The value of a metric sample, e.g. Metric(text, "mailroom_ingest_accepted_total{tenant=\"a\"}").
double Metric(const std::string& metrics_text, const std::string& sample);

int FreePort();

}  // namespace mailroom::testing_support
