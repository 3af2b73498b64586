// Delivery end to end: jobs published on the real Kafka broker, delivered
// by the mailroom binary to real SMTP servers (aiosmtpd driven by a script,
// Postfix's smtp-sink), with events read back from the events topic.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>

#include "mailroom/message.h"
#include "mailroom/v1/delivery_event.pb.h"
#include "support/kafka_helpers.h"
#include "support/smtp_helpers.h"

namespace mailroom::testing_support {
namespace {

using nlohmann::json;

std::string Delivery(int port, const std::string& carrier_extra = "",
                     const std::string& delivery_extra = "") {
  return "delivery:\n  default_carrier: relay\n  lease: 3s\n"
         "  backoff: {base: 300ms, factor: 2, cap: 2s, jitter: 0.1}\n" +
         delivery_extra +
         "carriers:\n  relay:\n    type: smtp\n    url: smtp://127.0.0.1:" + std::to_string(port) +
         "\n    starttls: \"off\"\n    max_connections: 8\n" + carrier_extra;
}

std::vector<v1::DeliveryEvent> Events(const std::string& suffix) {
  std::vector<v1::DeliveryEvent> out;
  for (const auto& record : ReadTopic("mail.events-" + suffix)) {
    v1::DeliveryEvent e;
    EXPECT_TRUE(e.ParseFromString(record.payload));
    out.push_back(std::move(e));
  }
  return out;
}

// Every distinct carrier answer so far, for failure messages.
std::string Diagnostics(const std::string& suffix) {
  std::set<std::string> seen;
  for (const auto& e : Events(suffix)) {
    if (!e.diagnostic().empty()) seen.insert(e.carrier() + ": " + e.diagnostic());
  }
  std::string out;
  for (const auto& d : seen) out += d + "\n";
  return out;
}

// "type recipient" for one job's events, in order.
std::vector<std::string> Trail(const std::vector<v1::DeliveryEvent>& events,
                               const std::string& job) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    if (e.job_id() != job) continue;
    out.push_back(v1::EventType_Name(e.type()) + (e.recipient().empty() ? "" : " ") +
                  e.recipient());
  }
  return out;
}

v1::MailJob To(const std::string& id, std::initializer_list<std::string> recipients) {
  v1::MailJob job = SampleJob(id);
  job.clear_to();
  for (const auto& r : recipients) job.add_to()->set_email(r);
  return job;
}

int64_t Finished(MailroomUnderTest& m) {
  auto spool = m.OpenSpoolReadOnly();
  if (!spool) return -1;
  auto stats = spool->Stats();
  return stats.jobs_by_state[v1::JOB_STATE_DELIVERED] + stats.jobs_by_state[v1::JOB_STATE_BOUNCED] +
         stats.jobs_by_state[v1::JOB_STATE_SUPPRESSED] + stats.jobs_by_state[v1::JOB_STATE_EXPIRED];
}

TEST(DeliveryIntegration, KafkaToAiosmtpdWithContentEnvelopeAndEvents) {
  std::string s = UniqueSuffix();
  ScriptedSmtpServer server;
  server.Start();
  MailroomUnderTest mailroom(s, {.top = Delivery(server.port())});
  mailroom.Start();

  constexpr int kJobs = 40;
  TestProducer producer;
  for (int i = 0; i < kJobs; ++i) {
    v1::MailJob job = SampleJob("d-" + std::to_string(i));
    job.set_subject("Grüße " + std::to_string(i));
    job.add_cc()->set_email("cc-" + std::to_string(i) + "@example.org");
    job.add_bcc()->set_email("audit@example.org");
    (*job.mutable_metadata())["order"] = std::to_string(i);
    auto* a = job.add_attachments();
    a->set_filename("a.bin");
    a->set_content(std::string(3000, static_cast<char>(i)));
    producer.SendJob("mail.jobs.shop-" + s, job);
  }
  producer.Flush();
  ASSERT_TRUE(mailroom.WaitFor([&] { return server.Messages().size() == kJobs; }, 60000))
      << server.Messages().size() << "\n"
      << mailroom.log();
  ASSERT_TRUE(mailroom.WaitFor([&] { return Finished(mailroom) == kJobs; }, 30000));

  std::map<std::string, json> by_subject;
  for (const auto& m : server.Messages()) by_subject[m["subject"]] = m;
  for (int i = 0; i < kJobs; ++i) {
    v1::JobRecord expected;
    expected.set_tenant("shop-" + s);
    expected.mutable_job()->set_id("d-" + std::to_string(i));
    expected.mutable_job()->mutable_from()->set_email("app@example.com");
    std::string subject = "=?UTF-8?B?" + EncodeBase64("Grüße " + std::to_string(i), 0) + "?=";
    ASSERT_TRUE(by_subject.count(subject)) << subject;
    const json& m = by_subject[subject];
    EXPECT_EQ(m["mail_from"], "app@example.com");
    std::string id = std::to_string(i);
    EXPECT_EQ(m["rcpt_tos"], json({"user-d-" + id + "@example.net", "cc-" + id + "@example.org",
                                   "audit@example.org"}));
    EXPECT_EQ(m["message_id"], MessageIdFor(expected));
  }

  ASSERT_TRUE(mailroom.WaitFor(
      [&] { return Metric(mailroom.Metrics(), "mailroom_spool_outbox_pending") == 0; }, 30000));
  auto events = Events(s);
  int delivered = 0;
  for (const auto& e : events) {
    if (e.type() != v1::DELIVERED) continue;
    ++delivered;
    EXPECT_EQ(e.reply_code(), 250u);
    EXPECT_EQ(e.carrier(), "relay");
    EXPECT_EQ(e.attempt(), 1u);
    EXPECT_EQ(e.metadata().at("order"), e.job_id().substr(2));
    EXPECT_FALSE(e.message_id().empty());
  }
  EXPECT_EQ(delivered, kJobs * 3) << "one DELIVERED event per recipient";
  std::string metrics = mailroom.Metrics();
  EXPECT_EQ(Metric(metrics,
                   "mailroom_deliveries_total{carrier=\"relay\",outcome=\"delivered\","
                   "tenant=\"shop-" +
                       s + "\"}"),
            kJobs * 3);
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();
}

TEST(DeliveryIntegration, IntoPostfixSmtpSink) {
  std::string s = UniqueSuffix();
  SmtpSink sink;
  sink.Start();
  MailroomUnderTest mailroom(s, {.top = Delivery(sink.port())});
  mailroom.Start();
  constexpr int kJobs = 500;
  TestProducer producer;
  for (int i = 0; i < kJobs; ++i) {
    producer.SendJob("mail.jobs.sink-" + s, SampleJob("k-" + std::to_string(i), 2048));
  }
  producer.Flush();
  ASSERT_TRUE(mailroom.WaitFor([&] { return Finished(mailroom) == kJobs; }, 90000))
      << Finished(mailroom) << " finished; " << sink.Dumps().size() << " at the sink\n"
      << Diagnostics(s) << mailroom.log();
  auto dumps = sink.Dumps();
  EXPECT_EQ(dumps.size(), static_cast<size_t>(kJobs));
  std::set<std::string> recipients;
  for (const auto& dump : dumps) {
    EXPECT_NE(dump.find("X-Mail-Args: <app@example.com>"), std::string::npos);
    auto at = dump.find("X-Rcpt-Args: <");
    ASSERT_NE(at, std::string::npos);
    recipients.insert(dump.substr(at + 14, dump.find('>', at) - at - 14));
  }
  EXPECT_EQ(recipients.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();
}

TEST(DeliveryIntegration, RetriesBouncesSuppressionAndPartialRecipients) {
  std::string s = UniqueSuffix();
  ScriptedSmtpServer server(R"({
    "rcpt": {"slow@example.net": ["451 4.3.0 Try again later", "451 4.3.0 Try again later", "250 OK"],
             "bad@example.net": ["550 5.1.1 <bad@example.net>: Recipient address rejected: User unknown"],
             "gone@example.net": ["550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown"],
             "later@example.net": ["452 4.2.2 Mailbox full, try later", "250 OK"],
             "never@example.net": ["451 4.3.0 Try again later"]},
    "data": {"flaky@example.net": ["421 close", "250 2.0.0 OK"]}})");
  server.Start();
  MailroomUnderTest mailroom(s, {.top = Delivery(server.port())});
  mailroom.Start();
  std::string topic = "mail.jobs.app-" + s;
  TestProducer producer;
  producer.SendJob(topic, To("slow", {"slow@example.net"}));
  producer.SendJob(topic, To("bad", {"bad@example.net"}));
  producer.SendJob(topic, To("flaky", {"flaky@example.net"}));
  producer.SendJob(topic,
                   To("mixed", {"good@example.net", "gone@example.net", "later@example.net"}));
  v1::MailJob expiring = To("expiring", {"never@example.net"});  // deferred until it expires
  auto expiry = std::chrono::system_clock::now() + std::chrono::seconds(8);
  expiring.mutable_expires_at()->set_seconds(
      std::chrono::duration_cast<std::chrono::seconds>(expiry.time_since_epoch()).count());
  producer.SendJob(topic, expiring);
  producer.Flush();
  ASSERT_TRUE(mailroom.WaitFor([&] { return Finished(mailroom) == 5; }, 60000))
      << Diagnostics(s) << mailroom.log();

  // A later job to the bounced address is suppressed without being sent.
  size_t sent_before = server.Messages().size();
  producer.SendJob(topic, To("again", {"Bad@Example.net"}));
  producer.Flush();
  ASSERT_TRUE(mailroom.WaitFor([&] { return Finished(mailroom) == 6; }, 30000)) << mailroom.log();
  EXPECT_EQ(server.Messages().size(), sent_before);
  ASSERT_TRUE(mailroom.WaitFor(
      [&] { return Metric(mailroom.Metrics(), "mailroom_spool_outbox_pending") == 0; }, 30000));

  auto events = Events(s);
  using V = std::vector<std::string>;
  EXPECT_EQ(Trail(events, "slow"), (V{"ACCEPTED", "DEFERRED slow@example.net",
                                      "DEFERRED slow@example.net", "DELIVERED slow@example.net"}));
  EXPECT_EQ(Trail(events, "bad"), (V{"ACCEPTED", "BOUNCED bad@example.net"}));
  EXPECT_EQ(Trail(events, "flaky"),
            (V{"ACCEPTED", "DEFERRED flaky@example.net", "DELIVERED flaky@example.net"}));
  EXPECT_EQ(Trail(events, "mixed"),
            (V{"ACCEPTED", "DELIVERED good@example.net", "BOUNCED gone@example.net",
               "DEFERRED later@example.net", "DELIVERED later@example.net"}));
  EXPECT_EQ(Trail(events, "again"), (V{"ACCEPTED", "SUPPRESSED Bad@Example.net"}));
  auto expiring_trail = Trail(events, "expiring");
  ASSERT_GE(expiring_trail.size(), 3u);
  EXPECT_EQ(expiring_trail.front(), "ACCEPTED");
  EXPECT_EQ(expiring_trail[1], "DEFERRED never@example.net");
  EXPECT_EQ(expiring_trail.back(), "EXPIRED never@example.net");
  for (const auto& e : events) {
    if (e.type() == v1::BOUNCED) {
      EXPECT_EQ(e.reply_code(), 550u);
      EXPECT_EQ(e.enhanced_status(), "5.1.1");
      EXPECT_EQ(e.category(), "invalid_recipient");
    }
    if (e.job_id() == "flaky" && e.type() == v1::DEFERRED) {
      EXPECT_EQ(e.reply_code(), 421u);
    }
    if (e.job_id() == "mixed" && e.type() == v1::DEFERRED) {
      EXPECT_EQ(e.category(), "mailbox_full");
    }
  }
  // The retry of "mixed" went to the deferred recipient only.
  std::vector<json> mixed;
  for (const auto& m : server.Messages()) {
    if (m["subject"] == "Job mixed") mixed.push_back(m);
  }
  ASSERT_EQ(mixed.size(), 2u);
  EXPECT_EQ(mixed[0]["rcpt_tos"], json({"good@example.net"}));
  EXPECT_EQ(mixed[1]["rcpt_tos"], json({"later@example.net"}));

  auto spool = mailroom.OpenSpoolReadOnly();
  auto slow = spool->GetJob("app-" + s, "slow");
  EXPECT_EQ((*slow)->state(), v1::JOB_STATE_DELIVERED);
  EXPECT_EQ((*slow)->attempts(), 3u);
  auto suppressions = spool->ListSuppressions("app-" + s, 10);
  ASSERT_EQ(suppressions->size(), 2u);
  EXPECT_EQ((*suppressions)[0].second.address(), "bad@example.net");
  EXPECT_EQ((*suppressions)[1].second.address(), "gone@example.net");
  std::string listed;
  EXPECT_EQ(RunCommand(BinPath("mailroomctl") + " spool suppressions --path " +
                           mailroom.spool_path() + " --tenant app-" + s,
                       &listed),
            0);
  EXPECT_NE(listed.find("\"address\":\"bad@example.net\",\"reason\":\"bounce\","
                        "\"category\":\"invalid_recipient\""),
            std::string::npos)
      << listed;
  std::string metrics = mailroom.Metrics();
  EXPECT_EQ(Metric(metrics, "mailroom_suppressed_total{tenant=\"app-" + s + "\"}"), 1);
  EXPECT_EQ(Metric(metrics, "mailroom_expired_total{tenant=\"app-" + s + "\"}"), 1);
  {
    // Every family, delivery's included, passes Prometheus' own linter.
    TempDir dir;
    std::ofstream(dir / "metrics.txt") << metrics;
    std::string out;
    EXPECT_EQ(RunCommand("promtool check metrics < " + dir / "metrics.txt" + " 2>&1", &out), 0)
        << out;
    EXPECT_EQ(out, "");
  }
  EXPECT_EQ(Metric(metrics,
                   "mailroom_bounces_total{carrier=\"relay\",category=\"invalid_recipient\","
                   "tenant=\"app-" +
                       s + "\",type=\"hard\"}"),
            2);
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();
}

TEST(DeliveryIntegration, StartTlsRequiredByDefaultAuthFromSecretsConnectionLimits) {
  std::string s = UniqueSuffix();
  TempDir certs;
  std::string cert = certs / "cert.pem", key = certs / "key.pem";
  ASSERT_EQ(RunCommand("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
                       "-addext subjectAltName=IP:127.0.0.1 -keyout " +
                       key + " -out " + cert + " 2>/dev/null"),
            0);
  ScriptedSmtpServer plain;  // offers no STARTTLS
  plain.Start();             // listening before the next server picks a free port
  ScriptedSmtpServer secure("{}",
                            {"--tls-cert", cert, "--tls-key", key, "--auth", "mailroom:s3cret"});
  secure.Start();
  setenv("MAILROOM_TEST_SMTP_PASSWORD", "s3cret", 1);  // the child inherits it
  std::string tenant = "tls-" + s;
  auto smtp = [&](int port) {
    return "{type: smtp, url: \"smtp://127.0.0.1:" + std::to_string(port);
  };
  MailroomUnderTest mailroom(
      s,
      {.top = "delivery:\n  default_carrier: secure\n"
              "  backoff: {base: 300ms, factor: 2, cap: 2s}\n"
              "carriers:\n"
              "  secure: " +
              smtp(secure.port()) + "\", ca_file: " + cert +
              ", username: mailroom, password: \"${MAILROOM_TEST_SMTP_PASSWORD}\", "
              "ehlo_name: mailroom.test, max_connections: 1, max_messages_per_connection: 3}\n"
              "  plain: " +
              smtp(plain.port()) +
              "\"}\n"
              "  wrong: " +
              smtp(secure.port()) + "\", ca_file: " + cert +
              ", username: mailroom, password: nope}\n"
              "tenants:\n  " +
              tenant + ": {allowed_senders: [example.com], allowed_carriers: [plain, wrong]}\n"});
  mailroom.Start();
  TestProducer producer;
  std::string topic = "mail.jobs." + tenant;
  for (int i = 0; i < 7; ++i) producer.SendJob(topic, SampleJob("tls-" + std::to_string(i)));
  v1::MailJob to_plain = SampleJob("to-plain"), to_wrong = SampleJob("to-wrong");
  to_plain.set_carrier("plain");
  to_wrong.set_carrier("wrong");
  producer.SendJob(topic, to_plain);
  producer.SendJob(topic, to_wrong);
  producer.Flush();

  ASSERT_TRUE(mailroom.WaitFor([&] { return secure.Messages().size() == 7; }, 60000))
      << Diagnostics(s);
  std::map<int, int> per_session;
  for (const auto& m : secure.Messages()) {
    EXPECT_TRUE(m["tls"].get<bool>());
    EXPECT_EQ(m["auth"], "mailroom");
    EXPECT_EQ(m["helo"], "mailroom.test");
    per_session[m["session"].get<int>()]++;
  }
  EXPECT_GE(per_session.size(), 3u) << "at most 3 messages per connection";
  for (const auto& [session, n] : per_session) EXPECT_LE(n, 3) << "session " << session;

  ASSERT_TRUE(mailroom.WaitFor(
      [&] {
        std::string m = mailroom.Metrics();
        return Metric(
                   m,
                   "mailroom_delivery_retries_total{carrier=\"plain\",category=\"connection\"}") >
                   0 &&
               Metric(m, "mailroom_delivery_retries_total{carrier=\"wrong\",category=\"auth\"}") >
                   0 &&
               Metric(m, "mailroom_spool_outbox_pending") == 0;
      },
      30000))
      << Diagnostics(s);
  EXPECT_TRUE(plain.Messages().empty()) << "nothing may be sent in clear text";
  auto events = Events(s);
  bool plain_deferred = false, wrong_deferred = false;
  for (const auto& e : events) {
    EXPECT_NE(e.type(), v1::BOUNCED) << e.job_id() << ": a carrier problem is not a bounce";
    if (e.job_id() == "to-plain" && e.type() == v1::DEFERRED) {
      plain_deferred = true;
      EXPECT_NE(e.diagnostic().find("STARTTLS"), std::string::npos) << e.diagnostic();
    }
    if (e.type() == v1::DELIVERED) {
      // The answer to the message, even on a connection's last message (then QUIT follows).
      EXPECT_EQ(e.reply_code(), 250u);
      EXPECT_EQ(e.diagnostic(), "OK queued");
    }
    if (e.job_id() == "to-wrong" && e.type() == v1::DEFERRED) {
      wrong_deferred = true;
      EXPECT_EQ(e.reply_code(), 535u);
    }
  }
  EXPECT_TRUE(plain_deferred && wrong_deferred);
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();
}

TEST(DeliveryIntegration, CarrierDownForAWhileLosesNothing) {
  std::string s = UniqueSuffix();
  ScriptedSmtpServer server;  // not started yet: the port is closed
  MailroomUnderTest mailroom(s, {.top = Delivery(server.port())});
  mailroom.Start();
  constexpr int kJobs = 100;
  TestProducer producer;
  for (int i = 0; i < kJobs; ++i) {
    producer.SendJob("mail.jobs.down-" + s, SampleJob("x-" + std::to_string(i)));
  }
  producer.Flush();
  ASSERT_TRUE(mailroom.WaitFor(
      [&] {
        return Metric(mailroom.Metrics(),
                      "mailroom_delivery_retries_total{carrier=\"relay\","
                      "category=\"connection\"}") >= kJobs;
      },
      60000))
      << mailroom.log();
  server.Start();
  ASSERT_TRUE(mailroom.WaitFor([&] { return Finished(mailroom) == kJobs; }, 60000))
      << mailroom.log();
  std::set<std::string> subjects;
  for (const auto& m : server.Messages()) subjects.insert(m["subject"]);
  EXPECT_EQ(subjects.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(server.Messages().size(), static_cast<size_t>(kJobs)) << "no duplicates";
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();
}

// With PIPELINING offered, MAIL, the RCPTs and DATA go out together (on one
// connection here, the next message's behind the previous body): each
// recipient still gets its own answer, and lines starting with "." (which
// the client doubles) arrive as they were.
TEST(DeliveryIntegration, PipelinedTransactionsAnswerEachRecipientAndKeepDotLines) {
  std::string s = UniqueSuffix();
  ScriptedSmtpServer server(
      R"({"pipelining": true, "rcpt": {"gone@example.net": ["550 5.1.1 User unknown"]}})");
  server.Start();
  std::string config = Delivery(server.port());
  config.replace(config.find("max_connections: 8"), 18, "max_connections: 1");
  MailroomUnderTest mailroom(s, {.top = config});
  mailroom.Start();
  const std::string raw =
      "From: app@example.com\r\nTo: user@example.net\r\nSubject: dots\r\n\r\n"
      ".\r\n.hidden\r\n..two\r\nlast line\r\n";
  v1::MailJob dots = SampleJob("dots");
  dots.set_raw_mime(raw);
  TestProducer producer;
  std::string topic = "mail.jobs.pipe-" + s;
  producer.SendJob(topic, To("three", {"a@example.net", "gone@example.net", "b@example.net"}));
  producer.SendJob(topic, dots);
  producer.SendJob(topic, To("after", {"c@example.net", "gone@example.net"}));
  producer.Flush();
  ASSERT_TRUE(mailroom.WaitFor([&] { return Finished(mailroom) == 3; }, 60000)) << mailroom.log();

  std::map<std::string, json> by_id;  // SampleJob's subject names the job
  std::set<int> sessions;
  for (const auto& m : server.Messages()) {
    std::string subject = m["subject"];
    by_id[subject == "dots" ? "dots" : subject.substr(subject.rfind(' ') + 1)] = m;
    sessions.insert(m["session"].get<int>());
  }
  ASSERT_EQ(by_id.size(), 3u);
  EXPECT_EQ(sessions.size(), 1u) << "one connection";
  EXPECT_EQ(DecodeBase64(by_id["dots"]["data_b64"]), raw);
  EXPECT_EQ(by_id["three"]["rcpt_tos"], json({"a@example.net", "b@example.net"}));
  EXPECT_EQ(by_id["after"]["rcpt_tos"], json({"c@example.net"}));
  ASSERT_TRUE(mailroom.WaitFor(
      [&] { return Metric(mailroom.Metrics(), "mailroom_spool_outbox_pending") == 0; }, 30000));
  auto events = Events(s);
  EXPECT_EQ(Trail(events, "three"),
            (std::vector<std::string>{"ACCEPTED", "DELIVERED a@example.net",
                                      "BOUNCED gone@example.net", "DELIVERED b@example.net"}));
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();
}

// Each connection waits for the answer to its own message only: with the
// answer to the end of DATA held back, messages on different connections
// wait for theirs at the same time (libcurl reads that answer in blocking
// mode, so connections sharing one curl multi handle would take turns).
TEST(DeliveryIntegration, ConnectionsAwaitTheirAnswersIndependently) {
  std::string s = UniqueSuffix();
  ScriptedSmtpServer server(R"({"data_delay": 0.4})");
  server.Start();
  MailroomUnderTest mailroom(s, {.top = Delivery(server.port())});  // 8 connections
  mailroom.Start();
  constexpr int kJobs = 24;
  TestProducer producer;
  for (int i = 0; i < kJobs; ++i) {
    producer.SendJob("mail.jobs.parallel-" + s, SampleJob("p-" + std::to_string(i)));
  }
  producer.Flush();
  ASSERT_TRUE(mailroom.WaitFor([&] { return server.Messages().size() == kJobs; }, 60000))
      << mailroom.log();
  int most = 0;
  std::set<int> sessions;
  for (const auto& m : server.Messages()) {
    most = std::max(most, m["answers_pending"].get<int>());
    sessions.insert(m["session"].get<int>());
  }
  EXPECT_GE(most, 4) << "messages awaiting their answer at once";
  EXPECT_LE(sessions.size(), 8u) << "connections used (max_connections: 8)";
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();
}

TEST(DeliveryIntegration, TenantRateLimitHolds) {
  std::string s = UniqueSuffix();
  ScriptedSmtpServer server;
  server.Start();
  constexpr int kRate = 20;  // per second
  constexpr int kJobs = 100;
  std::string tenant = "slowpoke-" + s;
  MailroomUnderTest mailroom(s, {.top = Delivery(server.port()) + "tenants:\n  " + tenant +
                                        ":\n    allowed_senders: [example.com]\n    rate: " +
                                        std::to_string(kRate) + "/s\n"});
  mailroom.Start();
  TestProducer producer;
  for (int i = 0; i < kJobs; ++i) {
    producer.SendJob("mail.jobs." + tenant, SampleJob("r-" + std::to_string(i)));
  }
  producer.Flush();
  ASSERT_TRUE(mailroom.WaitFor([&] { return server.Messages().size() == kJobs; }, 60000))
      << mailroom.log();
  std::vector<double> times;
  for (const auto& m : server.Messages()) times.push_back(m["time"]);
  std::sort(times.begin(), times.end());
  // In any one-second window: at most the rate plus the burst tolerance
  // (20 ms worth, at least one: here 1) and one for window edges.
  size_t worst = 0;
  for (size_t i = 0, j = 0; i < times.size(); ++i) {
    while (times[i] - times[j] >= 1.0) ++j;
    worst = std::max(worst, i - j + 1);
  }
  EXPECT_LE(worst, static_cast<size_t>(kRate + 2)) << "messages in the busiest second";
  EXPECT_GT(Metric(mailroom.Metrics(),
                   "mailroom_rate_limited_total{limiter=\"tenant\",name=\"" + tenant + "\"}"),
            0);
  EXPECT_EQ(mailroom.Stop(), 0) << mailroom.log();
}

}  // namespace
}  // namespace mailroom::testing_support
