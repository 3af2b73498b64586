// Encodings inside the spool: big-endian integers (keys that sort bytewise
// in numeric order), varints, due-index groups and headed bodies.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace google::protobuf {
class MessageLite;
}  // namespace google::protobuf

namespace mailroom {
namespace v1 {
class JobRecord;
}  // namespace v1

inline std::string EncodeBe64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
  return out;
}

inline uint64_t DecodeBe64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

inline std::string& AppendVarint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out.push_back(static_cast<char>(v));
  return out;
}

// Reads a varint off the front of `in`; false if it is cut short.
inline bool ReadVarint(std::string_view& in, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    auto byte = static_cast<unsigned char>(in.front());
    in.remove_prefix(1);
    v |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (byte < 0x80) return true;
  }
  return false;
}

// A job's age-index entry: be64(accepted_ms) then its job key.
inline std::string QueuedKey(int64_t accepted_ms, const std::string& job_key) {
  return EncodeBe64(static_cast<uint64_t>(accepted_ms)) + job_key;
}

// A due-index entry for a group of jobs spooled together and due when
// accepted: be64(due_ms) \0 be64(n). Tenants are never empty, so a job's own
// entry never has \0 after the time. Its value lists the jobs' keys (varint
// length, key), and the age index holds the same key until it is expanded.
inline std::string GroupKey(int64_t due_ms, uint64_t n) {
  return EncodeBe64(static_cast<uint64_t>(due_ms < 0 ? 0 : due_ms)) + '\0' + EncodeBe64(n);
}
inline bool IsGroupKey(std::string_view key) { return key.size() == 17 && key[8] == '\0'; }

// A body as ingest writes it: this byte (never the first of a serialized
// MailJob: field number 0 does not exist), the first JobRecord's length as a
// varint, that record, then the MailJob.
constexpr char kHeadedBody = '\0';

// An outbox value holding several events (an ingest batch's): this byte
// (never the first of a serialized DeliveryEvent), then each event as a
// varint length and its bytes.
constexpr char kEventGroup = '\0';

// Appends `message`'s length as a varint, then the message, sizing it once.
void AppendSized(std::string& out, const google::protobuf::MessageLite& message);

// A job record is stored without its MailJob, which lives unchanged in the
// bodies family: a state change rewrites a few hundred bytes, not the message.
void SerializeWithoutJob(v1::JobRecord& record, std::string& out);

constexpr char kOutboxCounter[] = "count/outbox";  // events not yet published (default CF)

}  // namespace mailroom
