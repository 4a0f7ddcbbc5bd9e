// The config key table (internal to io/: config.h is the interface). One KeySpec per key: where
// it lives in Config, its type, range or choices, and its doc; config.cpp parses, checks, dumps
// and documents every key from this table. Defined in config_keys.cpp (add a key there).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "io/config.h"
#include "runtime/error.h"

namespace elmo::config_keys {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr double kInf = std::numeric_limits<double>::infinity();

enum class Kind { kInt, kFloat, kBool, kString };

// How a string key is checked beyond its type.
enum class StringRule { kAny, kNonEmpty, kChoice, kDevice };

// One key: where it lives in Config, its type, its range and its doc. Defaults come from a
// default-constructed Config through the accessor, so they are written down exactly once.
struct KeySpec {
  const char* section = nullptr;
  const char* name = nullptr;
  Kind kind = Kind::kInt;
  const char* doc = nullptr;
  int64_t* (*int_field)(Config&) = nullptr;
  double* (*float_field)(Config&) = nullptr;
  bool* (*bool_field)(Config&) = nullptr;
  std::string* (*string_field)(Config&) = nullptr;
  int64_t int_min = 0, int_max = 0;
  double float_min = 0, float_max = 0;
  bool min_open = false, max_open = false;
  StringRule rule = StringRule::kAny;
  std::vector<std::string> choices;

  std::string full_name() const { return str(section, ".", name); }
};

// Every key (built on first use).
const std::vector<KeySpec>& key_table();

}  // namespace elmo::config_keys
