#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "io/atomic_file.h"
#include "runtime/error.h"

namespace elmo {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

namespace {

constexpr const char* kMetadataKey = "__metadata__";
// The reference implementation refuses headers above 100 MB; a bigger value means garbage.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kDTypeNames[] = {{DType::kF32, "F32"}, {DType::kBF16, "BF16"},
                                     {DType::kF16, "F16"}, {DType::kI32, "I32"},
                                     {DType::kI64, "I64"}, {DType::kU8, "U8"}};

bool parse_dtype(const std::string& name, DType* dtype) {
  for (const auto& d : kDTypeNames)
    if (name == d.name) {
      *dtype = d.dtype;
      return true;
    }
  return false;
}

[[noreturn]] void fail_errno(const std::string& what, const std::string& path) {
  throw Error(str(what, " '", path, "': ", std::strerror(errno)));
}

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("cannot write", path);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

// Reads exactly `bytes` at `offset`; false on a short read (end of file).
bool read_at(int fd, void* data, size_t bytes, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, bytes, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("cannot read", path);
    }
    if (n == 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

// Closes the descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string shape_text(const std::vector<int64_t>& dims) { return Shape(dims).str(); }

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  for (const auto& d : kDTypeNames)
    if (d.dtype == dtype) return d.name;
  return "?";
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[kMetadataKey] = meta;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    ELMO_CHECK(!name.empty() && name != kMetadataKey, "cannot save a tensor named '", name,
               "' to ", path);
    ELMO_CHECK(seen.insert(name).second, "tensor name '", name, "' appears twice in ", path);
    ELMO_CHECK(t.defined(), "tensor '", name, "' for ", path, " is undefined");
    nlohmann::ordered_json entry;
    entry["dtype"] = safetensors_dtype_name(t.dtype());
    entry["shape"] = t.shape().vec();
    entry["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = entry;
    offset += t.nbytes();
  }
  std::string head = header.dump();
  head.resize((head.size() + 7) / 8 * 8, ' ');  // data starts 8-byte aligned
  uint8_t prefix[8];
  const uint64_t n = head.size();
  std::memcpy(prefix, &n, 8);  // little-endian host (static_assert above)

  const std::string tmp = str(path, ".tmp-", ::getpid());
  Fd out;
  out.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out.fd < 0) fail_errno("cannot create", tmp);
  try {
    write_all(out.fd, prefix, 8, tmp);
    write_all(out.fd, head.data(), head.size(), tmp);
    for (const auto& [name, t] : tensors) {
      if (t.nbytes() == 0) continue;
      const Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
      write_all(out.fd, host.raw(), host.nbytes(), tmp);
    }
    if (::fsync(out.fd) != 0) fail_errno("cannot flush", tmp);
    const int fd = out.fd;
    out.fd = -1;
    if (::close(fd) != 0) fail_errno("cannot close", tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail_errno("cannot rename into", path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_directory(std::filesystem::path(path).parent_path().string());
}

SafetensorsFile load_safetensors(const std::string& path) {
  Fd in;
  in.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in.fd < 0) fail_errno("cannot open", path);
  struct stat st {};
  if (::fstat(in.fd, &st) != 0) fail_errno("cannot stat", path);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  auto bad = [&](const auto&... parts) { return Error(str(path, ": ", parts...)); };

  if (file_size < 8)
    throw bad("truncated safetensors file (", file_size,
              " bytes; at least the 8-byte header length is needed)");
  uint64_t header_bytes = 0;
  if (!read_at(in.fd, &header_bytes, 8, 0, path)) throw bad("truncated safetensors file");
  if (header_bytes > kMaxHeaderBytes)
    throw bad("not a safetensors file (header length ", header_bytes,
              " bytes is implausible; the file is damaged or of another format)");
  if (header_bytes > file_size - 8)
    throw bad("truncated safetensors file (header says its JSON header has ", header_bytes,
              " bytes, file has ", file_size - 8, " after the length)");
  std::string head(header_bytes, '\0');
  if (!read_at(in.fd, head.data(), head.size(), 8, path)) throw bad("truncated safetensors file");
  const uint64_t data_start = 8 + header_bytes;
  const uint64_t data_size = file_size - data_start;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(head);
  } catch (const nlohmann::json::exception& e) {
    throw bad("bad safetensors header: not valid JSON (", e.what(), ")");
  }
  if (!header.is_object()) throw bad("bad safetensors header: expected a JSON object");

  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> dims;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  SafetensorsFile result;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) throw bad("bad safetensors header: __metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          throw bad("bad safetensors header: __metadata__ value of '", k, "' is not a string");
        result.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad_entry = [&](const auto&... parts) {
      return bad("bad safetensors header: tensor '", name, "': ", parts...);
    };
    if (!value.is_object()) throw bad_entry("expected an object");
    const auto dt = value.find("dtype");
    const auto sh = value.find("shape");
    const auto off = value.find("data_offsets");
    if (dt == value.end() || sh == value.end() || off == value.end())
      throw bad_entry("needs \"dtype\", \"shape\" and \"data_offsets\"");
    if (!dt->is_string()) throw bad_entry("dtype is not a string");
    Entry e{name, DType::kF32, {}, 0, 0};
    if (!parse_dtype(dt->get<std::string>(), &e.dtype))
      throw bad_entry("unknown or unsupported dtype '", dt->get<std::string>(),
                      "' (supported: F32, BF16, F16, I32, I64, U8)");
    if (!sh->is_array()) throw bad_entry("shape is not an array");
    if (sh->size() > static_cast<size_t>(Shape::kMaxDims))
      throw bad_entry("shape has ", sh->size(), " dims; at most ", Shape::kMaxDims,
                      " are supported");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) throw bad_entry("shape ", sh->dump(), " has a bad dimension");
      const uint64_t v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (v != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / v))
        throw bad_entry("shape ", sh->dump(), " is too large");
      numel *= v;
      e.dims.push_back(static_cast<int64_t>(v));
    }
    if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      throw bad_entry("data_offsets must be [begin, end] with non-negative integers");
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.end < e.begin)
      throw bad_entry("data_offsets [", e.begin, ", ", e.end, "] end before they begin");
    const uint64_t need = numel * dtype_size(e.dtype);
    if (e.end - e.begin != need)
      throw bad_entry("data_offsets [", e.begin, ", ", e.end, "] hold ", e.end - e.begin,
                      " bytes, but ", dt->get<std::string>(), " ", shape_text(e.dims), " needs ",
                      need);
    entries.push_back(std::move(e));
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t expected_begin = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < expected_begin)
      throw bad("bad safetensors header: tensor '", e.name, "' data_offsets [", e.begin, ", ",
                e.end, "] overlap tensor '", entries[i - 1].name, "'");
    if (e.begin > expected_begin)
      throw bad("bad safetensors header: ", e.begin - expected_begin,
                " bytes of data before tensor '", e.name, "' belong to no tensor");
    expected_begin = e.end;
  }
  if (expected_begin > data_size)
    throw bad("truncated safetensors file (header says ", expected_begin,
              " bytes of data, file has ", data_size, ")");
  if (expected_begin < data_size)
    throw bad("damaged safetensors file (header says ", expected_begin,
              " bytes of data, file has ", data_size, ": trailing bytes)");

  result.tensors.reserve(entries.size());
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(Shape(e.dims), e.dtype);
    if (t.nbytes() > 0 && !read_at(in.fd, t.raw(), t.nbytes(), data_start + e.begin, path))
      throw bad("truncated safetensors file (file shrank while reading tensor '", e.name, "')");
    result.tensors.emplace_back(e.name, std::move(t));
  }
  return result;
}

}  // namespace elmo
