// TensorBoard event files written by hand: scalars only, no TensorFlow or protobuf library.
//
// File: <dir>/events.out.tfevents.<unix time>.<hostname>, a sequence of TFRecords
//   uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
// with masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 over CRC32C (Castagnoli).
// Each record is a protobuf `Event` encoded here:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record carries file_version "brain.Event:2"; then one Event per add_scalars call.
// What it is not: histograms, images, or a reader (tests parse the files themselves).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace elmo {

using Scalars = std::vector<std::pair<std::string, double>>;

// CRC32C of `data`, continuing from `crc` (the result of a previous call; 0 to start).
// crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t bytes, uint32_t crc = 0);
// TFRecord's masked CRC32C.
uint32_t masked_crc32c(const void* data, size_t bytes);

// One TFRecord: length, its masked CRC, the data, its masked CRC.
std::string tfrecord_frame(std::string_view data);
// Encoded Event messages.
std::string encode_file_version_event(double wall_time);
std::string encode_scalars_event(double wall_time, int64_t step, const Scalars& scalars);

class TensorBoardWriter {
 public:
  // Creates `dir` if needed and a new event file in it (a suffix is added if the name exists).
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // Appends one Event with every scalar as a Value (tag = name), flushed to the OS.
  // wall_time < 0 means now.
  void add_scalars(int64_t step, const Scalars& scalars, double wall_time = -1.0);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace elmo
