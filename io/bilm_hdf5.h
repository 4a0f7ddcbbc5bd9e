// bilm-tf / allennlp HDF5 weight files: import into our parameter layout and export back.
//
// Their layout (REFERENCE.md): RNN_0 = forward, RNN_1 = backward;
//   RNN_d/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_0   [in + H, 4C]  rows: input, then previous h;
//                                                               column blocks TF order i, j, f, o
//   RNN_d/RNN/MultiRNNCell/Cell{l}/LSTMCell/B     [4C]          forget bias +1 NOT stored
//   RNN_d/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_P_0 [C, P]        absent without projection
//   embedding [V, P], softmax/W [V, P], softmax/b [V]           optional
// Ours (DESIGN.md §5, PyTorch nn.LSTM(proj_size) layout, gate blocks i, f, g, o):
//   lstm.{fwd,bwd}.{l}.weight_ih [4C, in], .weight_hh [4C, H], .bias [4C] (forget bias 1.0
//   inside), .weight_hr [P, C]; embedding.weight [V, P]; softmax.weight [V, P]; softmax.bias [V].
// Import: transpose W_0, split its rows into weight_ih / weight_hh, reorder gate blocks
// (ours i, f, g, o = TF blocks 0, 2, 1, 3), add 1.0 to the forget block of the bias, transpose
// W_P_0. Export is the exact inverse. Exported W_0 and W_P_0 are bitwise the imported ones; B's
// forget block goes through float32 (b + 1) - 1 and may differ from the original by up to
// 2^-24 (a float32 rounding of b + 1 cannot be undone), while export -> import is bitwise stable.
// What it is not: a reader of the char-CNN weights (CNN*, char_embed) of character models.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "runtime/tensor.h"

namespace elmo {

struct BilmWeights {
  int64_t layers = 0;
  int64_t input_dim = 0;     // input size of layer 0 (the embedding dim)
  int64_t cell_size = 0;     // C
  int64_t proj_dim = 0;      // P: hidden state size (= C when has_projection is false)
  bool has_projection = true;
  bool bidirectional = true;  // false when the file holds RNN_0 only
  // lstm.fwd.0.weight_ih, .weight_hh, .bias, [.weight_hr], lstm.fwd.1..., lstm.bwd...,
  // then embedding.weight, softmax.weight, softmax.bias when the file has them. f32, CPU.
  NamedTensors tensors;
};

// Reads and converts the LSTM (and optional embedding/softmax) weights. Errors name the file and
// the dataset: not an HDF5 file, missing dataset, inconsistent shapes between cells, a dataset
// that declares more values than a file of its size can hold. libhdf5 reads the file in a child
// process (io/isolated_read.h): a file that crashes the library is an Error too.
BilmWeights import_bilm_hdf5(const std::string& weights_path);
// The same from a whole file image in memory (HDF5's core driver; `origin` names it in
// messages), in this process: for images libhdf5 itself wrote, as the fuzzer's (tests/fuzz).
BilmWeights import_bilm_hdf5_image(const void* data, size_t bytes, const std::string& origin);

// Reads one float dataset (any rank 1..4, converted to float32), e.g.
// elmo_token_embeddings.hdf5 "embedding" [V, P]. Nested names use '/'. In a child process, as
// import_bilm_hdf5.
Tensor read_hdf5_matrix(const std::string& path, const std::string& dataset);

// Writes the bilm-tf layout from our parameter names: every lstm.{fwd,bwd}.{l}.* present, plus
// embedding.weight -> "embedding" and softmax.{weight,bias} -> "softmax/{W,b}" when present.
// Other names (optimizer state, scalar_mix...) are ignored. Written to "<path>.tmp-<pid>" and
// renamed into place. Errors name the parameter when shapes are inconsistent.
void export_bilm_hdf5(const std::string& path, const NamedTensors& params);

}  // namespace elmo
