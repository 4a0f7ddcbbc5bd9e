// Rendezvous: a small TCP key-value store that the processes of one job meet through, with a
// job token, liveness tracking of the ranks and fault broadcast.
//
// One process serves it (KvServer: the scheduler, the local launcher, or rank 0 under
// mpirun/srun); every other process connects with a KvClient. Ranks publish what their peers
// need (Gloo pair addresses, the NCCL unique id, UCX worker addresses) and wait for each other.
// A rank client (rank >= 0) is watched: when its connection closes without a clean leave(), or
// its heartbeats stop for longer than KvServerOptions::heartbeat_timeout_s, the server records a
// fault and pushes it to every client that runs a monitor (start_monitor), so every rank can stop
// with a clear error instead of hanging in a collective.
//
// What it is not: a database (values are small, at most 64 MiB; keys are never deleted), nor
// secure against an eavesdropper (the token keeps strangers and other jobs out, nothing more).
//
// Wire format (both directions, after the 8-byte magic "ELMOKV01" each side sends first):
// frames of u32 little-endian length + payload; strings inside are u32 length + bytes.
//
// Sources: rendezvous_framing.h/.cpp (codes, frames, socket I/O, the parsers below),
// rendezvous_server.cpp (KvServer), rendezvous_client.cpp (KvClient, local_address_towards).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/kv_store.h"

namespace elmo {

struct KvServerOptions {
  // A rank whose monitor sends no heartbeat for this long is recorded as "stopped responding".
  double heartbeat_timeout_s = 20.0;
  // A connection must complete the handshake (magic + token) within this time, else refused.
  double handshake_timeout_s = 5.0;
};

// What wait_for_job saw.
enum class JobState { kRunning, kFinished, kFailed };

class KvServer {
 public:
  // Listens on bind_host:port ("" or "0.0.0.0": every interface; port 0: a free port, see
  // port()) and serves in background threads until destroyed. Throws CommError when the address
  // cannot be bound (naming it, e.g. "port 29500 is already in use").
  KvServer(const std::string& bind_host, int port, std::string token, KvServerOptions options = {});
  ~KvServer();  // stops serving and closes every connection
  KvServer(const KvServer&) = delete;
  KvServer& operator=(const KvServer&) = delete;

  int port() const;
  std::string endpoint() const;  // "bind_host:port" for messages

  // The store itself, for the process that serves it (same semantics as KvClient's).
  void set(const std::string& key, const std::string& value);
  std::optional<std::string> try_get(const std::string& key) const;
  std::string get(const std::string& key, double timeout_s);  // CommError naming the key
  int64_t add(const std::string& key, int64_t delta);

  // The first fault recorded (a lost or silent rank, or one reported by a client), if any.
  std::optional<std::string> fault() const;
  std::optional<int> fault_rank() const;  // -1 when the fault names no rank
  // Records a fault (kept only if it is the first) and pushes it to every monitor.
  void record_fault(int rank, const std::string& message);

  std::vector<int> joined_ranks() const;  // ranks that connected at least once, ascending
  bool all_left(int world_size) const;    // ranks 0..world_size-1 all called leave()
  // Waits until ranks 0..world_size-1 have all left cleanly (kFinished), a fault is recorded
  // (kFailed; see fault()), or timeout_s passes (kRunning). timeout_s < 0: no limit.
  JobState wait_for_job(int world_size, double timeout_s) const;

  int refused_connections() const;  // strangers and wrong tokens turned away so far

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

struct KvClientOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string token;
  int rank = -1;                      // >= 0: a rank of the job (watched); -1: a launcher/helper
  double timeout_s = 120.0;           // default for get/barrier/gather_ranks waits
  double connect_timeout_s = 120.0;   // keep retrying while the server is not up yet
  double heartbeat_interval_s = 1.0;  // monitor heartbeats
};

// A connection to the store. Thread-safe: requests are serialised by a mutex (a blocking get
// holds it). Destroying a rank client without leave() tells the server the rank was lost.
class KvClient : public KvStore {
 public:
  // Connects (retrying until connect_timeout_s: the server may start later) and presents the
  // token. Throws CommError naming host:port when nothing answers in time, when the server
  // refuses the token, or when what answers is not a rendezvous server.
  explicit KvClient(const KvClientOptions& options);
  ~KvClient() override;
  KvClient(const KvClient&) = delete;
  KvClient& operator=(const KvClient&) = delete;

  void set(const std::string& key, const std::string& value) override;
  // Waits until `key` is set (timeout_s < 0: options.timeout_s). CommError naming the key on
  // timeout; PeerLost when a fault is recorded while waiting.
  std::string get(const std::string& key, double timeout_s = -1.0) override;
  std::optional<std::string> try_get(const std::string& key);
  // Atomically adds delta to the counter `key` (absent = 0; stored as decimal text) and
  // returns the new value.
  int64_t add(const std::string& key, int64_t delta);
  // Returns once `participants` callers have entered barrier `name`. Reusable: the k-th call
  // of every participant meets the k-th call of the others. CommError saying how many arrived
  // on timeout.
  void barrier(const std::string& name, int participants, double timeout_s = -1.0);
  // Waits for keys prefix+"0" .. prefix+(world_size-1) and returns their values in rank order.
  // On timeout: CommError naming the missing ranks and the ones that joined.
  std::vector<std::string> gather_ranks(const std::string& prefix, int world_size,
                                        double timeout_s = -1.0);

  // Starts a thread that sends a heartbeat every heartbeat_interval_s on a second connection
  // and calls on_fault once, from that thread, when the server reports a fault or when the
  // server itself is lost (PeerLost rank -1). on_fault must be quick and must not destroy this
  // client (set a flag, abort collectives). Call at most once.
  void start_monitor(std::function<void(const PeerLost&)> on_fault);
  // Reports a failure of this process (e.g. "rank 3 failed: out of memory") so that every
  // monitor learns it at once instead of waiting for the connection to close.
  void report_fault(const std::string& message);
  // Clean goodbye: this rank finished; no fault is raised when its connections close. Stops the
  // monitor. Never throws (a server already gone is fine at this point).
  void leave();
  // The fault the monitor (or a failed wait) saw, if any.
  std::optional<PeerLost> fault() const;

  const std::string& endpoint() const;  // "host:port"
  int rank() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// ---- What arrives from the network, parsed -------------------------------------------------
// The server parses every frame a connection sends with these (so does the fuzzer,
// tests/fuzz/fuzz_rendezvous.cpp): a stranger or a broken peer sending garbage, truncated or
// oversized frames gets a refusal and its connection closed, never a crash, an allocation beyond
// the frame limits or a hang. They never throw: a malformed message is nullopt with *error.

// The payload length in a frame's 4-byte little-endian header; nullopt above max_bytes (the
// limits: 64 KiB before the handshake completes, 64 MiB after).
std::optional<uint32_t> parse_rendezvous_frame_length(const unsigned char header[4],
                                                      uint32_t max_bytes, std::string* error);

// The handshake frame: job token, rank (-1 for a helper), pid, host name, channel.
struct RendezvousHello {
  std::string token;
  int32_t rank = -1;
  int64_t pid = 0;
  std::string host;     // cut to 255 bytes
  uint8_t channel = 0;  // 0 requests, 1 monitor (anything else is refused by the server)
};
std::optional<RendezvousHello> parse_rendezvous_hello(const std::string& payload,
                                                      std::string* error);

// A request frame: one op code and its fields (unused ones keep their defaults). Every byte
// must be consumed: trailing bytes make it malformed, as does an unknown op code.
struct RendezvousRequest {
  uint8_t op = 0;           // set 1, get 2, try_get 3, add 4, leave 5, report_fault 6, heartbeat 7
  std::string key, value;   // set: key, value; get, try_get, add: key; report_fault: value
  double timeout_s = -1.0;  // get (NaN is malformed)
  int64_t delta = 0;        // add
};
std::optional<RendezvousRequest> parse_rendezvous_request(const std::string& payload,
                                                          std::string* error);

// The local IP address this machine uses to reach `host` (UDP connect + getsockname; nothing is
// sent). Peers are told to connect to it. "127.0.0.1" for a loopback host. CommError when the
// host cannot be resolved or reached.
std::string local_address_towards(const std::string& host);

// "5 s", "0.5 s", "120 s": durations in messages.
std::string format_seconds(double seconds);

}  // namespace elmo
