#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/crc32c.h"
#include "io/safetensors.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using ::testing::HasSubstr;

Tensor iota(DType dtype, const Shape& shape) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* bytes = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  return t;
}

std::string bytes_of(const Tensor& t) { return {static_cast<const char*>(t.raw()), t.nbytes()}; }

// A file made by hand: 8-byte length, header text, data bytes.
std::string raw_file(const std::string& dir, const std::string& header, const std::string& data,
                     int64_t length_override = -1) {
  const std::string path = dir + "/hand.safetensors";
  uint64_t n = length_override >= 0 ? static_cast<uint64_t>(length_override) : header.size();
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &n, 8);
  write_file_atomic(path, bytes + header + data);
  return path;
}

std::string load_error(const std::string& path) {
  try {
    load_safetensors(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Safetensors, RoundTripKeepsOrderDtypesShapesBytesAndMetadata) {
  const std::string dir = testing::temp_dir("st_roundtrip");
  NamedTensors tensors = {{"z.last_name_first", iota(DType::kF32, {3, 4})},
                          {"ids", iota(DType::kI32, {5})},
                          {"big", iota(DType::kI64, {2, 1, 3})},
                          {"half", iota(DType::kBF16, {7})},
                          {"f16", iota(DType::kF16, {1, 2, 3, 1})},
                          {"bytes", iota(DType::kU8, {3})},
                          {"scalar", iota(DType::kF32, Shape(std::vector<int64_t>{}))},
                          {"empty", Tensor::empty({0, 3})}};
  const std::map<std::string, std::string> meta = {{"step", "12"}, {"format", "pt"}};
  const std::string path = dir + "/a.safetensors";
  save_safetensors(path, tensors, meta);
  const SafetensorsFile f = load_safetensors(path);
  EXPECT_EQ(f.metadata, meta);
  ASSERT_EQ(f.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    SCOPED_TRACE(tensors[i].first);
    EXPECT_EQ(f.tensors[i].first, tensors[i].first);
    EXPECT_EQ(f.tensors[i].second.dtype(), tensors[i].second.dtype());
    EXPECT_EQ(f.tensors[i].second.shape(), tensors[i].second.shape());
    EXPECT_EQ(bytes_of(f.tensors[i].second), bytes_of(tensors[i].second));
    EXPECT_TRUE(f.tensors[i].second.device().is_cpu());
  }
  int entries = 0;  // no temporary left behind
  for (auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(Safetensors, LayoutFollowsTheSpec) {
  const std::string dir = testing::temp_dir("st_layout");
  const std::string path = dir + "/b.safetensors";
  const Tensor a = Tensor::from_floats({1, 2, 3}, {3});
  const Tensor b = iota(DType::kI64, {2});
  save_safetensors(path, {{"a", a}, {"b", b}}, {{"k", "v"}});
  const std::string bytes = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["a"]["dtype"], "F32");
  EXPECT_EQ(header["a"]["shape"], nlohmann::json::array({3}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json::array({0, 12}));
  EXPECT_EQ(header["b"]["dtype"], "I64");
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json::array({12, 28}));
  EXPECT_EQ(header["__metadata__"]["k"], "v");
  ASSERT_EQ(bytes.size(), 8 + n + 28);
  EXPECT_EQ(bytes.substr(8 + n, 12), bytes_of(a));
  EXPECT_EQ(bytes.substr(8 + n + 12), bytes_of(b));
}

TEST(Safetensors, OverwritesAnExistingFile) {
  const std::string dir = testing::temp_dir("st_overwrite");
  const std::string path = dir + "/c.safetensors";
  save_safetensors(path, {{"x", Tensor::from_floats({1}, {1})}});
  save_safetensors(path, {{"y", Tensor::from_floats({2, 3}, {2})}});
  const auto f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors[0].first, "y");
  EXPECT_EQ(f.tensors[0].second.to_floats(), (std::vector<float>{2, 3}));
}

TEST(Safetensors, RejectsBadNames) {
  const std::string dir = testing::temp_dir("st_names");
  const Tensor t = Tensor::from_floats({1}, {1});
  EXPECT_THROW(save_safetensors(dir + "/d", {{"x", t}, {"x", t}}), Error);
  EXPECT_THROW(save_safetensors(dir + "/d", {{"__metadata__", t}}), Error);
  EXPECT_THROW(save_safetensors(dir + "/d", {{"", t}}), Error);
}

TEST(Safetensors, ErrorsOnShortFiles) {
  const std::string dir = testing::temp_dir("st_short");
  const std::string path = dir + "/short.safetensors";
  write_file_atomic(path, "abc");
  EXPECT_THAT(load_error(path), HasSubstr(path + ": truncated safetensors file (3 bytes"));
  EXPECT_THAT(load_error(dir + "/missing.safetensors"), HasSubstr("missing.safetensors"));
}

TEST(Safetensors, ErrorsOnHeaderBeyondTheFile) {
  const std::string dir = testing::temp_dir("st_header_len");
  const std::string path = raw_file(dir, "{}", "", 1000);
  EXPECT_THAT(load_error(path), HasSubstr("truncated safetensors file (header says its JSON "
                                          "header has 1000 bytes, file has 2"));
  const std::string huge = raw_file(dir, "{}", "", int64_t(1) << 40);
  EXPECT_THAT(load_error(huge), HasSubstr("not a safetensors file"));
}

TEST(Safetensors, ErrorsOnBadJson) {
  const std::string dir = testing::temp_dir("st_json");
  EXPECT_THAT(load_error(raw_file(dir, "{\"a\": [", "")),
              HasSubstr("bad safetensors header: not valid JSON"));
  EXPECT_THAT(load_error(raw_file(dir, "[1, 2]  ", "")), HasSubstr("expected a JSON object"));
  EXPECT_THAT(load_error(raw_file(dir, R"({"a": {"dtype": "F32"}})", "")),
              HasSubstr("tensor 'a': needs \"dtype\", \"shape\" and \"data_offsets\""));
  EXPECT_THAT(load_error(raw_file(dir, R"({"__metadata__": {"k": 3}})", "")),
              HasSubstr("__metadata__ value of 'k' is not a string"));
  EXPECT_THAT(
      load_error(raw_file(dir, R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})",
                          "")),
      HasSubstr("bad dimension"));
}

TEST(Safetensors, ErrorsOnUnknownDtype) {
  const std::string dir = testing::temp_dir("st_dtype");
  const std::string path =
      raw_file(dir, R"({"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})",
               std::string(8, '\0'));
  EXPECT_THAT(load_error(path), HasSubstr("tensor 'a': unknown or unsupported dtype 'F64'"));
}

TEST(Safetensors, ErrorsOnOffsetsThatDoNotMatchTheShape) {
  const std::string dir = testing::temp_dir("st_size");
  const std::string path =
      raw_file(dir, R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 12]}})",
               std::string(12, '\0'));
  EXPECT_THAT(load_error(path),
              HasSubstr("data_offsets [0, 12] hold 12 bytes, but F32 [2, 3] needs 24"));
  const std::string backwards =
      raw_file(dir, R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})", "");
  EXPECT_THAT(load_error(backwards), HasSubstr("end before they begin"));
}

TEST(Safetensors, ErrorsOnOverlapsHolesAndTrailingBytes) {
  const std::string dir = testing::temp_dir("st_overlap");
  const std::string overlap = raw_file(
      dir,
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
      std::string(12, '\0'));
  EXPECT_THAT(load_error(overlap), HasSubstr("tensor 'b' data_offsets [4, 12] overlap tensor 'a'"));
  const std::string hole = raw_file(
      dir, R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
      std::string(8, '\0'));
  EXPECT_THAT(load_error(hole), HasSubstr("4 bytes of data before tensor 'a' belong to no tensor"));
  const std::string trailing = raw_file(
      dir, R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
      std::string(9, '\0'));
  EXPECT_THAT(load_error(trailing), HasSubstr("header says 4 bytes of data, file has 9"));
}

TEST(Safetensors, ErrorsOnTruncatedData) {
  const std::string dir = testing::temp_dir("st_trunc");
  const std::string path = dir + "/t.safetensors";
  std::vector<float> values(300, 1.5f);
  save_safetensors(path, {{"w", Tensor::from_floats(values, {300})}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 200);
  EXPECT_THAT(load_error(path),
              HasSubstr(path + ": truncated safetensors file (header says 1200 bytes of data, "
                               "file has 1000)"));
}

// Checksums (safetensors.h): every tensor's CRC32C in __metadata__, verified on load.
TEST(Safetensors, EveryTensorCarriesItsCrc32cAndMetadataHidesThem) {
  const std::string dir = testing::temp_dir("st_crc");
  const std::string path = dir + "/c.safetensors";
  const Tensor a = Tensor::from_floats({1, 2, 3}, {3});
  const Tensor empty = Tensor::empty({0, 4});
  save_safetensors(path, {{"a", a}, {"e", empty}}, {{"k", "v"}});
  const std::string bytes = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const auto meta = nlohmann::json::parse(bytes.substr(8, n))["__metadata__"];
  EXPECT_EQ(meta["checksums"], "crc32c");
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", crc32c(a.raw(), a.nbytes()));
  EXPECT_EQ(meta["crc32c:a"], hex);
  EXPECT_EQ(meta["crc32c:e"], "00000000");
  const SafetensorsFile f = load_safetensors(path);
  EXPECT_TRUE(f.checksummed);
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"k", "v"}}));
  // The in-memory parser gives the same.
  const SafetensorsFile g = parse_safetensors(bytes, "image");
  ASSERT_EQ(g.tensors.size(), 2u);
  EXPECT_EQ(bytes_of(g.tensors[0].second), bytes_of(a));
  // The checksum keys are reserved.
  EXPECT_THROW(save_safetensors(path, {{"a", a}}, {{"checksums", "none"}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"a", a}}, {{"crc32c:a", "00000000"}}), Error);
}

TEST(Safetensors, FlippedDataBytesAreRefusedNamingTheTensor) {
  const std::string dir = testing::temp_dir("st_flip");
  const std::string path = dir + "/f.safetensors";
  std::vector<float> w(1000, 0.25f);
  save_safetensors(path, {{"first", Tensor::from_floats({1, 2}, {2})},
                          {"weights", Tensor::from_floats(w, {10, 100})}});
  std::string bytes = read_file(path);
  for (int i = 0; i < 4; ++i) bytes[bytes.size() - 2000 + i] ^= 0x5a;  // inside "weights"
  write_file_atomic(path, bytes);
  try {
    load_safetensors(path);
    ADD_FAILURE() << "a damaged tensor loaded";
  } catch (const ChecksumError& e) {
    EXPECT_EQ(e.path(), path);
    EXPECT_EQ(e.tensor(), "weights");
    EXPECT_THAT(e.what(), HasSubstr(path + ": tensor 'weights' fails its checksum"));
  }
  EXPECT_THROW(parse_safetensors(bytes, "image"), ChecksumError);
  // Without verification (the benchmark's baseline) it loads.
  EXPECT_NO_THROW(load_safetensors(path, /*verify_checksums=*/false));
}

TEST(Safetensors, FilesWithoutChecksumsLoadUnverified) {
  const std::string dir = testing::temp_dir("st_legacy");
  const std::string path = raw_file(
      dir,
      R"({"__metadata__": {"step": "3"}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
      std::string(4, '\0'));
  const SafetensorsFile f = load_safetensors(path);
  EXPECT_FALSE(f.checksummed);
  EXPECT_EQ(f.metadata.at("step"), "3");
  ASSERT_EQ(f.tensors.size(), 1u);
}

TEST(Safetensors, DamagedOrIncompleteChecksumsAreErrors) {
  const std::string dir = testing::temp_dir("st_badcrc");
  const std::string tensor = R"("a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})";
  const std::string data(4, '\0');
  const std::string good = "48674bc7";  // crc32c of four zero bytes
  EXPECT_EQ(load_error(raw_file(dir,
                                R"({"__metadata__": {"checksums": "crc32c", "crc32c:a": ")" + good +
                                    "\"}, " + tensor + "}",
                                data)),
            "(no error)");
  EXPECT_THAT(load_error(raw_file(
                  dir, R"({"__metadata__": {"checksums": "crc32c"}, )" + tensor + "}", data)),
              HasSubstr("tensor 'a' has no checksum"));
  EXPECT_THAT(
      load_error(raw_file(
          dir,
          R"({"__metadata__": {"checksums": "crc32c", "crc32c:a": "48674BC7"}, )" + tensor + "}",
          data)),
      HasSubstr("not 8 lowercase hex digits"));
  EXPECT_THAT(load_error(raw_file(dir,
                                  R"({"__metadata__": {"checksums": "crc32c", "crc32c:a": ")" +
                                      good + R"(", "crc32c:b": ")" + good + "\"}, " + tensor + "}",
                                  data)),
              HasSubstr("a checksum names tensor 'b', which the file does not hold"));
  // A damaged marker is not taken for an old file.
  EXPECT_THAT(load_error(raw_file(dir,
                                  R"({"__metadata__": {"checksumz": "crc32c", "crc32c:a": ")" +
                                      good + "\"}, " + tensor + "}",
                                  data)),
              HasSubstr("holds tensor checksums but no \"checksums\""));
  EXPECT_THAT(
      load_error(raw_file(dir, R"({"__metadata__": {"checksums": "md5"}, )" + tensor + "}", data)),
      HasSubstr("unsupported tensor checksum 'md5'"));
}

}  // namespace
}  // namespace elmo
