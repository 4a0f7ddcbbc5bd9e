// Fuzz target: the bilm-tf / allennlp HDF5 weight import (import_bilm_hdf5_image: every dataset
// lookup, type, rank, extent and shape check between cells), on files libhdf5 itself writes.
//
// Why not raw bytes: libhdf5 (Debian 1.10.8) is not hardened against malformed files. Byte
// mutations of an HDF5 image find heap overflows, 68 GB allocations and leaks inside the library
// within a minute, which we cannot fix, and which the import therefore keeps out of the
// caller's process (io/isolated_read.h; the inputs that crash it are tests/data/damaged-hdf5/,
// checked by tests/io/test_bilm_hdf5.cpp). What this target fuzzes is our reading of well-formed
// files whose content is wrong. The input is a small program:
//   bytes 0..7  a consistent weight file: layers, directions, projection, C, P, input size,
//               embedding and softmax present, vocabulary size
//   then        up to 4 mutations (drop, reshape, re-rank, retype, rename, add, leave unwritten
//               with a huge extent, replace by a group), then the float values
// Invariants: an unmutated file imports and reports its plan; an accepted file's tensors have
// the sizes the import reports.
#include <cstring>
#include <string>
#include <vector>

#include "io/bilm_hdf5.h"
#include "io/hdf5_util.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using elmo::H5Id;
using elmo::str;

struct Bytes {
  const uint8_t* p;
  size_t n;
  uint8_t next() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
};

enum class Kind { kF32, kF64BE, kI32, kText, kUnwritten, kGroup };

struct Dataset {
  std::string name;
  std::vector<hsize_t> dims;
  Kind kind = Kind::kF32;
};

std::string cell(int d, int l, const char* leaf) {
  return str("RNN_", d, "/RNN/MultiRNNCell/Cell", l, "/LSTMCell/", leaf);
}

// Writes one dataset; false when libhdf5 refuses it (duplicate name, extent beyond its limits).
bool write(hid_t file, const Dataset& ds, Bytes& values) {
  H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  if (ds.kind == Kind::kGroup) {
    H5Id g(H5Gcreate2(file, ds.name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    return g.ok();
  }
  uint64_t numel = 1;
  for (hsize_t d : ds.dims)
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) numel = UINT64_MAX;
  const bool unwritten = ds.kind == Kind::kUnwritten || numel > (1u << 14);
  std::vector<hsize_t> max(ds.dims.size(), H5S_UNLIMITED), chunk(ds.dims.size());
  for (size_t i = 0; i < ds.dims.size(); ++i) chunk[i] = ds.dims[i] < 4 ? 1 : 4;
  H5Id space(ds.dims.empty() ? H5Screate(H5S_SCALAR)
                             : H5Screate_simple(static_cast<int>(ds.dims.size()), ds.dims.data(),
                                                unwritten ? max.data() : nullptr),
             H5Sclose);
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!space.ok() || !dcpl.ok()) return false;
  if (unwritten && !ds.dims.empty() &&
      H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) < 0)
    return false;
  H5Id text(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(text.get(), 4);
  const hid_t type = ds.kind == Kind::kF64BE ? H5T_IEEE_F64BE
                     : ds.kind == Kind::kI32 ? H5T_STD_I32LE
                     : ds.kind == Kind::kText ? text.get()
                                              : H5T_IEEE_F32LE;
  H5Id set(H5Dcreate2(file, ds.name.c_str(), type, space.get(), lcpl.get(), dcpl.get(),
                      H5P_DEFAULT),
           H5Dclose);
  if (!set.ok()) return false;
  if (unwritten || numel == 0) return true;
  // Values: the input's bytes as floats (NaN and Inf included), then a ramp.
  std::vector<float> v(numel);
  for (uint64_t i = 0; i < numel; ++i) {
    uint8_t b[4] = {values.next(), values.next(), values.next(), values.next()};
    std::memcpy(&v[i], b, 4);
    if (values.n == 0) v[i] = 0.25f * static_cast<float>(i % 17);
  }
  const bool is_text = ds.kind == Kind::kText;
  std::vector<char> chars(is_text ? numel * 4 : 0, 'x');
  return H5Dwrite(set.get(), is_text ? text.get() : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                  H5P_DEFAULT,
                  is_text ? static_cast<void*>(chars.data()) : static_cast<void*>(v.data())) >= 0;
}

// The file image libhdf5 writes for `sets` (empty when it refuses to create the file).
std::vector<uint8_t> build_image(const std::vector<Dataset>& sets, Bytes values) {
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (H5Pset_fapl_core(fapl.get(), 1 << 16, /*backing_store=*/0) < 0) return {};
  H5Id file(H5Fcreate("fuzz-build.hdf5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  if (!file.ok()) return {};
  for (const Dataset& ds : sets) write(file.get(), ds, values);
  if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) return {};
  const ssize_t bytes = H5Fget_file_image(file.get(), nullptr, 0);
  if (bytes <= 0) return {};
  std::vector<uint8_t> image(static_cast<size_t>(bytes));
  if (H5Fget_file_image(file.get(), image.data(), image.size()) != bytes) return {};
  return image;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  elmo::silence_hdf5();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  Bytes in{data, size};
  // The plan of a consistent file.
  const int layers = 1 + in.next() % 3;
  const int directions = 1 + in.next() % 2;
  const bool projection = in.next() % 2;
  const hsize_t C = 1 + in.next() % 4;
  const hsize_t P = projection ? 1 + in.next() % 4 : C;
  const hsize_t input = 1 + in.next() % 5;
  const uint8_t extras = in.next();
  const hsize_t V = 1 + in.next() % 6;
  std::vector<Dataset> sets;
  for (int d = 0; d < directions; ++d)
    for (int l = 0; l < layers; ++l) {
      sets.push_back({cell(d, l, "W_0"), {(l == 0 ? input : P) + P, 4 * C}});
      sets.push_back({cell(d, l, "B"), {4 * C}});
      if (projection) sets.push_back({cell(d, l, "W_P_0"), {C, P}});
    }
  if (extras & 1) sets.push_back({"embedding", {V, input}});
  if (extras & 2) {
    sets.push_back({"softmax/W", {V, P}});
    sets.push_back({"softmax/b", {V}});
  }

  // Mutations.
  static const hsize_t kDims[] = {0, 1, 2, 3, 4, 5, 8, 16, hsize_t{1} << 20, hsize_t{1} << 31,
                                  hsize_t{1} << 40};
  static const char* const kNames[] = {"embedding", "softmax/W", "softmax/b", "RNN_2/x",
                                       "RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell", "softmax"};
  const int mutations = (extras >> 2) % 5;
  for (int m = 0; m < mutations && !sets.empty(); ++m) {
    const uint8_t op = in.next(), which = in.next(), arg = in.next();
    Dataset& ds = sets[which % sets.size()];
    switch (op % 8) {
      case 0: sets.erase(sets.begin() + which % sets.size()); break;
      case 1:
        if (!ds.dims.empty()) ds.dims[arg % ds.dims.size()] = kDims[(arg / 8) % 11];
        break;
      case 2:
        if (arg % 2 == 0 && !ds.dims.empty())
          ds.dims.pop_back();
        else if (ds.dims.size() < 6)
          ds.dims.push_back(kDims[(arg / 2) % 5]);
        break;
      case 3: ds.kind = static_cast<Kind>(1 + arg % 3); break;
      case 4: {
        const int d = arg % 3, l = (arg / 3) % 4;
        static const char* const kLeaves[] = {"W_0", "B", "W_P_0"};
        ds.name = cell(d, l, kLeaves[(arg / 12) % 3]);
        break;
      }
      case 5: sets.push_back({kNames[arg % 6], {kDims[arg % 7], kDims[(arg / 7) % 7]}}); break;
      case 6:
        ds.kind = Kind::kUnwritten;
        if (!ds.dims.empty()) ds.dims[0] = kDims[7 + arg % 4];
        break;
      case 7: ds.kind = Kind::kGroup; break;
    }
  }

  const std::vector<uint8_t> image = build_image(sets, in);
  if (image.empty()) return 0;
  BilmWeights w;
  try {
    w = import_bilm_hdf5_image(image.data(), image.size(), "fuzz.hdf5");
  } catch (const Error&) {
    if (mutations == 0) fuzz::fail("a consistent weight file was refused");
    return 0;
  }
  if (mutations == 0 &&
      (w.layers != layers || w.bidirectional != (directions == 2) ||
       w.has_projection != projection || w.cell_size != static_cast<int64_t>(C) ||
       w.proj_dim != static_cast<int64_t>(P) || w.input_dim != static_cast<int64_t>(input)))
    fuzz::fail("a consistent weight file imported with other sizes than it has");
  const int64_t per_layer = w.has_projection ? 4 : 3;
  const int64_t lstm = per_layer * w.layers * (w.bidirectional ? 2 : 1);
  if (static_cast<int64_t>(w.tensors.size()) < lstm) fuzz::fail("LSTM tensors are missing");
  for (int64_t i = 0; i < lstm; ++i) {
    const Tensor& t = w.tensors[i].second;
    if (t.ndim() < 1 || t.size(0) != (i % per_layer == 3 ? w.proj_dim : 4 * w.cell_size))
      fuzz::fail("an LSTM tensor does not have the reported size");
  }
  return 0;
}
