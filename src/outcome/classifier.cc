// The classification table. First matching rule wins: provider texts, then
// RFC 3463 enhanced codes, then well-known wording, then the reply class.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <initializer_list>

#include "mailroom/outcome.h"
#include "util/ascii.h"

namespace mailroom {
namespace {

struct Rule {
  // "" any; "x.1.1" matches 4.1.1 and 5.1.1; "x.7" matches every x.7.*.
  std::string_view enhanced;
  // Lowercase fragments; the rule matches if the text contains any ("" any).
  std::initializer_list<std::string_view> text;
  std::string_view category;
};

// clang-format off
const Rule kRules[] = {
    // Provider wording that overrides the enhanced code it comes with.
    {"x.7.28", {}, "rate_limited"},  // Gmail: unusual rate of unsolicited mail
    {"x.4.1", {"access denied"}, "invalid_recipient"},  // Microsoft directory check
    {"", {"spamhaus", "blocklist", "blacklist", "block list", "blocked using", "listed at",
          "spam"}, "spam_block"},
    {"", {"rate limit", "ratelimit", "rate-limit", "too many messages", "too many connections",
          "throttl", "server busy", "slow down", "unexpected volume", "[tss04]",
          "sending rate"}, "rate_limited"},
    // RFC 3463 subject.detail.
    {"x.1.1", {}, "invalid_recipient"},
    {"x.1.2", {}, "dns"},  // bad destination system
    {"x.1.3", {}, "invalid_recipient"},
    {"x.1.6", {}, "invalid_recipient"},  // mailbox moved
    {"x.1.10", {}, "dns"},  // null MX
    {"x.1", {}, "invalid_recipient"},
    {"x.2.1", {}, "invalid_recipient"},  // mailbox disabled
    {"x.2.2", {}, "mailbox_full"},
    {"x.2.3", {}, "content"},  // message too big for the mailbox
    {"x.3.4", {}, "content"},  // message too big for the system
    {"x.4.3", {}, "dns"},
    {"x.4.4", {}, "dns"},
    {"x.4.5", {}, "rate_limited"},  // system congestion
    {"x.4.6", {}, "protocol"},  // routing loop
    {"x.4.7", {}, "expired"},
    {"x.4", {}, "connection"},
    {"x.5", {}, "protocol"},
    {"x.6", {}, "content"},
    {"x.7.8", {}, "auth"},
    {"x.7.9", {}, "auth"},
    {"x.7.11", {}, "auth"},
    {"x.7.12", {}, "auth"},
    {"x.7.13", {}, "auth"},
    {"x.7.14", {}, "auth"},
    {"x.7.23", {}, "auth"},  // SPF
    {"x.7.24", {}, "auth"},
    {"x.7.25", {}, "dns"},   // reverse DNS
    {"x.7.26", {}, "auth"},  // DKIM/SPF failed
    {"x.7.27", {}, "auth"},
    {"x.7", {}, "policy"},
    // Wording without (or with an uninformative) enhanced code.
    {"", {"user unknown", "unknown user", "no such user", "does not exist", "invalid recipient",
          "recipient address rejected", "mailbox unavailable", "no mailbox", "mailbox not found",
          "unrouteable address", "address rejected"}, "invalid_recipient"},
    {"", {"mailbox full", "mailbox is full", "over quota", "quota exceeded",
          "insufficient storage"}, "mailbox_full"},
    {"", {"authentication", "auth "}, "auth"},
    {"", {"too large", "message size", "size limit"}, "content"},
    {"", {"relay", "not permitted", "policy"}, "policy"},
    {"", {"could not resolve", "resolve host", "name or service not known"}, "dns"},
};
// clang-format on

bool EnhancedMatches(std::string_view pattern, std::string_view code) {
  if (pattern.empty()) return true;
  if (code.size() < 2) return false;
  // Compare past the class digit ("x.7.1" vs "5.7.1"); "x.7" is a prefix.
  std::string_view rest = code.substr(1);
  std::string_view want = pattern.substr(1);
  if (rest == want) return true;
  return rest.size() > want.size() && rest.substr(0, want.size()) == want &&
         rest[want.size()] == '.' && std::ranges::count(want, '.') == 1;
}

bool TextMatches(const Rule& rule, const std::string& text) {
  if (rule.text.size() == 0) return true;
  return std::ranges::any_of(rule.text,
                             [&](std::string_view f) { return text.find(f) != std::string::npos; });
}

bool IsEnhanced(std::string_view token) {
  // class.subject.detail: 2|4|5 "." 1-3 digits "." 1-3 digits
  if (token.size() < 5 || (token[0] != '2' && token[0] != '4' && token[0] != '5')) return false;
  if (token[1] != '.') return false;
  int dots = 0;
  for (char c : token.substr(2)) {
    if (c == '.') {
      ++dots;
    } else if (!std::isdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return dots == 1 && token.back() != '.' && token[2] != '.';
}

}  // namespace

Reply ParseSmtpReply(std::string_view reply) {
  Reply out;
  size_t pos = 0;
  while (pos < reply.size()) {
    size_t eol = reply.find('\n', pos);
    if (eol == std::string_view::npos) eol = reply.size();
    std::string_view line = reply.substr(pos, eol - pos);
    pos = eol + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.size() < 3) continue;
    int code = 0;
    auto [p, ec] = std::from_chars(line.data(), line.data() + 3, code);
    if (ec != std::errc() || p != line.data() + 3) continue;
    out.code = code;
    std::string_view text = line.size() > 4 ? line.substr(4) : std::string_view();
    size_t space = text.find(' ');
    std::string_view first = text.substr(0, space);
    if (IsEnhanced(first)) {
      if (out.enhanced.empty()) out.enhanced = std::string(first);
      text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
    }
    if (!out.text.empty()) out.text += ' ';
    out.text += text;
  }
  return out;
}

Classification Classify(const Reply& reply) {
  if (reply.code >= 200 && reply.code < 300) return {Verdict::kDelivered, ""};
  Verdict verdict = reply.code >= 500 && reply.code < 600 && !reply.session ? Verdict::kPermanent
                                                                            : Verdict::kTransient;
  if (reply.code == 0) {
    std::string text = AsciiLower(reply.text);
    bool dns = text.find("resolve") != std::string::npos;
    return {Verdict::kTransient, dns ? "dns" : "connection"};
  }
  std::string text = AsciiLower(reply.text);
  for (const auto& rule : kRules) {
    if (!rule.enhanced.empty() && reply.enhanced.empty()) continue;
    if (EnhancedMatches(rule.enhanced, reply.enhanced) && TextMatches(rule, text)) {
      return {verdict, rule.category};
    }
  }
  if (reply.code == 421) return {verdict, "connection"};           // service closing the channel
  if (reply.code < 400) return {Verdict::kTransient, "protocol"};  // not a final answer
  return {verdict, "other"};
}

std::string_view VerdictLabel(Verdict verdict) {
  switch (verdict) {
    case Verdict::kDelivered:
      return "delivered";
    case Verdict::kTransient:
      return "transient";
    case Verdict::kPermanent:
      return "permanent";
  }
  return "unknown";
}

int64_t BackoffMs(const BackoffConfig& backoff, uint32_t attempt, double unit_random) {
  double delay = static_cast<double>(backoff.base_ms) *
                 std::pow(backoff.factor, static_cast<double>(attempt > 0 ? attempt - 1 : 0));
  delay = std::min(delay, static_cast<double>(backoff.cap_ms));
  delay *= 1.0 + backoff.jitter * (2.0 * unit_random - 1.0);
  return std::max<int64_t>(1, static_cast<int64_t>(delay));
}

}  // namespace mailroom
