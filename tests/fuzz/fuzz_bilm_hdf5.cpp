// Fuzz target: bilm-tf / allennlp HDF5 weight files (import_bilm_hdf5_image: the file read from
// memory through HDF5's core driver, then every dataset and shape check of the import).
// Invariant: imported tensors have the shapes the import reports (cell size, projection, layers).
#include "io/bilm_hdf5.h"
#include "runtime/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  elmo::fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elmo;
  BilmWeights w;
  try {
    w = import_bilm_hdf5_image(data, size, "fuzz.hdf5");
  } catch (const Error&) {
    return 0;
  }
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
