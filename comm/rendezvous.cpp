// The rendezvous store: server (one thread per connection) and client (request connection +
// optional monitor connection). See rendezvous.h for the protocol and the fault semantics.
#include "comm/rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include "runtime/log.h"

namespace elmo {

namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

constexpr char kMagic[8] = {'E', 'L', 'M', 'O', 'K', 'V', '0', '1'};
constexpr uint32_t kMaxFrameBytes = 64u << 20;  // values are small; this only bounds garbage
constexpr uint32_t kMaxHelloBytes = 64u << 10;
constexpr int kPollSliceMs = 100;       // how often blocked threads look at stop flags
constexpr double kSendTimeoutS = 30.0;  // a peer that does not drain its socket this long is dead
constexpr double kReplyMarginS = 30.0;  // extra time a client allows the server for a reply

// Channels a client opens.
enum Channel : uint8_t { kRequests = 0, kMonitor = 1 };

// Requests (client -> server) and pushes (server -> monitor).
enum Op : uint8_t {
  kSet = 1,
  kGet = 2,
  kTryGet = 3,
  kAdd = 4,
  kLeave = 5,
  kReportFault = 6,
  kHeartbeat = 7,
  kFaultPush = 8,
};

// First byte of every reply.
enum Status : uint8_t {
  kOk = 0,
  kTimedOut = 1,
  kMissing = 2,
  kFaulted = 3,  // + i32 rank + message
  kFailed = 4,   // + message
  kWrongToken = 5,
  kRefused = 6,  // + message
};

TimePoint deadline_after(double seconds) {
  if (!(seconds >= 0 && seconds <= 1e9)) return TimePoint::max();  // negative or NaN: none
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int poll_ms_until(TimePoint deadline, int cap_ms) {
  if (deadline == TimePoint::max()) return cap_ms;
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left + 1, cap_ms));
}

std::string errno_text(int error) { return std::strerror(error); }

// Keys may be binary: print them with non-printable bytes escaped.
std::string printable(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// ---- framing and encoding ------------------------------------------------------------------

enum class Io { kOk, kTimeout, kClosed, kError, kStopped };

std::string describe(Io status, const std::string& error) {
  switch (status) {
    case Io::kOk:
      return "ok";
    case Io::kTimeout:
      return "no answer in time";
    case Io::kClosed:
      return error.empty() ? "connection closed" : "connection closed (" + error + ")";
    case Io::kStopped:
      return "stopped";
    case Io::kError:
      return error;
  }
  return error;
}

// Waits until fd is ready for `events`, the deadline passes or *stop becomes true.
Io wait_fd(int fd, short events, TimePoint deadline, const std::atomic<bool>* stop,
           std::string* error) {
  for (;;) {
    if (stop != nullptr && stop->load()) return Io::kStopped;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, poll_ms_until(deadline, kPollSliceMs));
    if (r < 0) {
      if (errno == EINTR) continue;
      *error = "poll: " + errno_text(errno);
      return Io::kError;
    }
    if (r > 0) return Io::kOk;  // ready, or an error/hangup the next send/recv reports
    if (Clock::now() >= deadline) return Io::kTimeout;
  }
}

Io classify_errno(int error_number, std::string* error) {
  *error = errno_text(error_number);
  if (error_number == EPIPE || error_number == ECONNRESET || error_number == ENOTCONN)
    return Io::kClosed;
  return Io::kError;
}

Io send_all(int fd, const char* data, size_t size, TimePoint deadline,
            const std::atomic<bool>* stop, std::string* error) {
  while (size > 0) {
    const Io ready = wait_fd(fd, POLLOUT, deadline, stop, error);
    if (ready != Io::kOk) return ready;
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return classify_errno(errno, error);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Io::kOk;
}

Io recv_exact(int fd, char* data, size_t size, TimePoint deadline, const std::atomic<bool>* stop,
              std::string* error) {
  while (size > 0) {
    const Io ready = wait_fd(fd, POLLIN, deadline, stop, error);
    if (ready != Io::kOk) return ready;
    const ssize_t n = ::recv(fd, data, size, MSG_DONTWAIT);
    if (n == 0) return Io::kClosed;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return classify_errno(errno, error);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Io::kOk;
}

Io send_frame(int fd, const std::string& payload, TimePoint deadline, const std::atomic<bool>* stop,
              std::string* error) {
  const uint32_t size = static_cast<uint32_t>(payload.size());
  std::string buffer(4, '\0');
  for (int i = 0; i < 4; ++i) buffer[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  buffer += payload;
  return send_all(fd, buffer.data(), buffer.size(), deadline, stop, error);
}

Io recv_frame(int fd, std::string* payload, uint32_t max_bytes, TimePoint deadline,
              const std::atomic<bool>* stop, std::string* error) {
  unsigned char header[4];
  Io status = recv_exact(fd, reinterpret_cast<char*>(header), 4, deadline, stop, error);
  if (status != Io::kOk) return status;
  const std::optional<uint32_t> size = parse_rendezvous_frame_length(header, max_bytes, error);
  if (!size) return Io::kError;
  payload->assign(*size, '\0');
  return recv_exact(fd, payload->data(), *size, deadline, stop, error);
}

class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Encoder {
 public:
  Encoder& u8(uint8_t v) {
    out_ += static_cast<char>(v);
    return *this;
  }
  Encoder& u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xff);
    return *this;
  }
  Encoder& u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xff);
    return *this;
  }
  Encoder& i32(int32_t v) { return u32(static_cast<uint32_t>(v)); }
  Encoder& i64(int64_t v) { return u64(static_cast<uint64_t>(v)); }
  Encoder& f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    return u64(bits);
  }
  Encoder& bytes(const std::string& v) {
    u32(static_cast<uint32_t>(v.size()));
    out_ += v;
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

class Decoder {
 public:
  explicit Decoder(const std::string& in) : in_(in) {}
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(in_[pos_++]);
  }
  uint32_t u32() {
    need(4);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
      v |= static_cast<uint32_t>(static_cast<uint8_t>(in_[pos_++])) << (8 * i);
    return v;
  }
  uint64_t u64() {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_++])) << (8 * i);
    return v;
  }
  int32_t i32() { return static_cast<int32_t>(u32()); }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  double f64() {
    const uint64_t bits = u64();
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
  std::string bytes() {
    const uint32_t size = u32();
    need(size);
    std::string v = in_.substr(pos_, size);
    pos_ += size;
    return v;
  }
  bool at_end() const { return pos_ == in_.size(); }

 private:
  void need(size_t n) {
    if (in_.size() - pos_ < n) throw ProtocolError("truncated message");
  }
  const std::string& in_;
  size_t pos_ = 0;
};

std::string peer_address(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return "?";
  char host[NI_MAXHOST];
  char port[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&address), length, host, sizeof host, port,
                    sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  return address.ss_family == AF_INET6 ? str("[", host, "]:", port) : str(host, ":", port);
}

void set_socket_options(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

std::string this_hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

bool peer_closed(int fd) {
  pollfd p{fd, static_cast<short>(POLLIN | POLLRDHUP), 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) return true;
  if (p.revents & POLLIN) {
    char c;
    return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  return false;
}

std::optional<int64_t> parse_counter(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t used = 0;
  try {
    const long long v = std::stoll(text, &used);
    if (used != text.size()) return std::nullopt;
    return v;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string join_ints(const std::vector<int>& values, size_t limit = 16) {
  std::string out;
  for (size_t i = 0; i < values.size() && i < limit; ++i) out += (i ? ", " : "") + str(values[i]);
  if (values.size() > limit) out += str(", ... (", values.size(), " in all)");
  return out.empty() ? "none" : out;
}

}  // namespace

// ---- parsing what arrives from the network (rendezvous.h) -----------------------------------

std::optional<uint32_t> parse_rendezvous_frame_length(const unsigned char header[4],
                                                      uint32_t max_bytes, std::string* error) {
  const uint32_t size =
      header[0] | (header[1] << 8) | (header[2] << 16) | (static_cast<uint32_t>(header[3]) << 24);
  if (size > max_bytes) {
    *error = str("a frame of ", size, " bytes exceeds the limit of ", max_bytes);
    return std::nullopt;
  }
  return size;
}

std::optional<RendezvousHello> parse_rendezvous_hello(const std::string& payload,
                                                      std::string* error) {
  try {
    Decoder in(payload);
    RendezvousHello hello;
    hello.token = in.bytes();
    hello.rank = in.i32();
    hello.pid = in.i64();
    hello.host = in.bytes().substr(0, 255);
    hello.channel = in.u8();
    if (!in.at_end()) throw ProtocolError("trailing bytes");
    return hello;
  } catch (const ProtocolError& e) {
    *error = str("malformed handshake (", e.what(), ")");
    return std::nullopt;
  }
}

std::optional<RendezvousRequest> parse_rendezvous_request(const std::string& payload,
                                                          std::string* error) {
  try {
    Decoder in(payload);
    RendezvousRequest r;
    r.op = in.u8();
    switch (r.op) {
      case kSet:
        r.key = in.bytes();
        r.value = in.bytes();
        break;
      case kGet:
        r.key = in.bytes();
        r.timeout_s = in.f64();
        if (std::isnan(r.timeout_s)) throw ProtocolError("a wait of NaN seconds");
        break;
      case kTryGet:
        r.key = in.bytes();
        break;
      case kAdd:
        r.key = in.bytes();
        r.delta = in.i64();
        break;
      case kReportFault:
        r.value = in.bytes();
        break;
      case kLeave:
      case kHeartbeat:
        break;
      default:
        throw ProtocolError(str("unknown request ", int(r.op)));
    }
    if (!in.at_end()) throw ProtocolError("trailing bytes");
    return r;
  } catch (const ProtocolError& e) {
    *error = str("malformed request (", e.what(), ")");
    return std::nullopt;
  }
}

std::string format_seconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%g s", seconds);
  return text;
}

// ---- server --------------------------------------------------------------------------------

namespace {

struct Member {
  int64_t pid = 0;
  std::string host;
  bool left = false;
  bool lost = false;
};

struct Connection {
  int fd = -1;  // guarded by KvServer::Impl::connections_mutex once the thread runs
  std::string peer;
  std::thread thread;
  std::atomic<bool> done{false};
};

struct Hello {
  std::string token;
  int rank = -1;
  int64_t pid = 0;
  std::string host;
  uint8_t channel = kRequests;
};

}  // namespace

struct KvServer::Impl {
  std::string bind_host;
  std::string token;
  KvServerOptions options;
  int listen_fd = -1;
  int port = 0;
  // Written once when the first fault is recorded: wakes every monitor thread at once (they
  // poll it until they have pushed the fault; nobody reads it, so it stays readable).
  int fault_pipe[2] = {-1, -1};
  std::atomic<bool> stop{false};
  std::thread accept_thread;
  std::atomic<int> refused{0};

  mutable std::mutex mutex;  // data, members, fault
  mutable std::condition_variable changed;
  std::map<std::string, std::string> data;
  std::map<int, Member> members;
  std::optional<std::string> fault;
  int fault_rank = -1;
  uint64_t fault_generation = 0;

  std::mutex connections_mutex;
  std::list<std::unique_ptr<Connection>> connections;

  ~Impl() {  // after every thread is joined (or none started: a failed constructor)
    if (listen_fd >= 0) ::close(listen_fd);
    for (int fd : fault_pipe)
      if (fd >= 0) ::close(fd);
  }

  std::string endpoint() const { return str(bind_host.empty() ? "0.0.0.0" : bind_host, ":", port); }

  void record_fault_locked(int rank, const std::string& message) {
    if (fault)  // consequences of the first fault (other ranks stopping) only clutter the log
      log_debug("rendezvous: after the first fault: ", message);
    else
      log_warn("rendezvous: ", message);
    if (!fault) {
      fault = message;
      fault_rank = rank;
      ++fault_generation;
      const char wake = 1;
      (void)!::write(fault_pipe[1], &wake, 1);
    }
    changed.notify_all();
  }

  std::string member_name(int rank) const {  // mutex held
    auto it = members.find(rank);
    if (it == members.end()) return str("rank ", rank);
    return str("rank ", rank, " (pid ", it->second.pid, " on ", it->second.host, ")");
  }

  void refuse(Connection* c, const std::string& why) {
    ++refused;
    log_warn("rendezvous ", endpoint(), ": refused a connection from ", c->peer, ": ", why);
  }

  void accept_loop();
  void serve(Connection* c);
  bool handshake(Connection* c, Hello* hello);
  void serve_requests(Connection* c, const Hello& hello);
  void serve_monitor(Connection* c, const Hello& hello);
  // Waits for `key`; returns kOk (value set), kTimedOut, kFaulted, or kFailed when the waiting
  // client (fd >= 0) went away or the server stops.
  Status wait_key(const std::string& key, double timeout_s, int fd, std::string* value);
  void connection_closed(const Hello& hello);
};

KvServer::KvServer(const std::string& bind_host, int port, std::string token,
                   KvServerOptions options)
    : impl_(std::make_unique<Impl>()) {
  ELMO_REQUIRE(port >= 0 && port <= 65535, "rendezvous port ", port, " is out of range 0..65535");
  ELMO_REQUIRE(!token.empty(), "the rendezvous needs a non-empty job token");
  impl_->bind_host = bind_host;
  impl_->token = std::move(token);
  impl_->options = options;
  if (::pipe2(impl_->fault_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
    throw CommError(str("the rendezvous cannot create its wake-up pipe: ", errno_text(errno)));

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const bool any = bind_host.empty() || bind_host == "0.0.0.0" || bind_host == "*";
  if (any) hints.ai_family = AF_INET;  // 0.0.0.0: IPv4 everywhere (the common cluster case)
  const int rc = ::getaddrinfo(any ? nullptr : bind_host.c_str(), service.c_str(), &hints, &found);
  if (rc != 0)
    throw CommError(str("the rendezvous cannot listen on ", bind_host, ":", port,
                        ": cannot resolve the address (", ::gai_strerror(rc), ")"));
  std::string last_error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      last_error = errno_text(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      last_error =
          errno == EADDRINUSE ? str("port ", port, " is already in use") : errno_text(errno);
      ::close(fd);
      continue;
    }
    impl_->listen_fd = fd;
    break;
  }
  ::freeaddrinfo(found);
  if (impl_->listen_fd < 0)
    throw CommError(str("the rendezvous cannot listen on ", any ? "0.0.0.0" : bind_host, ":", port,
                        ": ", last_error,
                        "; pick another --root_port or stop the process that holds it"));
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  ::getsockname(impl_->listen_fd, reinterpret_cast<sockaddr*>(&address), &length);
  impl_->port = address.ss_family == AF_INET6
                    ? ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port)
                    : ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
  if (any) impl_->bind_host = "0.0.0.0";
  impl_->accept_thread = std::thread([impl = impl_.get()] { impl->accept_loop(); });
}

KvServer::~KvServer() {
  impl_->stop = true;
  impl_->changed.notify_all();
  if (impl_->accept_thread.joinable()) impl_->accept_thread.join();
  {
    std::lock_guard<std::mutex> lock(impl_->connections_mutex);
    for (auto& c : impl_->connections)
      if (c->fd >= 0) ::shutdown(c->fd, SHUT_RDWR);
  }
  for (auto& c : impl_->connections)
    if (c->thread.joinable()) c->thread.join();
}

void KvServer::Impl::accept_loop() {
  while (!stop) {
    pollfd p{listen_fd, POLLIN, 0};
    const int r = ::poll(&p, 1, kPollSliceMs);
    {
      // Reap connections whose threads ended.
      std::lock_guard<std::mutex> lock(connections_mutex);
      for (auto it = connections.begin(); it != connections.end();) {
        if ((*it)->done) {
          (*it)->thread.join();
          it = connections.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (r <= 0) continue;
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;  // EAGAIN, ECONNABORTED, EMFILE: try again on the next wake-up
    set_socket_options(fd);
    auto connection = std::make_unique<Connection>();
    connection->fd = fd;
    connection->peer = peer_address(fd);
    Connection* c = connection.get();
    std::lock_guard<std::mutex> lock(connections_mutex);
    connections.push_back(std::move(connection));
    c->thread = std::thread([this, c] { serve(c); });
  }
}

void KvServer::Impl::serve(Connection* c) {
  Hello hello;
  if (handshake(c, &hello)) {
    try {
      if (hello.channel == kMonitor)
        serve_monitor(c, hello);
      else
        serve_requests(c, hello);
    } catch (const std::exception& e) {
      log_warn("rendezvous ", endpoint(), ": closing the connection from ", c->peer, " (",
               hello.rank >= 0 ? str("rank ", hello.rank) : std::string("helper"), "): ", e.what());
    }
    connection_closed(hello);
  }
  std::lock_guard<std::mutex> lock(connections_mutex);
  ::close(c->fd);
  c->fd = -1;
  c->done = true;
}

bool KvServer::Impl::handshake(Connection* c, Hello* hello) {
  const TimePoint deadline = deadline_after(options.handshake_timeout_s);
  std::string error;
  char magic[sizeof kMagic];
  Io status = recv_exact(c->fd, magic, sizeof magic, deadline, &stop, &error);
  if (status == Io::kStopped) return false;
  if (status == Io::kTimeout) {
    refuse(c, str("it sent no handshake within ", format_seconds(options.handshake_timeout_s)));
    return false;
  }
  if (status != Io::kOk) {
    refuse(c, "it closed the connection before the handshake");
    return false;
  }
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0) {
    refuse(c, str("it does not speak the rendezvous protocol (it sent \"",
                  printable(std::string(magic, sizeof magic)), "...\")"));
    return false;
  }
  std::string payload;
  status = recv_frame(c->fd, &payload, kMaxHelloBytes, deadline, &stop, &error);
  if (status != Io::kOk) {
    if (status != Io::kStopped) refuse(c, "incomplete handshake: " + describe(status, error));
    return false;
  }
  const std::optional<RendezvousHello> parsed = parse_rendezvous_hello(payload, &error);
  if (!parsed) {
    refuse(c, error);
    return false;
  }
  hello->token = parsed->token;
  hello->rank = parsed->rank;
  hello->pid = parsed->pid;
  hello->host = parsed->host;
  hello->channel = parsed->channel;
  const std::string who =
      str(hello->rank >= 0 ? str("rank ", hello->rank) : std::string("a helper process"), ", pid ",
          hello->pid, " on ", printable(hello->host));
  Encoder reply;
  std::string refusal;
  if (hello->token != token) {
    refuse(c, str("wrong job token (", who, ")"));
    reply.u8(kWrongToken);
  } else if (hello->channel != kRequests && hello->channel != kMonitor) {
    refuse(c, str("unknown channel ", int(hello->channel), " (", who, ")"));
    reply.u8(kRefused).bytes("unknown channel");
  } else if (hello->rank >= 0) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = members.find(hello->rank);
    if (it != members.end() && (it->second.pid != hello->pid || it->second.host != hello->host)) {
      refusal = str("rank ", hello->rank, " already joined from pid ", it->second.pid, " on ",
                    it->second.host, "; every process of the job needs its own rank");
      refuse(c, str(refusal, " (", who, ")"));
      reply.u8(kRefused).bytes(refusal);
    } else if (it == members.end()) {
      members[hello->rank] = Member{hello->pid, printable(hello->host), false, false};
      log_debug("rendezvous: ", who, " joined from ", c->peer);
    }
  }
  if (reply.str().empty()) reply.u8(kOk);
  std::string out(kMagic, sizeof kMagic);
  std::string framed_error;
  Io sent =
      send_all(c->fd, out.data(), out.size(), deadline_after(kSendTimeoutS), &stop, &framed_error);
  if (sent == Io::kOk)
    sent = send_frame(c->fd, reply.str(), deadline_after(kSendTimeoutS), &stop, &framed_error);
  const bool accepted = static_cast<Status>(reply.str()[0]) == kOk;
  if (!accepted) {
    // Give the refused client a moment to read the answer before the close.
    ::shutdown(c->fd, SHUT_WR);
    char sink[256];
    const TimePoint linger = deadline_after(1.0);
    while (Clock::now() < linger) {
      if (wait_fd(c->fd, POLLIN, linger, &stop, &framed_error) != Io::kOk) break;
      if (::recv(c->fd, sink, sizeof sink, MSG_DONTWAIT) <= 0) break;
    }
    return false;
  }
  return sent == Io::kOk;
}

Status KvServer::Impl::wait_key(const std::string& key, double timeout_s, int fd,
                                std::string* value) {
  const TimePoint deadline = deadline_after(timeout_s);
  std::unique_lock<std::mutex> lock(mutex);
  for (;;) {
    auto it = data.find(key);
    if (it != data.end()) {
      *value = it->second;
      return kOk;
    }
    if (fault) return kFaulted;
    if (stop) return kFailed;
    if (Clock::now() >= deadline) return kTimedOut;
    changed.wait_for(lock, std::chrono::milliseconds(kPollSliceMs));
    if (fd >= 0) {
      lock.unlock();
      const bool closed = peer_closed(fd);
      lock.lock();
      if (closed) return kFailed;
    }
  }
}

void KvServer::Impl::serve_requests(Connection* c, const Hello& hello) {
  for (;;) {
    std::string request;
    std::string error;
    const Io status = recv_frame(c->fd, &request, kMaxFrameBytes, TimePoint::max(), &stop, &error);
    if (status == Io::kClosed || status == Io::kStopped) return;
    if (status != Io::kOk) throw ProtocolError(describe(status, error));
    std::optional<RendezvousRequest> parsed = parse_rendezvous_request(request, &error);
    if (!parsed) throw ProtocolError(error);
    RendezvousRequest& in = *parsed;
    Encoder reply;
    switch (in.op) {
      case kSet: {
        std::lock_guard<std::mutex> lock(mutex);
        data[std::move(in.key)] = std::move(in.value);
        changed.notify_all();
        reply.u8(kOk);
        break;
      }
      case kGet: {
        const std::string& key = in.key;
        std::string value;
        const Status s = wait_key(key, in.timeout_s, c->fd, &value);
        if (s == kFailed) return;  // the client went away or the server stops
        reply.u8(s);
        if (s == kOk) reply.bytes(value);
        if (s == kFaulted) {
          std::lock_guard<std::mutex> lock(mutex);
          reply.i32(fault_rank).bytes(*fault);
        }
        break;
      }
      case kTryGet: {
        const std::string& key = in.key;
        std::lock_guard<std::mutex> lock(mutex);
        auto it = data.find(key);
        if (it == data.end())
          reply.u8(kMissing);
        else
          reply.u8(kOk).bytes(it->second);
        break;
      }
      case kAdd: {
        const std::string& key = in.key;
        const int64_t delta = in.delta;
        std::lock_guard<std::mutex> lock(mutex);
        auto it = data.find(key);
        const std::optional<int64_t> current =
            it == data.end() ? std::optional<int64_t>(0) : parse_counter(it->second);
        if (!current) {
          reply.u8(kFailed).bytes(
              str("key '", printable(key), "' holds a value that is not a counter"));
        } else {
          const int64_t next = *current + delta;
          data[key] = std::to_string(next);
          changed.notify_all();
          reply.u8(kOk).i64(next);
        }
        break;
      }
      case kLeave: {
        std::lock_guard<std::mutex> lock(mutex);
        if (hello.rank >= 0) {
          members[hello.rank].left = true;
          log_debug("rendezvous: rank ", hello.rank, " left");
        }
        changed.notify_all();
        reply.u8(kOk);
        break;
      }
      case kReportFault: {
        std::lock_guard<std::mutex> lock(mutex);
        record_fault_locked(hello.rank, in.value);
        reply.u8(kOk);
        break;
      }
      default:  // a heartbeat belongs on the monitor channel
        throw ProtocolError(str("request ", int(in.op), " on the request channel"));
    }
    const Io sent = send_frame(c->fd, reply.str(), deadline_after(kSendTimeoutS), &stop, &error);
    if (sent != Io::kOk) return;
  }
}

void KvServer::Impl::serve_monitor(Connection* c, const Hello& hello) {
  TimePoint last_heartbeat = Clock::now();
  uint64_t pushed_generation = 0;
  bool silence_reported = false;
  const auto silence_limit = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options.heartbeat_timeout_s));
  while (!stop) {
    pollfd p[2] = {{c->fd, POLLIN, 0}, {fault_pipe[0], POLLIN, 0}};
    const int r = ::poll(p, pushed_generation == 0 ? 2 : 1, kPollSliceMs);
    if (r < 0 && errno != EINTR) return;
    if (r > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      std::string message;
      std::string error;
      const Io status =
          recv_frame(c->fd, &message, kMaxHelloBytes, deadline_after(10.0), &stop, &error);
      if (status != Io::kOk) return;
      const std::optional<RendezvousRequest> parsed = parse_rendezvous_request(message, &error);
      if (!parsed || parsed->op != kHeartbeat)
        throw ProtocolError("unexpected message on the monitor channel");
      last_heartbeat = Clock::now();
    }
    std::string push;
    {
      std::lock_guard<std::mutex> lock(mutex);
      const bool silent = Clock::now() - last_heartbeat > silence_limit;
      if (hello.rank >= 0 && silent && !silence_reported && !fault) {
        silence_reported = true;
        Member& m = members[hello.rank];
        if (!m.left && !m.lost) {
          m.lost = true;
          record_fault_locked(hello.rank,
                              str(member_name(hello.rank), " stopped responding: no heartbeat for ",
                                  format_seconds(options.heartbeat_timeout_s)));
        }
      }
      if (fault_generation > pushed_generation) {
        pushed_generation = fault_generation;
        push = Encoder().u8(kFaultPush).i32(fault_rank).bytes(*fault).str();
      }
    }
    if (!push.empty()) {
      std::string error;
      if (send_frame(c->fd, push, deadline_after(5.0), &stop, &error) != Io::kOk) return;
    }
  }
}

void KvServer::Impl::connection_closed(const Hello& hello) {
  if (hello.rank < 0 || stop) return;
  std::lock_guard<std::mutex> lock(mutex);
  Member& m = members[hello.rank];
  if (m.left || m.lost) return;
  m.lost = true;
  record_fault_locked(hello.rank, str(member_name(hello.rank),
                                      " was lost: its connection to the rendezvous closed"));
}

int KvServer::port() const { return impl_->port; }
std::string KvServer::endpoint() const { return impl_->endpoint(); }

void KvServer::set(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->data[key] = value;
  impl_->changed.notify_all();
}

std::optional<std::string> KvServer::try_get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto it = impl_->data.find(key);
  if (it == impl_->data.end()) return std::nullopt;
  return it->second;
}

std::string KvServer::get(const std::string& key, double timeout_s) {
  std::string value;
  const Status s = impl_->wait_key(key, timeout_s, -1, &value);
  if (s == kOk) return value;
  if (s == kFaulted) {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    throw PeerLost(impl_->fault_rank, *impl_->fault);
  }
  throw CommError(str("timed out after ", format_seconds(timeout_s), " waiting for key '",
                      printable(key), "' in the rendezvous store at ", endpoint()));
}

int64_t KvServer::add(const std::string& key, int64_t delta) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto it = impl_->data.find(key);
  const std::optional<int64_t> current =
      it == impl_->data.end() ? std::optional<int64_t>(0) : parse_counter(it->second);
  if (!current)
    throw CommError(str("key '", printable(key), "' holds a value that is not a counter"));
  impl_->data[key] = std::to_string(*current + delta);
  impl_->changed.notify_all();
  return *current + delta;
}

std::optional<std::string> KvServer::fault() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->fault;
}

std::optional<int> KvServer::fault_rank() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (!impl_->fault) return std::nullopt;
  return impl_->fault_rank;
}

void KvServer::record_fault(int rank, const std::string& message) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->record_fault_locked(rank, message);
}

std::vector<int> KvServer::joined_ranks() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<int> ranks;
  for (const auto& [rank, member] : impl_->members) ranks.push_back(rank);
  return ranks;
}

bool KvServer::all_left(int world_size) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (int r = 0; r < world_size; ++r) {
    auto it = impl_->members.find(r);
    if (it == impl_->members.end() || !it->second.left) return false;
  }
  return true;
}

JobState KvServer::wait_for_job(int world_size, double timeout_s) const {
  const TimePoint deadline = deadline_after(timeout_s);
  std::unique_lock<std::mutex> lock(impl_->mutex);
  for (;;) {
    if (impl_->fault) return JobState::kFailed;
    bool done = true;
    for (int r = 0; r < world_size && done; ++r) {
      auto it = impl_->members.find(r);
      done = it != impl_->members.end() && it->second.left;
    }
    if (done) return JobState::kFinished;
    if (Clock::now() >= deadline) return JobState::kRunning;
    impl_->changed.wait_for(lock, std::chrono::milliseconds(kPollSliceMs));
  }
}

int KvServer::refused_connections() const { return impl_->refused; }

// ---- client --------------------------------------------------------------------------------

namespace {

// One TCP connection attempt to host:port before `deadline`; -1 and *error on failure.
int try_connect(const std::string& host, int port, TimePoint deadline, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) {
    *error = str("cannot resolve '", host, "': ", ::gai_strerror(rc));
    return -1;
  }
  int result = -1;
  for (addrinfo* a = found; a != nullptr && result < 0; a = a->ai_next) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      *error = errno_text(errno);
      continue;
    }
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      *error = errno_text(errno);
      ::close(fd);
      continue;
    }
    const Io ready = wait_fd(fd, POLLOUT, deadline, nullptr, error);
    int so_error = 0;
    socklen_t length = sizeof so_error;
    if (ready == Io::kTimeout) {
      *error = "connection attempt timed out";
    } else if (ready == Io::kOk &&
               ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length) == 0 && so_error == 0) {
      set_socket_options(fd);
      result = fd;
      break;
    } else if (so_error != 0) {
      *error = errno_text(so_error);
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return result;
}

}  // namespace

struct KvClient::Impl {
  KvClientOptions options;
  std::string endpoint;

  std::mutex mutex;  // the request channel
  int fd = -1;
  std::string broken;  // why the request channel is unusable ("" while it works)
  bool left = false;

  std::thread monitor;
  int monitor_fd = -1;
  std::atomic<bool> monitor_stop{false};

  mutable std::mutex fault_mutex;
  std::optional<PeerLost> fault;

  std::string where() const {
    return options.rank >= 0 ? str(" (rank ", options.rank, ")") : std::string();
  }

  int open_channel(Channel channel);
  std::string call(const std::string& request, double reply_timeout_s, const std::string& what);
  [[noreturn]] void throw_status(Decoder& in, uint8_t status, const std::string& what);
  // kOk: the value; nullopt on timeout; throws on faults and lost connections.
  std::optional<std::string> wait_key(const std::string& key, double timeout_s);
  void note_fault(const PeerLost& lost) {
    std::lock_guard<std::mutex> lock(fault_mutex);
    if (!fault) fault = lost;
  }
  void monitor_loop(const std::function<void(const PeerLost&)>& on_fault);
  std::string server_lost(const std::string& reason) const {
    return str("lost the rendezvous server at ", endpoint, reason.empty() ? "" : ": ", reason,
               "; the scheduler (or rank 0) that serves it has exited or its machine is "
               "unreachable");
  }
};

int KvClient::Impl::open_channel(Channel channel) {
  const TimePoint deadline = deadline_after(options.connect_timeout_s);
  std::string error = "no attempt";
  auto backoff = std::chrono::milliseconds(50);
  int socket_fd = -1;
  for (;;) {
    const TimePoint attempt_deadline = std::min(deadline, deadline_after(5.0));
    socket_fd = try_connect(options.host, options.port, attempt_deadline, &error);
    if (socket_fd >= 0) break;
    const auto now = Clock::now();
    if (now >= deadline)
      throw CommError(str("could not connect to the rendezvous at ", endpoint, where(), " within ",
                          format_seconds(options.connect_timeout_s), " (", error,
                          "); check --root_uri/--root_port and that the scheduler (or rank 0) is "
                          "running and reachable from this machine"));
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }

  Encoder hello;
  hello.bytes(options.token).i32(options.rank).i64(::getpid()).bytes(this_hostname()).u8(channel);
  std::string out(kMagic, sizeof kMagic);
  std::string io_error;
  Io status = send_all(socket_fd, out.data(), out.size(), deadline_after(kSendTimeoutS), nullptr,
                       &io_error);
  if (status == Io::kOk)
    status = send_frame(socket_fd, hello.str(), deadline_after(kSendTimeoutS), nullptr, &io_error);
  char magic[sizeof kMagic];
  if (status == Io::kOk)
    status = recv_exact(socket_fd, magic, sizeof magic, deadline_after(kReplyMarginS), nullptr,
                        &io_error);
  if (status != Io::kOk) {
    ::close(socket_fd);
    throw CommError(str("the rendezvous at ", endpoint, " did not complete the handshake", where(),
                        " (", describe(status, io_error),
                        "); check that --root_port names an elmo_fast rendezvous"));
  }
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0) {
    ::close(socket_fd);
    throw CommError(str(endpoint,
                        " answered but does not speak the elmo_fast rendezvous "
                        "protocol; check --root_uri/--root_port"));
  }
  std::string reply;
  status = recv_frame(socket_fd, &reply, kMaxHelloBytes, deadline_after(kReplyMarginS), nullptr,
                      &io_error);
  if (status != Io::kOk || reply.empty()) {
    ::close(socket_fd);
    throw CommError(str("the rendezvous at ", endpoint, " did not complete the handshake", where(),
                        " (", describe(status, io_error), ")"));
  }
  Decoder in(reply);
  const uint8_t verdict = in.u8();
  if (verdict == kOk) return socket_fd;
  ::close(socket_fd);
  if (verdict == kWrongToken)
    throw CommError(str("the rendezvous at ", endpoint,
                        " refused the job token; every process of a job needs the same "
                        "ELMO_JOB_TOKEN/--job_token"));
  std::string why = "no reason given";
  try {
    why = in.bytes();
  } catch (const ProtocolError&) {
  }
  throw CommError(str("the rendezvous at ", endpoint, " refused this process", where(), ": ", why));
}

std::string KvClient::Impl::call(const std::string& request, double reply_timeout_s,
                                 const std::string& what) {
  // mutex held by the caller
  if (!broken.empty()) throw CommError(broken);
  std::string error;
  Io status = send_frame(fd, request, deadline_after(kSendTimeoutS), nullptr, &error);
  std::string reply;
  if (status == Io::kOk)
    status =
        recv_frame(fd, &reply, kMaxFrameBytes, deadline_after(reply_timeout_s), nullptr, &error);
  if (status == Io::kOk && reply.empty()) {
    status = Io::kError;
    error = "empty reply";
  }
  if (status != Io::kOk) {
    broken = server_lost(str(describe(status, error), " while ", what));
    ::shutdown(fd, SHUT_RDWR);
    throw CommError(broken);
  }
  return reply;
}

void KvClient::Impl::throw_status(Decoder& in, uint8_t status, const std::string& what) {
  if (status == kFaulted) {
    const int rank = in.i32();
    const std::string message = in.bytes();
    PeerLost lost(rank, message);
    note_fault(lost);
    throw lost;
  }
  if (status == kFailed) throw CommError(str(in.bytes(), " (", what, " at ", endpoint, ")"));
  throw CommError(str("unexpected answer ", int(status), " from the rendezvous at ", endpoint,
                      " while ", what));
}

std::optional<std::string> KvClient::Impl::wait_key(const std::string& key, double timeout_s) {
  if (timeout_s < 0) timeout_s = options.timeout_s;
  const std::string what = str("waiting for key '", printable(key), "'");
  std::lock_guard<std::mutex> lock(mutex);
  const std::string reply =
      call(Encoder().u8(kGet).bytes(key).f64(timeout_s).str(), timeout_s + kReplyMarginS, what);
  Decoder in(reply);
  const uint8_t status = in.u8();
  if (status == kOk) return in.bytes();
  if (status == kTimedOut) return std::nullopt;
  throw_status(in, status, what);
}

KvClient::KvClient(const KvClientOptions& options) : impl_(std::make_unique<Impl>()) {
  ELMO_REQUIRE(options.port > 0 && options.port <= 65535, "rendezvous port ", options.port,
               " is out of range 1..65535");
  ELMO_REQUIRE(!options.token.empty(),
               "a job token is required to join the rendezvous (--job_token or ELMO_JOB_TOKEN)");
  impl_->options = options;
  impl_->endpoint = str(options.host, ":", options.port);
  impl_->fd = impl_->open_channel(kRequests);
}

KvClient::~KvClient() {
  impl_->monitor_stop = true;
  if (impl_->monitor.joinable()) impl_->monitor.join();
  if (impl_->monitor_fd >= 0) ::close(impl_->monitor_fd);
  if (impl_->fd >= 0) ::close(impl_->fd);
}

void KvClient::set(const std::string& key, const std::string& value) {
  const std::string what = str("setting key '", printable(key), "'");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const std::string reply =
      impl_->call(Encoder().u8(kSet).bytes(key).bytes(value).str(), kReplyMarginS, what);
  Decoder in(reply);
  const uint8_t status = in.u8();
  if (status != kOk) impl_->throw_status(in, status, what);
}

std::string KvClient::get(const std::string& key, double timeout_s) {
  if (timeout_s < 0) timeout_s = impl_->options.timeout_s;
  std::optional<std::string> value = impl_->wait_key(key, timeout_s);
  if (value) return std::move(*value);
  throw CommError(str("timed out after ", format_seconds(timeout_s), " waiting for key '",
                      printable(key), "' in the rendezvous at ", impl_->endpoint, impl_->where(),
                      "; the process that should set it may have failed or not started"));
}

std::optional<std::string> KvClient::try_get(const std::string& key) {
  const std::string what = str("reading key '", printable(key), "'");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const std::string reply =
      impl_->call(Encoder().u8(kTryGet).bytes(key).str(), kReplyMarginS, what);
  Decoder in(reply);
  const uint8_t status = in.u8();
  if (status == kOk) return in.bytes();
  if (status == kMissing) return std::nullopt;
  impl_->throw_status(in, status, what);
}

int64_t KvClient::add(const std::string& key, int64_t delta) {
  const std::string what = str("adding to counter '", printable(key), "'");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const std::string reply =
      impl_->call(Encoder().u8(kAdd).bytes(key).i64(delta).str(), kReplyMarginS, what);
  Decoder in(reply);
  const uint8_t status = in.u8();
  if (status == kOk) return in.i64();
  impl_->throw_status(in, status, what);
}

void KvClient::barrier(const std::string& name, int participants, double timeout_s) {
  ELMO_CHECK(participants > 0, "barrier '", name, "' needs at least one participant");
  if (timeout_s < 0) timeout_s = impl_->options.timeout_s;
  const std::string counter = "barrier/" + name;
  const int64_t arrival = add(counter, 1);
  const int64_t generation = (arrival - 1) / participants;
  const std::string done_key = str(counter, "/done/", generation);
  if (arrival % participants == 0) set(done_key, "");
  if (impl_->wait_key(done_key, timeout_s)) return;
  const int64_t arrived = add(counter, 0) - generation * participants;
  throw CommError(str("barrier '", printable(name), "' timed out after ", format_seconds(timeout_s),
                      impl_->where(), ": ", std::min<int64_t>(arrived, participants), " of ",
                      participants, " participants arrived at the rendezvous at ",
                      impl_->endpoint));
}

std::vector<std::string> KvClient::gather_ranks(const std::string& prefix, int world_size,
                                                double timeout_s) {
  ELMO_CHECK(world_size > 0, "gather over ", world_size, " ranks");
  if (timeout_s < 0) timeout_s = impl_->options.timeout_s;
  const TimePoint deadline = deadline_after(timeout_s);
  std::vector<std::string> values(world_size);
  for (int r = 0; r < world_size; ++r) {
    const double left =
        std::max(0.0, std::chrono::duration<double>(deadline - Clock::now()).count());
    std::optional<std::string> value = impl_->wait_key(prefix + std::to_string(r), left);
    if (value) {
      values[r] = std::move(*value);
      continue;
    }
    std::vector<int> joined;
    std::vector<int> missing;
    for (int q = 0; q < world_size; ++q)
      (q < r || try_get(prefix + std::to_string(q)) ? joined : missing).push_back(q);
    throw CommError(str(missing.size() == 1 ? "rank " : "ranks ", join_ints(missing), " of ",
                        world_size, " did not join the rendezvous at ", impl_->endpoint, " within ",
                        format_seconds(timeout_s), " (joined: ", join_ints(joined),
                        "); check that ", missing.size() == 1 ? "it was" : "they were",
                        " started with the same --root_uri/--root_port/--world_size and job "
                        "token"));
  }
  return values;
}

void KvClient::Impl::monitor_loop(const std::function<void(const PeerLost&)>& on_fault) {
  const auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options.heartbeat_interval_s));
  const std::string heartbeat = Encoder().u8(kHeartbeat).str();
  TimePoint next_heartbeat = Clock::now();
  std::optional<PeerLost> lost;
  while (!monitor_stop && !lost) {
    std::string error;
    if (Clock::now() >= next_heartbeat) {
      const Io sent =
          send_frame(monitor_fd, heartbeat, deadline_after(kSendTimeoutS), &monitor_stop, &error);
      if (sent == Io::kStopped) break;
      if (sent != Io::kOk) {
        lost.emplace(-1, server_lost(describe(sent, error)));
        break;
      }
      next_heartbeat = Clock::now() + interval;
    }
    const Io ready = wait_fd(monitor_fd, POLLIN, next_heartbeat, &monitor_stop, &error);
    if (ready == Io::kStopped) break;
    if (ready == Io::kTimeout) continue;
    if (ready != Io::kOk) {
      lost.emplace(-1, server_lost(describe(ready, error)));
      break;
    }
    std::string message;
    const Io got = recv_frame(monitor_fd, &message, kMaxFrameBytes, deadline_after(10.0),
                              &monitor_stop, &error);
    if (got == Io::kStopped) break;
    if (got != Io::kOk) {
      lost.emplace(-1, server_lost(describe(got, error)));
      break;
    }
    try {
      Decoder in(message);
      if (in.u8() != kFaultPush) throw ProtocolError("unexpected message");
      const int rank = in.i32();
      lost.emplace(rank, in.bytes());
    } catch (const ProtocolError& e) {
      lost.emplace(-1, server_lost(str("garbled message (", e.what(), ")")));
    }
  }
  if (lost && !monitor_stop) {
    note_fault(*lost);
    try {
      on_fault(*lost);
    } catch (const std::exception& e) {
      log_error("the fault handler of the rendezvous client threw: ", e.what());
    }
  }
}

void KvClient::start_monitor(std::function<void(const PeerLost&)> on_fault) {
  ELMO_CHECK(!impl_->monitor.joinable() && impl_->monitor_fd < 0,
             "start_monitor called twice on the client of ", impl_->endpoint);
  ELMO_CHECK(impl_->options.heartbeat_interval_s > 0, "heartbeat interval must be > 0");
  impl_->monitor_fd = impl_->open_channel(kMonitor);
  impl_->monitor = std::thread(
      [impl = impl_.get(), on_fault = std::move(on_fault)] { impl->monitor_loop(on_fault); });
}

void KvClient::report_fault(const std::string& message) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const std::string reply = impl_->call(Encoder().u8(kReportFault).bytes(message).str(),
                                        kReplyMarginS, "reporting a fault");
  (void)reply;
}

void KvClient::leave() {
  if (impl_->left) return;
  impl_->left = true;
  impl_->monitor_stop = true;  // the server closing after our goodbye is no fault
  try {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->call(Encoder().u8(kLeave).str(), kReplyMarginS, "leaving");
  } catch (const std::exception&) {
    // The server may already be gone (e.g. the scheduler saw every rank leave); nothing to do.
  }
  if (impl_->monitor.joinable()) impl_->monitor.join();
}

std::optional<PeerLost> KvClient::fault() const {
  std::lock_guard<std::mutex> lock(impl_->fault_mutex);
  return impl_->fault;
}

const std::string& KvClient::endpoint() const { return impl_->endpoint; }
int KvClient::rank() const { return impl_->options.rank; }

// ---- addresses -----------------------------------------------------------------------------

std::string local_address_towards(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), "9", &hints, &found);
  if (rc != 0)
    throw CommError(str("cannot find the local address that reaches '", host,
                        "': cannot resolve it (", ::gai_strerror(rc), ")"));
  std::string result;
  std::string error = "no address";
  for (addrinfo* a = found; a != nullptr && result.empty(); a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    char text[INET6_ADDRSTRLEN] = {};
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
      const void* bytes =
          local.ss_family == AF_INET6
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
      if (::inet_ntop(local.ss_family, bytes, text, sizeof text) != nullptr) result = text;
    } else {
      error = errno_text(errno);
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  if (result.empty())
    throw CommError(str("cannot find the local address that reaches '", host, "': ", error));
  return result;
}

}  // namespace elmo
