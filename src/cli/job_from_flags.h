// Builds a MailJob from mailroomctl's flags.
#pragma once

#include <string>
#include <vector>

#include "mailroom/result.h"
#include "mailroom/v1/mail_job.pb.h"

namespace mailroom {

struct SendFlags {
  std::string id;
  std::string from;  // "Name <addr>" or "addr"
  std::vector<std::string> to, cc, bcc, reply_to;
  std::string subject, text, html;
  std::vector<std::string> attach;    // file paths
  std::vector<std::string> headers;   // "Name: value"
  std::vector<std::string> metadata;  // "key=value"
  std::vector<std::string> categories;
  std::string carrier;  // empty: the tenant's carrier
};

// "Ada Lovelace <ada@example.com>" → {email, name}; "ada@example.com" → {email}.
v1::Address ParseAddress(const std::string& text);

Result<v1::MailJob> JobFromFlags(const SendFlags& flags);

// Reads a proto3 JSON MailJob.
Result<v1::MailJob> JobFromJsonFile(const std::string& path);

}  // namespace mailroom
