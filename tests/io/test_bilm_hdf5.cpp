#include "io/bilm_hdf5.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstring>
#include <map>

#include "io/atomic_file.h"
#include "runtime/error.h"
#include <filesystem>
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using ::testing::HasSubstr;

std::string fixture() {
  return testing::data_dir() + "/elmo-fixtures/allennlp/elmo/lm_weights.hdf5";
}

std::map<std::string, Tensor> as_map(const NamedTensors& list) {
  std::map<std::string, Tensor> m;
  for (const auto& [n, t] : list) m[n] = t;
  return m;
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Writes float32 datasets by hand (for malformed files).
void write_raw_h5(const std::string& path, const std::vector<std::pair<std::string, Shape>>& sets) {
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  for (const auto& [name, shape] : sets) {
    std::vector<hsize_t> dims;
    for (int64_t d : shape.vec()) dims.push_back(static_cast<hsize_t>(d));
    std::vector<float> zeros(static_cast<size_t>(shape.numel()), 0.25f);
    hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    hid_t ds = H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, space, lcpl, H5P_DEFAULT,
                          H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data());
    H5Dclose(ds);
    H5Sclose(space);
  }
  H5Pclose(lcpl);
  H5Fclose(file);
}

std::string import_error(const std::string& path) {
  ::testing::internal::CaptureStderr();
  std::string message = "(no error)";
  try {
    import_bilm_hdf5(path);
  } catch (const Error& e) {
    message = e.what();
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "") << "HDF5 must not print its own error stack";
  return message;
}

TEST(BilmHdf5, ImportsTheFixtureWithDimsGatePermutationAndForgetBias) {
  ELMO_SKIP_WITHOUT_DATA();
  const BilmWeights w = import_bilm_hdf5(fixture());
  EXPECT_EQ(w.layers, 2);
  EXPECT_EQ(w.input_dim, 16);
  EXPECT_EQ(w.cell_size, 64);
  EXPECT_EQ(w.proj_dim, 16);
  EXPECT_TRUE(w.has_projection);
  EXPECT_TRUE(w.bidirectional);
  ASSERT_EQ(w.tensors.size(), 16u);  // 2 directions x 2 layers x (ih, hh, bias, hr)
  EXPECT_EQ(w.tensors[0].first, "lstm.fwd.0.weight_ih");
  EXPECT_EQ(w.tensors[15].first, "lstm.bwd.1.weight_hr");
  const auto m = as_map(w.tensors);
  const int64_t C = 64, P = 16, in = 16;
  const int tf_block[4] = {0, 2, 1, 3};  // our i, f, g, o <- TF i, j, f, o
  for (int d = 0; d < 2; ++d) {
    for (int l = 0; l < 2; ++l) {
      const std::string cell = str("RNN_", d, "/RNN/MultiRNNCell/Cell", l, "/LSTMCell/");
      const std::string p = str("lstm.", d == 0 ? "fwd" : "bwd", ".", l, ".");
      const Tensor w0 = read_hdf5_matrix(fixture(), cell + "W_0");   // [32, 256]
      const Tensor b = read_hdf5_matrix(fixture(), cell + "B");      // [256]
      const Tensor wp = read_hdf5_matrix(fixture(), cell + "W_P_0"); // [64, 16]
      ASSERT_EQ(w0.shape(), Shape({in + P, 4 * C}));
      const Tensor ih = m.at(p + "weight_ih"), hh = m.at(p + "weight_hh");
      const Tensor bias = m.at(p + "bias"), hr = m.at(p + "weight_hr");
      ASSERT_EQ(ih.shape(), Shape({4 * C, in}));
      ASSERT_EQ(hh.shape(), Shape({4 * C, P}));
      ASSERT_EQ(bias.shape(), Shape({4 * C}));
      ASSERT_EQ(hr.shape(), Shape({P, C}));
      const float* W = w0.data<float>();
      // Entries read by hand: our f block (rows C..2C) is TF block 2, our g block is TF block 1.
      EXPECT_EQ(ih.data<float>()[(C + 5) * in + 3], W[3 * 4 * C + 2 * C + 5]);
      EXPECT_EQ(ih.data<float>()[(2 * C + 7) * in + 0], W[0 * 4 * C + 1 * C + 7]);
      EXPECT_EQ(hh.data<float>()[(2 * C + 7) * P + 2], W[(in + 2) * 4 * C + 1 * C + 7]);
      EXPECT_EQ(hh.data<float>()[(3 * C + 1) * P + 15], W[(in + 15) * 4 * C + 3 * C + 1]);
      EXPECT_EQ(bias.data<float>()[C + 5], b.data<float>()[2 * C + 5] + 1.0f);
      EXPECT_EQ(bias.data<float>()[2 * C + 7], b.data<float>()[C + 7]);
      EXPECT_EQ(bias.data<float>()[4], b.data<float>()[4]);
      EXPECT_EQ(hr.data<float>()[3 * C + 10], wp.data<float>()[10 * P + 3]);
      // And every element.
      int64_t wrong = 0;
      for (int q = 0; q < 4; ++q)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t row = q * C + c, col = tf_block[q] * C + c;
          for (int64_t k = 0; k < in; ++k) wrong += ih.data<float>()[row * in + k] != W[k * 4 * C + col];
          for (int64_t k = 0; k < P; ++k)
            wrong += hh.data<float>()[row * P + k] != W[(in + k) * 4 * C + col];
          wrong += bias.data<float>()[row] != b.data<float>()[col] + (q == 1 ? 1.0f : 0.0f);
        }
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < P; ++k)
          wrong += hr.data<float>()[k * C + c] != wp.data<float>()[c * P + k];
      EXPECT_EQ(wrong, 0) << p;
    }
  }
}

TEST(BilmHdf5, FixtureExportReproducesTheOriginalDatasets) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string out = testing::temp_dir("bilm_export") + "/exported.hdf5";
  const BilmWeights w = import_bilm_hdf5(fixture());
  export_bilm_hdf5(out, w.tensors);
  const int64_t C = 64;
  for (int d = 0; d < 2; ++d) {
    for (int l = 0; l < 2; ++l) {
      const std::string cell = str("RNN_", d, "/RNN/MultiRNNCell/Cell", l, "/LSTMCell/");
      SCOPED_TRACE(cell);
      EXPECT_TRUE(bitwise_equal(read_hdf5_matrix(out, cell + "W_0"),
                                read_hdf5_matrix(fixture(), cell + "W_0")));
      EXPECT_TRUE(bitwise_equal(read_hdf5_matrix(out, cell + "W_P_0"),
                                read_hdf5_matrix(fixture(), cell + "W_P_0")));
      const Tensor b_out = read_hdf5_matrix(out, cell + "B");
      const Tensor b_ref = read_hdf5_matrix(fixture(), cell + "B");
      ASSERT_EQ(b_out.shape(), b_ref.shape());
      for (int64_t k = 0; k < 4 * C; ++k) {
        const float a = b_out.data<float>()[k], r = b_ref.data<float>()[k];
        if (k >= 2 * C && k < 3 * C) {
          // TF forget block: float32 (b + 1) - 1 loses the bits of b below 2^-24 (half an ulp
          // of 1.0); every other entry is moved, not computed, so it must be bitwise equal.
          EXPECT_LE(std::fabs(a - r), std::ldexp(1.0f, -24)) << "B[" << k << "]";
        } else {
          EXPECT_EQ(a, r) << "B[" << k << "]";
        }
      }
    }
  }
  // export -> import is bitwise stable.
  const BilmWeights again = import_bilm_hdf5(out);
  ASSERT_EQ(again.tensors.size(), w.tensors.size());
  for (size_t i = 0; i < w.tensors.size(); ++i) {
    EXPECT_EQ(again.tensors[i].first, w.tensors[i].first);
    EXPECT_TRUE(bitwise_equal(again.tensors[i].second, w.tensors[i].second)) << w.tensors[i].first;
  }
}

TEST(BilmHdf5, ReadsTheTokenEmbeddingMatrix) {
  ELMO_SKIP_WITHOUT_DATA();
  const Tensor e = read_hdf5_matrix(
      testing::data_dir() + "/elmo-fixtures/allennlp/elmo/elmo_token_embeddings.hdf5", "embedding");
  EXPECT_EQ(e.shape(), Shape({458, 16}));
  EXPECT_EQ(e.dtype(), DType::kF32);
}

// Values on a 2^-10 grid so that +-1.0 on the forget bias is exact and round trips bitwise.
Tensor grid_values(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    t.data<float>()[i] = static_cast<float>(static_cast<int64_t>((s >> 33) % 2048) - 1024) / 1024.0f;
  }
  return t;
}

TEST(BilmHdf5, SyntheticForwardOnlyModelWithoutProjectionRoundTrips) {
  const std::string dir = testing::temp_dir("bilm_synth");
  const int64_t C = 3, in = 5, V = 7;
  NamedTensors params = {{"embedding.weight", grid_values({V, in}, 1)},
                         {"lstm.fwd.0.weight_ih", grid_values({4 * C, in}, 2)},
                         {"lstm.fwd.0.weight_hh", grid_values({4 * C, C}, 3)},
                         {"lstm.fwd.0.bias", grid_values({4 * C}, 4)},
                         {"lstm.fwd.1.weight_ih", grid_values({4 * C, C}, 5)},
                         {"lstm.fwd.1.weight_hh", grid_values({4 * C, C}, 6)},
                         {"lstm.fwd.1.bias", grid_values({4 * C}, 7)},
                         {"softmax.weight", grid_values({V, C}, 8)},
                         {"softmax.bias", grid_values({V}, 9)},
                         {"softmax.weight.adagrad_acc", grid_values({V, C}, 10)}};
  export_bilm_hdf5(dir + "/w.hdf5", params);
  const BilmWeights w = import_bilm_hdf5(dir + "/w.hdf5");
  EXPECT_EQ(w.layers, 2);
  EXPECT_EQ(w.input_dim, in);
  EXPECT_EQ(w.cell_size, C);
  EXPECT_EQ(w.proj_dim, C);
  EXPECT_FALSE(w.has_projection);
  EXPECT_FALSE(w.bidirectional);
  const auto m = as_map(w.tensors);
  EXPECT_EQ(m.size(), 9u);  // the optimizer state is not exported
  for (const auto& [name, t] : params) {
    if (name == "softmax.weight.adagrad_acc") continue;
    ASSERT_TRUE(m.count(name)) << name;
    EXPECT_TRUE(bitwise_equal(m.at(name), t)) << name;
  }
  // Raw layout: B holds the TF forget block (our block 1 -> TF block 2) without the +1.
  const Tensor b = read_hdf5_matrix(dir + "/w.hdf5", "RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/B");
  EXPECT_EQ(b.data<float>()[2 * C + 1], params[3].second.data<float>()[C + 1] - 1.0f);
  EXPECT_EQ(b.data<float>()[C + 1], params[3].second.data<float>()[2 * C + 1]);
  EXPECT_EQ(read_hdf5_matrix(dir + "/w.hdf5", "softmax/b").shape(), Shape({V}));
}

TEST(BilmHdf5, ErrorsNameTheFileAndDataset) {
  const std::string dir = testing::temp_dir("bilm_errors");
  EXPECT_THAT(import_error(dir + "/none.hdf5"), HasSubstr(dir + "/none.hdf5: no such file"));
  write_file_atomic(dir + "/text.hdf5", "this is not hdf5");
  EXPECT_THAT(import_error(dir + "/text.hdf5"), HasSubstr("text.hdf5: not an HDF5 file"));

  const std::string cell = "RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/";
  write_raw_h5(dir + "/empty.hdf5", {{"other", Shape({2})}});
  EXPECT_THAT(import_error(dir + "/empty.hdf5"),
              HasSubstr("empty.hdf5: dataset '" + cell + "W_0' is missing"));
  write_raw_h5(dir + "/no_b.hdf5", {{cell + "W_0", Shape({8, 16})}});
  EXPECT_THAT(import_error(dir + "/no_b.hdf5"),
              HasSubstr("no_b.hdf5: dataset '" + cell + "B' is missing"));
  write_raw_h5(dir + "/bad_cols.hdf5", {{cell + "W_0", Shape({8, 15})}, {cell + "B", Shape({15})}});
  EXPECT_THAT(import_error(dir + "/bad_cols.hdf5"),
              HasSubstr("dataset '" + cell + "W_0' has shape [8, 15]"));
  write_raw_h5(dir + "/bad_b.hdf5", {{cell + "W_0", Shape({8, 16})}, {cell + "B", Shape({12})}});
  EXPECT_THAT(import_error(dir + "/bad_b.hdf5"),
              HasSubstr("dataset '" + cell + "B' has shape [12]; expected [16]"));
  const std::string cell1 = "RNN_0/RNN/MultiRNNCell/Cell1/LSTMCell/";
  write_raw_h5(dir + "/bad_c.hdf5", {{cell + "W_0", Shape({8, 16})},
                                     {cell + "B", Shape({16})},
                                     {cell1 + "W_0", Shape({8, 32})},
                                     {cell1 + "B", Shape({32})}});
  EXPECT_THAT(import_error(dir + "/bad_c.hdf5"),
              HasSubstr("dataset '" + cell1 + "W_0' has shape [8, 32]: cell size 8 differs"));
  write_raw_h5(dir + "/bad_in.hdf5", {{cell + "W_0", Shape({8, 16})},
                                      {cell + "B", Shape({16})},
                                      {cell1 + "W_0", Shape({9, 16})},
                                      {cell1 + "B", Shape({16})}});
  EXPECT_THAT(import_error(dir + "/bad_in.hdf5"), HasSubstr("input size 5, expected 4 (= H)"));
  EXPECT_THROW(read_hdf5_matrix(dir + "/bad_in.hdf5", "nope/x"), Error);
}

TEST(BilmHdf5, ExportRejectsInconsistentParameters) {
  const std::string dir = testing::temp_dir("bilm_export_errors");
  NamedTensors params = {{"lstm.fwd.0.weight_ih", Tensor::zeros({8, 3})},
                         {"lstm.fwd.0.weight_hh", Tensor::zeros({8, 3})},
                         {"lstm.fwd.0.bias", Tensor::zeros({8})}};
  try {
    export_bilm_hdf5(dir + "/x.hdf5", params);
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'lstm.fwd.0.weight_hh'"));
  }
  EXPECT_THROW(export_bilm_hdf5(dir + "/y.hdf5", {}), Error);
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.hdf5"));
}

// import_bilm_hdf5_image (the fuzzer's entry) reads what import_bilm_hdf5 reads; a dataset that
// declares far more values than its file can hold is refused before anything is allocated for
// it (an unwritten chunked dataset reads as fill values: a 10 KB file could ask for terabytes).
TEST(BilmHdf5, ImagesImportLikeFilesAndImplausibleExtentsAreRefused) {
  const std::string dir = testing::temp_dir("bilm_image");
  const int64_t C = 3, in = 5;
  export_bilm_hdf5(dir + "/w.hdf5", {{"lstm.fwd.0.weight_ih", grid_values({4 * C, in}, 2)},
                                     {"lstm.fwd.0.weight_hh", grid_values({4 * C, C}, 3)},
                                     {"lstm.fwd.0.bias", grid_values({4 * C}, 4)}});
  const std::string bytes = read_file(dir + "/w.hdf5");
  const BilmWeights a = import_bilm_hdf5(dir + "/w.hdf5");
  const BilmWeights b = import_bilm_hdf5_image(bytes.data(), bytes.size(), "image");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i)
    EXPECT_TRUE(bitwise_equal(a.tensors[i].second, b.tensors[i].second)) << a.tensors[i].first;
  EXPECT_THROW(import_bilm_hdf5_image(bytes.data(), 100, "cut"), Error);
  EXPECT_THROW(import_bilm_hdf5_image(bytes.data(), 0, "empty"), Error);

  const std::string path = dir + "/huge.hdf5";
  const std::string cell = "RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/";
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  const hsize_t chunk[2] = {64, 64};
  H5Pset_chunk(dcpl, 2, chunk);
  const hsize_t dims[2] = {hsize_t{1} << 20, hsize_t{1} << 16};  // 4 TiB of f32, none written
  hid_t space = H5Screate_simple(2, dims, nullptr);
  hid_t ds =
      H5Dcreate2(file, (cell + "W_0").c_str(), H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT);
  ASSERT_GE(ds, 0);
  H5Dclose(ds);
  H5Sclose(space);
  H5Pclose(dcpl);
  H5Pclose(lcpl);
  H5Fclose(file);
  EXPECT_LT(std::filesystem::file_size(path), 1u << 20);
  EXPECT_THAT(import_error(path), HasSubstr("dataset '" + cell +
                                            "W_0' declares 274877906944 "
                                            "bytes of values in a file of "));
}
// Files that crash libhdf5 itself (fuzz_bilm_hdf5 found them when it still fed the library raw
// bytes: allocations of 68 GB, 0x580000000058 and 0x8900000000000058 bytes)
// are an Error naming the file, never the end of the process: libhdf5 reads in a child process.
// Under a sanitizer the child dies of its report; without one it may fail, crash or refuse.
TEST(BilmHdf5, FilesThatCrashLibhdf5AreAClearError) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(testing::source_dir()) / "tests/data/damaged-hdf5";
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string path = entry.path().string();
    ++files;
    for (int reader = 0; reader < 2; ++reader) {
      std::string message = "(no error)";
      ::testing::internal::CaptureStderr();  // a sanitizer's report from the child
      try {
        if (reader == 0)
          import_bilm_hdf5(path);
        else
          read_hdf5_matrix(path, "embedding");
      } catch (const Error& e) {
        message = e.what();
      }
      ::testing::internal::GetCapturedStderr();
      EXPECT_THAT(message, HasSubstr(path + ": ")) << "reader " << reader;
    }
  }
  EXPECT_GE(files, 3);
}

}  // namespace
}  // namespace elmo
