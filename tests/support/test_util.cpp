#include "tests/support/test_util.h"

#include "runtime/error.h"
#include "runtime/rng.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace elmo::testing {

::testing::AssertionResult all_close(const float* actual, const float* expected, int64_t n,
                                     float atol, float rtol) {
  int64_t wrong = 0, first = -1;
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    const double bound = atol + rtol * std::fabs(static_cast<double>(expected[i]));
    if (!(diff <= bound)) {  // NaN fails too
      if (first < 0) first = i;
      ++wrong;
    }
    if (std::isfinite(diff)) worst = std::max(worst, diff);
  }
  if (wrong == 0) return ::testing::AssertionSuccess() << "max |diff| " << worst;
  return ::testing::AssertionFailure()
         << wrong << " of " << n << " elements differ (atol " << atol << ", rtol " << rtol
         << "); first at " << first << ": got " << actual[first] << ", expected "
         << expected[first] << "; max |diff| " << worst;
}

::testing::AssertionResult all_close(const std::vector<float>& actual,
                                     const std::vector<float>& expected, float atol, float rtol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << "sizes differ: " << actual.size() << " vs " << expected.size();
  return all_close(actual.data(), expected.data(), static_cast<int64_t>(actual.size()), atol,
                   rtol);
}

double finite_difference(const std::function<double()>& f, float* x, int64_t i, double eps) {
  const float saved = x[i];
  x[i] = static_cast<float>(saved + eps);
  const double up = f();
  x[i] = static_cast<float>(saved - eps);
  const double down = f();
  x[i] = saved;
  return (up - down) / (2.0 * eps);
}

::testing::AssertionResult gradient_matches(const std::function<double()>& loss, float* param,
                                            const float* analytic, int64_t n, double eps,
                                            double tol, int64_t samples) {
  const int64_t count = std::min(n, samples);
  for (int64_t s = 0; s < count; ++s) {
    const int64_t i = count == n ? s : (s * 7919) % n;
    const double numeric = finite_difference(loss, param, i, eps);
    const double a = analytic[i];
    const double rel = std::fabs(a - numeric) / std::max(1e-2, std::fabs(a) + std::fabs(numeric));
    if (!(rel <= tol))
      return ::testing::AssertionFailure()
             << "gradient at " << i << ": analytic " << a << ", numeric " << numeric
             << " (relative error " << rel << " > " << tol << ")";
  }
  return ::testing::AssertionSuccess();
}

CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

CommandResult run_elmo(const std::string& args) { return run_command(elmo_binary() + " " + args); }

std::vector<float> uniform_floats(uint64_t seed, int64_t n, float scale) {
  Rng rng(seed, kRngSynthetic);
  std::vector<float> v(n);
  for (float& e : v) e = scale * (2.0f * rng.uniform() - 1.0f);
  return v;
}

::testing::AssertionResult within_scale(const std::vector<float>& actual,
                                        const std::vector<float>& expected, float tol,
                                        const char* what, float* max_diff) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << what << ": sizes " << actual.size() << " vs " << expected.size();
  float scale = 0.0f, worst = 0.0f;
  for (float e : expected) scale = std::max(scale, std::fabs(e));
  for (size_t k = 0; k < actual.size(); ++k)
    worst = std::max(worst, std::fabs(actual[k] - expected[k]));
  if (max_diff) *max_diff = worst;
  for (size_t k = 0; k < actual.size(); ++k) {
    const float diff = std::fabs(actual[k] - expected[k]);
    if (!(diff <= tol * scale + 1e-6f))
      return ::testing::AssertionFailure()
             << what << "[" << k << "]: " << actual[k] << " vs " << expected[k] << " (diff " << diff
             << ", allowed " << tol * scale << " = " << tol << " x scale " << scale << ")";
  }
  return ::testing::AssertionSuccess();
}

Tensor random_tensor(const Shape& shape, uint64_t seed) {
  Rng rng(seed, 0);
  Tensor t = Tensor::empty(shape);
  for (int64_t e = 0; e < t.numel(); ++e) t.data<float>()[e] = rng.uniform() * 2.0f - 1.0f;
  return t;
}

std::string write_text_file(const std::string& dir, const std::string& name,
                            const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  return path;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string data_dir() {
  const char* env = std::getenv("ELMO_DATA_DIR");
  std::string dir = env ? env : ELMO_DATA_DIR;
  return std::filesystem::is_directory(dir) ? dir : "";
}

std::string source_dir() { return ELMO_SOURCE_DIR; }
std::string elmo_binary() { return ELMO_BINARY; }
std::string build_dir() { return ELMO_BUILD_DIR; }
std::string cmake_command() { return ELMO_CMAKE_COMMAND; }

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

bool gpu_required() {
  const char* value = std::getenv("ELMO_REQUIRE_GPU");
  return value != nullptr && *value != '\0' && std::string(value) != "0";
}

std::string no_gpu_message() { return "no GPU on this machine: " + cuda_unavailable_reason(); }

std::string temp_dir(const std::string& tag) {
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("elmo_test_" + tag + "_" + std::to_string(getpid()) + "_" +
                    std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace elmo::testing
