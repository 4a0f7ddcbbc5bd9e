#include "io/tensorboard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

#include "io/atomic_file.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

// --- a small independent reader: TFRecord framing + the protobuf fields we write -------------

struct ParsedValue {
  std::string tag;
  float value = 0;
};
struct ParsedEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<ParsedValue> values;
};

uint32_t mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

struct Cursor {
  const std::string& s;
  size_t pos = 0;
  size_t end;
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const uint8_t b = static_cast<uint8_t>(s.at(pos++));
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    ADD_FAILURE() << "varint too long";
    return v;
  }
  template <typename T>
  T fixed() {
    T v;
    EXPECT_LE(pos + sizeof(T), end);
    std::memcpy(&v, s.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string bytes() {
    const uint64_t n = varint();
    EXPECT_LE(pos + n, end);
    std::string out = s.substr(pos, n);
    pos += n;
    return out;
  }
};

ParsedValue parse_value(const std::string& msg) {
  ParsedValue v;
  Cursor c{msg, 0, msg.size()};
  while (c.pos < c.end) {
    const uint64_t key = c.varint();
    if (key == ((1 << 3) | 2)) v.tag = c.bytes();
    else if (key == ((2 << 3) | 5)) v.value = c.fixed<float>();
    else ADD_FAILURE() << "unexpected Value key " << key;
  }
  return v;
}

ParsedEvent parse_event(const std::string& msg) {
  ParsedEvent e;
  Cursor c{msg, 0, msg.size()};
  while (c.pos < c.end) {
    const uint64_t key = c.varint();
    if (key == ((1 << 3) | 1)) {
      e.wall_time = c.fixed<double>();
    } else if (key == ((2 << 3) | 0)) {
      e.step = static_cast<int64_t>(c.varint());
    } else if (key == ((3 << 3) | 2)) {
      e.file_version = c.bytes();
    } else if (key == ((5 << 3) | 2)) {
      const std::string summary = c.bytes();
      Cursor s{summary, 0, summary.size()};
      while (s.pos < s.end) {
        EXPECT_EQ(s.varint(), (1u << 3) | 2);
        e.values.push_back(parse_value(s.bytes()));
      }
    } else {
      ADD_FAILURE() << "unexpected Event key " << key;
      break;
    }
  }
  return e;
}

// Checks framing and both CRCs of every record.
std::vector<ParsedEvent> read_events(const std::string& path) {
  const std::string data = read_file(path);
  std::vector<ParsedEvent> events;
  size_t pos = 0;
  while (pos < data.size()) {
    EXPECT_LE(pos + 12, data.size()) << "torn record header";
    if (pos + 12 > data.size()) break;
    uint64_t length;
    uint32_t length_crc, data_crc;
    std::memcpy(&length, data.data() + pos, 8);
    std::memcpy(&length_crc, data.data() + pos + 8, 4);
    EXPECT_EQ(length_crc, mask(crc32c(data.data() + pos, 8))) << "length CRC at " << pos;
    EXPECT_LE(pos + 12 + length + 4, data.size()) << "torn record";
    if (pos + 12 + length + 4 > data.size()) break;
    const std::string body = data.substr(pos + 12, length);
    std::memcpy(&data_crc, data.data() + pos + 12 + length, 4);
    EXPECT_EQ(data_crc, mask(crc32c(body.data(), body.size()))) << "data CRC at " << pos;
    events.push_back(parse_event(body));
    pos += 12 + length + 4;
  }
  return events;
}

// ------------------------------------------------------------------------------------------

TEST(Crc32c, KnownAnswers) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // RFC 3720 (iSCSI) B.4 test vectors.
  std::vector<uint8_t> bytes(32, 0);
  EXPECT_EQ(crc32c(bytes.data(), 32), 0x8A9136AAu);
  std::fill(bytes.begin(), bytes.end(), 0xFF);
  EXPECT_EQ(crc32c(bytes.data(), 32), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(crc32c(bytes.data(), 32), 0x46DD794Eu);
  // Continuation equals the one-shot CRC.
  EXPECT_EQ(crc32c("56789", 5, crc32c("1234", 4)), 0xE3069283u);
  EXPECT_EQ(masked_crc32c("123456789", 9), mask(0xE3069283u));
}

TEST(TensorBoard, FrameLayout) {
  const std::string rec = tfrecord_frame("abc");
  ASSERT_EQ(rec.size(), 8u + 4 + 3 + 4);
  uint64_t length;
  std::memcpy(&length, rec.data(), 8);
  EXPECT_EQ(length, 3u);
  EXPECT_EQ(rec.substr(12, 3), "abc");
}

TEST(TensorBoard, WrittenEventFileParsesBack) {
  const std::string dir = testing::temp_dir("tb_write") + "/tb";
  std::string path;
  {
    TensorBoardWriter writer(dir);
    path = writer.path();
    writer.add_scalars(10, {{"loss", 4.25}, {"ppl", 70.1}}, 1700000000.5);
    writer.add_scalars(20, {{"loss", 3.5}}, 1700000001.0);
    writer.add_scalars(int64_t(1) << 40, {}, 1700000002.0);
    // Flushed per record: readable before the writer is gone.
    EXPECT_EQ(read_events(path).size(), 4u);
  }
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::string name = std::filesystem::path(path).filename().string();
  EXPECT_TRUE(std::regex_match(name, std::regex("events\\.out\\.tfevents\\.[0-9]+\\..+"))) << name;
  EXPECT_EQ(name.substr(name.size() - std::strlen(host)), host);

  const auto events = read_events(path);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_GT(events[0].wall_time, 1.6e9);
  EXPECT_EQ(events[1].step, 10);
  EXPECT_EQ(events[1].wall_time, 1700000000.5);
  ASSERT_EQ(events[1].values.size(), 2u);
  EXPECT_EQ(events[1].values[0].tag, "loss");
  EXPECT_EQ(events[1].values[0].value, 4.25f);
  EXPECT_EQ(events[1].values[1].tag, "ppl");
  EXPECT_EQ(events[1].values[1].value, 70.1f);
  EXPECT_EQ(events[2].step, 20);
  ASSERT_EQ(events[2].values.size(), 1u);
  EXPECT_EQ(events[2].values[0].value, 3.5f);
  EXPECT_EQ(events[3].step, int64_t(1) << 40);
  EXPECT_TRUE(events[3].values.empty());
}

TEST(TensorBoard, TwoWritersGetTwoFiles) {
  const std::string dir = testing::temp_dir("tb_two");
  TensorBoardWriter a(dir);
  TensorBoardWriter b(dir);
  EXPECT_NE(a.path(), b.path());
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++files;
  EXPECT_EQ(files, 2);
}

TEST(TensorBoard, UnwritableFolderIsAnError) {
  const std::string dir = testing::temp_dir("tb_bad");
  write_file_atomic(dir + "/file", "x");
  EXPECT_THROW(TensorBoardWriter(dir + "/file/tb"), Error);
}

}  // namespace
}  // namespace elmo
