#include "scheduler/job_updates.h"

#include <google/protobuf/util/time_util.h>

#include "util/ascii.h"

namespace mailroom {

using google::protobuf::util::TimeUtil;

v1::JobState JobStateOf(const v1::JobRecord& record) {
  bool delivered = false, bounced = false, expired = false, suppressed = false;
  for (const auto& r : record.recipients()) {
    if (!IsFinished(r.state())) {
      return record.attempts() > 0 ? v1::JOB_STATE_DEFERRED : v1::JOB_STATE_QUEUED;
    }
    delivered |= r.state() == v1::JOB_STATE_DELIVERED;
    bounced |= r.state() == v1::JOB_STATE_BOUNCED;
    expired |= r.state() == v1::JOB_STATE_EXPIRED;
    suppressed |= r.state() == v1::JOB_STATE_SUPPRESSED;
  }
  if (delivered) return v1::JOB_STATE_DELIVERED;
  if (bounced) return v1::JOB_STATE_BOUNCED;
  if (expired) return v1::JOB_STATE_EXPIRED;
  if (suppressed) return v1::JOB_STATE_SUPPRESSED;
  return v1::JOB_STATE_CANCELLED;
}

void AddHistory(v1::JobRecord& record, int64_t now_ms, const std::string& note) {
  constexpr int kMaxHistory = 20;
  auto* h = record.add_history();
  h->set_time_ms(now_ms);
  h->set_state(record.state());
  h->set_note(note);
  if (record.history_size() > kMaxHistory) record.mutable_history()->DeleteSubrange(1, 1);
}

v1::DeliveryEvent EventFor(const v1::JobRecord& record, v1::EventType type,
                           const std::string& recipient, int64_t now_ms) {
  v1::DeliveryEvent event;
  event.set_job_id(record.job().id());
  event.set_tenant(record.tenant());
  event.set_type(type);
  event.set_recipient(recipient);
  event.set_attempt(record.attempts());
  event.set_carrier(record.carrier());
  event.set_message_id(record.message_id());
  *event.mutable_event_time() = TimeUtil::MillisecondsToTimestamp(now_ms);
  *event.mutable_accepted_time() = TimeUtil::MillisecondsToTimestamp(record.accepted_ms());
  *event.mutable_metadata() = record.job().metadata();
  return event;
}

std::vector<Classification> ApplyAttempt(v1::JobRecord& record, const std::vector<int>& pending,
                                         const std::vector<Reply>& replies, int64_t now_ms,
                                         int64_t retry_at_ms, JobUpdate& update) {
  std::vector<Classification> out;
  for (size_t n = 0; n < pending.size(); ++n) {
    auto* rcpt = record.mutable_recipients(pending[n]);
    const Reply& reply = n < replies.size() ? replies[n] : Reply{};
    Classification c = Classify(reply);
    out.push_back(c);
    rcpt->set_attempts(rcpt->attempts() + 1);
    rcpt->set_last_reply_code(static_cast<uint32_t>(reply.code));
    rcpt->set_last_enhanced_status(reply.enhanced);
    rcpt->set_last_diagnostic(reply.text);
    rcpt->set_category(std::string(c.category));
    rcpt->set_updated_ms(now_ms);
    v1::EventType type = v1::DELIVERED;
    if (c.verdict == Verdict::kDelivered) {
      rcpt->set_state(v1::JOB_STATE_DELIVERED);
    } else if (c.verdict == Verdict::kPermanent) {
      rcpt->set_state(v1::JOB_STATE_BOUNCED);
      type = v1::BOUNCED;
      if (c.category == "invalid_recipient") {
        v1::Suppression s;
        s.set_address(AsciiLower(rcpt->address()));
        s.set_reason("bounce");
        s.set_category(std::string(c.category));
        s.set_time_ms(now_ms);
        s.set_source_job_id(record.job().id());
        s.set_reply_code(static_cast<uint32_t>(reply.code));
        s.set_enhanced_status(reply.enhanced);
        s.set_diagnostic(reply.text);
        update.suppress.push_back(std::move(s));
      }
    } else {
      rcpt->set_state(v1::JOB_STATE_DEFERRED);
      type = v1::DEFERRED;
    }
    auto event = EventFor(record, type, rcpt->address(), now_ms);
    event.set_reply_code(static_cast<uint32_t>(reply.code));
    event.set_enhanced_status(reply.enhanced);
    event.set_diagnostic(reply.text);
    event.set_category(std::string(c.category));
    if (type == v1::DEFERRED) {
      event.set_detail("retry at " +
                       TimeUtil::ToString(TimeUtil::MillisecondsToTimestamp(retry_at_ms)));
    }
    update.events.push_back(std::move(event));
  }
  return out;
}

void FinishUnsent(v1::JobRecord& record, const std::vector<int>& which, v1::JobState state,
                  int64_t now_ms, const std::string& category, const std::string& detail,
                  JobUpdate& update) {
  auto type = state == v1::JOB_STATE_EXPIRED ? v1::EXPIRED : v1::SUPPRESSED;
  for (int i : which) {
    auto* rcpt = record.mutable_recipients(i);
    rcpt->set_state(state);
    rcpt->set_category(category);
    rcpt->set_updated_ms(now_ms);
    auto event = EventFor(record, type, rcpt->address(), now_ms);
    event.set_category(category);
    event.set_detail(detail);
    update.events.push_back(std::move(event));
  }
}

}  // namespace mailroom
