// The rendezvous store's wire: constants, op and status codes, deadlines, socket I/O with stop
// flags, length-prefixed frames and the little-endian encoder/decoder, shared by the server
// (rendezvous_server.cpp) and the client (rendezvous_client.cpp). Internal to comm/: programs use
// rendezvous.h, which also documents the protocol. Defined in rendezvous_framing.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace elmo::rendezvous_wire {

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

TimePoint deadline_after(double seconds);

int poll_ms_until(TimePoint deadline, int cap_ms);

std::string errno_text(int error);

// Keys may be binary: print them with non-printable bytes escaped.
std::string printable(const std::string& bytes);

enum class Io { kOk, kTimeout, kClosed, kError, kStopped };

std::string describe(Io status, const std::string& error);

// Waits until fd is ready for `events`, the deadline passes or *stop becomes true.
Io wait_fd(int fd, short events, TimePoint deadline, const std::atomic<bool>* stop,
           std::string* error);

Io classify_errno(int error_number, std::string* error);

Io send_all(int fd, const char* data, size_t size, TimePoint deadline,
            const std::atomic<bool>* stop, std::string* error);

Io recv_exact(int fd, char* data, size_t size, TimePoint deadline, const std::atomic<bool>* stop,
              std::string* error);

Io send_frame(int fd, const std::string& payload, TimePoint deadline, const std::atomic<bool>* stop,
              std::string* error);

Io recv_frame(int fd, std::string* payload, uint32_t max_bytes, TimePoint deadline,
              const std::atomic<bool>* stop, std::string* error);

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

std::string peer_address(int fd);

void set_socket_options(int fd);

std::string this_hostname();

bool peer_closed(int fd);

std::optional<int64_t> parse_counter(const std::string& text);

std::string join_ints(const std::vector<int>& values, size_t limit = 16);

}  // namespace elmo::rendezvous_wire
