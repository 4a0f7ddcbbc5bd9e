#include "io/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "io/atomic_file.h"
#include "io/crc32c.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFile = "state.json";
constexpr const char* kLatestFile = "latest";
constexpr const char* kStateCrcKey = "crc32c";  // of the rest of state.json (dump(2))
constexpr const char* kReservedKeys[] = {"format", "step", "files", kStateCrcKey};

// A tensor, or state.json, failed its checksum in a step folder: the checkpoint is complete but
// its bytes changed. Never caught as an Error (no silent fallback): see throw_damaged.
struct DamagedTensor {
  std::string message;
};

// "step-<digits>" -> N; anything else (including "step-5.tmp-123") -> nullopt.
std::optional<int64_t> parse_step_name(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return std::nullopt;
  int64_t n = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

std::string step_name(int64_t step) { return str("step-", step); }

bool valid_file_name(const std::string& name) {
  // "<name>.safetensors" must fit a file name (255 bytes; longer makes the filesystem calls
  // throw ENAMETOOLONG, found by fuzz_checkpoint_state); ours are "model", "shard-12" and such.
  if (name.empty() || name.size() > 128 || name == "state" || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// Step folders in `ckpt_dir`, newest (highest step) first.
std::vector<std::pair<int64_t, fs::path>> list_step_dirs(const fs::path& ckpt_dir) {
  std::vector<std::pair<int64_t, fs::path>> steps;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(ckpt_dir, ec)) {
    const auto step = parse_step_name(entry.path().filename().string());
    if (step && entry.is_directory()) steps.emplace_back(*step, entry.path());
  }
  std::sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return steps;
}

// The step folder named by "latest", or nullopt (with the reason) when absent or unusable.
std::optional<std::string> read_latest_name(const fs::path& ckpt_dir, std::string* why) {
  const fs::path latest = ckpt_dir / kLatestFile;
  if (!fs::exists(latest)) {
    *why = str("no '", kLatestFile, "' file in ", ckpt_dir.string());
    return std::nullopt;
  }
  std::string text = read_file(latest.string());
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  if (!parse_step_name(text)) {
    *why = str(latest.string(), " holds '", text.substr(0, 64), "', not step-<N>");
    return std::nullopt;
  }
  return text;
}

// Whether `path` itself is a step folder (rather than a checkpoints or run folder).
bool looks_like_step_dir(const fs::path& path) {
  if (parse_step_name(path.filename().string())) return true;
  if (fs::exists(path / kStateFile)) return true;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path, ec))
    if (entry.path().extension() == ".safetensors") return true;
  return false;
}

fs::path checkpoints_dir_of(const fs::path& run_or_ckpt_dir) {
  const fs::path sub = run_or_ckpt_dir / "checkpoints";
  return fs::is_directory(sub) ? sub : run_or_ckpt_dir;
}

struct StateJson {
  int64_t step = 0;
  std::vector<std::string> files;
  nlohmann::json state;  // caller part
};

// Reads and validates <dir>/state.json (not the tensor files).
StateJson read_state_json(const fs::path& dir) {
  const fs::path file = dir / kStateFile;
  const bool is_step = parse_step_name(dir.filename().string()).has_value();
  if (!fs::exists(file)) {
    if (is_step)
      throw Error(str(file.string(), " is missing: checkpoint ", dir.string(),
                      " is incomplete (its save was interrupted); load the run folder to fall "
                      "back to the newest complete checkpoint"));
    throw Error(str(dir.string(), ": not an elmo_fast checkpoint (no ", kStateFile,
                    "); pass a step-<N> folder, a checkpoints folder or a run folder"));
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(file.string()));
  } catch (const nlohmann::json::exception& e) {
    throw Error(str(file.string(), ": checkpoint ", dir.string(),
                    " is damaged: state.json is not valid JSON (", e.what(), ")"));
  }
  // The checksum first: a damaged "format" is damage, not a foreign file. Checkpoints written
  // before state.json carried one have none.
  if (j.is_object() && j.contains(kStateCrcKey)) {
    nlohmann::json rest = j;
    rest.erase(kStateCrcKey);
    const std::string text = rest.dump(2);
    const uint32_t actual = crc32c(text.data(), text.size());
    uint32_t stored = 0;
    const nlohmann::json& crc = j[kStateCrcKey];
    if (!crc.is_string() || !parse_crc32c_hex(crc.get<std::string>(), &stored) || stored != actual)
      throw DamagedTensor{str("checkpoint ", dir.string(), " is damaged: ", file.string(),
                              " fails its checksum (stored ", crc.dump(), ", its content has ",
                              crc32c_hex(actual), "): it is not used")};
  }
  const auto format = j.is_object() ? j.find("format") : j.end();
  if (!j.is_object() || format == j.end() || !format->is_string() ||
      format->get<std::string>().rfind("elmo_fast-checkpoint-", 0) != 0)
    throw Error(str(file.string(), ": not an elmo_fast checkpoint (state.json lacks \"format\": \"",
                    kCheckpointFormat, "\")"));
  if (format->get<std::string>() != kCheckpointFormat)
    throw Error(str(file.string(), ": unsupported checkpoint format '", format->get<std::string>(),
                    "' (this build reads ", kCheckpointFormat, ")"));
  StateJson s;
  const auto step = j.find("step");
  const auto files = j.find("files");
  if (step == j.end() || !step->is_number_integer() || files == j.end() || !files->is_array())
    throw Error(str(file.string(), ": checkpoint ", dir.string(),
                    " is damaged: state.json needs an integer \"step\" and a \"files\" list"));
  s.step = step->get<int64_t>();
  for (const auto& f : *files) {
    if (!f.is_string() || !valid_file_name(f.get<std::string>()))
      throw Error(str(file.string(), ": checkpoint ", dir.string(), " is damaged: bad entry ",
                      f.dump(), " in \"files\""));
    s.files.push_back(f.get<std::string>());
  }
  s.state = j;
  for (const char* key : kReservedKeys) s.state.erase(key);
  return s;
}

// Cheap completeness check used to pick a folder: state.json valid and every file present.
std::optional<std::string> incomplete_reason(const fs::path& dir) {
  if (!fs::is_directory(dir)) return str(dir.string(), " does not exist");
  try {
    const StateJson s = read_state_json(dir);
    for (const auto& name : s.files) {
      const fs::path f = dir / (name + ".safetensors");
      if (!fs::exists(f)) return str(f.string(), " is missing");
    }
  } catch (const Error& e) {
    return std::string(e.what());
  } catch (const DamagedTensor& e) {
    return e.message;
  }
  return std::nullopt;
}

// Concatenates `parts` along `axis` (every other dimension must agree).
Tensor concat(const std::vector<Tensor>& parts, int64_t axis, const std::string& what) {
  const Tensor& first = parts.front();
  ELMO_CHECK(axis >= 0 && axis < first.ndim(), what, ": cannot concatenate along axis ", axis,
             " of a ", first.ndim(), "-d tensor");
  std::vector<int64_t> dims = first.shape().vec();
  int64_t total = 0;
  for (const Tensor& p : parts) {
    ELMO_CHECK(p.ndim() == first.ndim() && p.dtype() == first.dtype(), what,
               ": shard parts differ in rank or dtype");
    for (int d = 0; d < first.ndim(); ++d)
      ELMO_CHECK(d == axis || p.size(d) == first.size(d), what, ": shard parts differ in shape (",
                 p.shape().str(), " vs ", first.shape().str(), ")");
    total += p.size(static_cast<int>(axis));
  }
  dims[axis] = total;
  Tensor out = Tensor::empty(Shape(dims), first.dtype());
  int64_t outer = 1, inner = static_cast<int64_t>(dtype_size(first.dtype()));
  for (int d = 0; d < axis; ++d) outer *= first.size(d);
  for (int d = static_cast<int>(axis) + 1; d < first.ndim(); ++d) inner *= first.size(d);
  auto* dst = static_cast<unsigned char*>(out.raw());
  for (int64_t o = 0; o < outer; ++o)
    for (const Tensor& p : parts) {
      const int64_t bytes = p.size(static_cast<int>(axis)) * inner;
      std::memcpy(dst, static_cast<const unsigned char*>(p.raw()) + o * bytes, bytes);
      dst += bytes;
    }
  return out;
}

// `base` (optional: an undefined tensor for none) followed by the rows of `parts` dealt
// round-robin: row i of the tail is row i / S of part i % S. Part s must hold
// ceil((total - s) / S) rows, as dealing leaves them.
Tensor interleave(const Tensor& base, const std::vector<Tensor>& parts, const std::string& what) {
  const Tensor& first = parts.front();
  const int64_t count = static_cast<int64_t>(parts.size());
  int64_t tail = 0;
  for (const Tensor& p : parts) {
    ELMO_CHECK(p.ndim() == first.ndim() && p.ndim() >= 1 && p.dtype() == first.dtype(), what,
               ": shard parts differ in rank or dtype");
    for (int d = 1; d < first.ndim(); ++d)
      ELMO_CHECK(p.size(d) == first.size(d), what, ": shard parts differ in shape (",
                 p.shape().str(), " vs ", first.shape().str(), ")");
    tail += p.size(0);
  }
  for (int64_t s = 0; s < count; ++s) {
    const int64_t expected = tail > s ? (tail - s + count - 1) / count : 0;
    ELMO_CHECK(parts[s].size(0) == expected, what, ": shard ", s, " holds ", parts[s].size(0),
               " rows; dealing ", tail, " rows over ", count, " shards gives it ", expected);
  }
  const int64_t head = base.defined() ? base.size(0) : 0;
  if (base.defined()) {
    ELMO_CHECK(base.ndim() == first.ndim() && base.dtype() == first.dtype(), what,
               ": the replicated part differs from the shards in rank or dtype");
    for (int d = 1; d < first.ndim(); ++d)
      ELMO_CHECK(base.size(d) == first.size(d), what, ": the replicated part differs from the "
                 "shards in shape (", base.shape().str(), " vs ", first.shape().str(), ")");
  }
  std::vector<int64_t> dims = first.shape().vec();
  dims[0] = head + tail;
  Tensor out = Tensor::empty(Shape(dims), first.dtype());
  int64_t row_bytes = static_cast<int64_t>(dtype_size(first.dtype()));
  for (int d = 1; d < first.ndim(); ++d) row_bytes *= first.size(d);
  auto* dst = static_cast<unsigned char*>(out.raw());
  if (head > 0) std::memcpy(dst, base.raw(), head * row_bytes);
  for (int64_t i = 0; i < tail; ++i)
    std::memcpy(dst + (head + i) * row_bytes,
                static_cast<const unsigned char*>(parts[i % count].raw()) + (i / count) * row_bytes,
                row_bytes);
  return out;
}

// Replaces the shard files of a sharded checkpoint by whole tensors (see checkpoint.h).
void assemble_shards(CheckpointData& data, const fs::path& dir) {
  const nlohmann::json& shards = data.state["shards"];
  const int part = data.part_rank;
  const auto fail = [&](const std::string& why) {
    return Error(str("checkpoint ", dir.string(), " is damaged: ", why));
  };
  if (!shards.is_object() || !shards.contains("files") || !shards["files"].is_array() ||
      !shards.contains("axis") || !shards["axis"].is_object())
    throw fail("state.json \"shards\" needs a \"files\" list and an \"axis\" object");
  for (const auto& [file, axis] : shards["axis"].items())
    if (!axis.is_number_integer() || axis.get<int64_t>() < 0 ||
        axis.get<int64_t>() >= Shape::kMaxDims)
      throw fail(str("\"shards\".\"axis\" of '", file, "' is ", axis.dump(),
                     ", not a dimension 0 to ", Shape::kMaxDims - 1));
  std::set<std::string> interleaved;
  if (shards.contains("interleave")) {
    if (!shards["interleave"].is_array()) throw fail("\"shards\".\"interleave\" must be a list");
    for (const auto& f : shards["interleave"]) {
      if (!f.is_string() || !shards["axis"].contains(f.get<std::string>()) ||
          shards["axis"][f.get<std::string>()] != 0)
        throw fail(str("\"shards\".\"interleave\" entry ", f.dump(),
                       " is not a file with axis 0"));
      interleaved.insert(f.get<std::string>());
    }
  }
  std::map<std::string, std::map<std::string, std::vector<Tensor>>> parts;  // file -> name -> parts
  std::map<std::string, std::vector<std::string>> order;                    // first-seen order
  std::set<std::string> shard_names;
  for (size_t i = 0; i < shards["files"].size(); ++i) {
    const auto& f = shards["files"][i];
    if (!f.is_string()) throw fail("shard names must be strings");
    if (part >= 0 && static_cast<int>(i) != part) continue;  // another rank's share, not loaded
    const NamedTensors* tensors = data.file(f.get<std::string>());
    if (!tensors) throw fail(str("shard file ", f.dump(), " is not among its files"));
    shard_names.insert(f.get<std::string>());
    for (const auto& [name, tensor] : *tensors) {
      const size_t slash = name.find('/');
      if (slash == std::string::npos)
        throw fail(str("shard tensor '", name, "' is not named <file>/<tensor>"));
      const std::string file = name.substr(0, slash), tensor_name = name.substr(slash + 1);
      if (!shards["axis"].contains(file))
        throw fail(str("shard tensor '", name, "' belongs to file '", file,
                       "', which has no axis in \"shards\""));
      auto& list = parts[file][tensor_name];
      if (list.empty()) order[file].push_back(tensor_name);
      list.push_back(tensor);
    }
  }
  std::vector<std::pair<std::string, NamedTensors>> files;
  for (auto& [name, tensors] : data.files)
    if (!shard_names.count(name)) files.emplace_back(name, std::move(tensors));
  for (auto& [file, by_name] : parts) {
    const int64_t axis = shards["axis"][file].get<int64_t>();
    auto it = std::find_if(files.begin(), files.end(),
                           [&wanted = file](const auto& f) { return f.first == wanted; });
    if (it == files.end()) {
      files.emplace_back(file, NamedTensors{});
      it = std::prev(files.end());
    }
    NamedTensors& target = it->second;
    for (const std::string& tensor_name : order[file]) {
      auto base = std::find_if(target.begin(), target.end(),
                               [&](const auto& t) { return t.first == tensor_name; });
      const std::string what = str(dir.string(), ": ", file, "/", tensor_name);
      Tensor whole;
      if (interleaved.count(file)) {
        const std::vector<Tensor>& shard_parts = by_name[tensor_name];
        if (shard_parts.size() != shard_names.size())
          throw fail(str(file, "/", tensor_name, " is in ", shard_parts.size(), " of the ",
                         shard_names.size(), " shards; a dealt tensor must be in every shard"));
        whole = interleave(base != target.end() ? base->second : Tensor(), shard_parts, what);
      } else {
        std::vector<Tensor> list;
        if (base != target.end()) list.push_back(base->second);
        for (Tensor& t : by_name[tensor_name]) list.push_back(t);
        whole = concat(list, axis, what);
      }
      if (base != target.end())
        base->second = whole;
      else
        target.emplace_back(tensor_name, whole);
    }
  }
  data.files = std::move(files);
}

// Rank part->rank's shard file when `part` applies to this state (see CheckpointPart), else "".
std::string own_shard(const nlohmann::json& state, const CheckpointPart* part) {
  if (part == nullptr || !state.is_object() || !state.contains("shards")) return "";
  const nlohmann::json& shards = state["shards"];
  if (!shards.is_object() || !shards.contains("files") || !shards["files"].is_array() ||
      static_cast<int64_t>(shards["files"].size()) != part->world ||
      shards.value("hot_rows", int64_t{-1}) != part->hot_rows || part->rank < 0 ||
      part->rank >= part->world || !shards["files"][part->rank].is_string())
    return "";
  return shards["files"][part->rank].get<std::string>();
}

CheckpointData load_step_dir(const fs::path& dir, const CheckpointPart* part = nullptr) {
  StateJson s = read_state_json(dir);
  CheckpointData data;
  data.step = s.step;
  data.dir = dir.string();
  data.state = std::move(s.state);
  const std::string mine = own_shard(data.state, part);
  std::set<std::string> others;  // the other ranks' shards: not read
  if (!mine.empty()) {
    data.part_rank = part->rank;
    for (const auto& f : data.state["shards"]["files"])
      if (f.get<std::string>() != mine) others.insert(f.get<std::string>());
  }
  std::vector<std::string> unverified;
  for (const auto& name : s.files) {
    if (others.count(name)) {
      if (!fs::exists(dir / (name + ".safetensors")))
        throw Error(str((dir / (name + ".safetensors")).string(), " is missing: checkpoint ",
                        dir.string(), " is incomplete or damaged"));
      continue;
    }
    const fs::path f = dir / (name + ".safetensors");
    if (!fs::exists(f))
      throw Error(str(f.string(), " is missing: checkpoint ", dir.string(),
                      " is incomplete or damaged"));
    try {
      SafetensorsFile file = load_safetensors(f.string());
      if (!file.checksummed) unverified.push_back(name + ".safetensors");
      data.files.emplace_back(name, std::move(file.tensors));
    } catch (const ChecksumError& e) {
      throw DamagedTensor{str("checkpoint ", dir.string(), " is damaged: ", e.what())};
    } catch (const Error& e) {
      throw Error(str("checkpoint ", dir.string(), " is damaged: ", e.what()));
    }
  }
  if (!unverified.empty())
    log_warn("checkpoint ", dir.string(), " carries no tensor checksums (",
             unverified.size() == s.files.size() ? std::string("written before elmo_fast had them")
                                                 : str("in ", unverified.front()),
             "): loaded without verification; checkpoints saved from now on carry them");
  if (data.state.is_object() && data.state.contains("shards")) assemble_shards(data, dir);
  return data;
}

// The newest step folder of `ckpt_dir` older than `step` that loads and verifies; "" if none.
std::string newest_verified_before(const fs::path& ckpt_dir, int64_t step) {
  for (const auto& [older, path] : list_step_dirs(ckpt_dir)) {
    if (older >= step) continue;
    try {
      load_step_dir(path);
      return path.string();
    } catch (const Error&) {
    } catch (const DamagedTensor&) {
    }
  }
  return "";
}

[[noreturn]] void throw_damaged(const DamagedTensor& damage, fs::path dir) {
  dir = dir.lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "step-6/"
  const fs::path ckpt_dir = dir.parent_path();
  const auto step = parse_step_name(dir.filename().string());
  const std::string fallback = step ? newest_verified_before(ckpt_dir, *step) : std::string();
  throw CheckpointChecksumError(
      str(damage.message,
          fallback.empty()
              ? std::string("; no older checkpoint in ") + ckpt_dir.string() + " verifies"
              : "; the newest older checkpoint that verifies is " + fallback),
      fallback);
}

// Step folders to try for a checkpoints folder, in order: the one "latest" names, then all
// others newest first. `note` receives why "latest" was not usable (empty when it is first).
std::vector<fs::path> candidates(const fs::path& ckpt_dir, std::string* latest_problem) {
  std::vector<fs::path> out;
  std::string why;
  const auto latest = read_latest_name(ckpt_dir, &why);
  if (latest) {
    const fs::path p = ckpt_dir / *latest;
    if (fs::is_directory(p))
      out.push_back(p);
    else
      why = str(ckpt_dir.string(), "/latest names ", *latest, ", which does not exist");
  }
  *latest_problem = out.empty() ? why : "";
  for (const auto& [step, path] : list_step_dirs(ckpt_dir))
    if (out.empty() || path != out.front()) out.push_back(path);
  return out;
}

// Removes leftovers of interrupted saves: "step-*.tmp-*", "step-*.old-*", "latest.tmp-*".
void remove_leftovers(const fs::path& ckpt_dir, const fs::path& keep) {
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (const auto& entry : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name.rfind("step-", 0) == 0 || name.rfind(kLatestFile, 0) == 0;
    const bool temp = name.find(".tmp-") != std::string::npos ||
                      name.find(".old-") != std::string::npos;
    if (ours && temp && entry.path() != keep) doomed.push_back(entry.path());
  }
  for (const auto& p : doomed) {
    fs::remove_all(p, ec);
    if (ec) log_warn("cannot remove leftover ", p.string(), ": ", ec.message());
  }
}

// Moves `from` (complete new folder) to `to`, atomically replacing an existing folder.
void install_dir(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) == 0) return;
  if (errno != ENOTEMPTY && errno != EEXIST)
    throw Error(str("cannot rename ", from.string(), " to ", to.string(), ": ",
                    std::strerror(errno)));
  // The step folder already exists (a step saved twice): swap in one atomic operation, then
  // delete the old contents, which now live at `from`.
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(from);
    return;
  }
  // File systems without RENAME_EXCHANGE: move the old folder aside first (a crash in between
  // leaves "latest" naming a missing folder, and loaders fall back to an older step).
  const fs::path aside = str(to.string(), ".old-", ::getpid());
  fs::remove_all(aside);
  if (::rename(to.c_str(), aside.c_str()) != 0 || ::rename(from.c_str(), to.c_str()) != 0)
    throw Error(str("cannot replace ", to.string(), " with ", from.string(), ": ",
                    std::strerror(errno)));
  fs::remove_all(aside);
}

void prune(const fs::path& ckpt_dir, int keep_last, const fs::path& just_written) {
  if (keep_last <= 0) return;
  std::string why;
  const auto latest = read_latest_name(ckpt_dir, &why);
  int kept = 0;
  for (const auto& [step, path] : list_step_dirs(ckpt_dir)) {
    const bool is_protected = path == just_written || (latest && path == ckpt_dir / *latest);
    if (kept < keep_last || is_protected) {
      ++kept;
      continue;
    }
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec) log_warn("cannot remove old checkpoint ", path.string(), ": ", ec.message());
  }
}

}  // namespace

const NamedTensors* CheckpointData::file(const std::string& name) const {
  for (const auto& [n, tensors] : files)
    if (n == name) return &tensors;
  return nullptr;
}

std::string save_checkpoint(const std::string& run_dir, const CheckpointData& data,
                            int keep_last) {
  ELMO_CHECK(data.step >= 0, "checkpoint step must be >= 0, got ", data.step);
  ELMO_CHECK(keep_last >= 0, "keep_last must be >= 0, got ", keep_last);
  ELMO_CHECK(data.state.is_object() || data.state.is_null(),
             "checkpoint state must be a JSON object, got ", data.state.type_name());
  nlohmann::json state = data.state.is_null() ? nlohmann::json::object() : data.state;
  for (const char* key : kReservedKeys)
    ELMO_CHECK(!state.contains(key), "checkpoint state may not use the reserved key '", key, "'");
  std::set<std::string> names;
  nlohmann::json file_list = nlohmann::json::array();
  for (const auto& [name, tensors] : data.files) {
    ELMO_CHECK(valid_file_name(name), "bad checkpoint file name '", name,
               "' (letters, digits, '_', '-', '.'; not 'state')");
    ELMO_CHECK(names.insert(name).second, "checkpoint file '", name, "' given twice");
    file_list.push_back(name);
  }
  for (const auto& [name, path] : data.adopted) {
    ELMO_CHECK(valid_file_name(name), "bad checkpoint file name '", name,
               "' (letters, digits, '_', '-', '.'; not 'state')");
    ELMO_CHECK(names.insert(name).second, "checkpoint file '", name, "' given twice");
    ELMO_CHECK(fs::is_regular_file(path), "checkpoint file '", name, "' to adopt is missing: ",
               path);
    file_list.push_back(name);
  }
  state["format"] = kCheckpointFormat;
  state["step"] = data.step;
  state["files"] = file_list;

  const fs::path ckpt_dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(ckpt_dir, ec);
  if (ec) throw Error(str("cannot create ", ckpt_dir.string(), ": ", ec.message()));
  const fs::path final_dir = ckpt_dir / step_name(data.step);
  const fs::path tmp_dir = ckpt_dir / str(step_name(data.step), ".tmp-", ::getpid());
  remove_leftovers(ckpt_dir, fs::path());
  fs::create_directory(tmp_dir, ec);
  if (ec) throw Error(str("cannot create ", tmp_dir.string(), ": ", ec.message()));
  try {
    const std::map<std::string, std::string> meta = {{"format", kCheckpointFormat},
                                                     {"step", std::to_string(data.step)}};
    for (const auto& [name, tensors] : data.files)
      save_safetensors((tmp_dir / (name + ".safetensors")).string(), tensors, meta);
    for (const auto& [name, path] : data.adopted) {
      const fs::path to = tmp_dir / (name + ".safetensors");
      if (::rename(path.c_str(), to.c_str()) != 0) {  // another filesystem: copy, then remove
        fs::copy_file(path, to, fs::copy_options::overwrite_existing);
        fs::remove(path);
      }
    }
    const std::string text = state.dump(2);
    state[kStateCrcKey] = crc32c_hex(crc32c(text.data(), text.size()));
    write_file_atomic((tmp_dir / kStateFile).string(), state.dump(2) + "\n");  // last inside
    install_dir(tmp_dir, final_dir);
    fsync_directory(ckpt_dir.string());
  } catch (...) {
    fs::remove_all(tmp_dir, ec);
    throw;
  }
  write_file_atomic((ckpt_dir / kLatestFile).string(), step_name(data.step) + "\n");
  prune(ckpt_dir, keep_last, final_dir);
  return final_dir.string();
}

namespace {

void fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    throw Error(str("cannot flush ", path, ": ", std::strerror(err)));
  }
  ::close(fd);
}

// state.json of `dir` with `extra` merged in, as written (reserved keys refused).
std::string merged_state_text(const fs::path& dir, const nlohmann::json& extra) {
  ELMO_CHECK(extra.is_object(), "checkpoint state to merge must be a JSON object, got ",
             extra.type_name());
  for (const char* key : kReservedKeys)
    ELMO_CHECK(!extra.contains(key), "checkpoint state may not use the reserved key '", key, "'");
  read_state_json(dir);  // validates
  nlohmann::json j = nlohmann::json::parse(read_file((dir / kStateFile).string()));
  j.erase(kStateCrcKey);  // recomputed for the merged content, as save_checkpoint computes it
  for (const auto& [key, value] : extra.items()) j[key] = value;
  const std::string text = j.dump(2);
  j[kStateCrcKey] = crc32c_hex(crc32c(text.data(), text.size()));
  return j.dump(2) + "\n";
}

}  // namespace

std::string install_checkpoint_copy(const std::string& step_dir, const std::string& name,
                                    const nlohmann::json& extra_state) {
  ELMO_CHECK(valid_file_name(name) && !parse_step_name(name) && name != kLatestFile,
             "cannot install a checkpoint copy named '", name, "'");
  const fs::path from(step_dir);
  if (const auto why = incomplete_reason(from))
    throw Error(str("cannot copy checkpoint ", step_dir, ": ", *why));
  const fs::path ckpt_dir = from.parent_path();
  const fs::path final_dir = ckpt_dir / name;
  const fs::path tmp_dir = ckpt_dir / str(name, ".tmp-", ::getpid());
  std::error_code ec;
  // Leftovers of an interrupted copy under this name (any process).
  std::vector<fs::path> leftovers;
  for (const auto& entry : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind(name + ".tmp-", 0) == 0 || file.rfind(name + ".old-", 0) == 0)
      leftovers.push_back(entry.path());
  }
  for (const fs::path& p : leftovers) fs::remove_all(p, ec);
  ec.clear();
  fs::create_directory(tmp_dir, ec);
  if (ec) throw Error(str("cannot create ", tmp_dir.string(), ": ", ec.message()));
  try {
    const std::string state = merged_state_text(from, extra_state);
    for (const auto& entry : fs::directory_iterator(from)) {
      const std::string file = entry.path().filename().string();
      if (file == kStateFile || !entry.is_regular_file()) continue;
      fs::create_hard_link(entry.path(), tmp_dir / file, ec);
      if (ec) {
        ec.clear();
        fs::copy_file(entry.path(), tmp_dir / file);
        fsync_file((tmp_dir / file).string());
      }
    }
    write_file_atomic((tmp_dir / kStateFile).string(), state);
    fsync_directory(tmp_dir.string());
    install_dir(tmp_dir, final_dir);
    fsync_directory(ckpt_dir.string());
  } catch (...) {
    fs::remove_all(tmp_dir, ec);
    throw;
  }
  return final_dir.string();
}

void update_checkpoint_state(const std::string& step_dir, const nlohmann::json& extra_state) {
  const fs::path dir(step_dir);
  write_file_atomic((dir / kStateFile).string(), merged_state_text(dir, extra_state));
}

CheckpointData load_checkpoint(const std::string& path_text) {
  return load_checkpoint(path_text, CheckpointPart{-1, 0, 0});
}

CheckpointData load_checkpoint(const std::string& path_text, const CheckpointPart& part_in) {
  const CheckpointPart* part = part_in.rank >= 0 ? &part_in : nullptr;
  const fs::path path(path_text);
  if (!fs::is_directory(path))
    throw Error(str(path_text, ": no such checkpoint folder (pass a step-<N> folder, a "
                               "checkpoints folder or a run folder)"));
  if (looks_like_step_dir(path)) {
    try {
      return load_step_dir(path, part);
    } catch (const DamagedTensor& damage) {
      throw_damaged(damage, path);
    }
  }

  const fs::path ckpt_dir = checkpoints_dir_of(path);
  std::string latest_problem;
  const std::vector<fs::path> tries = candidates(ckpt_dir, &latest_problem);
  if (tries.empty())
    throw Error(str(path_text, ": no checkpoint found (no step-<N> folder in ", ckpt_dir.string(),
                    ")"));
  std::string first_error;
  for (size_t i = 0; i < tries.size(); ++i) {
    try {
      CheckpointData data = load_step_dir(tries[i], part);
      if (i > 0 || !latest_problem.empty())
        log_warn("falling back to checkpoint ", tries[i].string(), ": ",
                 latest_problem.empty() ? first_error : latest_problem);
      return data;
    } catch (const DamagedTensor& damage) {  // complete but wrong: never skipped silently
      throw_damaged(damage, tries[i]);
    } catch (const Error& e) {
      if (first_error.empty()) first_error = e.what();
    }
  }
  throw Error(first_error);
}

std::optional<std::string> find_latest_checkpoint(const std::string& run_dir) {
  const fs::path ckpt_dir = checkpoints_dir_of(run_dir);
  if (!fs::is_directory(ckpt_dir)) return std::nullopt;
  std::string latest_problem;
  for (const auto& dir : candidates(ckpt_dir, &latest_problem))
    if (!incomplete_reason(dir)) return dir.string();
  return std::nullopt;
}

}  // namespace elmo
