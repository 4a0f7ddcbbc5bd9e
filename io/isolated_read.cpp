#include "io/isolated_read.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <exception>

#include "runtime/error.h"

namespace elmo {

namespace {

// The child's answer, in host byte order (both ends are this process):
//   'E' u32 length, message                                        an elmo::Error
//   'R' u32 n, i64 numbers[n], u32 count, count x tensor, 'Z'      a result
//   tensor: u32 name length, name, u32 ndim, i64 dims[ndim], f32 values[numel]
constexpr char kError = 'E', kResult = 'R', kEnd = 'Z';
constexpr uint32_t kMaxName = 1 << 16;

// Child side: any failure to write ends the child (the parent reports an incomplete answer).
void put(int fd, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ::_exit(3);
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}
template <typename T>
void put_value(int fd, T v) {
  put(fd, &v, sizeof v);
}
void put_text(int fd, const std::string& s) {
  put_value<uint32_t>(fd, static_cast<uint32_t>(s.size()));
  put(fd, s.data(), s.size());
}

[[noreturn]] void child_main(int fd, const std::string& origin, int limit_seconds,
                             const std::function<IsolatedResult()>& read) {
  // Ctrl-C and the time limit end the child whatever handlers the parent installed.
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGALRM, SIG_DFL);
  ::signal(SIGPIPE, SIG_DFL);
  ::alarm(static_cast<unsigned>(limit_seconds));
  try {
    const IsolatedResult r = read();
    put_value(fd, kResult);
    put_value<uint32_t>(fd, static_cast<uint32_t>(r.numbers.size()));
    for (int64_t v : r.numbers) put_value(fd, v);
    put_value<uint32_t>(fd, static_cast<uint32_t>(r.tensors.size()));
    for (const auto& [name, t] : r.tensors) {
      if (t.dtype() != DType::kF32 || !t.device().is_cpu() || name.size() > kMaxName)
        throw Error(str("internal: isolated readers return f32 CPU tensors with short names; '",
                        name, "' is ", t.describe()));
      put_text(fd, name);
      put_value<uint32_t>(fd, static_cast<uint32_t>(t.ndim()));
      for (int d = 0; d < t.ndim(); ++d) put_value<int64_t>(fd, t.size(d));
      if (t.nbytes() > 0) put(fd, t.raw(), t.nbytes());
    }
    put_value(fd, kEnd);
  } catch (const Error& e) {
    put_value(fd, kError);
    put_text(fd, e.what());
  } catch (const std::exception& e) {  // out of memory, most likely
    put_value(fd, kError);
    put_text(fd, str(origin, ": cannot read this file: ", e.what()));
  }
  ::close(fd);
  ::_exit(0);
}

// Parent side: reads exactly `bytes`; false when the child's answer ends first.
bool get(int fd, void* data, size_t bytes) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::read(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}
template <typename T>
bool get_value(int fd, T* v) {
  return get(fd, v, sizeof *v);
}

// Reads the child's answer: false when it is incomplete or malformed. An Error of the child
// comes back in *child_error with *failed set.
bool read_answer(int fd, IsolatedResult* out, bool* failed, std::string* child_error) {
  char tag = 0;
  if (!get_value(fd, &tag)) return false;
  uint32_t n = 0;
  if (tag == kError) {
    *failed = true;
    if (!get_value(fd, &n) || n > (1u << 20)) return false;
    child_error->resize(n);
    return get(fd, child_error->data(), n);
  }
  if (tag != kResult || !get_value(fd, &n) || n > 1024) return false;
  out->numbers.resize(n);
  for (auto& v : out->numbers)
    if (!get_value(fd, &v)) return false;
  uint32_t count = 0;
  if (!get_value(fd, &count)) return false;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t length = 0, ndim = 0;
    if (!get_value(fd, &length) || length > kMaxName) return false;
    std::string name(length, '\0');
    if (!get(fd, name.data(), length) || !get_value(fd, &ndim) ||
        ndim > static_cast<uint32_t>(Shape::kMaxDims))
      return false;
    std::vector<int64_t> dims(ndim);
    uint64_t numel = 1;
    for (auto& d : dims)
      if (!get_value(fd, &d) || d < 0 ||
          __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) ||
          numel > (uint64_t{1} << 40))
        return false;
    Tensor t = Tensor::empty(Shape(dims));
    if (t.nbytes() > 0 && !get(fd, t.raw(), t.nbytes())) return false;
    out->tensors.emplace_back(std::move(name), std::move(t));
  }
  char end = 0;
  return get_value(fd, &end) && end == kEnd;
}

std::string describe_status(int status, int limit_seconds) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    if (sig == SIGALRM) return str("ran past its limit of ", limit_seconds, " s and was stopped");
    if (sig == SIGINT || sig == SIGTERM || sig == SIGKILL)
      return str("was stopped from outside (signal ", sig, ", ", ::strsignal(sig), ")");
    return str("crashed (signal ", sig, ", ", ::strsignal(sig), ")");
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    return str("failed (exit status ", WEXITSTATUS(status), ")");
  return "ended without a complete answer";
}

}  // namespace

IsolatedResult run_isolated(const std::string& origin, int limit_seconds,
                            const std::function<IsolatedResult()>& read, const std::string& hint) {
  ELMO_CHECK(limit_seconds > 0, "run_isolated: limit_seconds must be positive");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw Error(str(origin, ": cannot create a pipe for the reader process (", ::strerror(errno),
                    ")"));
  ::fcntl(fds[0], F_SETPIPE_SZ, 1 << 20);  // fewer round trips for large answers (best effort)
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw Error(str(origin, ": cannot start the reader process (", ::strerror(e), ")"));
  }
  if (pid == 0) {
    ::close(fds[0]);
    child_main(fds[1], origin, limit_seconds, read);
  }
  ::close(fds[1]);
  IsolatedResult result;
  std::string child_error;
  bool complete = false, failed = false;
  try {
    complete = read_answer(fds[0], &result, &failed, &child_error);
  } catch (...) {  // out of memory for a tensor: stop the child before reporting
    ::kill(pid, SIGKILL);
    ::close(fds[0]);
    int ignored = 0;
    while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
    }
    throw;
  }
  ::close(fds[0]);  // a child still writing gets SIGPIPE
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      throw Error(str(origin, ": lost the reader process (", ::strerror(errno), ")"));
  }
  const bool clean_exit = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (complete && clean_exit && failed) throw Error(child_error);
  if (complete && clean_exit) return result;
  throw Error(str(origin, ": the reader process ", describe_status(status, limit_seconds),
                  " while reading this file. ", hint));
}

}  // namespace elmo
