// The SMTP carrier: up to max_connections connections, each with its own
// thread and libcurl easy handle, reused between messages; every server reply
// line is captured to give each recipient its own answer.
//
// Why threads and not the shared multi handle: libcurl's SMTP reads the reply
// to the end of the message in blocking mode, even on a multi handle (curl
// issue 8555, a known bug in 7.88), so transfers sharing one multi handle wait
// for each other's final reply one after another. A thread per connection
// keeps the connections independent; results go back to the dispatch thread
// through CurlLoop::Post.
#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "transport/carriers.h"
#include "util/thread_name.h"

namespace mailroom {
namespace {

// What the next server reply answers.
enum class Awaiting { kGreeting, kOther, kMail, kRcpt, kData, kBody };

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
    {
      std::lock_guard lock(mu_);
      queue_.emplace_back(std::move(request), std::move(done));
      // A connection (thread) more while messages wait for one.
      if (queue_.size() > idle_ && workers_.size() < config_.max_connections && !stop_) {
        workers_.emplace_back([this] { Work(); });
      }
    }
    ready_.notify_one();
  }

  void Stop() override {
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      stop_ = true;
    }
    abort_ = true;  // transfers in progress end within a second
    ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  size_t open_connections() const override { return open_sockets_.load(); }
  size_t in_flight() const override { return in_flight_.load(); }

 private:
  // One connection: its easy handle and the transfer in hand.
  struct Slot {
    ~Slot() {
      if (easy) curl_easy_cleanup(easy);  // says QUIT on a connection still open
      curl_slist_free_all(rcpts);
    }
    CURL* easy = nullptr;
    uint32_t messages_on_connection = 0;
    char errbuf[CURL_ERROR_SIZE] = {};
    // The transfer in hand.
    SendRequest request;
    curl_slist* rcpts = nullptr;
    size_t read_pos = 0;
    bool fresh_retry = false;
    std::chrono::steady_clock::time_point started;
    Awaiting awaiting = Awaiting::kGreeting;
    size_t rcpt_index = 0;
    bool mail_sent = false;   // the transaction began (MAIL FROM)
    std::string line_buffer;  // reply lines of a multi-line reply so far
    std::vector<std::optional<Reply>> rcpt_replies;
    std::optional<Reply> data_reply;
    std::optional<Reply> last_reply;
  };

  static size_t OnRead(char* buffer, size_t size, size_t n, void* user) {
    auto* slot = static_cast<Slot*>(user);
    const std::string& message = *slot->request.message;
    size_t len = std::min(size * n, message.size() - slot->read_pos);
    std::memcpy(buffer, message.data() + slot->read_pos, len);
    slot->read_pos += len;
    return len;
  }

  // Every server reply line, in order.
  static size_t OnHeader(char* data, size_t size, size_t n, void* user) {
    auto* slot = static_cast<Slot*>(user);
    std::string_view line(data, size * n);
    slot->line_buffer.append(line);
    if (line.empty() || line.back() != '\n') return size * n;  // a partial line
    std::string_view last = line;
    while (!last.empty() && (last.back() == '\n' || last.back() == '\r')) last.remove_suffix(1);
    if (last.size() > 3 && last[3] == '-') return size * n;  // a multi-line reply goes on
    Reply reply = ParseSmtpReply(slot->line_buffer);
    slot->line_buffer.clear();
    slot->last_reply = reply;
    switch (slot->awaiting) {
      case Awaiting::kRcpt:
        if (slot->rcpt_index > 0 && slot->rcpt_index <= slot->rcpt_replies.size()) {
          slot->rcpt_replies[slot->rcpt_index - 1] = reply;
        }
        break;
      case Awaiting::kData:
        if (reply.code == 354) {
          slot->awaiting = Awaiting::kBody;
        } else {
          slot->data_reply = reply;
        }
        break;
      case Awaiting::kBody:
        slot->data_reply = reply;
        slot->awaiting = Awaiting::kOther;  // what follows (QUIT) is not the message's
        break;
      default:
        break;
    }
    return size * n;
  }

  // Commands sent (CURLINFO_HEADER_OUT): which reply answers what.
  static int OnDebug(CURL*, curl_infotype type, char* data, size_t size, void* user) {
    if (type != CURLINFO_HEADER_OUT) return 0;
    auto* slot = static_cast<Slot*>(user);
    std::string_view command(data, size);
    if (command.starts_with("MAIL FROM:")) {
      slot->awaiting = Awaiting::kMail;
      slot->mail_sent = true;
    } else if (command.starts_with("RCPT TO:")) {
      slot->awaiting = Awaiting::kRcpt;
      ++slot->rcpt_index;
    } else if (command.starts_with("DATA")) {
      slot->awaiting = Awaiting::kData;
    } else {
      slot->awaiting = Awaiting::kOther;  // EHLO, STARTTLS, AUTH, QUIT
    }
    return 0;
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

  void Configure(Slot* slot) {
    CURL* easy = curl_easy_init();
    slot->easy = easy;
    curl_easy_setopt(easy, CURLOPT_URL, url_.c_str());
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
    curl_easy_setopt(easy, CURLOPT_MAXAGE_CONN, static_cast<long>(config_.max_idle_ms / 1000));
    curl_easy_setopt(easy, CURLOPT_MAXLIFETIME_CONN,
                     static_cast<long>(config_.max_connection_age_ms / 1000));
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(easy, CURLOPT_MAIL_RCPT_ALLLOWFAILS, 1L);
    curl_easy_setopt(easy, CURLOPT_READFUNCTION, &OnRead);
    curl_easy_setopt(easy, CURLOPT_READDATA, slot);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &OnHeader);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, slot);
    curl_easy_setopt(easy, CURLOPT_VERBOSE, 1L);  // routes commands to OnDebug, not stderr
    curl_easy_setopt(easy, CURLOPT_DEBUGFUNCTION, &OnDebug);
    curl_easy_setopt(easy, CURLOPT_DEBUGDATA, slot);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &OnOpenSocket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, this);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, &OnCloseSocket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, this);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, slot->errbuf);
    curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl_easy_setopt(easy, CURLOPT_XFERINFODATA, this);
  }

  // A connection's thread: takes the next message, sends it, hands the
  // result to the dispatch thread.
  void Work() {
    NameThisThread("mr-smtp");
    Slot slot;
    Configure(&slot);
    std::unique_lock lock(mu_);
    while (true) {
      ++idle_;
      ready_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      --idle_;
      if (stop_) return;
      auto [request, done] = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      slot.request = std::move(request);
      slot.fresh_retry = false;
      slot.started = std::chrono::steady_clock::now();
      std::optional<SendResult> result;
      while (!result) {
        Prepare(&slot);
        result = Finished(&slot, curl_easy_perform(slot.easy));
      }
      slot.request = {};
      home_.Post([this, done = std::move(done), result = std::move(*result)]() mutable {
        in_flight_.fetch_sub(1);
        done(std::move(result));
      });
      lock.lock();
    }
  }

  void Prepare(Slot* slot) {
    CURL* easy = slot->easy;
    curl_slist_free_all(slot->rcpts);
    slot->rcpts = nullptr;
    for (const auto& rcpt : slot->request.recipients) {
      slot->rcpts = curl_slist_append(slot->rcpts, ("<" + rcpt + ">").c_str());
    }
    slot->read_pos = 0;
    slot->awaiting = Awaiting::kGreeting;
    slot->rcpt_index = 0;
    slot->mail_sent = false;
    slot->line_buffer.clear();
    slot->rcpt_replies.assign(slot->request.recipients.size(), std::nullopt);
    slot->data_reply.reset();
    slot->last_reply.reset();
    slot->errbuf[0] = '\0';
    std::string from = "<" + slot->request.mail_from + ">";
    curl_easy_setopt(easy, CURLOPT_MAIL_FROM, from.c_str());  // copied by libcurl
    curl_easy_setopt(easy, CURLOPT_MAIL_RCPT, slot->rcpts);
    curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE,
                     static_cast<curl_off_t>(slot->request.message->size()));
    // The last message a connection may carry closes it afterwards (QUIT).
    bool last = slot->messages_on_connection + 1 >= config_.max_messages_per_connection;
    curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, last ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, slot->fresh_retry ? 1L : 0L);
  }

  // The transfer's result, or nothing when it is to be tried again on a new
  // connection.
  std::optional<SendResult> Finished(Slot* slot, CURLcode code) {
    long connects = 0;
    curl_easy_getinfo(slot->easy, CURLINFO_NUM_CONNECTS, &connects);
    bool reused = connects == 0;
    slot->messages_on_connection = reused ? slot->messages_on_connection + 1 : 1;
    if (slot->messages_on_connection >= config_.max_messages_per_connection) {
      slot->messages_on_connection = 0;
    }
    bool any_rcpt = std::ranges::any_of(slot->rcpt_replies, [](auto& r) { return r.has_value(); });
    // A cached connection the server has meanwhile closed (or said 421 on)
    // fails before any recipient: try once more on a new connection.
    bool dropped = code == CURLE_SEND_ERROR || code == CURLE_RECV_ERROR ||
                   code == CURLE_GOT_NOTHING || code == CURLE_WEIRD_SERVER_REPLY;
    if (reused && !any_rcpt && !slot->fresh_retry &&
        (slot->last_reply ? slot->last_reply->code == 421 : dropped)) {
      slot->fresh_retry = true;
      slot->messages_on_connection = 0;
      return std::nullopt;
    }
    SendResult result;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - slot->started).count();
    Reply failure;
    if (slot->last_reply && slot->last_reply->code >= 400) {
      failure = *slot->last_reply;  // greeting, EHLO, STARTTLS, AUTH, MAIL or DATA refused
      failure.session = !slot->mail_sent;
    } else if (code != CURLE_OK) {
      failure.text = std::string(curl_easy_strerror(code));
      if (slot->errbuf[0]) failure.text += std::string(": ") + slot->errbuf;
    } else {
      failure = Reply{250, "", "accepted"};
    }
    bool body_accepted = slot->data_reply && slot->data_reply->code / 100 == 2;
    for (const auto& rcpt : slot->rcpt_replies) {
      if (rcpt && rcpt->code / 100 != 2) {
        result.replies.push_back(*rcpt);  // this recipient refused
      } else if (rcpt && slot->data_reply) {
        result.replies.push_back(*slot->data_reply);
      } else {
        result.replies.push_back(failure);
      }
    }
    if (body_accepted) result.provider_id = slot->data_reply->text;
    if (code != CURLE_OK && !body_accepted) {
      spdlog::debug("smtp {}: {}: {}", config_.name, slot->request.label, failure.text);
    }
    return result;
  }

  CarrierConfig config_;
  CurlLoop& home_;  // the dispatch thread's loop, where results are handed back
  std::string url_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::pair<SendRequest, SendCallback>> queue_;  // guarded by mu_
  std::vector<std::thread> workers_;                        // guarded by mu_
  size_t idle_ = 0;                                         // guarded by mu_
  bool stop_ = false;                                       // guarded by mu_
  std::atomic<bool> abort_{false};
  std::atomic<size_t> in_flight_{0};
  std::atomic<size_t> open_sockets_{0};
};
}  // namespace

std::unique_ptr<Carrier> MakeSmtpCarrier(const CarrierConfig& config, CurlLoop& loop) {
  return std::make_unique<SmtpCarrier>(config, loop);
}

}  // namespace mailroom
