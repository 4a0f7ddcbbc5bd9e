#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "io/atomic_file.h"
#include "io/crc32c.h"
#include "runtime/error.h"

namespace elmo {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts are not supported");

namespace {

constexpr const char* kMetadataKey = "__metadata__";
// Checksum keys inside "__metadata__" (see safetensors.h).
constexpr const char* kChecksumsKey = "checksums";
constexpr const char* kChecksumsValue = "crc32c";
constexpr std::string_view kCrcPrefix = "crc32c:";

bool is_checksum_key(const std::string& key) {
  return key == kChecksumsKey || key.rfind(kCrcPrefix, 0) == 0;
}

// The reference implementation refuses headers above 100 MB; a bigger value means garbage.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
constexpr size_t kReadPieceBytes = size_t{1} << 20;  // tensors are read and verified in pieces

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

ChecksumError::ChecksumError(const std::string& path, const std::string& tensor, uint32_t stored,
                             uint32_t actual)
    : Error(str(path, ": tensor '", tensor, "' fails its checksum (stored crc32c ",
                crc32c_hex(stored), ", its data has ", crc32c_hex(actual),
                "): the file is damaged (disk or copy error); it is not used")),
      path_(path),
      tensor_(tensor) {}

namespace {

// The JSON header of `tensors` with `crcs` (one per tensor, in order), padded so the data starts
// 8-byte aligned. Its length does not depend on the CRC values.
std::string header_text(const NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata,
                        const std::vector<uint32_t>& crcs) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  meta[kChecksumsKey] = kChecksumsValue;
  for (size_t i = 0; i < tensors.size(); ++i)
    meta[std::string(kCrcPrefix) + tensors[i].first] = crc32c_hex(crcs[i]);
  header[kMetadataKey] = meta;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    nlohmann::ordered_json entry;
    entry["dtype"] = safetensors_dtype_name(t.dtype());
    entry["shape"] = t.shape().vec();
    entry["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = entry;
    offset += t.nbytes();
  }
  std::string head = header.dump();
  head.resize((head.size() + 7) / 8 * 8, ' ');  // data starts 8-byte aligned
  return head;
}

void pwrite_all(int fd, const void* data, size_t bytes, uint64_t offset, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd, p, bytes, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("cannot write", path);
    }
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  for (const auto& [k, v] : metadata)
    ELMO_CHECK(!is_checksum_key(k), "metadata key '", k, "' of ", path,
               " is reserved for the tensor checksums");
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    ELMO_CHECK(!name.empty() && name != kMetadataKey, "cannot save a tensor named '", name, "' to ",
               path);
    ELMO_CHECK(seen.insert(name).second, "tensor name '", name, "' appears twice in ", path);
    ELMO_CHECK(t.defined(), "tensor '", name, "' for ", path, " is undefined");
  }
  std::vector<uint32_t> crcs(tensors.size(), 0);
  const std::string placeholder = header_text(tensors, metadata, crcs);
  uint8_t prefix[8];
  const uint64_t n = placeholder.size();
  std::memcpy(prefix, &n, 8);  // little-endian host (static_assert above)

  const std::string tmp = str(path, ".tmp-", ::getpid());
  Fd out;
  out.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out.fd < 0) fail_errno("cannot create", tmp);
  try {
    write_all(out.fd, prefix, 8, tmp);
    write_all(out.fd, placeholder.data(), placeholder.size(), tmp);
    for (size_t i = 0; i < tensors.size(); ++i) {
      const Tensor& t = tensors[i].second;
      const Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
      crcs[i] = crc32c(host.raw(), host.nbytes());
      if (host.nbytes() > 0) write_all(out.fd, host.raw(), host.nbytes(), tmp);
    }
    const std::string head = header_text(tensors, metadata, crcs);
    ELMO_CHECK(head.size() == placeholder.size(), "safetensors header of ", path,
               " changed length with its checksums");
    pwrite_all(out.fd, head.data(), head.size(), 8, tmp);
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

namespace {

// Reads exactly `bytes` at `offset` into `data`; false when the source ends first.
using ReadAt = std::function<bool(void* data, size_t bytes, uint64_t offset)>;

SafetensorsFile parse(const ReadAt& read, uint64_t file_size, const std::string& path,
                      bool verify_checksums) {
  auto bad = [&](const auto&... parts) { return Error(str(path, ": ", parts...)); };

  if (file_size < 8)
    throw bad("truncated safetensors file (", file_size,
              " bytes; at least the 8-byte header length is needed)");
  uint64_t header_bytes = 0;
  if (!read(&header_bytes, 8, 0)) throw bad("truncated safetensors file");
  if (header_bytes > kMaxHeaderBytes)
    throw bad("not a safetensors file (header length ", header_bytes,
              " bytes is implausible; the file is damaged or of another format)");
  if (header_bytes > file_size - 8)
    throw bad("truncated safetensors file (header says its JSON header has ", header_bytes,
              " bytes, file has ", file_size - 8, " after the length)");
  std::string head(header_bytes, '\0');
  if (!read(head.data(), head.size(), 8)) throw bad("truncated safetensors file");
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
  std::map<std::string, std::string> crc_texts;  // tensor name -> stored hex
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) throw bad("bad safetensors header: __metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          throw bad("bad safetensors header: __metadata__ value of '", k, "' is not a string");
        if (k == kChecksumsKey) {
          if (v.get<std::string>() != kChecksumsValue)
            throw bad("unsupported tensor checksum '", v.get<std::string>(),
                      "' (this build verifies crc32c)");
          result.checksummed = true;
        } else if (k.rfind(kCrcPrefix, 0) == 0) {
          crc_texts[k.substr(kCrcPrefix.size())] = v.get<std::string>();
        } else {
          result.metadata[k] = v.get<std::string>();
        }
      }
      continue;
    }
    const std::string& tensor_name = name;  // (clang 14 cannot capture structured bindings)
    auto bad_entry = [&](const auto&... parts) {
      return bad("bad safetensors header: tensor '", tensor_name, "': ", parts...);
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

  // Every tensor of a checksummed file has a well-formed checksum, and every checksum a tensor.
  // Checksums without the marker mean a damaged header, not an old file: never load unverified.
  if (!result.checksummed && !crc_texts.empty())
    throw bad("bad safetensors header: it holds tensor checksums but no \"", kChecksumsKey,
              "\": \"", kChecksumsValue, "\" (the header is damaged)");
  std::vector<uint32_t> stored(entries.size(), 0);
  if (result.checksummed) {
    for (size_t i = 0; i < entries.size(); ++i) {
      const auto it = crc_texts.find(entries[i].name);
      if (it == crc_texts.end())
        throw bad("bad safetensors header: tensor '", entries[i].name, "' has no checksum (\"",
                  kCrcPrefix, entries[i].name, "\" in __metadata__)");
      if (!parse_crc32c_hex(it->second, &stored[i]))
        throw bad("bad safetensors header: the checksum of tensor '", entries[i].name, "' is '",
                  it->second.substr(0, 16), "', not 8 lowercase hex digits");
      crc_texts.erase(it);
    }
  }
  if (!crc_texts.empty())
    throw bad("bad safetensors header: a checksum names tensor '", crc_texts.begin()->first,
              "', which the file does not hold");

  result.tensors.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    Tensor t = Tensor::empty(Shape(e.dims), e.dtype);
    // Read in pieces and check each while it is still in the cache: verifying then costs a
    // fraction of the read (BENCHMARKS.md, "Checkpoint checksums").
    const bool verify = result.checksummed && verify_checksums;
    auto* dst = static_cast<unsigned char*>(t.raw());
    uint32_t actual = 0;
    for (size_t done = 0; done < t.nbytes();) {
      const size_t piece = std::min<size_t>(kReadPieceBytes, t.nbytes() - done);
      if (!read(dst + done, piece, data_start + e.begin + done))
        throw bad("truncated safetensors file (file shrank while reading tensor '", e.name, "')");
      if (verify) actual = crc32c_extend(actual, dst + done, piece);
      done += piece;
    }
    if (verify && actual != stored[i]) throw ChecksumError(path, e.name, stored[i], actual);
    result.tensors.emplace_back(e.name, std::move(t));
  }
  return result;
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path, bool verify_checksums) {
  Fd in;
  in.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in.fd < 0) fail_errno("cannot open", path);
  struct stat st {};
  if (::fstat(in.fd, &st) != 0) fail_errno("cannot stat", path);
  const ReadAt read = [&](void* data, size_t bytes, uint64_t offset) {
    return read_at(in.fd, data, bytes, offset, path);
  };
  return parse(read, static_cast<uint64_t>(st.st_size), path, verify_checksums);
}

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& origin,
                                  bool verify_checksums) {
  const ReadAt read = [&](void* data, size_t n, uint64_t offset) {
    if (offset > bytes.size() || n > bytes.size() - offset) return false;
    std::memcpy(data, bytes.data() + offset, n);
    return true;
  };
  return parse(read, bytes.size(), origin, verify_checksums);
}

}  // namespace elmo
