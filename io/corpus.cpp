#include "io/corpus.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace elmo {

namespace {

bool is_regular_file(const std::string& path, int64_t* size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (size) *size = static_cast<int64_t>(st.st_size);
  return true;
}

bool has_glob_chars(const std::string& spec) {
  return spec.find_first_of("*?[") != std::string::npos;
}

}  // namespace

std::vector<std::string> resolve_corpus(const std::string& spec) {
  if (spec.empty()) throw Error("corpus spec is empty: give a file, a folder or a glob pattern");
  std::vector<std::string> files;
  struct stat st {};
  if (::stat(spec.c_str(), &st) == 0) {
    if (S_ISREG(st.st_mode)) {
      files.push_back(spec);
    } else if (S_ISDIR(st.st_mode)) {
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(spec, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name[0] == '.') continue;
        if (is_regular_file(entry.path().string(), nullptr)) files.push_back(entry.path().string());
      }
      if (ec) throw Error(str("cannot list corpus folder '", spec, "': ", ec.message()));
      std::sort(files.begin(), files.end());
      if (files.empty())
        throw Error(str("corpus folder '", spec, "' holds no regular (non-hidden) files"));
    } else {
      throw Error(str("corpus path '", spec, "' is neither a regular file nor a folder"));
    }
  } else if (has_glob_chars(spec)) {
    glob_t g{};
    const int rc = ::glob(spec.c_str(), GLOB_ERR, nullptr, &g);
    if (rc == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i)
        if (is_regular_file(g.gl_pathv[i], nullptr)) files.emplace_back(g.gl_pathv[i]);
    }
    globfree(&g);
    if (rc != 0 && rc != GLOB_NOMATCH)
      throw Error(str("cannot expand corpus pattern '", spec, "' (glob error ", rc, ")"));
    std::sort(files.begin(), files.end());
    if (files.empty())
      throw Error(str("corpus pattern '", spec, "' matches no regular file: check the path"));
  } else {
    throw Error(str("corpus path '", spec, "' does not exist: ", std::strerror(errno)));
  }
  int64_t total = 0;
  for (const auto& f : files) {
    int64_t size = 0;
    is_regular_file(f, &size);
    total += size;
  }
  if (total == 0)
    throw Error(str("corpus '", spec, "' is empty: its ", files.size(),
                    " file(s) hold no tokens"));
  return files;
}

bool is_valid_utf8(std::string_view bytes, size_t* bad_offset) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    // Fast path: 8 ASCII bytes at a time.
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int extra;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
      extra = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      extra = 2;
      if (c == 0xE0) lo = 0xA0;       // no overlong 3-byte forms
      if (c == 0xED) hi = 0x9F;       // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      extra = 3;
      if (c == 0xF0) lo = 0x90;       // no overlong 4-byte forms
      if (c == 0xF4) hi = 0x8F;       // nothing above U+10FFFF
    } else {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    if (i + static_cast<size_t>(extra) >= n) {  // truncated sequence
      if (bad_offset) *bad_offset = i;
      return false;
    }
    if (s[i + 1] < lo || s[i + 1] > hi) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    for (int k = 2; k <= extra; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) {
        if (bad_offset) *bad_offset = i;
        return false;
      }
    }
    i += static_cast<size_t>(extra) + 1;
  }
  return true;
}

namespace {
struct SpaceTable {
  bool space[256] = {};
  constexpr SpaceTable() {
    for (int c = 0; c < 256; ++c) space[c] = is_token_space(static_cast<char>(c));
  }
};
constexpr SpaceTable kSpaces;
}  // namespace

void split_tokens(std::string_view line, std::vector<std::string_view>* tokens) {
  tokens->clear();
  const auto* p = reinterpret_cast<const unsigned char*>(line.data());
  const auto* end = p + line.size();
  while (p < end) {
    while (p < end && kSpaces.space[*p]) ++p;
    const auto* start = p;
    while (p < end && !kSpaces.space[*p]) ++p;
    if (p > start)
      tokens->emplace_back(reinterpret_cast<const char*>(start), static_cast<size_t>(p - start));
  }
}

LineReader::LineReader(const std::string& path, size_t block_bytes) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(str("cannot open text file '", path, "': ", std::strerror(errno)));
  ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  // No bigger than the file needs (vocabularies and held-out texts are small); it grows when a
  // line does not fit.
  struct stat st {};
  const size_t file_bytes =
      ::fstat(fd_, &st) == 0 && st.st_size >= 0 ? static_cast<size_t>(st.st_size) + 1 : block_bytes;
  buffer_.resize(std::max<size_t>(std::min(block_bytes, file_bytes), 4096));
}

LineReader::~LineReader() {
  if (fd_ >= 0) ::close(fd_);
}

bool LineReader::fill() {
  if (eof_) return false;
  // Keep the unread tail, move it to the front, grow when one line fills the whole buffer.
  if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
  for (;;) {
    const ssize_t n = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(str("cannot read text file '", path_, "': ", std::strerror(errno)));
    }
    if (n == 0) {
      eof_ = true;
      return false;
    }
    end_ += static_cast<size_t>(n);
    return true;
  }
}

bool LineReader::next_line(std::string_view* line) {
  for (;;) {
    const char* start = buffer_.data() + begin_;
    const void* nl = begin_ < end_ ? std::memchr(start, '\n', end_ - begin_) : nullptr;
    size_t length;
    if (nl != nullptr) {
      length = static_cast<size_t>(static_cast<const char*>(nl) - start);
      begin_ += length + 1;
    } else if (!fill()) {
      if (begin_ == end_) return false;
      start = buffer_.data() + begin_;  // last line without '\n'
      length = end_ - begin_;
      begin_ = end_;
    } else {
      continue;
    }
    ++line_number_;
    *line = std::string_view(start, length);
    size_t bad = 0;
    if (!is_valid_utf8(*line, &bad)) {
      throw Error(str("invalid UTF-8 in ", path_, ":", line_number_, " at byte ", bad + 1,
                      " of the line (byte 0x", std::hex,
                      static_cast<int>(static_cast<unsigned char>((*line)[bad])), std::dec,
                      "): the corpus must be UTF-8 text"));
    }
    return true;
  }
}

bool LineReader::next_sentence(std::vector<std::string_view>* tokens) {
  std::string_view line;
  while (next_line(&line)) {
    split_tokens(line, tokens);
    if (!tokens->empty()) return true;
  }
  tokens->clear();
  return false;
}

}  // namespace elmo
