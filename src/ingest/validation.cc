#include "mailroom/validation.h"
#include "util/ascii.h"

#include <algorithm>
#include <cctype>

namespace mailroom {
namespace {

bool IsAtext(unsigned char c) {
  if (std::isalnum(c) || c >= 0x80) return true;
  return std::string_view("!#$%&'*+/=?^_`{|}~-").find(static_cast<char>(c)) !=
         std::string_view::npos;
}

bool HasControl(std::string_view s) {
  // A plain loop: find_first_of calls memchr on the set for every byte.
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

bool Fail(std::string* why, const char* text) {
  if (why) *why = text;
  return false;
}

bool ValidDomain(std::string_view domain, std::string* why) {
  if (domain.empty()) return Fail(why, "has no domain");
  if (domain.size() > 253) return Fail(why, "domain longer than 253 octets");
  if (domain.front() == '[') {
    if (domain.back() != ']' || domain.size() < 4) return Fail(why, "malformed address literal");
    return true;
  }
  size_t labels = 0;
  size_t start = 0;
  while (start <= domain.size()) {
    size_t dot = domain.find('.', start);
    if (dot == std::string_view::npos) dot = domain.size();
    std::string_view label = domain.substr(start, dot - start);
    if (label.empty()) return Fail(why, "domain has an empty label");
    if (label.size() > 63) return Fail(why, "domain label longer than 63 octets");
    if (label.front() == '-' || label.back() == '-') {
      return Fail(why, "domain label starts or ends with '-'");
    }
    for (unsigned char c : label) {
      if (!(std::isalnum(c) || c == '-' || c >= 0x80)) {
        return Fail(why, "domain has a character not allowed in a host name");
      }
    }
    ++labels;
    start = dot + 1;
  }
  if (labels < 2) return Fail(why, "domain must have at least two labels");
  return true;
}

int64_t ToMillis(const google::protobuf::Timestamp& ts) {
  return ts.seconds() * 1000 + ts.nanos() / 1000000;
}

}  // namespace

std::string_view ReasonCode(RejectReason reason) {
  switch (reason) {
    case RejectReason::kUndecodable:
      return "undecodable";
    case RejectReason::kInvalidTopic:
      return "invalid_topic";
    case RejectReason::kMissingId:
      return "missing_id";
    case RejectReason::kIdTooLong:
      return "id_too_long";
    case RejectReason::kNoRecipient:
      return "no_recipient";
    case RejectReason::kInvalidAddress:
      return "invalid_address";
    case RejectReason::kHeaderInjection:
      return "header_injection";
    case RejectReason::kInvalidHeader:
      return "invalid_header";
    case RejectReason::kTooManyRecipients:
      return "too_many_recipients";
    case RejectReason::kMessageTooLarge:
      return "message_too_large";
    case RejectReason::kUnknownTenant:
      return "unknown_tenant";
    case RejectReason::kSenderNotAllowed:
      return "sender_not_allowed";
    case RejectReason::kExpired:
      return "expired";
    case RejectReason::kCarrierNotAllowed:
      return "carrier_not_allowed";
  }
  return "unknown";
}

bool IsValidEmail(std::string_view address, std::string* why) {
  if (address.empty()) return Fail(why, "is empty");
  if (address.size() > 254) return Fail(why, "longer than 254 octets");
  if (HasControl(address)) return Fail(why, "contains CR, LF or NUL");
  size_t at = address.rfind('@');
  if (at == std::string_view::npos) return Fail(why, "has no '@'");
  std::string_view local = address.substr(0, at);
  if (local.empty()) return Fail(why, "has an empty local part");
  if (local.size() > 64) return Fail(why, "local part longer than 64 octets");
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) {
    return Fail(why, "local part has a misplaced '.'");
  }
  for (unsigned char c : local) {
    if (c != '.' && !IsAtext(c)) return Fail(why, "local part has a character that needs quoting");
  }
  return ValidDomain(address.substr(at + 1), why);
}

bool SenderAllowed(std::string_view sender, const std::vector<std::string>& allowlist) {
  std::string address = AsciiLower(sender);
  std::string domain = address.substr(address.rfind('@') + 1);
  for (const auto& entry : allowlist) {  // entries are lower-cased by config
    if (entry.find('@') == std::string::npos) {
      if (entry == domain) return true;
    } else if (entry.front() == '@') {
      if (entry.compare(1, std::string::npos, domain) == 0) return true;
    } else if (entry == address) {
      return true;
    }
  }
  return false;
}

std::optional<Rejection> JobValidator::Check(const std::string& tenant, const v1::MailJob& job,
                                             size_t encoded_bytes, int64_t now_ms) const {
  auto reject = [](RejectReason r, std::string detail) {
    return std::optional<Rejection>(Rejection{r, std::move(detail)});
  };
  const TenantConfig* policy = nullptr;
  if (!config_.tenants.empty()) {
    auto it = config_.tenants.find(tenant);
    if (it == config_.tenants.end()) {
      return reject(RejectReason::kUnknownTenant, "tenant '" + tenant + "' is not configured");
    }
    policy = &it->second;
  }
  if (job.id().empty()) return reject(RejectReason::kMissingId, "id is required");
  if (job.id().size() > config_.limits.max_id_length) {
    return reject(RejectReason::kIdTooLong, "id is " + std::to_string(job.id().size()) +
                                                " bytes; the limit is " +
                                                std::to_string(config_.limits.max_id_length));
  }
  if (HasControl(job.id()))
    return reject(RejectReason::kHeaderInjection, "id contains CR, LF or NUL");

  // Header injection first: a CR/LF in an address is an attack, not a typo.
  // The field is named ("to[2]") only for a rejection.
  auto check_address = [&](const v1::Address& a, const char* list,
                           int index) -> std::optional<Rejection> {
    auto field = [&] {
      std::string named(list);
      if (index >= 0) named.append("[").append(std::to_string(index)).append("]");
      return named;
    };
    if (HasControl(a.email()) || HasControl(a.name())) {
      return reject(RejectReason::kHeaderInjection, field() + " contains CR, LF or NUL");
    }
    std::string why;
    if (!IsValidEmail(a.email(), &why)) {
      return reject(RejectReason::kInvalidAddress, field() + " '" + a.email() + "' " + why);
    }
    return std::nullopt;
  };
  if (!job.has_from() || job.from().email().empty()) {
    return reject(RejectReason::kInvalidAddress, "from is required");
  }
  if (auto r = check_address(job.from(), "from", -1)) return r;
  size_t recipients = 0;
  for (const auto* list : {&job.to(), &job.cc(), &job.bcc(), &job.reply_to()}) {
    const char* name = list == &job.to()    ? "to"
                       : list == &job.cc()  ? "cc"
                       : list == &job.bcc() ? "bcc"
                                            : "reply_to";
    for (int i = 0; i < list->size(); ++i) {
      if (auto r = check_address((*list)[i], name, i)) return r;
    }
    if (list != &job.reply_to()) recipients += list->size();
  }
  if (HasControl(job.subject()))
    return reject(RejectReason::kHeaderInjection, "subject contains CR, LF or NUL");
  for (int i = 0; i < job.headers_size(); ++i) {
    const auto& h = job.headers(i);
    std::string field = "headers[" + std::to_string(i) + "]";
    if (HasControl(h.name()) || HasControl(h.value())) {
      return reject(RejectReason::kHeaderInjection,
                    field + " (" + h.name() + ") contains CR, LF or NUL");
    }
    if (h.name().empty() || !std::all_of(h.name().begin(), h.name().end(), [](unsigned char c) {
          return c > 32 && c < 127 && c != ':';
        })) {
      return reject(
          RejectReason::kInvalidHeader,
          field + " name '" + h.name() + "' must be printable ASCII without ':' or spaces");
    }
  }
  for (int i = 0; i < job.attachments_size(); ++i) {
    const auto& a = job.attachments(i);
    if (HasControl(a.filename()) || HasControl(a.content_type()) || HasControl(a.content_id())) {
      return reject(RejectReason::kHeaderInjection,
                    "attachments[" + std::to_string(i) +
                        "] filename, content_type or content_id contains CR, LF or NUL");
    }
  }
  for (int i = 0; i < job.categories_size(); ++i) {
    if (HasControl(job.categories(i))) {
      return reject(RejectReason::kHeaderInjection,
                    "categories[" + std::to_string(i) + "] contains CR, LF or NUL");
    }
  }
  if (recipients == 0) return reject(RejectReason::kNoRecipient, "to, cc and bcc are all empty");
  uint32_t max_rcpt =
      policy && policy->max_recipients ? policy->max_recipients : config_.limits.max_recipients;
  if (recipients > max_rcpt) {
    return reject(
        RejectReason::kTooManyRecipients,
        std::to_string(recipients) + " recipients; the limit is " + std::to_string(max_rcpt));
  }
  uint64_t max_bytes = policy && policy->max_message_bytes ? policy->max_message_bytes
                                                           : config_.limits.max_message_bytes;
  if (encoded_bytes > max_bytes) {
    return reject(
        RejectReason::kMessageTooLarge,
        std::to_string(encoded_bytes) + " bytes; the limit is " + std::to_string(max_bytes));
  }
  if (policy && !SenderAllowed(job.from().email(), policy->allowed_senders)) {
    return reject(RejectReason::kSenderNotAllowed,
                  "tenant '" + tenant + "' may not send from '" + job.from().email() + "'");
  }
  if (!job.carrier().empty()) {
    bool allowed =
        policy && std::find(policy->allowed_carriers.begin(), policy->allowed_carriers.end(),
                            job.carrier()) != policy->allowed_carriers.end();
    if (!allowed) {
      return reject(RejectReason::kCarrierNotAllowed,
                    "tenant '" + tenant + "' may not choose carrier '" + job.carrier() + "'");
    }
  }
  if (job.has_expires_at() && ToMillis(job.expires_at()) <= now_ms) {
    return reject(RejectReason::kExpired, "expires_at is already past");
  }
  return std::nullopt;
}

}  // namespace mailroom
