// The rendezvous store in one process: server and clients on loopback, clients on threads.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <limits>
#include <mutex>
#include <thread>

#include "comm/rendezvous.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using Clock = std::chrono::steady_clock;
using testing::error_of;

constexpr const char* kToken = "unit-token";

KvClientOptions client_options(int port, int rank = -1) {
  KvClientOptions o;
  o.port = port;
  o.token = kToken;
  o.rank = rank;
  o.timeout_s = 10;
  o.connect_timeout_s = 10;
  o.heartbeat_interval_s = 0.1;
  return o;
}

// Collects what a monitor reports, for waiting on it from the test thread.
struct FaultInbox {
  std::mutex mutex;
  std::condition_variable arrived;
  std::optional<PeerLost> fault;

  std::function<void(const PeerLost&)> handler() {
    return [this](const PeerLost& lost) {
      std::lock_guard<std::mutex> lock(mutex);
      fault = lost;
      arrived.notify_all();
    };
  }
  std::optional<PeerLost> wait(double seconds) {
    std::unique_lock<std::mutex> lock(mutex);
    arrived.wait_for(lock, std::chrono::duration<double>(seconds),
                     [&] { return fault.has_value(); });
    return fault;
  }
};

int connect_raw(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  return fd;
}

// True when the server closed the raw connection within `seconds`.
bool closed_by_peer(int fd, double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  char buffer[256];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 100};
    if (::poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return true;
  }
  return false;
}

TEST(Rendezvous, SetGetAddTryGet) {
  KvServer server("127.0.0.1", 0, kToken);
  ASSERT_GT(server.port(), 0);
  KvClient client(client_options(server.port()));
  const std::string key("bin\0key", 7);
  const std::string value("v\0a\xffl", 5);
  client.set(key, value);
  EXPECT_EQ(client.get(key), value);
  EXPECT_EQ(client.try_get(key), value);
  EXPECT_EQ(client.try_get("absent"), std::nullopt);
  client.set("k", "1");
  client.set("k", "2");  // overwrite
  EXPECT_EQ(client.get("k"), "2");
  EXPECT_EQ(client.add("counter", 1), 1);
  EXPECT_EQ(client.add("counter", 2), 3);
  EXPECT_EQ(client.add("counter", -5), -2);
  EXPECT_EQ(client.get("counter"), "-2");
  EXPECT_EQ(server.try_get("counter"), "-2");
  EXPECT_EQ(server.add("counter", 2), 0);
  const std::string not_counter = error_of([&] { client.add("k2", 1); });
  EXPECT_EQ(not_counter, "");  // absent counts as 0
  client.set("text", "abc");
  EXPECT_NE(
      error_of([&] { client.add("text", 1); }).find("'text' holds a value that is not a counter"),
      std::string::npos);
  // The server-side store sees the same data.
  server.set("from-server", "x");
  EXPECT_EQ(client.get("from-server"), "x");
  const std::string big(3 << 20, 'z');  // a few MB value
  client.set("big", big);
  EXPECT_EQ(client.get("big"), big);
}

TEST(Rendezvous, GetWaitsForALaterSet) {
  KvServer server("127.0.0.1", 0, kToken);
  KvClient reader(client_options(server.port()));
  KvClient writer(client_options(server.port()));
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    writer.set("late", "here");
  });
  EXPECT_EQ(reader.get("late", 10), "here");
  later.join();
}

TEST(Rendezvous, GetTimeoutNamesTheKey) {
  KvServer server("127.0.0.1", 0, kToken);
  KvClient client(client_options(server.port(), 2));
  const auto start = Clock::now();
  const std::string message = error_of([&] { client.get("gloo/dense/rank_3", 0.3); });
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(message.find("timed out after 0.3 s waiting for key 'gloo/dense/rank_3'"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find(str("127.0.0.1:", server.port())), std::string::npos) << message;
  EXPECT_NE(message.find("(rank 2)"), std::string::npos) << message;
  // The connection is still usable after a timeout.
  client.set("after", "ok");
  EXPECT_EQ(client.get("after"), "ok");
  EXPECT_NE(error_of([&] { server.get("nothing", 0.1); }).find("'nothing'"), std::string::npos);
}

TEST(Rendezvous, BarrierReleasesEveryParticipantAndIsReusable) {
  KvServer server("127.0.0.1", 0, kToken);
  constexpr int kParticipants = 3;
  std::atomic<int> passed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kParticipants; ++t)
    threads.emplace_back([&, t] {
      KvClient client(client_options(server.port()));
      for (int round = 0; round < 3; ++round) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20 * t));
        client.barrier("b", kParticipants, 10);
        ++passed;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(passed, 3 * kParticipants);

  KvClient alone(client_options(server.port()));
  const std::string message = error_of([&] { alone.barrier("lonely", 2, 0.3); });
  EXPECT_NE(message.find("barrier 'lonely' timed out after 0.3 s"), std::string::npos) << message;
  EXPECT_NE(message.find("1 of 2 participants arrived"), std::string::npos) << message;
}

TEST(Rendezvous, WrongTokenIsRefusedAndLogged) {
  KvServer server("127.0.0.1", 0, kToken);
  KvClientOptions bad = client_options(server.port());
  bad.token = "another-job";
  ::testing::internal::CaptureStderr();
  const std::string message = error_of([&] { KvClient client(bad); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(message, str("the rendezvous at 127.0.0.1:", server.port(),
                         " refused the job token; every process of a job needs the same "
                         "ELMO_JOB_TOKEN/--job_token"));
  EXPECT_NE(log.find("refused a connection from 127.0.0.1:"), std::string::npos) << log;
  EXPECT_NE(log.find("wrong job token"), std::string::npos) << log;
  EXPECT_EQ(server.refused_connections(), 1);
  // The right token still gets in.
  KvClient good(client_options(server.port()));
  good.set("a", "b");
  EXPECT_EQ(good.get("a"), "b");
}

TEST(Rendezvous, StrangersAreRefusedAndTheServerKeepsServing) {
  KvServerOptions options;
  options.handshake_timeout_s = 0.5;
  KvServer server("127.0.0.1", 0, kToken, options);
  KvClient client(client_options(server.port()));
  client.set("before", "1");
  ::testing::internal::CaptureStderr();
  // An HTTP request.
  const int http = connect_raw(server.port());
  const std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(http, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  EXPECT_TRUE(closed_by_peer(http, 5));
  ::close(http);
  // Binary garbage with a huge length prefix after a correct magic.
  const int garbage = connect_raw(server.port());
  const std::string bytes = std::string("ELMOKV01") + "\xff\xff\xff\x7f" + "junk";
  ASSERT_EQ(::send(garbage, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  EXPECT_TRUE(closed_by_peer(garbage, 5));
  ::close(garbage);
  // A silent connection is dropped after the handshake timeout.
  const int silent = connect_raw(server.port());
  EXPECT_TRUE(closed_by_peer(silent, 5));
  ::close(silent);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("does not speak the rendezvous protocol (it sent \"GET / HT...\")"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("incomplete handshake"), std::string::npos) << log;
  EXPECT_NE(log.find("sent no handshake within 0.5 s"), std::string::npos) << log;
  EXPECT_EQ(server.refused_connections(), 3);
  // Existing and new clients are unaffected.
  EXPECT_EQ(client.get("before"), "1");
  KvClient another(client_options(server.port()));
  EXPECT_EQ(another.get("before"), "1");
}

TEST(Rendezvous, GatherRanksNamesTheMissingRanks) {
  KvServer server("127.0.0.1", 0, kToken);
  KvClient client(client_options(server.port()));
  for (int r = 0; r < 3; ++r) client.set(str("join/", r), str("addr", r));
  const std::string message = error_of([&] { client.gather_ranks("join/", 4, 0.5); });
  EXPECT_EQ(message, str("rank 3 of 4 did not join the rendezvous at 127.0.0.1:", server.port(),
                         " within 0.5 s (joined: 0, 1, 2); check that it was started with the "
                         "same --root_uri/--root_port/--world_size and job token"));
  const std::string two = error_of([&] { client.gather_ranks("join/", 6, 0.2); });
  EXPECT_NE(two.find("ranks 3, 4, 5 of 6 did not join"), std::string::npos) << two;
  client.set("join/3", "addr3");
  const std::vector<std::string> all = client.gather_ranks("join/", 4, 5);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0], "addr0");
  EXPECT_EQ(all[3], "addr3");
}

TEST(Rendezvous, ARankDroppingWithoutLeaveIsReportedToTheOthers) {
  KvServer server("127.0.0.1", 0, kToken);
  FaultInbox inbox;  // outlives the client whose monitor writes into it
  KvClient survivor(client_options(server.port(), 0));
  survivor.start_monitor(inbox.handler());
  {
    KvClient doomed(client_options(server.port(), 1));
    doomed.start_monitor([](const PeerLost&) {});
    doomed.set("x", "y");
  }  // destroyed without leave()
  const auto lost = inbox.wait(5);
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->rank(), 1);
  const std::string what = lost->what();
  EXPECT_NE(what.find(str("rank 1 (pid ", ::getpid())), std::string::npos) << what;
  EXPECT_NE(what.find("was lost: its connection to the rendezvous closed"), std::string::npos)
      << what;
  EXPECT_EQ(server.fault(), what);
  EXPECT_EQ(server.fault_rank(), 1);
  EXPECT_TRUE(survivor.fault().has_value());
  EXPECT_EQ(server.wait_for_job(2, 0.1), JobState::kFailed);
}

TEST(Rendezvous, APendingGetFailsAsSoonAsAFaultIsRecorded) {
  KvServer server("127.0.0.1", 0, kToken);
  KvClient waiter(client_options(server.port(), 0));
  auto pending = std::async(std::launch::async, [&] {
    try {
      waiter.get("never-set", 30);
      return std::string("no error");
    } catch (const PeerLost& lost) {
      return str("PeerLost ", lost.rank(), ": ", lost.what());
    } catch (const std::exception& e) {
      return str("other: ", e.what());
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto start = Clock::now();
  { KvClient doomed(client_options(server.port(), 3)); }
  ASSERT_EQ(pending.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  const std::string result = pending.get();
  EXPECT_EQ(result.rfind("PeerLost 3: rank 3 (pid", 0), 0u) << result;
}

TEST(Rendezvous, CleanLeaveRaisesNoFault) {
  KvServer server("127.0.0.1", 0, kToken);
  FaultInbox inbox;
  KvClient a(client_options(server.port(), 0));
  a.start_monitor(inbox.handler());
  {
    KvClient b(client_options(server.port(), 1));
    b.start_monitor([](const PeerLost&) {});
    b.leave();
    b.leave();  // idempotent
  }
  EXPECT_FALSE(inbox.wait(0.5).has_value());
  EXPECT_FALSE(server.fault().has_value());
  EXPECT_FALSE(server.all_left(2));
  EXPECT_EQ(server.wait_for_job(2, 0.1), JobState::kRunning);
  a.leave();
  EXPECT_TRUE(server.all_left(2));
  EXPECT_EQ(server.wait_for_job(2, 1), JobState::kFinished);
  EXPECT_EQ(server.joined_ranks(), (std::vector<int>{0, 1}));
}

TEST(Rendezvous, ASilentRankIsReportedAfterTheHeartbeatTimeout) {
  KvServerOptions options;
  options.heartbeat_timeout_s = 0.5;
  KvServer server("127.0.0.1", 0, kToken, options);
  FaultInbox inbox;
  KvClient watcher(client_options(server.port(), 0));
  watcher.start_monitor(inbox.handler());
  KvClientOptions mute = client_options(server.port(), 1);
  mute.heartbeat_interval_s = 1000;  // one heartbeat at start, then silence
  KvClient silent(mute);
  silent.start_monitor([](const PeerLost&) {});
  const auto lost = inbox.wait(8);
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->rank(), 1);
  EXPECT_NE(std::string(lost->what()).find("rank 1 (pid"), std::string::npos) << lost->what();
  EXPECT_NE(std::string(lost->what()).find("stopped responding: no heartbeat for 0.5 s"),
            std::string::npos)
      << lost->what();
  // The watcher itself kept beating: it is not the one reported.
  EXPECT_EQ(server.fault_rank(), 1);
}

TEST(Rendezvous, AReportedFaultReachesEveryMonitor) {
  KvServer server("127.0.0.1", 0, kToken);
  FaultInbox inbox_a, inbox_helper;
  KvClient a(client_options(server.port(), 0));
  KvClient b(client_options(server.port(), 1));
  KvClient helper(client_options(server.port(), -1));
  a.start_monitor(inbox_a.handler());
  helper.start_monitor(inbox_helper.handler());
  b.report_fault("rank 1 failed: out of memory");
  for (FaultInbox* inbox : {&inbox_a, &inbox_helper}) {
    const auto lost = inbox->wait(5);
    ASSERT_TRUE(lost.has_value());
    EXPECT_EQ(lost->rank(), 1);
    EXPECT_STREQ(lost->what(), "rank 1 failed: out of memory");
  }
}

TEST(Rendezvous, LosingTheServerIsReportedAsRankMinusOne) {
  auto server = std::make_unique<KvServer>("127.0.0.1", 0, kToken);
  const int port = server->port();
  FaultInbox inbox;
  KvClient client(client_options(port, 0));
  client.start_monitor(inbox.handler());
  server.reset();
  const auto lost = inbox.wait(5);
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->rank(), -1);
  EXPECT_NE(std::string(lost->what()).find(str("lost the rendezvous server at 127.0.0.1:", port)),
            std::string::npos)
      << lost->what();
  const std::string message = error_of([&] { client.set("a", "b"); });
  EXPECT_NE(message.find(str("lost the rendezvous server at 127.0.0.1:", port)), std::string::npos)
      << message;
  client.leave();  // never throws
}

TEST(Rendezvous, ClientsRetryUntilTheServerStarts) {
  const int port = testing::free_port();
  auto connected = std::async(std::launch::async, [port] {
    KvClient client(client_options(port));
    return client.get("hello", 10);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  KvServer server("127.0.0.1", port, kToken);
  server.set("hello", "world");
  ASSERT_EQ(connected.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(connected.get(), "world");
}

TEST(Rendezvous, ConnectTimeoutNamesTheEndpoint) {
  const int port = testing::free_port();
  KvClientOptions o = client_options(port, 1);
  o.connect_timeout_s = 0.3;
  const std::string message = error_of([&] { KvClient client(o); });
  EXPECT_NE(message.find(str("could not connect to the rendezvous at 127.0.0.1:", port,
                             " (rank 1) within 0.3 s")),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("--root_uri/--root_port"), std::string::npos) << message;
}

TEST(Rendezvous, BindErrorsNameThePort) {
  KvServer first("127.0.0.1", 0, kToken);
  const std::string message = error_of([&] { KvServer second("127.0.0.1", first.port(), kToken); });
  EXPECT_NE(message.find(str("port ", first.port(), " is already in use")), std::string::npos)
      << message;
  EXPECT_NE(error_of([] { KvServer bad("127.0.0.1", 70000, kToken); }).find("70000"),
            std::string::npos);
  EXPECT_NE(error_of([] { KvServer bad("127.0.0.1", 0, ""); }).find("token"), std::string::npos);
}

TEST(Rendezvous, LocalAddressTowardsLoopbackIsLoopback) {
  EXPECT_EQ(local_address_towards("127.0.0.1"), "127.0.0.1");
  EXPECT_NE(error_of([] {
              local_address_towards("no-such-host.invalid");
            }).find("'no-such-host.invalid'"),
            std::string::npos);
  EXPECT_EQ(format_seconds(5), "5 s");
  EXPECT_EQ(format_seconds(0.5), "0.5 s");
}

// Frame payloads as the peer writes them: u32 little-endian length + bytes.
std::string length_prefixed(const std::string& bytes) {
  std::string out(4, '\0');
  const uint32_t n = static_cast<uint32_t>(bytes.size());
  std::memcpy(out.data(), &n, 4);
  return out + bytes;
}

// What the server parses from the network (also fuzzed: tests/fuzz/fuzz_rendezvous.cpp).
TEST(Rendezvous, FramesHandshakesAndRequestsAreParsedStrictly) {
  const auto& blob = length_prefixed;
  std::string error;
  const unsigned char big[4] = {0x01, 0x00, 0x01, 0x00};  // 65537
  EXPECT_FALSE(parse_rendezvous_frame_length(big, 65536, &error));
  EXPECT_EQ(error, "a frame of 65537 bytes exceeds the limit of 65536");
  EXPECT_EQ(parse_rendezvous_frame_length(big, 1 << 20, &error), 65537u);

  const std::string hello = blob("tok") + std::string("\x03\x00\x00\x00", 4) +
                            std::string(8, '\0') + blob("host") + std::string(1, '\0');
  const auto parsed = parse_rendezvous_hello(hello, &error);
  ASSERT_TRUE(parsed) << error;
  EXPECT_EQ(parsed->token, "tok");
  EXPECT_EQ(parsed->rank, 3);
  EXPECT_EQ(parsed->host, "host");
  EXPECT_FALSE(parse_rendezvous_hello(hello + "x", &error));
  EXPECT_EQ(error, "malformed handshake (trailing bytes)");
  EXPECT_FALSE(parse_rendezvous_hello(hello.substr(0, 10), &error));
  EXPECT_EQ(error, "malformed handshake (truncated message)");
  EXPECT_FALSE(parse_rendezvous_hello(blob("t") + "\xff\xff\xff\x7f", &error));

  const std::string get = std::string(1, '\x02') + blob("key");
  const double nan = std::numeric_limits<double>::quiet_NaN(), seconds = 2.5;
  std::string nan_bytes(8, '\0'), seconds_bytes(8, '\0');
  std::memcpy(nan_bytes.data(), &nan, 8);
  std::memcpy(seconds_bytes.data(), &seconds, 8);
  const auto request = parse_rendezvous_request(get + seconds_bytes, &error);
  ASSERT_TRUE(request) << error;
  EXPECT_EQ(request->key, "key");
  EXPECT_EQ(request->timeout_s, 2.5);
  EXPECT_FALSE(parse_rendezvous_request(get + nan_bytes, &error));
  EXPECT_EQ(error, "malformed request (a wait of NaN seconds)");
  EXPECT_FALSE(parse_rendezvous_request(get + seconds_bytes + "z", &error));
  EXPECT_FALSE(parse_rendezvous_request("\x09", &error));
  EXPECT_EQ(error, "malformed request (unknown request 9)");
  EXPECT_FALSE(parse_rendezvous_request("", &error));
}

// A client that knows the token but sends a malformed request is cut off; the server and the
// other clients carry on.
TEST(Rendezvous, AMalformedRequestClosesOnlyItsConnection) {
  const auto& blob = length_prefixed;
  KvServer server("127.0.0.1", 0, kToken);
  KvClient good(client_options(server.port()));
  good.set("k", "v");
  const int fd = connect_raw(server.port());
  const std::string hello = blob(kToken) + std::string(4, '\xff') + std::string(8, '\0') +
                            blob("h") + std::string(1, '\0');
  std::string bytes = std::string("ELMOKV01") + length_prefixed(hello);
  bytes += length_prefixed(std::string(1, '\x01') + blob("key") + blob("value") + "trailing");
  ::testing::internal::CaptureStderr();
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  EXPECT_TRUE(closed_by_peer(fd, 5));
  ::close(fd);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("malformed request (trailing bytes)"), std::string::npos) << log;
  EXPECT_FALSE(good.try_get("key").has_value()) << "the malformed set was not applied";
  EXPECT_EQ(good.get("k"), "v");
}
}  // namespace
}  // namespace elmo
