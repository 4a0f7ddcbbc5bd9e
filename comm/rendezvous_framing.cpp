// The rendezvous store's framing (rendezvous_framing.h): socket I/O with deadlines and stop
// flags, frames, socket helpers; and the parsers of what arrives from the network (rendezvous.h,
// also fuzzed). The server is rendezvous_server.cpp, the client rendezvous_client.cpp.
#include "comm/rendezvous_framing.h"

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
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "comm/rendezvous.h"
#include "runtime/log.h"

namespace elmo {

namespace rendezvous_wire {

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

std::string join_ints(const std::vector<int>& values, size_t limit) {
  std::string out;
  for (size_t i = 0; i < values.size() && i < limit; ++i) out += (i ? ", " : "") + str(values[i]);
  if (values.size() > limit) out += str(", ... (", values.size(), " in all)");
  return out.empty() ? "none" : out;
}

}  // namespace rendezvous_wire

using namespace rendezvous_wire;

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

}  // namespace elmo
