// What outcomes do to a job record: each recipient's state, the events that
// report it, suppressions, the job's state and history. No I/O, no metrics:
// the dispatcher counts what these return and hands the updates to the
// committer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mailroom/outcome.h"
#include "mailroom/spool.h"

namespace mailroom {

// Unfinished while any recipient is; then the best outcome any recipient had.
v1::JobState JobStateOf(const v1::JobRecord& record);

// Appends to the record's history, keeping the first entry and the latest.
void AddHistory(v1::JobRecord& record, int64_t now_ms, const std::string& note);

v1::DeliveryEvent EventFor(const v1::JobRecord& record, v1::EventType type,
                           const std::string& recipient, int64_t now_ms);

// One attempt's replies (one per recipient of `pending`, in order) applied to
// those recipients: their state, last reply and category, one event each
// (deferred ones name `retry_at_ms`), and a suppression for each hard bounce
// of an invalid recipient. Returns each recipient's classification.
std::vector<Classification> ApplyAttempt(v1::JobRecord& record, const std::vector<int>& pending,
                                         const std::vector<Reply>& replies, int64_t now_ms,
                                         int64_t retry_at_ms, JobUpdate& update);

// Recipients finished without sending (`state` EXPIRED or SUPPRESSED), one
// event each.
void FinishUnsent(v1::JobRecord& record, const std::vector<int>& which, v1::JobState state,
                  int64_t now_ms, const std::string& category, const std::string& detail,
                  JobUpdate& update);

}  // namespace mailroom
