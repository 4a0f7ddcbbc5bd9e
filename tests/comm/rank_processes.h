// Test helper for multi-process tests on loopback: forks N rank processes (before any thread of
// this process exists), then serves a KvServer they join. Each child runs `body(rank, port)`;
// returning is success, an exception is a failure whose message the parent reports. Children end
// with _exit and never return into GoogleTest. What it is not: a launcher (comm/launch.h is).
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "comm/rendezvous.h"

namespace elmo::testing {

inline constexpr const char* kTestToken = "test-job-token";

// Client options of rank `rank` joining the test's server on `port`.
inline KvClientOptions rank_options(int port, int rank, double timeout_s,
                                    double heartbeat_interval_s = 1.0) {
  KvClientOptions o;
  o.port = port;
  o.token = kTestToken;
  o.rank = rank;
  o.timeout_s = timeout_s;
  o.connect_timeout_s = timeout_s;
  o.heartbeat_interval_s = heartbeat_interval_s;
  return o;
}

// A failed expectation inside a rank process: the parent reports the message.
inline void rank_expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

// What the parent can look at once every child ended, before the server goes away.
using ServerCheck = std::function<void(KvServer& server)>;

inline ::testing::AssertionResult run_rank_processes(
    int n, const std::function<void(int rank, int port)>& body, double deadline_s = 50.0,
    KvServerOptions options = {}, const ServerCheck& check = nullptr) {
  struct Child {
    pid_t pid = -1;
    int port_pipe = -1;    // parent writes the port
    int result_pipe = -1;  // child writes its failure message
  };
  std::vector<Child> children(n);
  for (int r = 0; r < n; ++r) {
    int port_fds[2];
    int result_fds[2];
    if (::pipe(port_fds) != 0 || ::pipe(result_fds) != 0)
      return ::testing::AssertionFailure() << "pipe failed";
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(port_fds[1]);
      ::close(result_fds[0]);
      for (int q = 0; q < r; ++q) {
        ::close(children[q].port_pipe);
        ::close(children[q].result_pipe);
      }
      std::string failure;
      int port = 0;
      pollfd p{port_fds[0], POLLIN, 0};
      if (::poll(&p, 1, 30000) != 1 || ::read(port_fds[0], &port, sizeof port) != sizeof port) {
        failure = "no port from the parent";
      } else {
        try {
          body(r, port);
        } catch (const std::exception& e) {
          failure = e.what();
        } catch (...) {
          failure = "unknown exception";
        }
      }
      if (!failure.empty()) {
        failure = "rank " + std::to_string(r) + ": " + failure;
        (void)!::write(result_fds[1], failure.data(), failure.size());
      }
      ::_exit(failure.empty() ? 0 : 1);
    }
    ::close(port_fds[0]);
    ::close(result_fds[1]);
    children[r] = Child{pid, port_fds[1], result_fds[0]};
  }

  ::testing::AssertionResult result = ::testing::AssertionSuccess();
  std::string failures;
  {
    KvServer server("127.0.0.1", 0, kTestToken, options);
    const int port = server.port();
    for (Child& c : children) {
      (void)!::write(c.port_pipe, &port, sizeof port);
      ::close(c.port_pipe);
    }
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(deadline_s * 1000));
    std::vector<int> status(n, -1);
    std::vector<bool> running(n, true);
    for (int left = n; left > 0;) {
      for (int r = 0; r < n; ++r) {
        if (!running[r]) continue;
        int s = 0;
        if (::waitpid(children[r].pid, &s, WNOHANG) == children[r].pid) {
          running[r] = false;
          status[r] = s;
          --left;
        }
      }
      if (left == 0) break;
      if (std::chrono::steady_clock::now() > deadline) {
        for (int r = 0; r < n; ++r) {
          if (!running[r]) continue;
          ::kill(children[r].pid, SIGKILL);
          ::waitpid(children[r].pid, nullptr, 0);
          failures += "rank " + std::to_string(r) + " did not finish within " +
                      std::to_string(deadline_s) + " s; killed\n";
        }
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (int r = 0; r < n; ++r) {
      char buffer[4096];
      std::string message;
      ssize_t got;
      while ((got = ::read(children[r].result_pipe, buffer, sizeof buffer)) > 0)
        message.append(buffer, static_cast<size_t>(got));
      ::close(children[r].result_pipe);
      if (!message.empty())
        failures += message + "\n";
      else if (status[r] != -1 && !(WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == 0))
        failures +=
            "rank " + std::to_string(r) + " ended with status " + std::to_string(status[r]) + "\n";
    }
    if (check) check(server);
  }
  if (!failures.empty()) return ::testing::AssertionFailure() << failures;
  return result;
}

}  // namespace elmo::testing
