#include "ingest/batch_builder.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

namespace mailroom {
namespace {

using google::protobuf::util::TimeUtil;

void FillSource(v1::DeliveryEvent& e, const InboundRecord& r) {
  e.set_source_topic(std::string(r.topic));
  e.set_source_partition(r.partition);
  e.set_source_offset(r.offset);
}

}  // namespace

Status DecodeJob(std::string_view payload, bool json, v1::MailJob& job) {
  if (json) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto status = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(payload.data(), payload.size()), &job, options);
    if (!status.ok()) {
      return Fail(ErrorCode::kInvalidArgument, "proto3 JSON: " + std::string(status.message()));
    }
    return {};
  }
  if (payload.empty()) return Fail(ErrorCode::kInvalidArgument, "empty record");
  if (!job.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return Fail(
        ErrorCode::kInvalidArgument,
        "not a binary MailJob (send proto3 JSON with header content-type: application/json)");
  }
  return {};
}

std::string BatchBuilder::TenantOf(std::string_view topic) const {
  const std::string& prefix = config_.kafka.topic_prefix;
  if (topic.size() <= prefix.size() || topic.substr(0, prefix.size()) != prefix) return "";
  return std::string(topic.substr(prefix.size()));
}

// Every record is decoded straight into the batch's arena; jobs that fail
// validation give their slot back, and duplicates are dropped after one
// MultiGet for the lot.
Result<BuiltBatch> BatchBuilder::Build(
    const std::vector<InboundRecord>& records, int64_t now_ms,
    const std::vector<const std::unordered_set<std::string>*>& pending) const {
  BuiltBatch out;
  out.batch = std::make_unique<IngestBatch>();
  auto& jobs = out.batch->jobs;
  auto& events = out.batch->events;
  auto now = TimeUtil::MillisecondsToTimestamp(now_ms);
  auto reject = [&](const InboundRecord& r, const std::string& tenant, const std::string& job_id,
                    std::string_view reason, const std::string& detail, const v1::MailJob* job) {
    v1::DeliveryEvent* e = events.Add();
    e->set_job_id(job_id);
    e->set_tenant(tenant);
    e->set_type(v1::REJECTED);
    e->set_reason(std::string(reason));
    e->set_detail(detail);
    *e->mutable_event_time() = now;
    if (job) *e->mutable_metadata() = job->metadata();
    FillSource(*e, r);
    out.tally[tenant].rejected[std::string(reason)]++;
  };

  std::vector<size_t> source;         // per element of `jobs`: its index in `records`
  std::vector<TenantTally*> tallies;  // per element of `jobs`
  std::string_view topic;             // of the record before: records come in runs
  std::string tenant;
  TenantTally* tally = nullptr;
  for (size_t i = 0; i < records.size(); ++i) {
    const InboundRecord& r = records[i];
    if (!tally || r.topic != topic) {
      topic = r.topic;
      tenant = TenantOf(topic);
      tally = &out.tally[tenant];
    }
    tally->received++;
    if (tenant.empty()) {
      std::string detail = "topic '" + std::string(r.topic) + "' does not start with '" +
                           config_.kafka.topic_prefix + "'";
      reject(r, tenant, "", ReasonCode(RejectReason::kInvalidTopic), detail, nullptr);
      out.dead_letters.push_back({i, std::string(ReasonCode(RejectReason::kInvalidTopic)), detail});
      continue;
    }
    v1::JobRecord& record = *jobs.Add();
    v1::MailJob& job = *record.mutable_job();
    if (auto decoded = DecodeJob(r.payload, r.json, job); !decoded) {
      jobs.RemoveLast();
      reject(r, tenant, "", ReasonCode(RejectReason::kUndecodable), decoded.error().message,
             nullptr);
      out.dead_letters.push_back(
          {i, std::string(ReasonCode(RejectReason::kUndecodable)), decoded.error().message});
      continue;
    }
    if (auto rejection = validator_.Check(tenant, job, r.payload.size(), now_ms)) {
      reject(r, tenant, job.id(), ReasonCode(rejection->reason), rejection->detail, &job);
      jobs.RemoveLast();
      continue;
    }
    record.set_tenant(tenant);
    record.set_state(v1::JOB_STATE_QUEUED);
    record.set_accepted_ms(now_ms);
    int64_t due = now_ms;
    if (job.has_not_before())
      due = std::max(due, TimeUtil::TimestampToMilliseconds(job.not_before()));
    record.set_due_ms(due);
    record.set_source_topic(std::string(r.topic));
    record.set_source_partition(r.partition);
    record.set_source_offset(r.offset);
    for (const auto* list : {&job.to(), &job.cc(), &job.bcc()}) {
      for (const auto& a : *list) {
        auto* rcpt = record.add_recipients();
        rcpt->set_address(a.email());
        rcpt->set_state(v1::JOB_STATE_QUEUED);
      }
    }
    auto* h = record.add_history();
    h->set_time_ms(now_ms);
    h->set_state(v1::JOB_STATE_QUEUED);
    h->set_note("accepted");  // the source topic, partition and offset are fields of the record
    source.push_back(i);
    tallies.push_back(tally);
  }

  std::vector<std::string> keys;
  keys.reserve(jobs.size());
  for (const auto& record : jobs) keys.push_back(JobKey(record.tenant(), record.job().id()));
  auto found = spool_.ContainsJobs(keys);
  if (!found) return std::unexpected(found.error());

  int kept = 0;
  for (int c = 0; c < jobs.size(); ++c) {
    const v1::JobRecord& record = jobs[c];
    const InboundRecord& r = records[source[c]];
    auto writing = [&](const std::string& key) {
      return std::any_of(pending.begin(), pending.end(),
                         [&](const auto* keys) { return keys->count(key) > 0; });
    };
    if ((*found)[c] || writing(keys[c]) || !out.job_keys.insert(std::move(keys[c])).second) {
      tallies[c]->duplicates++;
      continue;
    }
    tallies[c]->accepted++;
    v1::DeliveryEvent* e = events.Add();
    e->set_job_id(record.job().id());
    e->set_tenant(record.tenant());
    e->set_type(v1::ACCEPTED);
    *e->mutable_event_time() = now;
    *e->mutable_accepted_time() = now;
    *e->mutable_metadata() = record.job().metadata();
    FillSource(*e, r);
    // Binary records are stored as sent; JSON ones are serialized.
    out.batch->job_bytes.push_back(r.json ? std::string_view() : r.payload);
    jobs.SwapElements(kept++, c);
  }
  jobs.DeleteSubrange(kept, jobs.size() - kept);
  return out;
}

}  // namespace mailroom
