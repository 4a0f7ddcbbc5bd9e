// TOML config: parsing with toml++, validation, canonical dump, reference docs; the key table
// is config_keys.cpp.
#include "io/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>
#include <utility>

#include "io/atomic_file.h"
#include "io/config_keys.h"
#include "io/corpus.h"
#include "runtime/error.h"

namespace elmo {

using namespace config_keys;

namespace {

// ---- formatting --------------------------------------------------------------------------

std::string format_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip
  std::string s(buf, result.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string quote_toml(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char ch : s) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (ch < 0x20 || ch == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

std::string value_as_toml(const KeySpec& k, const Config& config) {
  Config& c = const_cast<Config&>(config);  // accessors only read here
  switch (k.kind) {
    case Kind::kInt:
      return std::to_string(*k.int_field(c));
    case Kind::kFloat:
      return format_float(*k.float_field(c));
    case Kind::kBool:
      return *k.bool_field(c) ? "true" : "false";
    case Kind::kString:
      return quote_toml(*k.string_field(c));
  }
  return "";
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kInt:
      return "integer";
    case Kind::kFloat:
      return "float";
    case Kind::kBool:
      return "boolean";
    case Kind::kString:
      return "string";
  }
  return "?";
}

const char* article_kind_name(Kind kind) {
  switch (kind) {
    case Kind::kInt:
      return "an integer";
    case Kind::kFloat:
      return "a number";
    case Kind::kBool:
      return "a boolean (true or false)";
    case Kind::kString:
      return "a string";
  }
  return "?";
}

const char* node_type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    default:
      return "nothing";
  }
}

// Range ends for people: 1000000 rather than 1e+06.
std::string format_bound(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == std::floor(v) && std::abs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, result.ptr);
}

std::string range_text(const KeySpec& k) {
  switch (k.kind) {
    case Kind::kInt:
      if (k.int_max == kInt64Max) return str(">= ", k.int_min);
      return str(k.int_min, " .. ", k.int_max);
    case Kind::kFloat:
      return str(k.min_open ? "(" : "[", format_bound(k.float_min), ", ", format_bound(k.float_max),
                 k.max_open ? ")" : "]");
    case Kind::kBool:
      return "true | false";
    case Kind::kString: {
      if (k.rule == StringRule::kNonEmpty) return "non-empty";
      if (k.rule == StringRule::kAny) return "";
      std::string out;
      for (size_t i = 0; i < k.choices.size(); ++i) out += (i ? " | " : "") + k.choices[i];
      return out;
    }
  }
  return "";
}

// ---- suggestions -------------------------------------------------------------------------

// Optimal string alignment distance (Levenshtein + adjacent transpositions).
size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

bool close_enough(const std::string& typed, const std::string& candidate, size_t distance) {
  return distance <= std::max<size_t>(2, std::min(typed.size(), candidate.size()) / 3);
}

// The distance is at least the difference in length: a typed name much longer or shorter than
// the candidate is not close, whatever its letters (and a megabyte-long key in a config costs no
// megabyte-squared comparison).
bool may_be_close(const std::string& typed, const std::string& candidate) {
  const size_t n = typed.size(), m = candidate.size();
  return close_enough(typed, candidate, n > m ? n - m : m - n);
}

std::string did_you_mean(const std::vector<std::string>& names) {
  if (names.empty()) return "";
  std::string out = " (did you mean ";
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + ("'" + names[i] + "'");
  return out + "?)";
}

// Suggestions for an unknown "section.name" (or a bare "name" at the top level): the closest
// full key names, or keys with the same name in another section.
std::vector<std::string> suggest_keys(const std::string& typed) {
  const auto dot = typed.find('.');
  const std::string typed_name = dot == std::string::npos ? typed : typed.substr(dot + 1);
  size_t best = std::numeric_limits<size_t>::max();
  std::vector<std::string> closest, same_name;
  for (const KeySpec& k : key_table()) {
    const std::string full = k.full_name();
    if (typed_name == k.name) same_name.push_back(full);
    if (!may_be_close(typed, full)) continue;
    const size_t d = edit_distance(typed, full);
    if (!close_enough(typed, full, d)) continue;
    if (d < best) best = d, closest.clear();
    if (d == best) closest.push_back(full);
  }
  if (!closest.empty()) return closest;
  if (same_name.size() > 3) same_name.resize(3);
  return same_name;
}

std::vector<std::string> suggest_sections(const std::string& typed) {
  size_t best = std::numeric_limits<size_t>::max();
  std::vector<std::string> closest;
  for (const std::string& s : config_sections()) {
    if (!may_be_close(typed, s)) continue;
    const size_t d = edit_distance(typed, s);
    if (!close_enough(typed, s, d)) continue;
    if (d < best) best = d, closest.clear();
    if (d == best) closest.push_back(s);
  }
  return closest;
}

const KeySpec* find_key(const std::string& section, const std::string& name) {
  for (const KeySpec& k : key_table())
    if (section == k.section && name == k.name) return &k;
  return nullptr;
}

bool is_section(const std::string& name) {
  for (const KeySpec& k : key_table())
    if (name == k.section) return true;
  return false;
}

// ---- setting one value -------------------------------------------------------------------

bool valid_device(const std::string& s) {
  if (s == "auto" || s == "cpu" || s == "cuda") return true;
  if (s.rfind("cuda:", 0) != 0 || s.size() == 5 || s.size() > 9) return false;
  for (size_t i = 5; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// Checks and stores `node` into the field of `k`. Returns "" or the problem (without origin).
std::string set_from_node(const KeySpec& k, const toml::node& node, Config& config) {
  const std::string key = k.full_name();
  const auto wrong_type = [&] {
    return str("'", key, "' must be ", article_kind_name(k.kind), ", got ",
               node_type_name(node.type()));
  };
  switch (k.kind) {
    case Kind::kInt: {
      if (!node.is_integer()) return wrong_type();
      const int64_t v = node.as_integer()->get();
      if (v < k.int_min || v > k.int_max)
        return str("'", key, "' = ", v, " is out of range (", range_text(k), ")");
      *k.int_field(config) = v;
      return "";
    }
    case Kind::kFloat: {
      double v;
      if (node.is_floating_point()) {
        v = node.as_floating_point()->get();
      } else if (node.is_integer()) {
        v = static_cast<double>(node.as_integer()->get());
      } else {
        return wrong_type();
      }
      const bool low_ok = k.min_open ? v > k.float_min : v >= k.float_min;
      const bool high_ok = k.max_open ? v < k.float_max : v <= k.float_max;  // false for NaN
      if (!low_ok || !high_ok)
        return str("'", key, "' = ", format_float(v), " is out of range ", range_text(k));
      *k.float_field(config) = v;
      return "";
    }
    case Kind::kBool: {
      if (!node.is_boolean()) return wrong_type();
      *k.bool_field(config) = node.as_boolean()->get();
      return "";
    }
    case Kind::kString: {
      if (!node.is_string()) return wrong_type();
      const std::string v = node.as_string()->get();
      bool ok = true;
      switch (k.rule) {
        case StringRule::kAny:
          break;
        case StringRule::kNonEmpty:
          if (v.empty()) return str("'", key, "' must not be empty");
          break;
        case StringRule::kChoice:
          ok = std::find(k.choices.begin(), k.choices.end(), v) != k.choices.end();
          break;
        case StringRule::kDevice:
          ok = valid_device(v);
          break;
      }
      if (!ok) {
        std::vector<std::string> near;
        for (const std::string& choice : k.choices)
          if (close_enough(v, choice, edit_distance(v, choice))) near.push_back(choice);
        return str("'", key, "' = ", quote_toml(v), " is not one of: ", range_text(k),
                   did_you_mean(near));
      }
      *k.string_field(config) = v;
      return "";
    }
  }
  return "";
}

// "file:line" or "file" when toml++ did not record the line.
std::string where(const std::string& origin, const toml::source_region& region) {
  if (region.begin.line == 0) return origin;
  return str(origin, ":", region.begin.line);
}

// A problem found in the file; `key` is set when an override of that key may still fix it.
struct Problem {
  uint32_t line;
  std::string key;
  std::string message;
};

// Origin ("run.toml:14" or "--set k=v") of every key that was set explicitly; cross-key
// messages point at it.
using Origins = std::map<std::string, std::string>;

std::vector<Problem> apply_table(const toml::table& root, const std::string& origin, Config& config,
                                 Origins& origins) {
  std::vector<Problem> problems;
  const auto add = [&](const toml::source_region& region, const std::string& key,
                       const std::string& message) {
    problems.push_back({region.begin.line, key, str(where(origin, region), ": ", message)});
  };
  for (const auto& [section_key, section_node] : root) {
    const std::string section(section_key.str());
    if (!is_section(section)) {
      if (section_node.is_table()) {
        add(section_key.source(), "",
            str("unknown section '", section, "'", did_you_mean(suggest_sections(section))));
      } else {
        add(section_key.source(), "",
            str("unknown key '", section, "'", did_you_mean(suggest_keys(section))));
      }
      continue;
    }
    const toml::table* table = section_node.as_table();
    if (table == nullptr) {
      add(section_key.source(), "",
          str("'", section, "' must be a table ([", section, "] followed by its keys), got ",
              node_type_name(section_node.type())));
      continue;
    }
    for (const auto& [name_key, value] : *table) {
      const std::string name(name_key.str());
      const KeySpec* spec = find_key(section, name);
      const toml::source_region region =
          name_key.source().begin.line ? name_key.source() : value.source();
      if (spec == nullptr) {
        const std::string full = section + "." + name;
        add(region, "", str("unknown key '", full, "'", did_you_mean(suggest_keys(full))));
        continue;
      }
      const std::string problem = set_from_node(*spec, value, config);
      if (!problem.empty()) {
        add(region, spec->full_name(), problem);
        continue;
      }
      origins[spec->full_name()] = where(origin, region);
    }
  }
  std::stable_sort(problems.begin(), problems.end(),
                   [](const Problem& a, const Problem& b) { return a.line < b.line; });
  return problems;
}

std::string trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const auto end = s.find_last_not_of(" \t");
  return s.substr(begin, end - begin + 1);
}

void apply_override_impl(Config& config, const std::string& assignment, Origins& origins) {
  const std::string origin = "--set " + assignment;
  const auto eq = assignment.find('=');
  if (eq == std::string::npos)
    throw UsageError(str(origin, ": expected section.key=value, e.g. --set train.batch_size=64"));
  const std::string key = trim(assignment.substr(0, eq));
  const std::string text = trim(assignment.substr(eq + 1));
  const auto dot = key.find('.');
  const KeySpec* spec =
      dot == std::string::npos ? nullptr : find_key(key.substr(0, dot), key.substr(dot + 1));
  if (spec == nullptr)
    throw UsageError(str(origin, ": unknown key '", key, "'", did_you_mean(suggest_keys(key))));

  // The value is TOML (numbers, booleans, quoted strings); a bare word is a string.
  const bool quoted = !text.empty() && (text[0] == '"' || text[0] == '\'');
  toml::table parsed;
  bool as_toml = spec->kind != Kind::kString || quoted;
  if (as_toml) {
    try {
      parsed = toml::parse(std::string_view("v = " + text), std::string_view("--set"));
      as_toml = parsed.size() == 1 && parsed.contains("v");
    } catch (const toml::parse_error&) {
      as_toml = false;
    }
    if (!as_toml && quoted)
      throw UsageError(str(origin, ": '", key, "' has a malformed quoted string"));
  }
  if (!as_toml) {
    // TOML text is UTF-8 (toml++ checks it in files and quoted values); so must a bare word be,
    // or the config could not be written back (config_to_toml, checkpoints' state.json).
    size_t bad = 0;
    if (!is_valid_utf8(text, &bad))
      throw UsageError(
          str("--set ", key, "=...: the value is not valid UTF-8 text (byte ", bad + 1, ")"));
    parsed = toml::table{};
    parsed.insert("v", text);
  }
  const std::string problem = set_from_node(*spec, *parsed.get("v"), config);
  if (!problem.empty()) throw UsageError(str(origin, ": ", problem));
  origins[spec->full_name()] = origin;
}

void validate_impl(const Config& c, const Origins& origins) {
  const auto at = [&](const std::string& key) {
    const auto it = origins.find(key);
    return it == origins.end() ? std::string() : it->second + ": ";
  };
  const auto& s = c.synthetic;
  ELMO_REQUIRE(s.classes <= s.vocab_size, at("synthetic.classes"),
               "'synthetic.classes' = ", s.classes,
               " must not exceed 'synthetic.vocab_size' = ", s.vocab_size);
  ELMO_REQUIRE(
      s.vocab_size * (s.classes + 1) <= (int64_t{1} << 25), at("synthetic.vocab_size"),
      "'synthetic.vocab_size' x ('synthetic.classes' + 1) = ", s.vocab_size * (s.classes + 1),
      " is too large (the generator keeps one word order per class; limit 33554432): "
      "use fewer words or classes");
  ELMO_REQUIRE(c.train.epochs > 0 || c.train.max_steps > 0, at("train.epochs"),
               "'train.epochs' = 0 and 'train.max_steps' = 0 leave nothing to train: set one of "
               "them > 0");
  if (c.data.packing == "contiguous") {
    ELMO_REQUIRE(!c.model.bidirectional, at("data.packing"),
                 "'data.packing' = \"contiguous\" trains a forward LM on the text in order (the "
                 "TF PTB tutorial's stream); 'model.bidirectional' = true needs 'data.packing' = "
                 "\"sentences\": set model.bidirectional = false or data.packing = \"sentences\"");
    ELMO_REQUIRE(!c.data.shuffle, at("data.packing"),
                 "'data.packing' = \"contiguous\" reads the text in order, as one stream whose "
                 "rows carry the context across sentences; 'data.shuffle' = true would break it: "
                 "set data.shuffle = false (or data.packing = \"sentences\")");
  }
  ELMO_REQUIRE(!c.checkpoint.keep_best || c.train.eval_every > 0, at("checkpoint.keep_best"),
               "'checkpoint.keep_best' = true needs validations during training: set "
               "'train.eval_every' > 0 (and data.valid)");
  ELMO_REQUIRE(c.train.early_stopping_patience == 0 || c.train.eval_every > 0,
               at("train.early_stopping_patience"),
               "'train.early_stopping_patience' = ", c.train.early_stopping_patience,
               " needs validations during training: set "
               "'train.eval_every' > 0 (and data.valid)");
  ELMO_REQUIRE(c.train.early_stopping_min_delta == 0 || c.train.early_stopping_patience > 0,
               at("train.early_stopping_min_delta"),
               "'train.early_stopping_min_delta' = ", c.train.early_stopping_min_delta,
               " has no effect without early stopping: set 'train.early_stopping_patience' > 0, "
               "or remove early_stopping_min_delta");
  ELMO_REQUIRE(c.optimizer.type != "adagrad" || c.optimizer.initial_accumulator > 0 ||
                   c.optimizer.epsilon > 0,
               at("optimizer.initial_accumulator"),
               "Adagrad with 'optimizer.initial_accumulator' = 0 and 'optimizer.epsilon' = 0 "
               "divides by zero on the first step: make one of them > 0");
  ELMO_REQUIRE(c.eval.head_ids == 0 || c.eval.torso_ids == 0 || c.eval.head_ids < c.eval.torso_ids,
               at("eval.head_ids"), "'eval.head_ids' = ", c.eval.head_ids,
               " must be below 'eval.torso_ids' = ", c.eval.torso_ids,
               " (the head slice is the most frequent words, the torso the next ones)");
}

Config parse_and_apply(const std::string& text, const std::string& origin,
                       const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(std::string_view(text), std::string_view(origin));
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    std::string position = origin;
    if (begin.line) position += str(":", begin.line);
    if (begin.line && begin.column) position += str(":", begin.column);
    throw UsageError(str(position, ": ", e.description()));
  }
  Config config;
  Origins origins;
  std::vector<Problem> problems = apply_table(root, origin, config, origins);
  for (const std::string& assignment : overrides) apply_override_impl(config, assignment, origins);
  // A bad value in the file is forgiven when --set replaced it.
  std::string message;
  for (const Problem& p : problems) {
    const auto it = origins.find(p.key);
    if (!p.key.empty() && it != origins.end() && it->second.rfind("--set ", 0) == 0) continue;
    message += (message.empty() ? "" : "\n") + p.message;
  }
  if (!message.empty()) throw UsageError(message);
  validate_impl(config, origins);
  return config;
}

}  // namespace

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error& e) {
    throw UsageError(str("cannot read config file: ", e.what(),
                         " (pass --config PATH, or run from the folder that holds run.toml)"));
  }
  return parse_and_apply(text, path, overrides);
}

Config config_from_string(const std::string& text, const std::string& origin_name,
                          const std::vector<std::string>& overrides) {
  return parse_and_apply(text, origin_name, overrides);
}

void apply_override(Config& config, const std::string& assignment) {
  Origins origins;
  apply_override_impl(config, assignment, origins);
}

void validate_config(const Config& config) { validate_impl(config, Origins{}); }

std::string config_to_toml(const Config& config, bool with_comments) {
  std::string out;
  std::string section;
  for (const KeySpec& k : key_table()) {
    if (section != k.section) {
      out += str(section.empty() ? "" : "\n", "[", k.section, "]\n");
      section = k.section;
    }
    if (with_comments) {
      const std::string range = range_text(k);
      out += str("# ", k.doc,
                 range.empty() || k.kind == Kind::kBool ? "" : " (allowed: " + range + ")", "\n");
    }
    out += str(k.name, " = ", value_as_toml(k, config), "\n");
  }
  return out;
}

uint64_t fnv1a64(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const unsigned char ch : bytes) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t config_hash(const Config& config) { return fnv1a64(config_to_toml(config)); }

uint64_t model_shape_hash(const Config& config, int64_t vocab_size) {
  const ModelConfig& m = config.model;
  std::string text = str("embedding_dim=", m.input_dim(), ";cell_size=", m.cell_size,
                         ";projection_dim=", m.projection_dim, ";layers=", m.layers,
                         ";bidirectional=", m.bidirectional ? 1 : 0);
  if (vocab_size > 0) text += str(";vocab_size=", vocab_size);
  return fnv1a64(text);
}

std::vector<ConfigKeyInfo> describe_keys() {
  const Config defaults;
  std::vector<ConfigKeyInfo> out;
  for (const KeySpec& k : key_table())
    out.push_back(
        {k.full_name(), kind_name(k.kind), value_as_toml(k, defaults), range_text(k), k.doc});
  return out;
}

std::vector<std::string> config_sections() {
  std::vector<std::string> out;
  for (const KeySpec& k : key_table())
    if (out.empty() || out.back() != k.section) out.push_back(k.section);
  return out;
}

std::string config_reference_markdown() {
  const auto escape = [](const std::string& s) {
    std::string out;
    for (const char ch : s) {
      if (ch == '|')
        out += "\\|";
      else if (ch == '<' || ch == '>')
        out += ch == '<' ? "&lt;" : "&gt;";
      else
        out += ch;
    }
    return out;
  };
  std::string out = "| Key | Type | Default | Range | Meaning |\n|---|---|---|---|---|\n";
  for (const ConfigKeyInfo& k : describe_keys()) {
    out += str("| `", k.key, "` | ", k.type, " | `", k.default_value, "` | ", escape(k.range),
               " | ", escape(k.doc), " |\n");
  }
  return out;
}

}  // namespace elmo
