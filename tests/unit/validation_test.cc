#include <gtest/gtest.h>

#include "mailroom/validation.h"

namespace mailroom {
namespace {

constexpr int64_t kNow = 1'800'000'000'000;

class ValidationTest : public testing::Test {
 protected:
  void SetUp() override {
    config_.limits.max_recipients = 3;
    config_.limits.max_message_bytes = 1000;
    config_.limits.max_id_length = 16;
    TenantConfig billing;
    billing.name = "billing";
    billing.allowed_senders = {"billing@example.com", "@receipts.example.com", "example.org"};
    config_.tenants["billing"] = billing;
    job_.set_id("job-1");
    job_.mutable_from()->set_email("billing@example.com");
    job_.add_to()->set_email("ada@example.net");
    job_.set_subject("Your invoice");
  }

  std::string Reason(const std::string& tenant = "billing", size_t bytes = 100) {
    JobValidator validator(config_);
    auto r = validator.Check(tenant, job_, bytes, kNow);
    return r ? std::string(ReasonCode(r->reason)) + ": " + r->detail : "ok";
  }

  Config config_;
  v1::MailJob job_;
};

TEST_F(ValidationTest, AcceptsAValidJob) { EXPECT_EQ(Reason(), "ok"); }

TEST_F(ValidationTest, MissingId) {
  job_.clear_id();
  EXPECT_EQ(Reason(), "missing_id: id is required");
}

TEST_F(ValidationTest, IdTooLong) {
  job_.set_id(std::string(17, 'x'));
  EXPECT_EQ(Reason(), "id_too_long: id is 17 bytes; the limit is 16");
}

TEST_F(ValidationTest, NoRecipient) {
  job_.clear_to();
  EXPECT_EQ(Reason(), "no_recipient: to, cc and bcc are all empty");
}

TEST_F(ValidationTest, InvalidAddresses) {
  job_.mutable_to(0)->set_email("ada@");
  EXPECT_EQ(Reason(), "invalid_address: to[0] 'ada@' has no domain");
  job_.mutable_to(0)->set_email("ada.example.net");
  EXPECT_EQ(Reason(), "invalid_address: to[0] 'ada.example.net' has no '@'");
  job_.mutable_to(0)->set_email("ada@example.net");
  job_.add_cc()->set_email("a..b@example.net");
  EXPECT_EQ(Reason(), "invalid_address: cc[0] 'a..b@example.net' local part has a misplaced '.'");
  job_.clear_cc();
  job_.mutable_from()->clear_email();
  EXPECT_EQ(Reason(), "invalid_address: from is required");
}

TEST_F(ValidationTest, EmailSyntax) {
  for (const char* ok : {"a@b.co", "first.last+tag@sub.example.com", "o'neil@example.ie",
                         "用户@例子.广告", "x@[192.0.2.1]"}) {
    EXPECT_TRUE(IsValidEmail(ok)) << ok;
  }
  for (const char* bad : {"", "@example.com", "a@localhost", "a@-x.com", "a@x..com", ".a@x.com",
                          "a b@x.com", "a@x_y.com", "a\r\n@x.com"}) {
    EXPECT_FALSE(IsValidEmail(bad)) << bad;
  }
  EXPECT_FALSE(IsValidEmail(std::string(65, 'a') + "@x.com"));
}

TEST_F(ValidationTest, HeaderInjection) {
  job_.set_subject("hi\r\nBcc: victim@example.com");
  EXPECT_EQ(Reason(), "header_injection: subject contains CR, LF or NUL");
  job_.set_subject("hi");
  job_.mutable_to(0)->set_name("Ada\nBcc: x@y.com");
  EXPECT_EQ(Reason(), "header_injection: to[0] contains CR, LF or NUL");
  job_.mutable_to(0)->set_name("Ada");
  auto* h = job_.add_headers();
  h->set_name("X-Campaign");
  h->set_value(std::string("spring\0x", 8));
  EXPECT_EQ(Reason(), "header_injection: headers[0] (X-Campaign) contains CR, LF or NUL");
  h->set_value("spring");
  h->set_name("X Bad:");
  EXPECT_EQ(
      Reason(),
      "invalid_header: headers[0] name 'X Bad:' must be printable ASCII without ':' or spaces");
  h->set_name("X-Campaign");
  job_.add_attachments()->set_filename("a.pdf\r\nX: y");
  EXPECT_EQ(Reason(),
            "header_injection: attachments[0] filename, content_type or content_id contains CR, LF "
            "or NUL");
}

TEST_F(ValidationTest, TooManyRecipientsWithTenantOverride) {
  job_.add_cc()->set_email("b@example.net");
  job_.add_bcc()->set_email("c@example.net");
  EXPECT_EQ(Reason(), "ok");
  job_.add_bcc()->set_email("d@example.net");
  EXPECT_EQ(Reason(), "too_many_recipients: 4 recipients; the limit is 3");
  config_.tenants["billing"].max_recipients = 10;
  EXPECT_EQ(Reason(), "ok");
}

TEST_F(ValidationTest, MessageTooLarge) {
  EXPECT_EQ(Reason("billing", 1001), "message_too_large: 1001 bytes; the limit is 1000");
}

TEST_F(ValidationTest, UnknownTenant) {
  EXPECT_EQ(Reason("hr"), "unknown_tenant: tenant 'hr' is not configured");
  config_.tenants.clear();  // no tenants configured: any tenant, any sender
  job_.mutable_from()->set_email("anyone@anywhere.example");
  EXPECT_EQ(Reason("hr"), "ok");
}

TEST_F(ValidationTest, SenderAllowlist) {
  job_.mutable_from()->set_email("Billing@EXAMPLE.com");
  EXPECT_EQ(Reason(), "ok");
  job_.mutable_from()->set_email("noreply@receipts.example.com");
  EXPECT_EQ(Reason(), "ok");
  job_.mutable_from()->set_email("news@example.org");
  EXPECT_EQ(Reason(), "ok");
  job_.mutable_from()->set_email("ceo@example.com");
  EXPECT_EQ(Reason(), "sender_not_allowed: tenant 'billing' may not send from 'ceo@example.com'");
  job_.mutable_from()->set_email("x@sub.example.org");  // whole domains, not subdomains
  EXPECT_EQ(Reason(), "sender_not_allowed: tenant 'billing' may not send from 'x@sub.example.org'");
}

TEST_F(ValidationTest, CarrierChoiceMustBeAllowed) {
  job_.set_carrier("sendgrid");
  EXPECT_EQ(Reason(), "carrier_not_allowed: tenant 'billing' may not choose carrier 'sendgrid'");
  config_.tenants["billing"].allowed_carriers = {"sendgrid"};
  EXPECT_EQ(Reason(), "ok");
}

TEST_F(ValidationTest, Expired) {
  job_.mutable_expires_at()->set_seconds(kNow / 1000 - 1);
  EXPECT_EQ(Reason(), "expired: expires_at is already past");
  job_.mutable_expires_at()->set_seconds(kNow / 1000 + 60);
  EXPECT_EQ(Reason(), "ok");
}

}  // namespace
}  // namespace mailroom
