// The spool's key layouts (declared in mailroom/spool.h).
#include "spool/keys.h"

#include "mailroom/spool.h"
#include "util/ascii.h"

namespace mailroom {

std::string JobKey(const std::string& tenant, const std::string& id) {
  std::string key;
  key.reserve(tenant.size() + 1 + id.size());
  key.append(tenant).push_back('\0');
  key.append(id);
  return key;
}

std::string DueKey(int64_t due_ms, const std::string& tenant, const std::string& id) {
  return EncodeBe64(static_cast<uint64_t>(due_ms < 0 ? 0 : due_ms)) + JobKey(tenant, id);
}

int64_t DueKeyMs(std::string_view due_key) {
  return due_key.size() < 8 ? 0 : static_cast<int64_t>(DecodeBe64(due_key.data()));
}

std::string OutboxKey(uint64_t seq) { return EncodeBe64(seq); }

void AppendSized(std::string& out, const google::protobuf::MessageLite& message) {
  size_t size = message.ByteSizeLong();
  AppendVarint(out, size);
  size_t at = out.size();
  out.resize(at + size);
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out.data() + at));
}

void SerializeWithoutJob(v1::JobRecord& record, std::string& out) {
  v1::MailJob* job = record.unsafe_arena_release_job();  // no copy, on an arena or not
  record.SerializeToString(&out);
  record.unsafe_arena_set_allocated_job(job);
}

std::string SuppressionKey(const std::string& tenant, const std::string& address) {
  return tenant + '\0' + AsciiLower(address);
}

}  // namespace mailroom
