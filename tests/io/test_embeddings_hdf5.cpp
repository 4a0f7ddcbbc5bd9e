#include "io/embeddings_hdf5.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstring>
#include <filesystem>

#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using ::testing::HasSubstr;

Tensor ramp(const Shape& shape, float start) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = start + 0.125f * static_cast<float>(i);
  return t;
}

int count_entries(const std::string& dir) {
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++n;
  return n;
}

TEST(EmbeddingsHdf5, WritesAllennlpLayoutAndReadsItBack) {
  const std::string dir = testing::temp_dir("emb_write");
  const std::string path = dir + "/out.hdf5";
  const std::vector<std::pair<std::string, Tensor>> sentences = {
      {"the cat sat", ramp({3, 3, 4}, 0.0f)},
      {"empty", Tensor::empty({3, 0, 4})},
      {"the cat sat", ramp({3, 2, 4}, -1.0f)},   // duplicate text: maps to the last index
      {"na\xc3\xafve caf\xc3\xa9", ramp({5, 4}, 2.0f)}};  // scalar-mixed, non-ASCII text
  {
    EmbeddingsHdf5Writer writer(path);
    for (const auto& [text, t] : sentences) writer.add(text, t);
    EXPECT_EQ(writer.size(), 4);
    EXPECT_FALSE(std::filesystem::exists(path)) << "only the temporary exists before close()";
    writer.close();
  }
  EXPECT_EQ(count_entries(dir), 1);
  const EmbeddingsHdf5 f = read_embeddings_hdf5(path);
  ASSERT_EQ(f.sentences.size(), sentences.size());
  for (size_t i = 0; i < sentences.size(); ++i) {
    EXPECT_EQ(f.sentences[i].shape(), sentences[i].second.shape()) << i;
    EXPECT_EQ(f.sentences[i].to_floats(), sentences[i].second.to_floats()) << i;
  }
  const nlohmann::json expected = {{"the cat sat", "2"}, {"empty", "1"},
                                   {"na\xc3\xafve caf\xc3\xa9", "3"}};
  EXPECT_EQ(f.sentence_to_index, expected);

  // allennlp/h5py layout: a one-element variable-length string dataset holding ASCII JSON.
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  hid_t ds = H5Dopen2(file, "sentence_to_index", H5P_DEFAULT);
  hid_t type = H5Dget_type(ds);
  hid_t space = H5Dget_space(ds);
  EXPECT_EQ(H5Tget_class(type), H5T_STRING);
  EXPECT_GT(H5Tis_variable_str(type), 0);
  EXPECT_EQ(H5Sget_simple_extent_npoints(space), 1);
  char* text = nullptr;
  ASSERT_GE(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &text), 0);
  const std::string json_text = text;
  H5free_memory(text);
  EXPECT_THAT(json_text, HasSubstr("\\u00ef"));  // ensure_ascii, like Python's json.dumps
  H5Sclose(space);
  H5Tclose(type);
  H5Dclose(ds);
  H5Fclose(file);
}

TEST(EmbeddingsHdf5, WriterWithoutCloseLeavesNothing) {
  const std::string dir = testing::temp_dir("emb_abandon");
  {
    EmbeddingsHdf5Writer writer(dir + "/out.hdf5");
    writer.add("a", ramp({2, 1, 2}, 0.0f));
  }
  EXPECT_EQ(count_entries(dir), 0);
}

TEST(EmbeddingsHdf5, RejectsBadInput) {
  const std::string dir = testing::temp_dir("emb_bad");
  EmbeddingsHdf5Writer writer(dir + "/out.hdf5");
  EXPECT_THROW(writer.add("a", Tensor::zeros({4})), Error);
  EXPECT_THROW(writer.add("a", Tensor::zeros({2, 2}, DType::kI32)), Error);
  writer.close();
  EXPECT_THROW(writer.add("a", Tensor::zeros({2, 2})), Error);
  EXPECT_THROW(EmbeddingsHdf5Writer(dir + "/no/such/dir/out.hdf5"), Error);
  EXPECT_THROW(read_embeddings_hdf5(dir + "/missing.hdf5"), Error);
}

TEST(EmbeddingsHdf5, ReadsTheAllennlpFixture) {
  ELMO_SKIP_WITHOUT_DATA();
  const EmbeddingsHdf5 f =
      read_embeddings_hdf5(testing::data_dir() + "/elmo-fixtures/allennlp/elmo/lm_embeddings_0.hdf5");
  ASSERT_EQ(f.sentences.size(), 10u);
  EXPECT_EQ(f.sentences[0].shape(), Shape({2, 50, 16}));
  EXPECT_EQ(f.sentences[9].shape(), Shape({2, 20, 16}));
}

}  // namespace
}  // namespace elmo
