#include "cli/job_from_flags.h"

#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace mailroom {
namespace {

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(ErrorCode::kNotFound, path + ": cannot read");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string GuessContentType(const std::string& path) {
  static const std::map<std::string, std::string> kTypes = {
      {".pdf", "application/pdf"}, {".txt", "text/plain"},   {".html", "text/html"},
      {".csv", "text/csv"},        {".png", "image/png"},    {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},     {".gif", "image/gif"},    {".json", "application/json"},
      {".zip", "application/zip"}, {".ics", "text/calendar"}};
  auto it = kTypes.find(std::filesystem::path(path).extension().string());
  return it == kTypes.end() ? "application/octet-stream" : it->second;
}

std::string Trim(std::string s) {
  auto b = s.find_first_not_of(" \t");
  auto e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

v1::Address ParseAddress(const std::string& text) {
  v1::Address a;
  auto lt = text.rfind('<');
  auto gt = text.rfind('>');
  if (lt != std::string::npos && gt != std::string::npos && gt > lt) {
    a.set_email(Trim(text.substr(lt + 1, gt - lt - 1)));
    std::string name = Trim(text.substr(0, lt));
    if (name.size() >= 2 && name.front() == '"' && name.back() == '"') {
      name = name.substr(1, name.size() - 2);
    }
    a.set_name(name);
  } else {
    a.set_email(Trim(text));
  }
  return a;
}

Result<v1::MailJob> JobFromFlags(const SendFlags& f) {
  v1::MailJob job;
  job.set_id(f.id);
  if (!f.from.empty()) *job.mutable_from() = ParseAddress(f.from);
  for (const auto& t : f.to) *job.add_to() = ParseAddress(t);
  for (const auto& t : f.cc) *job.add_cc() = ParseAddress(t);
  for (const auto& t : f.bcc) *job.add_bcc() = ParseAddress(t);
  for (const auto& t : f.reply_to) *job.add_reply_to() = ParseAddress(t);
  job.set_subject(f.subject);
  job.set_text_body(f.text);
  job.set_html_body(f.html);
  for (const auto& path : f.attach) {
    auto content = ReadFile(path);
    if (!content) return std::unexpected(content.error());
    auto* a = job.add_attachments();
    a->set_filename(std::filesystem::path(path).filename().string());
    a->set_content_type(GuessContentType(path));
    a->set_content(std::move(*content));
  }
  for (const auto& h : f.headers) {
    auto colon = h.find(':');
    if (colon == std::string::npos) {
      return Fail(ErrorCode::kInvalidArgument, "--header '" + h + "': expected 'Name: value'");
    }
    auto* header = job.add_headers();
    header->set_name(Trim(h.substr(0, colon)));
    header->set_value(Trim(h.substr(colon + 1)));
  }
  for (const auto& m : f.metadata) {
    auto eq = m.find('=');
    if (eq == std::string::npos) {
      return Fail(ErrorCode::kInvalidArgument, "--metadata '" + m + "': expected key=value");
    }
    (*job.mutable_metadata())[m.substr(0, eq)] = m.substr(eq + 1);
  }
  for (const auto& c : f.categories) job.add_categories(c);
  job.set_carrier(f.carrier);
  return job;
}

Result<v1::MailJob> JobFromJsonFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text) return std::unexpected(text.error());
  v1::MailJob job;
  auto status = google::protobuf::util::JsonStringToMessage(*text, &job);
  if (!status.ok()) {
    return Fail(ErrorCode::kInvalidArgument,
                path + ": not a proto3 JSON MailJob: " + std::string(status.message()));
  }
  return job;
}

}  // namespace mailroom
