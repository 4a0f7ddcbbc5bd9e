#include "io/bilm_hdf5.h"
#include "io/hdf5_util.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>

#include "io/atomic_file.h"
#include "io/isolated_read.h"
#include "runtime/error.h"

namespace elmo {

namespace {

// Our gate block q (i, f, g, o) comes from TF block kTfBlock[q] (TF order i, j, f, o).
constexpr int kTfBlock[4] = {0, 2, 1, 3};
constexpr int kForgetBlock = 1;  // in our order
constexpr float kForgetBias = 1.0f;
constexpr const char* kDirections[2] = {"fwd", "bwd"};



H5Id open_for_reading(const std::string& path) {
  silence_hdf5();
  if (!std::filesystem::exists(path)) throw Error(str(path, ": no such file"));
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) throw Error(str(path, ": not an HDF5 file (or it cannot be read)"));
  return file;
}

// Whether every component of "a/b/c" exists and the last one is a dataset.
bool has_dataset(hid_t file, const std::string& name) {
  size_t pos = 0;
  while (true) {
    pos = name.find('/', pos + 1);
    const std::string prefix = name.substr(0, pos);
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (pos == std::string::npos) break;
  }
  H5Id ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  return ds.ok();
}

Tensor read_dataset(hid_t file, const std::string& path, const std::string& name) {
  if (!has_dataset(file, name)) throw Error(str(path, ": dataset '", name, "' is missing"));
  H5Id ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  H5Id type(H5Dget_type(ds.get()), H5Tclose);
  if (!type.ok() || H5Tget_class(type.get()) != H5T_FLOAT)
    throw Error(str(path, ": dataset '", name, "' does not hold floating-point numbers"));
  H5Id space(H5Dget_space(ds.get()), H5Sclose);
  const int ndims = space.ok() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (ndims < 1 || ndims > Shape::kMaxDims)
    throw Error(str(path, ": dataset '", name, "' has ", ndims, " dims; 1 to ", Shape::kMaxDims,
                    " are supported"));
  hsize_t dims[Shape::kMaxDims];
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  // A file may declare any extent (unwritten chunks read as fill values): what it declares must
  // be plausible for its size before anything is allocated for it. Weight files are stored
  // uncompressed (bilm-tf, h5py defaults); 16x covers compression of real weights.
  hsize_t file_bytes = 0;
  H5Fget_filesize(file, &file_bytes);
  const uint64_t limit = 16 * static_cast<uint64_t>(file_bytes) + (uint64_t{1} << 20);
  uint64_t bytes = sizeof(float);
  for (int d = 0; d < ndims; ++d)
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dims[d]), &bytes)) bytes = UINT64_MAX;
  if (bytes > limit)
    throw Error(str(path, ": dataset '", name, "' declares ", bytes,
                    " bytes of values in a file of ", file_bytes, " bytes: the file is damaged"));
  std::vector<int64_t> shape(dims, dims + ndims);
  Tensor t = Tensor::empty(Shape(shape));
  if (t.numel() > 0 &&
      H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0)
    throw Error(str(path, ": cannot read dataset '", name, "' (damaged file?)"));
  return t;
}

void write_dataset(hid_t file, const std::string& path, const std::string& name,
                   const Tensor& t) {
  H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  std::vector<hsize_t> dims;
  for (int64_t d : t.shape().vec()) dims.push_back(static_cast<hsize_t>(d));
  H5Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  H5Id ds(H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, space.get(), lcpl.get(), H5P_DEFAULT,
                     H5P_DEFAULT),
          H5Dclose);
  if (!ds.ok() || (t.numel() > 0 && H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                                             H5P_DEFAULT, t.raw()) < 0))
    throw Error(str(path, ": cannot write dataset '", name, "'"));
}

std::string cell_prefix(int direction, int64_t layer) {
  return str("RNN_", direction, "/RNN/MultiRNNCell/Cell", layer, "/LSTMCell/");
}

std::string param_prefix(int direction, int64_t layer) {
  return str("lstm.", kDirections[direction], ".", layer, ".");
}

// Runs `read` (which opens `path` with open_for_reading) in a child process
// (io/isolated_read.h): a damaged file can crash libhdf5, and that must become an error, not the
// end of the caller. The child has a minute plus 1 s per 8 MiB, far beyond a healthy read.
IsolatedResult read_in_child(const std::string& path,
                             const std::function<IsolatedResult()>& read) {
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(path, ec);
  const int limit = 60 + static_cast<int>(std::min<uintmax_t>(ec ? 0 : bytes >> 23, 1 << 20));
  return run_isolated(path, limit, read,
                      "The file is damaged or is not an HDF5 file written by h5py, bilm-tf, "
                      "allennlp or elmo_fast export-bilm: export it again from its source.");
}

}  // namespace

Tensor read_hdf5_matrix(const std::string& path, const std::string& dataset) {
  IsolatedResult r = read_in_child(path, [&] {
    H5Id file = open_for_reading(path);
    IsolatedResult out;
    out.tensors.emplace_back(dataset, read_dataset(file.get(), path, dataset));
    return out;
  });
  ELMO_CHECK(r.tensors.size() == 1, "read_hdf5_matrix: the reader returned ", r.tensors.size(),
             " tensors");
  return r.tensors[0].second;
}

namespace {

// The import itself, from an open file (`path` names it in messages).
BilmWeights import_bilm(hid_t f, const std::string& path) {
  BilmWeights w;
  if (!has_dataset(f, cell_prefix(0, 0) + "W_0"))
    throw Error(str(path, ": dataset '", cell_prefix(0, 0), "W_0' is missing (not a bilm-tf / "
                          "allennlp LSTM weight file?)"));
  w.bidirectional = has_dataset(f, cell_prefix(1, 0) + "W_0");
  const int directions = w.bidirectional ? 2 : 1;
  for (int d = 0; d < directions; ++d) {
    int64_t layers = 0;
    while (has_dataset(f, cell_prefix(d, layers) + "W_0")) ++layers;
    if (d == 0)
      w.layers = layers;
    else if (layers != w.layers)
      throw Error(str(path, ": RNN_0 has ", w.layers, " layers but RNN_1 has ", layers));
  }

  auto inconsistent = [&](const std::string& name, const auto&... parts) {
    return Error(str(path, ": dataset '", name, "' ", parts...));
  };
  w.has_projection = has_dataset(f, cell_prefix(0, 0) + "W_P_0");
  for (int d = 0; d < directions; ++d) {
    for (int64_t l = 0; l < w.layers; ++l) {
      const std::string cell = cell_prefix(d, l);
      const Tensor w0 = read_dataset(f, path, cell + "W_0");  // [in + H, 4C]
      const Tensor b = read_dataset(f, path, cell + "B");     // [4C]
      if (w0.ndim() != 2 || w0.size(1) % 4 != 0 || w0.size(1) == 0)
        throw inconsistent(cell + "W_0", "has shape ", w0.shape().str(),
                           "; expected [in + H, 4C]");
      const int64_t C = w0.size(1) / 4;
      if (d == 0 && l == 0) w.cell_size = C;
      if (C != w.cell_size)
        throw inconsistent(cell + "W_0", "has shape ", w0.shape().str(), ": cell size ", C,
                           " differs from ", w.cell_size, " in ", cell_prefix(0, 0), "W_0");
      if (b.ndim() != 1 || b.size(0) != 4 * C)
        throw inconsistent(cell + "B", "has shape ", b.shape().str(), "; expected [", 4 * C, "]");
      std::optional<Tensor> wp;  // [C, P]
      if (has_dataset(f, cell + "W_P_0") != w.has_projection)
        throw Error(str(path, ": ", cell, "W_P_0 is ", w.has_projection ? "missing" : "present",
                        " but ", cell_prefix(0, 0), "W_P_0 is ",
                        w.has_projection ? "present" : "missing"));
      int64_t H = C;
      if (w.has_projection) {
        wp = read_dataset(f, path, cell + "W_P_0");
        if (wp->ndim() != 2 || wp->size(0) != C)
          throw inconsistent(cell + "W_P_0", "has shape ", wp->shape().str(), "; expected [", C,
                             ", P]");
        H = wp->size(1);
      }
      if (d == 0 && l == 0) w.proj_dim = H;
      if (H != w.proj_dim)
        throw inconsistent(cell + "W_P_0", "gives hidden size ", H, ", but Cell0 has ",
                           w.proj_dim);
      const int64_t in = w0.size(0) - H;
      if (in <= 0)
        throw inconsistent(cell + "W_0", "has shape ", w0.shape().str(), ": fewer than H = ", H,
                           " rows");
      if (d == 0 && l == 0) w.input_dim = in;
      const int64_t expected_in = l == 0 ? w.input_dim : H;
      if (in != expected_in)
        throw inconsistent(cell + "W_0", "has shape ", w0.shape().str(), ": input size ", in,
                           ", expected ", expected_in, l == 0 ? " (as in RNN_0)" : " (= H)");

      Tensor ih = Tensor::empty({4 * C, in});  // [4C, in]
      Tensor hh = Tensor::empty({4 * C, H});   // [4C, H]
      Tensor bias = Tensor::empty({4 * C});    // [4C]
      const float* src = w0.data<float>();     // [in + H, 4C]
      const float* bsrc = b.data<float>();
      float* pih = ih.data<float>();
      float* phh = hh.data<float>();
      float* pb = bias.data<float>();
      for (int q = 0; q < 4; ++q) {
        const int64_t from = kTfBlock[q] * C;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t row = q * C + c;
          for (int64_t k = 0; k < in; ++k) pih[row * in + k] = src[k * 4 * C + from + c];
          for (int64_t k = 0; k < H; ++k) phh[row * H + k] = src[(in + k) * 4 * C + from + c];
          pb[row] = bsrc[from + c] + (q == kForgetBlock ? kForgetBias : 0.0f);
        }
      }
      const std::string p = param_prefix(d, l);
      w.tensors.emplace_back(p + "weight_ih", ih);
      w.tensors.emplace_back(p + "weight_hh", hh);
      w.tensors.emplace_back(p + "bias", bias);
      if (wp) {
        Tensor hr = Tensor::empty({H, C});  // [P, C]
        const float* s = wp->data<float>();
        float* t = hr.data<float>();
        for (int64_t c = 0; c < C; ++c)
          for (int64_t k = 0; k < H; ++k) t[k * C + c] = s[c * H + k];
        w.tensors.emplace_back(p + "weight_hr", hr);
      }
    }
  }

  if (has_dataset(f, "embedding")) {
    Tensor e = read_dataset(f, path, "embedding");
    if (e.ndim() != 2 || e.size(1) != w.input_dim)
      throw inconsistent("embedding", "has shape ", e.shape().str(), "; expected [V, ",
                         w.input_dim, "]");
    w.tensors.emplace_back("embedding.weight", e);
  }
  const bool has_w = has_dataset(f, "softmax/W"), has_b = has_dataset(f, "softmax/b");
  if (has_w != has_b)
    throw Error(str(path, ": dataset 'softmax/", has_w ? "b" : "W", "' is missing (softmax/",
                    has_w ? "W" : "b", " is present)"));
  if (has_w) {
    Tensor sw = read_dataset(f, path, "softmax/W");
    Tensor sb = read_dataset(f, path, "softmax/b");
    if (sw.ndim() != 2 || sw.size(1) != w.proj_dim)
      throw inconsistent("softmax/W", "has shape ", sw.shape().str(), "; expected [V, ",
                         w.proj_dim, "]");
    if (sb.ndim() != 1 || sb.size(0) != sw.size(0))
      throw inconsistent("softmax/b", "has shape ", sb.shape().str(), "; expected [",
                         sw.size(0), "]");
    w.tensors.emplace_back("softmax.weight", sw);
    w.tensors.emplace_back("softmax.bias", sb);
  }
  return w;
}

}  // namespace

BilmWeights import_bilm_hdf5(const std::string& path) {
  IsolatedResult r = read_in_child(path, [&] {
    H5Id file = open_for_reading(path);
    BilmWeights w = import_bilm(file.get(), path);
    IsolatedResult out;
    out.numbers = {w.layers,   w.input_dim,      w.cell_size,
                   w.proj_dim, w.has_projection, w.bidirectional};
    out.tensors = std::move(w.tensors);
    return out;
  });
  ELMO_CHECK(r.numbers.size() == 6, "import_bilm_hdf5: the reader returned ", r.numbers.size(),
             " numbers");
  BilmWeights w;
  w.layers = r.numbers[0];
  w.input_dim = r.numbers[1];
  w.cell_size = r.numbers[2];
  w.proj_dim = r.numbers[3];
  w.has_projection = r.numbers[4] != 0;
  w.bidirectional = r.numbers[5] != 0;
  w.tensors = std::move(r.tensors);
  return w;
}

BilmWeights import_bilm_hdf5_image(const void* data, size_t bytes, const std::string& origin) {
  silence_hdf5();
  if (bytes == 0) throw Error(str(origin, ": not an HDF5 file (empty)"));
  H5Id access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // The core driver reads from memory; H5Pset_file_image copies the bytes.
  if (!access.ok() || H5Pset_fapl_core(access.get(), 1 << 16, /*backing_store=*/0) < 0 ||
      H5Pset_file_image(access.get(), const_cast<void*>(data), bytes) < 0)
    throw Error(str(origin, ": cannot hand the image to HDF5"));
  H5Id file(H5Fopen(origin.c_str(), H5F_ACC_RDONLY, access.get()), H5Fclose);
  if (!file.ok()) throw Error(str(origin, ": not an HDF5 file (or it cannot be read)"));
  return import_bilm(file.get(), origin);
}

void export_bilm_hdf5(const std::string& path, const NamedTensors& params) {
  std::map<std::string, Tensor> by_name;
  for (const auto& [name, t] : params) by_name[name] = t;
  auto get = [&](const std::string& name) -> std::optional<Tensor> {
    const auto it = by_name.find(name);
    if (it == by_name.end()) return std::nullopt;
    ELMO_CHECK(it->second.dtype() == DType::kF32, "bilm export of ", path, ": parameter '", name,
               "' is ", it->second.describe(), "; f32 is needed");
    return it->second.device().is_cpu() ? it->second : it->second.to(Device::cpu());
  };
  auto expect_shape = [&](const std::string& name, const Tensor& t, const Shape& shape) {
    ELMO_CHECK(t.shape() == shape, "bilm export of ", path, ": parameter '", name, "' is ",
               t.describe(), ", expected shape ", shape.str());
  };

  // Converted datasets, in write order.
  std::vector<std::pair<std::string, Tensor>> out;
  int64_t layers = 0;
  while (by_name.count(param_prefix(0, layers) + "weight_ih")) ++layers;
  ELMO_CHECK(layers > 0, "bilm export of ", path, ": no parameter 'lstm.fwd.0.weight_ih'");
  const int directions = by_name.count(param_prefix(1, 0) + "weight_ih") ? 2 : 1;
  int64_t C = 0, H = 0, input_dim = 0;
  const bool has_projection = by_name.count(param_prefix(0, 0) + "weight_hr") > 0;
  for (int d = 0; d < directions; ++d) {
    for (int64_t l = 0; l < layers; ++l) {
      const std::string p = param_prefix(d, l);
      const auto ih = get(p + "weight_ih");
      ELMO_CHECK(ih.has_value(), "bilm export of ", path, ": parameter '", p,
                 "weight_ih' is missing (", layers, " layers in lstm.fwd)");
      ELMO_CHECK(ih->ndim() == 2 && ih->size(0) % 4 == 0 && ih->size(0) > 0, "bilm export of ",
                 path, ": parameter '", p, "weight_ih' is ", ih->describe(),
                 ", expected [4C, in]");
      if (C == 0) C = ih->size(0) / 4;
      const auto hr = get(p + "weight_hr");
      ELMO_CHECK(hr.has_value() == has_projection, "bilm export of ", path, ": parameter '", p,
                 "weight_hr' is ", hr ? "present" : "missing", " but lstm.fwd.0.weight_hr is ",
                 has_projection ? "present" : "missing");
      if (d == 0 && l == 0) H = hr ? hr->size(0) : C;
      const int64_t in = ih->size(1);
      if (d == 0 && l == 0) input_dim = in;
      ELMO_CHECK(in == (l == 0 ? input_dim : H), "bilm export of ", path, ": parameter '", p,
                 "weight_ih' is ", ih->describe(), ", its input size should be ",
                 l == 0 ? input_dim : H);
      expect_shape(p + "weight_ih", *ih, {4 * C, in});
      const auto hh = get(p + "weight_hh");
      const auto b = get(p + "bias");
      ELMO_CHECK(hh && b, "bilm export of ", path, ": parameter '", p,
                 hh ? "bias" : "weight_hh", "' is missing");
      expect_shape(p + "weight_hh", *hh, {4 * C, H});
      expect_shape(p + "bias", *b, {4 * C});
      if (hr) expect_shape(p + "weight_hr", *hr, {H, C});

      Tensor w0 = Tensor::empty({in + H, 4 * C});  // [in + H, 4C]
      Tensor bt = Tensor::empty({4 * C});          // [4C]
      const float* pih = ih->data<float>();
      const float* phh = hh->data<float>();
      const float* pb = b->data<float>();
      float* dst = w0.data<float>();
      float* db = bt.data<float>();
      for (int q = 0; q < 4; ++q) {
        const int64_t to = kTfBlock[q] * C;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t row = q * C + c;
          for (int64_t k = 0; k < in; ++k) dst[k * 4 * C + to + c] = pih[row * in + k];
          for (int64_t k = 0; k < H; ++k) dst[(in + k) * 4 * C + to + c] = phh[row * H + k];
          db[to + c] = pb[row] - (q == kForgetBlock ? kForgetBias : 0.0f);
        }
      }
      const std::string cell = cell_prefix(d, l);
      out.emplace_back(cell + "W_0", w0);
      out.emplace_back(cell + "B", bt);
      if (hr) {
        Tensor wp = Tensor::empty({C, H});  // [C, P]
        const float* s = hr->data<float>();
        float* t = wp.data<float>();
        for (int64_t k = 0; k < H; ++k)
          for (int64_t c = 0; c < C; ++c) t[c * H + k] = s[k * C + c];
        out.emplace_back(cell + "W_P_0", wp);
      }
    }
  }
  if (const auto e = get("embedding.weight")) {
    ELMO_CHECK(e->ndim() == 2, "bilm export of ", path, ": embedding.weight is ", e->describe());
    out.emplace_back("embedding", *e);
  }
  const auto sw = get("softmax.weight");
  const auto sb = get("softmax.bias");
  if (sw || sb) {
    ELMO_CHECK(sw && sb, "bilm export of ", path, ": softmax.", sw ? "bias" : "weight",
               " is missing");
    expect_shape("softmax.weight", *sw, {sw->size(0), H});
    expect_shape("softmax.bias", *sb, {sw->size(0)});
    out.emplace_back("softmax/W", *sw);
    out.emplace_back("softmax/b", *sb);
  }

  silence_hdf5();
  const std::string tmp = str(path, ".tmp-", ::getpid());
  try {
    H5Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (!file.ok()) throw Error(str(tmp, ": cannot create HDF5 file"));
    for (const auto& [name, t] : out) write_dataset(file.get(), tmp, name, t);
    if (!file.close()) throw Error(str(tmp, ": cannot finish writing HDF5 file"));
    const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    const bool synced = fd >= 0 && ::fsync(fd) == 0;
    if (fd >= 0) ::close(fd);
    if (!synced) throw Error(str(tmp, ": cannot flush"));
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error(str("cannot rename ", tmp, " to ", path));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_directory(std::filesystem::path(path).parent_path().string());
}

}  // namespace elmo
