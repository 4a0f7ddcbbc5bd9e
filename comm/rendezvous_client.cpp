// The rendezvous client (KvClient, rendezvous.h): a request connection and an optional monitor
// connection that heartbeats and receives faults; and local_address_towards. The wire is
// rendezvous_framing.h; the server rendezvous_server.cpp.
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
#include <mutex>
#include <stdexcept>
#include <thread>

#include "comm/rendezvous.h"
#include "comm/rendezvous_framing.h"
#include "runtime/log.h"

namespace elmo {

using namespace rendezvous_wire;

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
