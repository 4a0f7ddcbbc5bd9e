// Fuzz target: the TOML config (config_from_string) and `--set` overrides (apply_override).
// Input: TOML text; or, when it starts with '=', one `--set` assignment per line applied to the
// default config. Invariant: an accepted config survives its canonical dump
// (config_from_string(config_to_toml(c)) == c), as config.h promises.
#include <sstream>

#include "io/config.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  const std::string text(fuzz::as_text(data, size));
  Config config;
  try {
    if (!text.empty() && text[0] == '=') {
      std::istringstream lines(text.substr(1));
      std::string line;
      while (std::getline(lines, line)) apply_override(config, line);
      validate_config(config);
    } else {
      config = config_from_string(text, "fuzz.toml");
    }
  } catch (const Error&) {
    return 0;  // refused with a message: fine
  }
  Config again;
  try {
    again = config_from_string(config_to_toml(config), "canonical");
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    fuzz::fail("the canonical dump of an accepted config is refused");
  }
  if (!(again == config)) fuzz::fail("the canonical dump does not give the same config");
  return 0;
}
