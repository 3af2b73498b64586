// Outcome: what a carrier's answer means for a recipient (delivered, retry
// later, or bounce) and why, by category; plus the retry schedule.
// The rules are a table (src/outcome/classifier.cc), documented in
// docs/delivery.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "mailroom/config.h"

namespace mailroom {

enum class Verdict { kDelivered, kTransient, kPermanent };

// One server answer. code 0 means there was none (connection refused, TLS
// failure, timeout): `text` then says what happened.
struct Reply {
  int code = 0;
  std::string enhanced;  // RFC 3463 "x.y.z", empty if the server sent none
  std::string text;
  // Answered before the mail transaction began (greeting, EHLO, STARTTLS,
  // AUTH): a problem of the carrier or its configuration, not of the
  // message, so never a bounce.
  bool session = false;
};

// "550 5.1.1 <a@b>: user unknown" (one or more lines) -> code, enhanced, text.
Reply ParseSmtpReply(std::string_view reply);

struct Classification {
  Verdict verdict;
  // invalid_recipient, mailbox_full, rate_limited, policy, spam_block,
  // content, auth, dns, connection, protocol, expired, other; "" if delivered.
  std::string_view category;
};

Classification Classify(const Reply& reply);

std::string_view VerdictLabel(Verdict verdict);  // delivered, transient, permanent

// Delay before retry number `attempt` (1-based): min(cap, base *
// factor^(attempt-1)) scaled by 1 +/- jitter; `unit_random` in [0, 1).
int64_t BackoffMs(const BackoffConfig& backoff, uint32_t attempt, double unit_random);

}  // namespace mailroom
