// A directory removed at scope exit.
#pragma once

#include <filesystem>
#include <random>
#include <string>

namespace mailroom::testing_support {

class TempDir {
 public:
  explicit TempDir(const std::string& tag = "mailroom") {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            (tag + "-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace mailroom::testing_support
