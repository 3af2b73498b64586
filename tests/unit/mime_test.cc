// The MIME renderer, checked by an independent parser: every rendered message
// is parsed by Python's email package (tests/support/parse_mime.py) and its
// structure, headers and decoded bodies compared with the job.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "mailroom/message.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace mailroom::testing_support {
namespace {

using nlohmann::json;

v1::JobRecord Record() {
  v1::JobRecord r;
  r.set_tenant("billing");
  r.set_accepted_ms(1795382808630);
  auto* job = r.mutable_job();
  job->set_id("invoice-42");
  job->mutable_from()->set_email("billing@example.com");
  job->mutable_from()->set_name("Billing");
  auto* to = job->add_to();
  to->set_email("ada@example.net");
  to->set_name("Ada Lovelace");
  job->set_subject("Your invoice");
  job->set_text_body("Hello Ada,\nyour invoice is attached.\n");
  return r;
}

std::string Base64Decode(const std::string& in) {
  static const std::string kChars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (char c : in) {
    auto pos = kChars.find(c);
    if (pos == std::string::npos) continue;
    val = (val << 6) + static_cast<int>(pos);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

std::string Unix(std::string s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') continue;
    out.push_back(s[i]);
  }
  return out;
}

class MimeTest : public ::testing::Test {
 protected:
  json Parse(const v1::JobRecord& record, std::string* data = nullptr) {
    auto rendered = RenderMessage(record);
    EXPECT_TRUE(rendered.has_value());
    std::string path = dir_ / "message.eml";
    std::ofstream(path, std::ios::binary) << rendered->data;
    if (data) *data = rendered->data;
    std::string out;
    EXPECT_EQ(RunCommand("/usr/bin/python3 " + std::string(MAILROOM_SOURCE_DIR) +
                             "/tests/support/parse_mime.py " + path,
                         &out),
              0);
    json parsed = json::parse(out);
    EXPECT_TRUE(parsed["defects"].empty()) << parsed["defects"].dump();
    EXPECT_LE(parsed["longest_line"].get<int>(), 998);
    EXPECT_EQ(parsed["bare_lf"].get<int>(), 0);
    return parsed;
  }
  std::string Payload(const json& leaf) { return Base64Decode(leaf["payload_b64"]); }

  TempDir dir_;
};

TEST_F(MimeTest, PlainTextMessageHasTheStandardHeaders) {
  auto record = Record();
  json m = Parse(record);
  EXPECT_EQ(m["tree"]["type"], "text/plain");
  EXPECT_EQ(m["headers"]["from"], "Billing <billing@example.com>");
  EXPECT_EQ(m["headers"]["to"], "Ada Lovelace <ada@example.net>");
  EXPECT_EQ(m["headers"]["subject"], "Your invoice");
  EXPECT_EQ(m["headers"]["mime-version"], "1.0");
  EXPECT_EQ(m["headers"]["date"], "Sun, 22 Nov 2026 21:26:48 +0000");
  EXPECT_EQ(m["headers"]["message-id"], MessageIdFor(record));
  EXPECT_EQ(m["leaves"][0]["cte"], "7bit");
  EXPECT_EQ(Unix(Payload(m["leaves"][0])), record.job().text_body());
}

TEST_F(MimeTest, SameJobRendersTheSameBytesAndMessageId) {
  auto record = Record();
  auto a = RenderMessage(record), b = RenderMessage(record);
  EXPECT_EQ(a->data, b->data);
  EXPECT_EQ(a->message_id, b->message_id);
  EXPECT_TRUE(a->message_id.starts_with("<") && a->message_id.ends_with("@example.com>"));
  EXPECT_EQ(a->message_id.size(), 1 + 32 + 1 + 11 + 1);
  record.mutable_job()->set_id("invoice-43");
  EXPECT_NE(RenderMessage(record)->message_id, a->message_id);
}

TEST_F(MimeTest, NonAsciiHeadersUseEncodedWordsAndDecodeBack) {
  auto record = Record();
  auto* job = record.mutable_job();
  std::string subject;
  for (int i = 0; i < 12; ++i) subject += "Grüße aus Köln — 東京 ";
  subject += "end";
  job->set_subject(subject);
  job->mutable_from()->set_name("Zoë \"the\" Büro");
  job->mutable_to(0)->set_name("Smith, John (Sales)");
  auto* cc = job->add_cc();
  cc->set_email("cc@example.org");
  cc->set_name("Ĉu Ĉi");
  job->add_bcc()->set_email("hidden@example.org");
  json m = Parse(record);
  EXPECT_EQ(m["headers"]["subject"], subject);
  EXPECT_EQ(m["headers"]["from"], "\"Zoë \\\"the\\\" Büro\" <billing@example.com>");
  EXPECT_EQ(m["headers"]["to"], "\"Smith, John (Sales)\" <ada@example.net>");
  EXPECT_EQ(m["headers"]["cc"], "Ĉu Ĉi <cc@example.org>");
  EXPECT_FALSE(m["headers"].contains("bcc"));
}

TEST_F(MimeTest, TextAndHtmlBecomeAlternativeWithQuotedPrintableWhereNeeded) {
  auto record = Record();
  auto* job = record.mutable_job();
  std::string text =
      "Grüße\n.leading dot\nFrom the start\ntrailing space \n=_ looks like a boundary\n" +
      std::string(2500, 'x') + "\nend";
  job->set_text_body(text);
  job->set_html_body("<p>Hello <b>Ada</b></p>");
  json m = Parse(record);
  EXPECT_EQ(m["tree"]["type"], "multipart/alternative");
  ASSERT_EQ(m["leaves"].size(), 2u);
  EXPECT_EQ(m["leaves"][0]["type"], "text/plain");
  EXPECT_EQ(m["leaves"][0]["cte"], "quoted-printable");
  EXPECT_EQ(m["leaves"][0]["charset"], "utf-8");
  EXPECT_EQ(Unix(Payload(m["leaves"][0])), text + "\n");
  EXPECT_EQ(m["leaves"][1]["type"], "text/html");
  EXPECT_EQ(m["leaves"][1]["cte"], "7bit");
  EXPECT_EQ(Unix(Payload(m["leaves"][1])), "<p>Hello <b>Ada</b></p>\n");
}

TEST_F(MimeTest, AttachmentsAndInlineImagesNestAsMixedAndRelated) {
  auto record = Record();
  auto* job = record.mutable_job();
  job->set_html_body("<img src=\"cid:logo@example.com\">");
  std::string pdf(10000, '\0');
  std::mt19937 rng(7);
  for (auto& c : pdf) c = static_cast<char>(rng());
  auto* a = job->add_attachments();
  a->set_filename("Rechnung März.pdf");
  a->set_content_type("application/pdf");
  a->set_content(pdf);
  auto* img = job->add_attachments();
  img->set_filename("logo.png");
  img->set_content_type("image/png");
  img->set_content("\x89PNG\r\n\x1a\n-fake");
  img->set_content_id("logo@example.com");
  img->set_inline_(true);
  json m = Parse(record);
  EXPECT_EQ(m["tree"]["type"], "multipart/mixed");
  EXPECT_EQ(m["tree"]["parts"][0]["type"], "multipart/related");
  EXPECT_EQ(m["tree"]["parts"][0]["parts"][0]["type"], "multipart/alternative");
  EXPECT_EQ(m["tree"]["parts"][0]["parts"][1]["type"], "image/png");
  EXPECT_EQ(m["tree"]["parts"][1]["type"], "application/pdf");
  ASSERT_EQ(m["leaves"].size(), 4u);
  const json& png = m["leaves"][2];
  EXPECT_EQ(png["content_id"], "<logo@example.com>");
  EXPECT_EQ(png["disposition"], "inline");
  EXPECT_EQ(Payload(png), img->content());
  const json& attached = m["leaves"][3];
  EXPECT_EQ(attached["disposition"], "attachment");
  EXPECT_EQ(attached["filename"], "Rechnung März.pdf");
  EXPECT_EQ(attached["cte"], "base64");
  EXPECT_EQ(Payload(attached), pdf);
}

TEST_F(MimeTest, ExtraHeadersAreKeptExceptTheDenylist) {
  auto record = Record();
  auto* job = record.mutable_job();
  for (auto [name, value] : std::initializer_list<std::pair<const char*, const char*>>{
           {"X-Campaign", "spring-2026"},
           {"List-Unsubscribe", "<https://example.com/u/1>"},
           {"X-Note", "naïve café"},
           {"Bcc", "spy@example.org"},
           {"DKIM-Signature", "v=1; forged"},
           {"Received", "from nowhere"},
           {"Return-Path", "<x@y.z>"},
           {"Content-Type", "text/evil"},
           {"MIME-Version", "2.0"},
           {"Message-ID", "<forged@x>"},
           {"Date", "yesterday"},
           {"From", "ceo@example.com"}}) {
    auto* h = job->add_headers();
    h->set_name(name);
    h->set_value(value);
  }
  json m = Parse(record);
  EXPECT_EQ(m["headers"]["x-campaign"], "spring-2026");
  EXPECT_EQ(m["headers"]["list-unsubscribe"], "<https://example.com/u/1>");
  EXPECT_EQ(m["headers"]["x-note"], "naïve café");
  for (const char* denied : {"bcc", "dkim-signature", "received", "return-path"}) {
    EXPECT_FALSE(m["headers"].contains(denied)) << denied;
  }
  for (const char* single : {"content-type", "mime-version", "message-id", "date", "from"}) {
    EXPECT_EQ(m["header_count"][single], 1) << single;
  }
  EXPECT_EQ(m["headers"]["from"], "Billing <billing@example.com>");
}

TEST_F(MimeTest, RawMimePassesThroughWithCrlfLineEnds) {
  auto record = Record();
  std::string raw =
      "From: a@example.com\nTo: b@example.net\nSubject: raw\nMessage-ID: <raw-1@example.com>\n\n"
      "body line\r\n.dot line\n";
  record.mutable_job()->set_raw_mime(raw);
  auto rendered = RenderMessage(record);
  ASSERT_TRUE(rendered.has_value());
  EXPECT_EQ(Unix(rendered->data), Unix(raw));
  EXPECT_EQ(rendered->message_id, "<raw-1@example.com>");
  json m = Parse(record);
  EXPECT_EQ(m["headers"]["subject"], "raw");
}

TEST(MimeEncoders, QuotedPrintableKeepsLinesShortAndEscapes) {
  std::string qp = EncodeQuotedPrintable(std::string(200, 'a') + "=\r\nx \r\n");
  for (size_t start = 0; start < qp.size();) {
    size_t end = qp.find("\r\n", start);
    EXPECT_LE(end - start, 76u);
    start = end + 2;
  }
  EXPECT_NE(qp.find("=3D"), std::string::npos);
  EXPECT_NE(qp.find("x=20\r\n"), std::string::npos);  // trailing space encoded
  EXPECT_EQ(EncodeBase64("hello", 0), "aGVsbG8=");
  EXPECT_EQ(EncodeHeaderWords("é"), "=?UTF-8?B?w6k=?=");
}

// Decodes quoted-printable (soft breaks, =XX) for the round trip below.
std::string DecodeQp(std::string_view qp) {
  std::string out;
  for (size_t i = 0; i < qp.size(); ++i) {
    if (qp[i] != '=') {
      out.push_back(qp[i]);
    } else if (qp.substr(i + 1, 2) == "\r\n") {
      i += 2;
    } else {
      out.push_back(static_cast<char>(std::stoi(std::string(qp.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    }
  }
  return out;
}

TEST(MimeEncoders, QuotedPrintableRoundTripsAndStaysSafe) {
  std::vector<std::string> inputs = {
      std::string(1000, 'x'),                            // one long line: soft breaks
      std::string(75, 'y') + ".after a soft break\r\n",  // "." would lead a line
      ".leading dot\r\n..two\r\n",
      "tab\t \r\nspace at the end \r\n",
      "bare\rCR and = signs ==\r\n",
      "Grüße, ünïcödé " + std::string(200, 'z') + "\r\n",
  };
  for (const auto& in : inputs) {
    std::string qp = EncodeQuotedPrintable(in);
    EXPECT_EQ(DecodeQp(qp), in);
    for (size_t start = 0; start < qp.size();) {
      size_t end = std::min(qp.find("\r\n", start), qp.size());
      std::string_view line(qp.data() + start, end - start);
      EXPECT_LE(line.size(), 76u) << line;
      EXPECT_FALSE(line.starts_with(".")) << line;
      EXPECT_FALSE(line.ends_with(" ") || line.ends_with("\t")) << line;
      for (unsigned char c : line) EXPECT_TRUE((c >= 33 && c <= 126) || c == ' ' || c == '\t');
      start = end + 2;
    }
  }
}

// 7bit only for plain ASCII with lines of at most 998 octets: one 8-bit or
// NUL byte anywhere (inside or past the last whole 8-byte word), or a longer
// line, makes the part quoted-printable.
TEST(MimeEncoders, SevenBitOnlyForShortAsciiLines) {
  auto encoding = [](const std::string& body) {
    v1::JobRecord record = Record();
    record.mutable_job()->set_text_body(body);
    auto rendered = RenderMessage(record);
    EXPECT_TRUE(rendered.has_value());
    return rendered->data.find("Content-Transfer-Encoding: 7bit") != std::string::npos ? "7bit"
                                                                                       : "qp";
  };
  EXPECT_EQ(encoding(std::string(21, 'a')), "7bit");
  for (char bad : {'\0', '\x80', '\xff', '\xc3'}) {
    for (size_t at = 0; at < 21; ++at) {
      std::string body(21, 'a');
      body[at] = bad;
      EXPECT_EQ(encoding(body), "qp") << "byte " << static_cast<int>(bad) << " at " << at;
    }
  }
  EXPECT_EQ(encoding("x\r\n" + std::string(998, 'a') + "\n"), "7bit");
  EXPECT_EQ(encoding("x\r\n" + std::string(999, 'a') + "\n"), "qp");
  EXPECT_EQ(encoding(std::string(999, 'a')), "qp");  // the last line, without its break
}

TEST(MimeEncoders, Base64LinesHoldSeventySixCharacters) {
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  std::string b64 = EncodeBase64(data);
  EXPECT_EQ(Base64Decode(b64), data);
  size_t lines = 0;
  for (size_t start = 0; start < b64.size(); ++lines) {
    size_t end = b64.find("\r\n", start);
    ASSERT_NE(end, std::string::npos);
    EXPECT_EQ(end - start, end + 2 == b64.size() ? 1336u % 76 : 76u);
    start = end + 2;
  }
  EXPECT_EQ(lines, 18u);  // 1,336 characters
  EXPECT_EQ(EncodeBase64(""), "");
  EXPECT_EQ(EncodeBase64(std::string(57, 'x')).size(), 78u);
}

}  // namespace
}  // namespace mailroom::testing_support
