// `elmo_fast embed`: tokenised sentences in, per-layer biLM representations out (HDF5 in
// allennlp's layout). Layers: [token, layer 1, ..., layer L], each concat(fwd, bwd) [n, 2H];
// the token layer is the embedding twice; `<S>`/`</S>` are added as inputs and their positions
// removed from the output. Default: every sentence from zero state (deterministic);
// --stateful: row r of a batch continues the state row r of the previous batch ended with.
// A model trained with data.packing = "contiguous" never saw `<S>`: `</S>` starts its sentences
// instead, as the end of the sentence before would.
#include <cmath>
#include <cstring>
#include <fstream>

#include "app/commands.h"
#include "app/session.h"
#include "io/corpus.h"
#include "io/embeddings_hdf5.h"
#include "runtime/log.h"
#include "runtime/parallel.h"

namespace elmo {

namespace {

// The state of one row for one direction: [L, 1, H] and [L, 1, C].
LstmState row_state(const BiLM& model) { return model.zero_state(1); }

}  // namespace

int embed_command(const EmbedArgs& args) {
  set_num_threads(0);
  LoadedModel loaded = load_model(args.checkpoint);
  BiLM& model = *loaded.model;
  const Vocab vocab = load_model_vocab(loaded, args.vocab);
  const BilmShape& shape = model.shape();
  const int64_t H = shape.hidden(), E = shape.embedding_dim, L = shape.layers;
  const int dirs = shape.directions();
  const bool contiguous = loaded.config.data.packing == "contiguous";
  if (E != H)
    throw UsageError(str("embed needs the embedding size (", E, ") to equal the LSTM output size (",
                         H, ") so the token layer lines up with the others"));
  std::vector<float> mix;
  if (!args.mix_weights.empty()) {
    if (static_cast<int64_t>(args.mix_weights.size()) != L + 1)
      throw UsageError(str("--scalar-mix needs ", L + 1, " weights (token layer + ", L,
                           " LSTM layers), got ", args.mix_weights.size()));
    double total = 0.0, top = *std::max_element(args.mix_weights.begin(), args.mix_weights.end());
    for (float w : args.mix_weights) total += std::exp(w - top);
    for (float w : args.mix_weights)
      mix.push_back(static_cast<float>(args.mix_gamma * std::exp(w - top) / total));
  }

  EmbeddingsHdf5Writer writer(args.out);
  LineReader reader(args.input);
  std::string_view line;
  std::vector<std::string_view> tokens;
  std::vector<LstmState> carried[2];  // per batch row, stateful mode
  int64_t index = 0, unknown = 0, total_tokens = 0;
  while (reader.next_line(&line)) {
    size_t bad = 0;
    if (!is_valid_utf8(line, &bad))
      throw Error(str(args.input, ":", reader.line_number(), ": invalid UTF-8 at byte ", bad + 1));
    split_tokens(line, &tokens);
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0)
      throw Error(str(args.input, ":", reader.line_number(), ": empty sentence (embed needs one ",
                      "tokenised sentence per line)"));
    // inputs: <S> w1 .. wn </S>  (contiguous packing: </S> w1 .. wn </S>)
    std::vector<int32_t> ids(n + 2);
    ids[0] = contiguous ? vocab.eos_id() : vocab.bos_id();
    ids[n + 1] = vocab.eos_id();
    std::string text;
    for (int64_t j = 0; j < n; ++j) {
      ids[j + 1] = vocab.id(tokens[j]);
      unknown += ids[j + 1] == vocab.unk_id() && tokens[j] != kUnkToken;
      if (j) text += ' ';
      text.append(tokens[j]);
    }
    total_tokens += n;
    const int64_t row = index % args.batch_size;
    Tensor out = Tensor::zeros({L + 1, n, dirs * H});  // [L+1, n, 2H]
    float* o = out.data<float>();
    for (int d = 0; d < dirs; ++d) {
      std::vector<int32_t> seq = ids;
      if (d == 1) std::reverse(seq.begin(), seq.end());
      LstmState fresh;
      LstmState* state = &fresh;
      if (args.stateful) {
        if (static_cast<int64_t>(carried[d].size()) <= row) carried[d].resize(row + 1);
        if (!carried[d][row].h.defined()) carried[d][row] = row_state(model);
        state = &carried[d][row];
      } else {
        fresh = row_state(model);
      }
      const std::vector<Tensor> reps = model.representations(d, seq.data(), 1, n + 2, *state);
      for (int64_t k = 0; k <= L; ++k) {
        const float* src = reps[k].data<float>();  // [n + 2, 1, H]
        for (int64_t j = 0; j < n; ++j) {
          // Token j sits at position j + 1 forward and n - j in the reversed sequence.
          const int64_t pos = d == 0 ? j + 1 : n - j;
          std::memcpy(o + (k * n + j) * dirs * H + d * H, src + pos * H, H * sizeof(float));
        }
      }
    }
    if (!mix.empty()) {
      Tensor mixed = Tensor::zeros({n, dirs * H});
      float* m = mixed.data<float>();
      for (int64_t k = 0; k <= L; ++k)
        for (int64_t i = 0; i < n * dirs * H; ++i) m[i] += mix[k] * o[k * n * dirs * H + i];
      out = mixed;
    }
    writer.add(text, out);
    ++index;
  }
  if (index == 0) throw Error(str(args.input, ": no sentences to embed"));
  writer.close();
  log_info("embedded ", index, " sentences (", total_tokens, " tokens, ", unknown,
           " unknown) into ", args.out, " as [", mix.empty() ? str(L + 1, ", ") : std::string(),
           "n, ", dirs * H, "] per sentence");
  return 0;
}

}  // namespace elmo
