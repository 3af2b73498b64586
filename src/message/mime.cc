#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <ctime>
#include <functional>

#include "mailroom/message.h"
#include "util/ascii.h"

namespace mailroom {
namespace {

const std::string kCrlf = "\r\n";
constexpr size_t kFoldAt = 78;     // RFC 5322 SHOULD
constexpr size_t kMaxLine = 998;   // RFC 5322 MUST
constexpr size_t kWordBytes = 45;  // raw bytes per encoded-word: 60 base64 chars, 72 in all

bool IsPrintableAscii(std::string_view s) {
  return std::ranges::all_of(s, [](unsigned char c) { return c >= 0x20 && c < 0x7f; });
}

std::string Hex(const unsigned char* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 15]);
  }
  return out;
}

std::string Digest(const v1::JobRecord& record) {
  std::string input = record.tenant() + '\0' + record.job().id();
  std::array<unsigned char, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest.data());
  return Hex(digest.data(), 16);
}

std::string DomainOf(const std::string& email) {
  auto at = email.rfind('@');
  return at == std::string::npos ? "mailroom.invalid" : AsciiLower(email.substr(at + 1));
}

// Date from the time the job was accepted: the same on every attempt.
std::string RfcDate(int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  static const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

// Folds "Name: value" at spaces so lines stay near 78 octets.
std::string FoldHeader(std::string_view name, std::string_view value) {
  std::string out(name);
  out += ": ";
  size_t line = out.size();
  size_t pos = 0;
  while (pos < value.size()) {
    size_t space = value.find(' ', pos + 1);
    if (space == std::string_view::npos) space = value.size();
    std::string_view word = value.substr(pos, space - pos);  // includes its leading space
    if (line + word.size() > kFoldAt && line > name.size() + 2 && word.front() == ' ') {
      out += kCrlf;
      line = 0;
    }
    out += word;
    line += word.size();
    pos = space;
  }
  out += kCrlf;
  return out;
}

// Unstructured text (Subject, extra headers): as is when printable ASCII
// that folds into legal lines, else encoded-words.
std::string UnstructuredValue(std::string_view text) {
  if (IsPrintableAscii(text)) {
    size_t longest = 0, start = 0;
    while (start <= text.size()) {
      size_t space = text.find(' ', start);
      if (space == std::string_view::npos) space = text.size();
      longest = std::max(longest, space - start);
      start = space + 1;
    }
    if (longest < kMaxLine - 100 && text.find("=?") == std::string_view::npos) {
      return std::string(text);
    }
  }
  return EncodeHeaderWords(text);
}

bool IsAtextOrSpace(unsigned char c) {
  return std::isalnum(c) || c == ' ' ||
         std::string_view("!#$%&'*+/=?^_`{|}~-").find(static_cast<char>(c)) !=
             std::string_view::npos;
}

std::string FormatAddress(const v1::Address& address) {
  const std::string& name = address.name();
  if (name.empty()) return address.email();
  std::string phrase;
  if (!IsPrintableAscii(name) || name.find("=?") != std::string::npos) {
    phrase = EncodeHeaderWords(name);
  } else if (std::ranges::all_of(name, IsAtextOrSpace)) {
    phrase = name;
  } else {
    phrase = "\"";
    for (char c : name) {
      if (c == '"' || c == '\\') phrase.push_back('\\');
      phrase.push_back(c);
    }
    phrase += '"';
  }
  return phrase + " <" + address.email() + ">";
}

std::string AddressHeader(std::string_view name,
                          const google::protobuf::RepeatedPtrField<v1::Address>& list) {
  std::string value;
  for (const auto& address : list) {
    if (!value.empty()) value += ", ";
    value += FormatAddress(address);
  }
  return FoldHeader(name, value);
}

// Appends `text` with its line endings made CRLF (bare LF and bare CR
// alike); returns the longest line written, in octets.
size_t AppendCrlf(std::string& out, std::string_view text) {
  size_t longest = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');  // memchr: whole lines at a time
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (nl != std::string_view::npos && !line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    for (size_t cr; (cr = line.find('\r')) != std::string_view::npos;) {  // a bare CR
      out.append(line.substr(0, cr)).append(kCrlf);
      longest = std::max(longest, cr);
      line.remove_prefix(cr + 1);
    }
    out.append(line);
    longest = std::max(longest, line.size());
    if (nl != std::string_view::npos) out.append(kCrlf);
  }
  return longest;
}

std::string ToCrlf(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 40 + 2);
  AppendCrlf(out, text);
  return out;
}

// Any octet a 7bit part may not carry (8-bit or NUL), eight bytes a step.
bool HasNon7bit(std::string_view text) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kTops = 0x8080808080808080ULL;
  size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, text.data() + i, 8);
    if ((word | ((word - kOnes) & ~word)) & kTops) return true;  // a top bit, or a zero byte
  }
  return std::ranges::any_of(text.substr(i), [](unsigned char c) { return c == 0 || c >= 0x80; });
}

// 7bit when plain ASCII with short lines and no boundary marker, else
// quoted-printable. Boundaries start with "=_", which QP never produces.
// Written straight into `out`: bodies are the bulk of a message.
void AppendTextPart(std::string& out, std::string_view subtype, std::string_view body) {
  out += "Content-Type: text/";
  out += subtype;
  out += "; charset=utf-8\r\nContent-Transfer-Encoding: ";
  size_t start = out.size();
  if (body.find("=_") == std::string_view::npos && !HasNon7bit(body)) {
    out += "7bit\r\n\r\n";
    bool short_lines = AppendCrlf(out, body) <= kMaxLine;
    if (!out.ends_with(kCrlf)) out += kCrlf;
    if (short_lines) return;
    out.resize(start);  // a line too long after all
  }
  std::string text = ToCrlf(body);
  if (!text.ends_with(kCrlf)) text += kCrlf;
  out += "quoted-printable\r\n\r\n";
  AppendQuotedPrintable(out, text);
}

// A MIME parameter: quoted when ASCII, RFC 2231 (name*=utf-8''...) when not.
std::string Param(std::string_view name, std::string_view value) {
  if (IsPrintableAscii(value)) {
    std::string out = std::string(name) + "=\"";
    for (char c : value) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "\"";
  }
  std::string out = std::string(name) + "*=utf-8''";
  static constexpr char kDigits[] = "0123456789ABCDEF";
  for (unsigned char c : value) {
    if (std::isalnum(c) ||
        std::string_view("!#$&+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 15]);
    }
  }
  return out;
}

void AppendAttachmentPart(std::string& out, const v1::Attachment& a, bool related) {
  out += "Content-Type: ";
  out += a.content_type().empty() ? "application/octet-stream" : a.content_type();
  if (!a.filename().empty()) out += ";\r\n " + Param("name", a.filename());
  out += "\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: ";
  out += a.inline_() || related ? "inline" : "attachment";
  if (!a.filename().empty()) out += ";\r\n " + Param("filename", a.filename());
  out += kCrlf;
  if (!a.content_id().empty()) {
    std::string cid = a.content_id();
    if (cid.front() != '<') cid = "<" + cid + ">";
    out += "Content-ID: " + cid + "\r\n";
  }
  out += kCrlf;
  AppendBase64(out, a.content(), 76);
}

// A part written into the message in place.
using PartWriter = std::function<void(std::string&)>;

void AppendMultipart(std::string& out, std::string_view subtype, const std::string& boundary,
                     const std::vector<PartWriter>& parts) {
  out += "Content-Type: multipart/";
  out += subtype;
  out += ";\r\n boundary=\"" + boundary + "\"\r\n\r\n";
  for (const auto& part : parts) {
    out += "--" + boundary + "\r\n";
    part(out);
    out += kCrlf;
  }
  out += "--" + boundary + "--\r\n";
}

// The Message-ID header of a raw message, if any.
std::string FindMessageId(std::string_view message) {
  size_t end = message.find("\r\n\r\n");
  std::string_view head = message.substr(0, end);
  size_t pos = 0;
  while (pos < head.size()) {
    size_t eol = head.find(kCrlf, pos);
    if (eol == std::string_view::npos) eol = head.size();
    std::string_view line = head.substr(pos, eol - pos);
    if (line.size() > 11 && AsciiLower(line.substr(0, 11)) == "message-id:") {
      std::string_view value = line.substr(11);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      return std::string(value);
    }
    pos = eol + 2;
  }
  return "";
}

}  // namespace

void AppendBase64(std::string& out, std::string_view data, size_t line_length) {
  // Whole lines at a time (57 input bytes make 76 characters), each encoded
  // straight into place; EVP_EncodeBlock's NUL lands where the CRLF goes.
  size_t per_line = line_length == 0 ? data.size() : std::max<size_t>(line_length / 4 * 3, 3);
  size_t lines = line_length == 0 ? 1 : (data.size() + per_line - 1) / per_line;
  size_t at = out.size();
  out.resize(at + 4 * ((data.size() + 2) / 3) + 2 * lines + 1);
  auto* dst = reinterpret_cast<unsigned char*>(out.data());
  for (size_t pos = 0; pos < data.size(); pos += per_line) {
    size_t n = std::min(per_line, data.size() - pos);
    at += static_cast<size_t>(EVP_EncodeBlock(
        dst + at, reinterpret_cast<const unsigned char*>(data.data() + pos), static_cast<int>(n)));
    if (line_length != 0) {
      out[at++] = '\r';
      out[at++] = '\n';
    }
  }
  out.resize(at);
}

std::string EncodeBase64(std::string_view data, size_t line_length) {
  std::string out;
  AppendBase64(out, data, line_length);
  return out;
}

void AppendQuotedPrintable(std::string& out, std::string_view text) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  // Bytes that stand for themselves (space and tab only inside a line).
  static const std::array<bool, 256> kLiteral = [] {
    std::array<bool, 256> t{};
    for (int c = 33; c <= 126; ++c) t[c] = c != '=';
    t[' '] = t['\t'] = true;
    return t;
  }();
  auto crlf_at = [&](size_t i) {
    return text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n';
  };
  out.reserve(out.size() + text.size() + text.size() / 8);
  size_t line = 0;  // octets on the output line so far; "=" ends a line at 76
  for (size_t i = 0; i < text.size();) {
    if (crlf_at(i)) {  // a hard line break
      out += kCrlf;
      line = 0;
      i += 2;
      continue;
    }
    size_t j = i;  // a run of literal bytes, copied a line's room at a time
    while (j < text.size() && kLiteral[static_cast<unsigned char>(text[j])]) ++j;
    if (j > i && (j == text.size() || text[j] == '\r') &&
        (text[j - 1] == ' ' || text[j - 1] == '\t')) {
      --j;  // white space before a line end is encoded
    }
    while (i < j) {
      if (line >= 75) {
        out += "=\r\n";
        line = 0;
      }
      if (line == 0 && text[i] == '.') break;  // a leading "." is encoded
      size_t take = std::min(j - i, 75 - line);
      out.append(text.substr(i, take));
      line += take;
      i += take;
    }
    if (i < text.size() && !crlf_at(i)) {  // one encoded byte
      if (line + 3 > 75) {
        out += "=\r\n";
        line = 0;
      }
      auto c = static_cast<unsigned char>(text[i++]);
      out += '=';
      out += kDigits[c >> 4];
      out += kDigits[c & 15];
      line += 3;
    }
  }
}

std::string EncodeQuotedPrintable(std::string_view text) {
  std::string out;
  AppendQuotedPrintable(out, text);
  return out;
}

std::string EncodeHeaderWords(std::string_view text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + kWordBytes);
    // Never split a UTF-8 sequence: back up to a lead byte.
    while (end < text.size() && end > pos + 1 &&
           (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) {
      --end;
    }
    if (!out.empty()) out += ' ';  // FoldHeader folds between the words
    out += "=?UTF-8?B?" + EncodeBase64(text.substr(pos, end - pos), 0) + "?=";
    pos = end;
  }
  return out;
}

bool IsDeniedHeader(std::string_view name) {
  static constexpr std::string_view kDenied[] = {"from",     "to",           "cc",
                                                 "bcc",      "date",         "message-id",
                                                 "sender",   "mime-version", "dkim-signature",
                                                 "received", "return-path"};
  std::string lower = AsciiLower(name);
  if (lower.rfind("content-", 0) == 0) return true;  // MIME headers
  return std::ranges::find(kDenied, lower) != std::end(kDenied);
}

std::string MessageIdFor(const v1::JobRecord& record) {
  std::string id = "<";  // appended piecewise: GCC 12's -Wrestrict misfires on a + chain
  id += Digest(record);
  id += '@';
  id += DomainOf(record.job().from().email());
  id += '>';
  return id;
}

Result<RenderedMessage> RenderMessage(const v1::JobRecord& record) {
  const v1::MailJob& job = record.job();
  RenderedMessage rendered;
  if (!job.raw_mime().empty()) {
    rendered.data = ToCrlf(job.raw_mime());
    rendered.message_id = FindMessageId(rendered.data);
    return rendered;
  }
  rendered.message_id = MessageIdFor(record);
  std::string& out = rendered.data;
  out += "Date: " + RfcDate(record.accepted_ms()) + "\r\n";
  out += FoldHeader("From", FormatAddress(job.from()));
  if (job.to_size() > 0) out += AddressHeader("To", job.to());
  if (job.cc_size() > 0) out += AddressHeader("Cc", job.cc());
  if (job.reply_to_size() > 0) out += AddressHeader("Reply-To", job.reply_to());
  out += FoldHeader("Subject", UnstructuredValue(job.subject()));
  out += "Message-ID: " + rendered.message_id + "\r\n";
  out += "MIME-Version: 1.0\r\n";
  for (const auto& header : job.headers()) {
    if (IsDeniedHeader(header.name())) continue;
    std::string lower = AsciiLower(header.name());
    if (lower == "subject" || (lower == "reply-to" && job.reply_to_size() > 0)) continue;
    out += FoldHeader(header.name(), UnstructuredValue(header.value()));
  }

  std::string base = "=_mr" + Digest(record).substr(0, 16) + "_";
  int boundaries = 0;
  auto boundary = [&] { return base + std::to_string(boundaries++); };

  // Boundaries numbered outermost-last, the same on every attempt.
  const std::string& text = job.text_body();
  const std::string& html = job.html_body();
  PartWriter body = [&](std::string& o) {
    AppendTextPart(o, html.empty() ? "plain" : "html", html.empty() ? text : html);
  };
  if (!text.empty() && !html.empty()) {
    body = [&, b = boundary()](std::string& o) {
      AppendMultipart(o, "alternative", b,
                      {[&](std::string& p) { AppendTextPart(p, "plain", text); },
                       [&](std::string& p) { AppendTextPart(p, "html", html); }});
    };
  }
  std::vector<PartWriter> related, mixed;
  size_t size = text.size() + html.size();
  for (const auto& a : job.attachments()) {
    bool is_related = a.inline_() && !a.content_id().empty();
    (is_related ? related : mixed).push_back([&a, is_related](std::string& o) {
      AppendAttachmentPart(o, a, is_related);
    });
    size += a.content().size() / 3 * 4 + a.content().size() / 28 + 512;
  }
  for (auto* parts : {&related, &mixed}) {
    if (parts->empty()) continue;
    parts->insert(parts->begin(), std::move(body));
    body = [parts, b = boundary(), subtype = parts == &related ? "related" : "mixed"](
               std::string& o) { AppendMultipart(o, subtype, b, *parts); };
  }
  out.reserve(out.size() + size + size / 16 + 1024);  // one allocation for the whole message
  body(out);
  return rendered;
}

}  // namespace mailroom
