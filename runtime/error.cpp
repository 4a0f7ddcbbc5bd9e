#include "runtime/error.h"

namespace elmo {

namespace {
std::string& context_storage() {
  static std::string context;
  return context;
}
}  // namespace

void set_error_context(const std::string& context) { context_storage() = context; }
const std::string& error_context() { return context_storage(); }

void throw_check_failure(const char* expr, const char* file, int line,
                         const std::string& message) {
  std::string where = str(file, ":", line);
  if (!error_context().empty()) where += str(" [", error_context(), "]");
  throw Error(str(message.empty() ? "internal check failed" : message, " (check `", expr,
                  "` at ", where, ")"));
}

}  // namespace elmo
