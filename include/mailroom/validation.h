// Ingest-time checks on a decoded MailJob. Each failure has a stable reason
// code (documented in docs/events.md) that appears in the REJECTED event and
// in the label of mailroom_ingest_rejected_total.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mailroom/config.h"
#include "mailroom/v1/mail_job.pb.h"

namespace mailroom {

enum class RejectReason {
  kUndecodable,        // not a MailJob in binary protobuf or proto3 JSON
  kInvalidTopic,       // topic does not carry a tenant (no topic_prefix)
  kMissingId,          // id empty
  kIdTooLong,          // id longer than limits.max_id_length
  kNoRecipient,        // no to, cc or bcc
  kInvalidAddress,     // from, to, cc, bcc or reply_to not a valid address
  kHeaderInjection,    // CR, LF or NUL in a header value, name or address
  kInvalidHeader,      // extra header name not RFC 5322 ftext
  kTooManyRecipients,  // to + cc + bcc over the limit
  kMessageTooLarge,    // encoded job over the size limit
  kUnknownTenant,      // tenants are configured and this one is not
  kSenderNotAllowed,   // From not in the tenant's allowed_senders
  kExpired,            // expires_at already past
  kCarrierNotAllowed,  // job.carrier not in the tenant's allowed_carriers
};

std::string_view ReasonCode(RejectReason reason);  // e.g. "invalid_address"

struct Rejection {
  RejectReason reason;
  std::string detail;  // names the field and the problem
};

// RFC 5321 mailbox syntax (dot-atom local part, UTF-8 allowed per RFC 6531,
// domain of at least two labels or an address literal).
bool IsValidEmail(std::string_view address, std::string* why = nullptr);

// True when `sender` matches one of the allowlist entries: an exact address,
// or a domain written "@example.com" or "example.com". Case-insensitive.
bool SenderAllowed(std::string_view sender, const std::vector<std::string>& allowlist);

class JobValidator {
 public:
  explicit JobValidator(const Config& config) : config_(config) {}

  // `tenant` comes from the topic; `encoded_bytes` is the record's size.
  std::optional<Rejection> Check(const std::string& tenant, const v1::MailJob& job,
                                 size_t encoded_bytes, int64_t now_ms) const;

 private:
  const Config& config_;
};

}  // namespace mailroom
