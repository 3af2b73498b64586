// The file carrier (development and demos): each message becomes one .eml
// file, preceded by X-Mailroom-Envelope-From/-To lines naming the envelope.
// Written to a temporary name and renamed, so readers never see half a file.

#include <chrono>
#include <filesystem>
#include <fstream>

#include "transport/carriers.h"

namespace mailroom {
namespace {

std::string SafeName(std::string_view label) {
  std::string out;
  for (char c : label) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    out.push_back(ok ? c : '_');
  }
  return out.substr(0, 120);
}

class FileCarrier final : public Carrier {
 public:
  explicit FileCarrier(CarrierConfig config) : config_(std::move(config)) {}

  void Send(SendRequest request, SendCallback done) override {
    auto start = std::chrono::steady_clock::now();
    SendResult result;
    Reply reply = Write(request);
    result.replies.assign(request.recipients.size(), reply);
    if (reply.code == 250) result.provider_id = reply.text;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    done(std::move(result));
  }

  size_t in_flight() const override { return 0; }

 private:
  Reply Write(const SendRequest& request) {
    auto now = std::chrono::system_clock::now().time_since_epoch();
    std::string name =
        std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(now).count()) + "-" +
        std::to_string(counter_++) + "-" + SafeName(request.label) + ".eml";
    std::filesystem::path final_path = std::filesystem::path(config_.directory) / name;
    std::filesystem::path tmp_path = final_path;
    tmp_path += ".tmp";
    std::string head = "X-Mailroom-Envelope-From: <" + request.mail_from + ">\r\n";
    for (const auto& rcpt : request.recipients)
      head += "X-Mailroom-Envelope-To: <" + rcpt + ">\r\n";
    {
      std::ofstream out(tmp_path, std::ios::binary);
      out << head << *request.message;
      out.flush();
      if (!out) return Reply{0, "", "cannot write " + tmp_path.string()};
    }
    std::error_code ec;
    std::filesystem::rename(tmp_path, final_path, ec);
    if (ec) return Reply{0, "", "cannot rename into " + final_path.string() + ": " + ec.message()};
    return Reply{250, "2.0.0", "written " + final_path.string()};
  }

  CarrierConfig config_;
  uint64_t counter_ = 0;
};

}  // namespace

Result<std::unique_ptr<Carrier>> MakeFileCarrier(const CarrierConfig& config) {
  std::error_code ec;
  std::filesystem::create_directories(config.directory, ec);
  if (ec) {
    return Fail(ErrorCode::kIoError, "carriers." + config.name + ".directory: cannot create " +
                                         config.directory + ": " + ec.message());
  }
  return std::unique_ptr<Carrier>(new FileCarrier(config));
}

Result<std::unique_ptr<Carrier>> MakeCarrier(const CarrierConfig& config, CurlLoop& loop) {
  if (config.type == "smtp") return MakeSmtpCarrier(config, loop);
  if (config.type == "file") return MakeFileCarrier(config);
  return Fail(ErrorCode::kInvalidArgument,
              "carriers." + config.name + ".type: unknown carrier type '" + config.type + "'");
}

}  // namespace mailroom
