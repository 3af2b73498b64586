// RFC 5322 / MIME rendering of a MailJob (the message part, see
// docs/delivery.md). The rendered bytes depend only on the job record, so a
// retry sends the same message with the same Message-ID and Date.
#pragma once

#include <string>
#include <string_view>

#include "mailroom/result.h"
#include "mailroom/v1/spool.pb.h"

namespace mailroom {

struct RenderedMessage {
  std::string data;        // CRLF line endings, no line over 998 octets
  std::string message_id;  // "<...>", or empty for raw MIME without one
};

// Structured jobs: multipart/alternative for text + html, multipart/related
// for inline parts with a Content-ID, multipart/mixed for attachments;
// RFC 2047 encoded-words for non-ASCII header text; 7bit, quoted-printable or
// base64 bodies. raw_mime jobs pass through (bare LF becomes CRLF).
Result<RenderedMessage> RenderMessage(const v1::JobRecord& record);

// "<32 hex digits@from-domain>", derived from tenant and job id.
std::string MessageIdFor(const v1::JobRecord& record);

// Header names a job may not set itself (From, To, Date, MIME headers, ...).
bool IsDeniedHeader(std::string_view name);

// Encoders, exposed for tests.
std::string EncodeBase64(std::string_view data, size_t line_length = 76);
std::string EncodeQuotedPrintable(std::string_view text);  // text with CRLF line ends
// The same, appended to `out` (line_length 0: one unbroken line).
void AppendBase64(std::string& out, std::string_view data, size_t line_length);
void AppendQuotedPrintable(std::string& out, std::string_view text);
std::string EncodeHeaderWords(std::string_view text);  // RFC 2047 =?UTF-8?B?...?=

}  // namespace mailroom
