// The SMTP carrier: up to max_connections connections, each with its own
// thread. libcurl opens each connection (CURLOPT_CONNECT_ONLY: greeting,
// EHLO, STARTTLS, AUTH) and carries its bytes (curl_easy_send/recv, through
// TLS when it was upgraded); this file speaks the mail transactions on it,
// reused for many messages, with PIPELINING (RFC 2920) when the server offers
// it: MAIL, every RCPT and DATA go out together, then the body followed by
// the next waiting message's MAIL, RCPT and DATA, so a busy connection spends
// about one round trip a message instead of four. Each recipient gets its own
// answer.
//
// Why not libcurl's own SMTP transfers: they cannot pipeline, and libcurl
// (7.88) reads the answer to the end of the message in blocking mode even on
// a multi handle (curl issue 8555), so transfers sharing one multi handle
// take turns. A thread per connection keeps connections independent; results
// go back to the dispatch thread through CurlLoop::Post.
#include <curl/curl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <variant>

#include "transport/carriers.h"
#include "util/ascii.h"
#include "util/thread_name.h"

namespace mailroom {
namespace {

using Clock = std::chrono::steady_clock;

// The message as DATA carries it: lines starting with "." get another one
// (RFC 5321 4.5.2), and it ends with CRLF "." CRLF.
std::string ForData(std::string_view message) {
  std::string out;
  out.reserve(message.size() + 64);
  for (size_t pos = 0; pos < message.size();) {
    if (message[pos] == '.') out.push_back('.');
    size_t eol = message.find('\n', pos);
    size_t end = eol == std::string_view::npos ? message.size() : eol + 1;
    out.append(message.substr(pos, end - pos));
    pos = end;
  }
  if (!out.empty() && out.back() != '\n') out += "\r\n";
  out += ".\r\n";
  return out;
}

bool IsAscii(std::string_view s) {
  return std::ranges::all_of(s, [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

class SmtpCarrier final : public Carrier {
 public:
  SmtpCarrier(const CarrierConfig& config, CurlLoop& home) : config_(config), home_(home) {
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    std::string ehlo = config.ehlo_name.empty() ? host : config.ehlo_name;
    url_ = config.url + "/" + ehlo;  // libcurl sends the URL path as the EHLO name
  }

  ~SmtpCarrier() override { Stop(); }

  void Send(SendRequest request, SendCallback done) override {
    in_flight_.fetch_add(1);
    bool someone_waits;
    {
      std::lock_guard lock(mu_);
      queue_.emplace_back(std::move(request), std::move(done));
      // A connection (thread) more while messages wait for one.
      if (queue_.size() > idle_ && workers_.size() < config_.max_connections && !stop_) {
        workers_.emplace_back([this] { Work(); });
      }
      someone_waits = idle_ > 0;
    }
    if (someone_waits) ready_.notify_one();  // busy connections take it unasked
  }

  void Stop() override {
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      stop_ = true;
    }
    abort_ = true;  // exchanges in progress end within a second
    ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  size_t open_connections() const override { return open_sockets_.load(); }
  size_t in_flight() const override { return in_flight_.load(); }
  // Enough that a connection finishing a message finds the next one waiting
  // (with 4, a third of 2 KiB messages went out unannounced).
  size_t backlog() const override { return 16 * static_cast<size_t>(config_.max_connections); }

 private:
  // One connection to the server.
  struct Connection {
    ~Connection() { Close(); }
    void Close() {
      if (easy) curl_easy_cleanup(easy);  // says QUIT if the connection is still up
      easy = nullptr;
      in.clear();
      announced = false;
    }
    CURL* easy = nullptr;
    curl_socket_t fd = CURL_SOCKET_BAD;
    Clock::time_point opened, last_used;
    uint32_t messages = 0;
    bool pipelining = false, size = false, smtputf8 = false;  // offered in EHLO
    std::string in;                                           // received, not yet read as replies
    // The next message's MAIL, RCPT and DATA went out behind the last body.
    bool announced = false;
    // While connecting: the server's reply lines, for its capabilities and
    // for the reason when it refuses.
    std::string lines;
    std::optional<Reply> last_reply;
    char errbuf[CURL_ERROR_SIZE] = {};
  };

  // Why an exchange stopped: the connection failed (reply code 0).
  struct Broken {
    std::string text;
  };

  static size_t OnHeader(char* data, size_t size, size_t n, void* user) {
    auto* c = static_cast<Connection*>(user);
    std::string_view line(data, size * n);
    c->lines.append(line);
    if (line.size() > 3 && line[3] == '-') return size * n;  // a multi-line reply goes on
    Reply reply = ParseSmtpReply(c->lines);
    if (reply.code == 220) {  // greeting, or ready for TLS: a new EHLO follows
      c->pipelining = c->size = c->smtputf8 = false;
    } else if (reply.code == 250) {
      // "250-PIPELINING", "250 SIZE 10240000": one capability a line.
      for (std::string_view rest = c->lines; !rest.empty();) {
        size_t eol = std::min(rest.find('\n'), rest.size());
        std::string_view text = rest.substr(0, eol);
        rest.remove_prefix(std::min(eol + 1, rest.size()));
        if (text.size() < 5) continue;
        std::string word = AsciiLower(text.substr(4, text.find_first_of(" \r", 4) - 4));
        c->pipelining |= word == "pipelining";
        c->size |= word == "size";
        c->smtputf8 |= word == "smtputf8";
      }
    }
    c->last_reply = reply;
    c->lines.clear();
    return size * n;
  }

  static curl_socket_t OnOpenSocket(void* user, curlsocktype, curl_sockaddr* address) {
    curl_socket_t fd = socket(address->family, address->socktype, address->protocol);
    if (fd != CURL_SOCKET_BAD) static_cast<SmtpCarrier*>(user)->open_sockets_++;
    return fd;
  }

  static int OnCloseSocket(void* user, curl_socket_t fd) {
    static_cast<SmtpCarrier*>(user)->open_sockets_--;
    return close(fd);
  }

  static int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<SmtpCarrier*>(user)->abort_.load() ? 1 : 0;  // non-zero aborts
  }

  // Connects, says EHLO, upgrades to TLS and authenticates; on a refusal
  // returns the server's reply (marked `session`: not the message's fault).
  std::optional<Reply> Open(Connection& c) {
    c.Close();
    c.easy = curl_easy_init();
    c.lines.clear();
    c.last_reply.reset();
    c.errbuf[0] = '\0';
    CURL* easy = c.easy;
    curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(easy, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(
        easy, CURLOPT_USE_SSL,
        static_cast<long>(config_.starttls == "off" ? CURLUSESSL_NONE : CURLUSESSL_ALL));
    if (!config_.username.empty()) {
      curl_easy_setopt(easy, CURLOPT_USERNAME, config_.username.c_str());
      curl_easy_setopt(easy, CURLOPT_PASSWORD, config_.password.c_str());
    }
    if (!config_.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, config_.ca_file.c_str());
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, config_.verify_tls ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, config_.verify_tls ? 2L : 0L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(config_.connect_timeout_ms));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.timeout_ms));
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &OnHeader);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &c);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &OnOpenSocket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, this);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, &OnCloseSocket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, this);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, c.errbuf);
    curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl_easy_setopt(easy, CURLOPT_XFERINFODATA, this);
    CURLcode code = curl_easy_perform(easy);
    if (code == CURLE_OK) code = curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &c.fd);
    if (code == CURLE_OK && c.fd != CURL_SOCKET_BAD) {
      c.opened = c.last_used = Clock::now();
      c.messages = 0;
      return std::nullopt;
    }
    Reply failure;
    if (c.last_reply && c.last_reply->code >= 400) {
      failure = *c.last_reply;  // greeting, EHLO, STARTTLS or AUTH refused
    } else {
      failure.text = curl_easy_strerror(code);
      if (c.errbuf[0]) failure.text += std::string(": ") + c.errbuf;
    }
    failure.session = true;
    c.Close();
    return failure;
  }

  // Waits until the socket is ready (POLLIN or POLLOUT), the deadline passes
  // or the carrier stops.
  std::optional<Broken> Wait(const Connection& c, short events, Clock::time_point deadline) {
    while (true) {
      if (abort_) return Broken{"shutting down"};
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return Broken{"timed out waiting for the server"};
      pollfd p{c.fd, events, 0};
      int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (n > 0) return std::nullopt;
      if (n < 0 && errno != EINTR) return Broken{std::string("poll: ") + std::strerror(errno)};
    }
  }

  std::optional<Broken> Write(Connection& c, std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
      size_t sent = 0;
      CURLcode code = curl_easy_send(c.easy, data.data(), data.size(), &sent);
      if (code == CURLE_AGAIN) {
        if (auto broken = Wait(c, POLLOUT, deadline)) return broken;
        continue;
      }
      if (code != CURLE_OK) return Broken{std::string("send: ") + curl_easy_strerror(code)};
      data.remove_prefix(sent);
    }
    return std::nullopt;
  }

  // The next complete reply (all its lines).
  std::variant<Reply, Broken> Read(Connection& c, Clock::time_point deadline) {
    while (true) {
      // A complete reply: lines up to one whose code is followed by a space
      // (or nothing), not a hyphen.
      for (size_t start = 0, eol; (eol = c.in.find('\n', start)) != std::string::npos;
           start = eol + 1) {
        if (eol - start >= 3 && (eol - start == 3 || c.in[start + 3] != '-')) {
          Reply reply = ParseSmtpReply(std::string_view(c.in).substr(0, eol + 1));
          c.in.erase(0, eol + 1);
          return reply;
        }
      }
      char buffer[4096];
      size_t got = 0;
      CURLcode code = curl_easy_recv(c.easy, buffer, sizeof buffer, &got);
      if (code == CURLE_AGAIN) {
        if (auto broken = Wait(c, POLLIN, deadline)) return *broken;
        continue;
      }
      if (code != CURLE_OK) return Broken{std::string("receive: ") + curl_easy_strerror(code)};
      if (got == 0) return Broken{"connection closed by the server"};
      c.in.append(buffer, got);
    }
  }

  // The transaction's commands: MAIL FROM, one RCPT TO per recipient, DATA.
  static std::vector<std::string> Commands(const Connection& c, const SendRequest& request) {
    std::string mail = "MAIL FROM:<" + request.mail_from + ">";
    if (c.size) mail += " SIZE=" + std::to_string(request.message->size());
    bool utf8 = !IsAscii(request.mail_from) ||
                std::ranges::any_of(request.recipients, [](auto& r) { return !IsAscii(r); });
    if (utf8 && c.smtputf8) mail += " SMTPUTF8";
    std::vector<std::string> out = {mail + "\r\n"};
    for (const auto& r : request.recipients) out.push_back("RCPT TO:<" + r + ">\r\n");
    out.push_back("DATA\r\n");
    return out;
  }

  static std::string Joined(const std::vector<std::string>& commands) {
    std::string out;
    for (const auto& command : commands) out += command;
    return out;
  }

  // The message, if any, to announce behind this one's body (pipelining).
  using NextMessage = std::function<const SendRequest*()>;

  // One mail transaction; fills `replies` (one per recipient, as far as the
  // server answered). With pipelining, the next message's commands (from
  // `next`) go out behind the body, saving it a round trip. Returns why the
  // connection broke, if it did.
  std::optional<Broken> Transact(Connection& c, const SendRequest& request,
                                 std::vector<std::optional<Reply>>& replies,
                                 std::optional<Reply>& mail_reply, std::optional<Reply>& final,
                                 const NextMessage& next) {
    auto deadline = Clock::now() + std::chrono::milliseconds(config_.timeout_ms);
    std::vector<std::string> commands = Commands(c, request);
    const std::string& mail = commands.front();

    auto read = [&](std::optional<Reply>& into) -> std::optional<Broken> {
      auto got = Read(c, deadline);
      if (auto* broken = std::get_if<Broken>(&got)) return *broken;
      into = std::get<Reply>(got);
      return std::nullopt;
    };
    std::optional<Reply> data_reply;
    if (c.pipelining) {
      if (!c.announced) {
        if (auto b = Write(c, Joined(commands), deadline)) return b;
      }
      c.announced = false;
      if (auto b = read(mail_reply)) return b;
      for (auto& reply : replies) {
        if (auto b = read(reply)) return b;
      }
      if (auto b = read(data_reply)) return b;
    } else {
      if (auto b = Write(c, mail, deadline)) return b;
      if (auto b = read(mail_reply)) return b;
      if (mail_reply->code / 100 != 2) return Reset(c, deadline);
      for (size_t i = 0; i < replies.size(); ++i) {
        if (auto b = Write(c, commands[i + 1], deadline)) return b;
        if (auto b = read(replies[i])) return b;
      }
      if (std::ranges::none_of(replies, [](auto& r) { return r->code / 100 == 2; })) {
        return Reset(c, deadline);
      }
      if (auto b = Write(c, commands.back(), deadline)) return b;
      if (auto b = read(data_reply)) return b;
    }
    if (data_reply->code != 354) {
      final = data_reply;
      return Reset(c, deadline);
    }
    bool any = std::ranges::any_of(replies, [](auto& r) { return r->code / 100 == 2; });
    // With every recipient refused (pipelined), the server may still say 354:
    // an empty message ends the transaction and nothing is delivered.
    std::string out = any ? ForData(*request.message) : ".\r\n";
    // Announce the next message only on a connection that will carry it.
    const SendRequest* following = nullptr;
    if (any && c.pipelining && next && c.messages + 1 < config_.max_messages_per_connection) {
      following = next();
    }
    if (following) out += Joined(Commands(c, *following));
    if (auto b = Write(c, out, deadline)) return b;
    c.announced = following != nullptr;
    return read(final);
  }

  // After a refused transaction the next one starts clean.
  std::optional<Broken> Reset(Connection& c, Clock::time_point deadline) {
    if (auto b = Write(c, "RSET\r\n", deadline)) return b;
    auto got = Read(c, deadline);
    if (auto* broken = std::get_if<Broken>(&got)) return *broken;
    return std::nullopt;
  }

  SendResult Deliver(Connection& c, const SendRequest& request, const NextMessage& next) {
    auto started = Clock::now();
    size_t n = request.recipients.size();
    std::vector<std::optional<Reply>> replies(n);
    std::optional<Reply> mail_reply, final;
    std::optional<Reply> failure;  // for every recipient without its own answer
    std::optional<Broken> broken;
    for (int tries = 0; tries < 2; ++tries) {
      auto now = Clock::now();
      if (c.easy && (now - c.last_used > std::chrono::milliseconds(config_.max_idle_ms) ||
                     now - c.opened > std::chrono::milliseconds(config_.max_connection_age_ms))) {
        c.Close();
      }
      bool reused = c.easy != nullptr;
      if (!reused) {
        if (auto refused = Open(c)) {
          failure = *refused;
          break;
        }
      }
      replies.assign(n, std::nullopt);
      mail_reply.reset();
      final.reset();
      broken = Transact(c, request, replies, mail_reply, final, next);
      // A reused connection the server has meanwhile closed (or said 421
      // on) fails before any recipient: once more on a new one.
      bool dropped = (broken && !mail_reply) || (mail_reply && mail_reply->code == 421);
      if (!reused || !dropped || replies.empty() || replies[0]) break;
      c.Close();
    }
    c.last_used = Clock::now();
    bool closing = std::ranges::any_of(replies, [](auto& r) { return r && r->code == 421; }) ||
                   (mail_reply && mail_reply->code == 421) || (final && final->code == 421);
    if (broken) failure = Reply{0, "", broken->text};
    if (broken || closing || ++c.messages >= config_.max_messages_per_connection) c.Close();
    // A refused MAIL FROM answers for every recipient (their RCPTs only
    // got "bad sequence").
    bool mail_refused = mail_reply && mail_reply->code / 100 != 2;

    SendResult result;
    result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    for (size_t i = 0; i < n; ++i) {
      const auto& rcpt = replies[i];
      if (mail_refused) {
        result.replies.push_back(*mail_reply);
      } else if (rcpt && rcpt->code / 100 != 2) {
        result.replies.push_back(*rcpt);  // this recipient refused
      } else if (rcpt && final) {
        result.replies.push_back(*final);
      } else {
        result.replies.push_back(failure.value_or(Reply{0, "", "no answer from the server"}));
      }
    }
    if (final && final->code / 100 == 2) {
      result.provider_id = final->text;
    } else if (failure) {
      spdlog::debug("smtp {}: {}: {} {}", config_.name, request.label, failure->code,
                    failure->text);
    }
    return result;
  }

  using Queued = std::pair<SendRequest, SendCallback>;

  // The oldest waiting message; waits for one unless `wait` is false.
  std::optional<Queued> Take(bool wait) {
    std::unique_lock lock(mu_);
    if (wait) {
      ++idle_;
      ready_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      --idle_;
    }
    if (stop_ || queue_.empty()) return std::nullopt;
    Queued queued = std::move(queue_.front());
    queue_.pop_front();
    return queued;
  }

  // A connection's thread: takes the next message, sends it, hands the
  // result to the dispatch thread. A message taken to be announced behind
  // the previous body is the next one sent.
  void Work() {
    NameThisThread("mr-smtp");
    Connection connection;
    std::optional<Queued> next;
    while (!abort_) {
      std::optional<Queued> current = std::move(next);
      next.reset();
      if (!current && !(current = Take(/*wait=*/true))) return;
      SendResult result = Deliver(connection, current->first, [&]() -> const SendRequest* {
        next = Take(/*wait=*/false);
        return next ? &next->first : nullptr;
      });
      home_.Post([this, done = std::move(current->second), result = std::move(result)]() mutable {
        in_flight_.fetch_sub(1);
        done(std::move(result));
      });
    }
  }

  CarrierConfig config_;
  CurlLoop& home_;  // the dispatch thread's loop, where results are handed back
  std::string url_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<Queued> queue_;          // guarded by mu_
  std::vector<std::thread> workers_;  // guarded by mu_
  size_t idle_ = 0;                   // guarded by mu_
  bool stop_ = false;                 // guarded by mu_
  std::atomic<bool> abort_{false};
  std::atomic<size_t> in_flight_{0};
  std::atomic<size_t> open_sockets_{0};
};

}  // namespace

std::unique_ptr<Carrier> MakeSmtpCarrier(const CarrierConfig& config, CurlLoop& loop) {
  return std::make_unique<SmtpCarrier>(config, loop);
}

}  // namespace mailroom
