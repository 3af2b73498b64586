// Delivery building blocks without a network: reply parsing, the outcome
// table, backoff, rate limits, delivery config, and the spool's update and
// suppression API.
#include <gtest/gtest.h>

#include <prometheus/registry.h>

#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "mailroom/config.h"
#include "mailroom/dispatcher.h"
#include "mailroom/outcome.h"
#include "mailroom/spool.h"
#include "mailroom/transport.h"
#include "scheduler/rate_limiter.h"
#include "support/temp_dir.h"

namespace mailroom::testing_support {
namespace {

Classification ClassifyText(std::string_view reply) { return Classify(ParseSmtpReply(reply)); }

TEST(SmtpReply, ParsesCodeEnhancedCodeAndMultiLineText) {
  Reply r = ParseSmtpReply(
      "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
      "550 5.1.1 https://support.google.com/mail/?p=NoSuchUser x1si\r\n");
  EXPECT_EQ(r.code, 550);
  EXPECT_EQ(r.enhanced, "5.1.1");
  EXPECT_EQ(r.text,
            "The email account that you tried to reach does not exist. "
            "https://support.google.com/mail/?p=NoSuchUser x1si");
  r = ParseSmtpReply("451 Temporary local problem\r\n");
  EXPECT_EQ(r.code, 451);
  EXPECT_EQ(r.enhanced, "");
  EXPECT_EQ(r.text, "Temporary local problem");
}

struct Case {
  const char* reply;
  Verdict verdict;
  const char* category;
};

class OutcomeTable : public ::testing::TestWithParam<Case> {};

TEST_P(OutcomeTable, Classifies) {
  Classification c = ClassifyText(GetParam().reply);
  EXPECT_EQ(c.verdict, GetParam().verdict) << GetParam().reply;
  EXPECT_EQ(c.category, GetParam().category) << GetParam().reply;
}

INSTANTIATE_TEST_SUITE_P(
    Replies, OutcomeTable,
    ::testing::Values(
        Case{"250 2.0.0 Ok: queued as 4Xyz", Verdict::kDelivered, ""},
        Case{"550 5.1.1 <x@y.z>: Recipient address rejected: User unknown", Verdict::kPermanent,
             "invalid_recipient"},
        Case{"550 No such user here", Verdict::kPermanent, "invalid_recipient"},
        Case{"552 5.2.2 Mailbox full", Verdict::kPermanent, "mailbox_full"},
        Case{"452 4.2.2 The email account is over quota", Verdict::kTransient, "mailbox_full"},
        Case{"421 4.7.28 Our system has detected an unusual rate of unsolicited mail",
             Verdict::kTransient, "rate_limited"},
        Case{"421 4.7.0 [TSS04] Messages temporarily deferred due to unexpected volume",
             Verdict::kTransient, "rate_limited"},
        Case{"421 Service not available, closing transmission channel", Verdict::kTransient,
             "connection"},
        Case{"550 5.7.1 Service unavailable; client host blocked using Spamhaus",
             Verdict::kPermanent, "spam_block"},
        Case{"550 5.7.1 Relaying denied", Verdict::kPermanent, "policy"},
        Case{"550 5.7.26 Unauthenticated email is not accepted (DMARC)", Verdict::kPermanent,
             "auth"},
        Case{"535 5.7.8 Authentication credentials invalid", Verdict::kPermanent, "auth"},
        Case{"552 5.3.4 Message size exceeds fixed limit", Verdict::kPermanent, "content"},
        Case{"554 5.6.0 Message content rejected", Verdict::kPermanent, "content"},
        Case{"550 5.4.1 Recipient address rejected: Access denied", Verdict::kPermanent,
             "invalid_recipient"},
        Case{"451 4.4.4 Unable to route", Verdict::kTransient, "dns"},
        Case{"554 5.4.7 Delivery time expired", Verdict::kPermanent, "expired"},
        Case{"500 5.5.2 Syntax error", Verdict::kPermanent, "protocol"},
        Case{"451 4.3.0 Temporary failure", Verdict::kTransient, "other"},
        Case{"554 Transaction failed", Verdict::kPermanent, "other"}));

TEST(Outcome, RefusalsBeforeTheTransactionNeverBounce) {
  Reply auth = ParseSmtpReply("535 5.7.8 Authentication credentials invalid");
  auth.session = true;  // answered AUTH, before MAIL FROM
  Classification c = Classify(auth);
  EXPECT_EQ(c.verdict, Verdict::kTransient);
  EXPECT_EQ(c.category, "auth");
}

TEST(Outcome, NoReplyIsATransientConnectionFailure) {
  EXPECT_EQ(Classify(Reply{0, "", "Couldn't connect to server"}).category, "connection");
  EXPECT_EQ(Classify(Reply{0, "", "Couldn't resolve host name"}).category, "dns");
  EXPECT_EQ(Classify(Reply{0, "", "Timeout was reached"}).verdict, Verdict::kTransient);
}

TEST(Backoff, GrowsGeometricallyUpToTheCapWithJitter) {
  BackoffConfig b;  // 1 min, x2, cap 1 h, +/-10 %
  EXPECT_EQ(BackoffMs(b, 1, 0.5), 60'000);
  EXPECT_EQ(BackoffMs(b, 2, 0.5), 120'000);
  EXPECT_EQ(BackoffMs(b, 4, 0.5), 480'000);
  EXPECT_EQ(BackoffMs(b, 20, 0.5), 3'600'000);
  EXPECT_EQ(BackoffMs(b, 1, 0.0), 54'000);
  EXPECT_EQ(BackoffMs(b, 1, 1.0), 66'000);
}

TEST(RateLimiter, AllowsTheRateAndASmallBurstOnly) {
  Rate rate = *ParseRate("100/s");  // one per 10 ms, burst tolerance 10 ms
  RateLimiter limiter("tenant", "t", rate);
  int64_t now = 1'000'000'000;
  int sent = 0;
  // Offer a message every 100 us for 2 s: no more than 2 s worth + burst.
  for (int64_t t = now; t < now + 2'000'000; t += 100) {
    if (limiter.WaitUs(t) == 0) {
      limiter.Take(t);
      ++sent;
    }
  }
  EXPECT_GE(sent, 200);
  EXPECT_LE(sent, 202);
  RateLimiter fresh("tenant", "t", rate);  // a burst of two, then one per 10 ms
  fresh.Take(now);
  ASSERT_EQ(fresh.WaitUs(now), 0);
  fresh.Take(now);
  EXPECT_EQ(fresh.WaitUs(now), 10'000);
}

TEST(RateLimits, ApplyCarrierTenantAndEachRecipientDomainOnce) {
  auto c = ParseConfig(R"(
delivery: {default_carrier: relay, domain_rates: {Gmail.com: 50/s, example.org: 5/s}}
carriers: {relay: {type: smtp, url: "smtp://127.0.0.1:2525", starttls: "off", rate: 100/s}}
tenants: {billing: {allowed_senders: [example.com], rate: 10/s}, ops: {allowed_senders: [x.com]}}
)");
  ASSERT_TRUE(c.has_value()) << c.error().message;
  RateLimits limits(*c);
  EXPECT_EQ(limits.size(), 4u);
  auto names = [](const std::vector<RateLimiter*>& v) {
    std::vector<std::string> out;
    for (auto* l : v) out.push_back(l->kind() + ":" + l->name());
    return out;
  };
  EXPECT_EQ(names(limits.For("relay", "billing", {"a@GMAIL.com", "b@gmail.com", "c@x.net"})),
            (std::vector<std::string>{"carrier:relay", "tenant:billing", "domain:gmail.com"}));
  EXPECT_EQ(names(limits.For("files", "ops", {"d@example.org"})),
            (std::vector<std::string>{"domain:example.org"}));
  // The longest wait wins; none when all conform.
  auto set = limits.For("relay", "billing", {"a@gmail.com"});
  int64_t now = 1'000'000'000, wait = -1;
  EXPECT_EQ(RateLimits::Blocker(set, now, wait), nullptr);
  EXPECT_EQ(wait, 0);
  for (int i = 0; i < 3; ++i) {
    for (auto* l : set) l->Take(now);
  }
  RateLimiter* blocker = RateLimits::Blocker(set, now, wait);
  ASSERT_NE(blocker, nullptr);
  EXPECT_EQ(blocker->name(), "billing");  // 10/s: 100 ms a message
  EXPECT_EQ(wait, 300'000);               // three taken, no burst tolerance at 100 ms
}

TEST(DeliveryConfig, ParsesCarriersRatesAndBackoff) {
  auto c = ParseConfig(R"(
delivery:
  default_carrier: relay
  lease: 30s
  backoff: {base: 10s, factor: 3, cap: 30m, jitter: 0.2, max_age: 1d}
  domain_rates: {Gmail.com: 50/s}
carriers:
  relay: {type: smtp, url: "smtp://127.0.0.1:2525", starttls: "off", rate: 6000/min,
          max_connections: 4}
  files: {type: file, directory: /tmp/mail}
tenants:
  billing: {allowed_senders: [example.com], carrier: files, allowed_carriers: [relay],
            rate: 10/s}
)");
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->delivery.lease_ms, 30'000);
  EXPECT_EQ(c->delivery.backoff.cap_ms, 1'800'000);
  EXPECT_EQ(c->delivery.backoff.factor, 3.0);
  EXPECT_EQ(c->delivery.domain_rates.at("gmail.com").count, 50u);
  EXPECT_EQ(c->carriers.at("relay").rate.period_ms, 60'000);
  EXPECT_EQ(c->carriers.at("relay").max_connections, 4u);
  EXPECT_EQ(CarrierFor(*c, "billing", ""), "files");
  EXPECT_EQ(CarrierFor(*c, "billing", "relay"), "relay");
  EXPECT_EQ(CarrierFor(*c, "other", "relay"), "relay") << "unknown tenants use the default";
  EXPECT_EQ(CarrierFor(*c, "billing", "nope"), "files");
}

TEST(DeliveryConfig, ErrorsNameTheKey) {
  auto error = [](const std::string& yaml) {
    auto c = ParseConfig(yaml);
    return c ? std::string("ok") : c.error().message;
  };
  EXPECT_EQ(error("carriers: {a: {type: smtp, url: 'http://x'}}\ndelivery: {default_carrier: a}"),
            "carriers.a.url: must start with smtp:// or smtps://, got 'http://x'");
  EXPECT_EQ(error("carriers: {a: {type: fax}}\ndelivery: {default_carrier: a}"),
            "carriers.a.type: must be smtp or file, got 'fax'");
  EXPECT_EQ(error("carriers: {a: {type: file, directory: /tmp/x}}"),
            "delivery.default_carrier: is required when carriers are configured");
  EXPECT_EQ(error("carriers: {a: {type: file, directory: /tmp/x, rate: fast}}"),
            "carriers.a.rate: must be a rate such as 100/s, 6000/min or 50000/d, got 'fast'");
  EXPECT_EQ(error("delivery: {lease: 10 minutes}"),
            "delivery.lease: must be a duration such as 500ms, 30s, 5m, 1h or 2d, got '10 "
            "minutes'");
  EXPECT_EQ(error("carriers: {a: {type: file, directory: /tmp/x}}\n"
                  "delivery: {default_carrier: a}\ntenants: {t: {carrier: b}}"),
            "tenants.t.carrier: unknown carrier 'b'");
  EXPECT_EQ(error("carriers: {a: {type: smtp, url: 'smtp://h', starttls: maybe}}\n"
                  "delivery: {default_carrier: a}"),
            "carriers.a.starttls: must be required or off, got 'maybe'");
}

v1::JobRecord Job(const std::string& id, int64_t due_ms) {
  v1::JobRecord r;
  r.set_tenant("t");
  r.mutable_job()->set_id(id);
  r.mutable_job()->add_to()->set_email("a@example.com");
  r.set_state(v1::JOB_STATE_QUEUED);
  r.set_accepted_ms(due_ms);
  r.set_due_ms(due_ms);
  auto* rcpt = r.add_recipients();
  rcpt->set_address("a@example.com");
  rcpt->set_state(v1::JOB_STATE_QUEUED);
  return r;
}

TEST(SpoolUpdates, StateEventsSuppressionsAndDueEntryMoveTogether) {
  TempDir dir;
  SpoolConfig config;
  config.path = dir / "spool";
  auto spool = Spool::Open(config);
  ASSERT_TRUE(spool.has_value());
  IngestBatch batch;
  batch.jobs.Add(Job("a", 1000));
  batch.jobs.Add(Job("b", 1000));
  ASSERT_TRUE((*spool)->CommitIngest(batch));
  EXPECT_EQ((*spool)->Stats().oldest_queued_ms, 1000);

  auto leased = (*spool)->LeaseDue(2000, 60'000, 10);
  ASSERT_TRUE(leased.has_value());
  ASSERT_EQ(leased->size(), 2u);
  EXPECT_EQ((*leased)[0].due_ms(), 62'000);

  JobUpdate done;  // a: bounced, its address suppressed
  done.previous_state = v1::JOB_STATE_QUEUED;
  done.previous_due_ms = 62'000;
  done.record = (*leased)[0];
  done.record.set_state(v1::JOB_STATE_BOUNCED);
  done.record.set_finished_ms(2100);
  done.events.emplace_back().set_type(v1::BOUNCED);
  done.suppress.emplace_back().set_address("A@Example.com");
  JobUpdate retry;  // b: deferred to 5000
  retry.previous_state = v1::JOB_STATE_QUEUED;
  retry.previous_due_ms = 62'000;
  retry.record = (*leased)[1];
  retry.record.set_state(v1::JOB_STATE_DEFERRED);
  retry.record.set_due_ms(5000);
  retry.events.emplace_back().set_type(v1::DEFERRED);
  std::vector<JobUpdate> updates{done, retry};
  ASSERT_TRUE((*spool)->CommitUpdates(updates));

  SpoolStats stats = (*spool)->Stats();
  EXPECT_EQ(stats.jobs_by_state[v1::JOB_STATE_BOUNCED], 1);
  EXPECT_EQ(stats.jobs_by_state[v1::JOB_STATE_DEFERRED], 1);
  EXPECT_EQ(stats.jobs_by_state[v1::JOB_STATE_QUEUED], 0);
  EXPECT_EQ(stats.outbox_pending, 2);
  EXPECT_EQ(stats.oldest_queued_ms, 1000) << "b is still queued";
  EXPECT_EQ(*(*spool)->NextDueMs(), std::optional<int64_t>(5000));
  EXPECT_TRUE((*spool)->LeaseDue(4999, 1000, 10)->empty());
  auto again = (*spool)->LeaseDue(5000, 1000, 10);
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].job().id(), "b");

  auto suppressed = (*spool)->Suppressed("t", {"a@example.com", "A@EXAMPLE.COM", "b@x.org"});
  EXPECT_EQ(*suppressed, (std::vector<bool>{true, true, false}));
  EXPECT_EQ(*(*spool)->Suppressed("other", {"a@example.com"}), std::vector<bool>{false});
  auto list = (*spool)->ListSuppressions("t", 10);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].second.address(), "A@Example.com");
  ASSERT_TRUE((*spool)->RemoveSuppression("t", "a@example.com"));
  EXPECT_EQ(*(*spool)->Suppressed("t", {"a@example.com"}), std::vector<bool>{false});
}

// Jobs spooled while the dispatcher scans the due index (their due time lies
// before where the scan stops) must still be found: the wakeup carries their
// due time. Ingest's batches are built a moment before they are written.
// The dispatch thread's loop: a transfer's callback runs inside Run(), and a
// function posted from another thread (a carrier's result) wakes Run() and
// runs on the loop's thread.
TEST(CurlLoop, RunsTransfersAndPostedFunctionsOnItsThread) {
  TempDir dir("mailroom-loop");
  std::string path = (std::filesystem::path(dir.path()) / "in.txt").string();
  std::ofstream(path) << "hello";
  CurlLoop loop;
  CURL* easy = curl_easy_init();
  std::string url = "file://" + path, got;
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &got);
  curl_easy_setopt(
      easy, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* user) {
        static_cast<std::string*>(user)->append(data, size * n);
        return size * n;
      });
  int result = -1;
  loop.Add(easy, [&](int code) { result = code; });
  for (int turns = 0; result < 0 && turns < 100; ++turns) loop.Run(100);
  EXPECT_EQ(result, CURLE_OK);
  EXPECT_EQ(got, "hello");
  curl_easy_cleanup(easy);

  std::atomic<std::thread::id> ran_on{};
  std::thread poster([&] { loop.Post([&] { ran_on = std::this_thread::get_id(); }); });
  poster.join();
  loop.Run(60'000);  // returns once the posted function ran, not after a minute
  EXPECT_EQ(ran_on.load(), std::this_thread::get_id());
}

TEST(Dispatcher, DeliversJobsSpooledWhileItScans) {
  TempDir dir;
  auto config = ParseConfig("spool: {path: " + dir / "spool" +
                            "}\ndelivery: {default_carrier: files}\n"
                            "carriers: {files: {type: file, directory: " +
                            dir / "out" + "}}\n");
  ASSERT_TRUE(config.has_value()) << config.error().message;
  auto spool = Spool::Open(config->spool);
  ASSERT_TRUE(spool.has_value());
  prometheus::Registry registry;
  Health health;
  Dispatcher dispatcher(*config, **spool, registry, health);
  ASSERT_TRUE(dispatcher.Start());
  constexpr int kBatches = 300, kPerBatch = 5;
  for (int b = 0; b < kBatches; ++b) {
    int64_t built = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    std::this_thread::sleep_for(std::chrono::microseconds(500 + 700 * (b % 5)));
    IngestBatch batch;
    for (int i = 0; i < kPerBatch; ++i) {
      batch.jobs.Add(Job(std::to_string(b) + "-" + std::to_string(i), built));
    }
    ASSERT_TRUE((*spool)->CommitIngest(batch));
    dispatcher.Wakeup(built);
  }
  auto delivered = [&] { return (*spool)->Stats().jobs_by_state[v1::JOB_STATE_DELIVERED]; };
  for (int i = 0; i < 300 && delivered() < kBatches * kPerBatch; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(delivered(), kBatches * kPerBatch);
  dispatcher.Stop();
  size_t files = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir / "out"))
    files += f.is_regular_file();
  EXPECT_EQ(files, static_cast<size_t>(kBatches * kPerBatch));
}

}  // namespace
}  // namespace mailroom::testing_support
