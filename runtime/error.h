// Errors and check macros shared by every library.
//
// Two kinds of failure reach the user: UsageError (bad flags, bad config: exit code 2) and
// Error (everything found while running: bad data, I/O, numerical or device failures: exit 1).
// ELMO_CHECK(cond, parts...) throws Error with the expression, file and line and the message
// parts concatenated; ELMO_REQUIRE is the same for usage errors.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace elmo {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Bad command line or configuration; the CLI maps it to exit code 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(what) {}
};

// Concatenates anything streamable: str("shape ", 3, "x", 4) -> "shape 3x4".
template <typename... Parts>
std::string str(const Parts&... parts) {
  std::ostringstream os;
  if constexpr (sizeof...(parts) > 0) (os << ... << parts);
  return os.str();
}

// Rank and host used in messages of checks (set once by comm; "" for single-process runs).
void set_error_context(const std::string& context);
const std::string& error_context();

[[noreturn]] void throw_check_failure(const char* expr, const char* file, int line,
                                      const std::string& message);

}  // namespace elmo

#define ELMO_CHECK(cond, ...)                                                            \
  do {                                                                                   \
    if (!(cond)) [[unlikely]]                                                            \
      ::elmo::throw_check_failure(#cond, __FILE__, __LINE__, ::elmo::str(__VA_ARGS__)); \
  } while (0)

#define ELMO_REQUIRE(cond, ...)                                  \
  do {                                                           \
    if (!(cond)) [[unlikely]]                                    \
      throw ::elmo::UsageError(::elmo::str(__VA_ARGS__));     \
  } while (0)
