// The rendezvous server (KvServer, rendezvous.h): one thread per connection, the handshake, the
// key-value requests, liveness of the ranks (leave, lost connections, heartbeats) and the fault
// pushed to every monitor. The wire is rendezvous_framing.h; the client rendezvous_client.cpp.
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
#include <stdexcept>
#include <thread>

#include "comm/rendezvous.h"
#include "comm/rendezvous_framing.h"
#include "runtime/log.h"

namespace elmo {

using namespace rendezvous_wire;

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

}  // namespace elmo
