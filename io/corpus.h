// Corpus text: which files a corpus spec names, and a fast streaming reader of their sentences.
//
// A corpus is plain UTF-8 text, one sentence per line, tokens separated by ASCII whitespace
// (space, tab, CR, VT, FF); blank lines are skipped; a last line without '\n' is fine. Unicode
// spaces such as U+00A0 are ordinary token bytes (the 1B Word Benchmark is tokenised on ASCII
// spaces). Invalid UTF-8 is an Error naming file, line and byte column.
//
// This is not a tokenizer to ids (see io/vocab.h and io/token_cache.h) and it holds no state
// beyond the open file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace elmo {

// Files named by a corpus spec, in the order they are read:
//   - a regular file: just that file;
//   - a folder: every regular file directly inside it (not recursive), hidden files skipped,
//     sorted by name;
//   - a glob pattern (contains * ? or [): the regular files glob(3) matches, sorted.
// A missing path, an empty folder or a glob that matches nothing is an Error naming the spec.
// A corpus whose files are all zero bytes long is an Error too (cheap check by size; readers
// also reject a corpus with no tokens once they have read it).
std::vector<std::string> resolve_corpus(const std::string& spec);

// True when `bytes` is valid UTF-8; otherwise *bad_offset = offset of the first bad byte.
bool is_valid_utf8(std::string_view bytes, size_t* bad_offset);

// Whitespace test used everywhere tokens are split (ASCII space, \t, \n, \v, \f, \r).
constexpr bool is_token_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Splits a line into whitespace-separated tokens (views into `line`); clears *tokens first.
void split_tokens(std::string_view line, std::vector<std::string_view>* tokens);

// Streaming reader: reads the file in large blocks and hands out one non-blank line at a time
// as token views into its own buffer (valid until the next call). No allocation per line or
// token once the buffer and token vector have grown to the longest line.
class LineReader {
 public:
  explicit LineReader(const std::string& path, size_t block_bytes = size_t{4} << 20);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Next non-blank line's tokens; false at end of file. Error on invalid UTF-8 or I/O failure.
  bool next_sentence(std::vector<std::string_view>* tokens);
  // Next line (blank lines included, without the '\n'), validated; false at end of file.
  bool next_line(std::string_view* line);

  int64_t line_number() const { return line_number_; }  // 1-based number of the last line
  const std::string& path() const { return path_; }

 private:
  bool fill();  // reads more bytes; false at end of file

  std::string path_;
  int fd_ = -1;
  std::vector<char> buffer_;
  size_t begin_ = 0, end_ = 0;  // unread bytes are buffer_[begin_, end_)
  bool eof_ = false;
  int64_t line_number_ = 0;
};

}  // namespace elmo
