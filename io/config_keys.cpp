// The config key table (config_keys.h): every key's section, name, type, range or choices and
// doc, with the Config field it sets. Parsing, checks and the reference are config.cpp.
#include "io/config_keys.h"

#include <utility>

namespace elmo::config_keys {

namespace {

KeySpec make_key(const char* section, const char* name, Kind kind, const char* doc) {
  KeySpec k;
  k.section = section;
  k.name = name;
  k.kind = kind;
  k.doc = doc;
  return k;
}

KeySpec int_key(const char* section, const char* name, int64_t* (*field)(Config&), int64_t lo,
                int64_t hi, const char* doc) {
  KeySpec k = make_key(section, name, Kind::kInt, doc);
  k.int_field = field;
  k.int_min = lo;
  k.int_max = hi;
  return k;
}

// Range [lo, hi] with each end optionally open: (lo, hi], [lo, hi), ...
KeySpec float_key(const char* section, const char* name, double* (*field)(Config&), double lo,
                  bool lo_open, double hi, bool hi_open, const char* doc) {
  KeySpec k = make_key(section, name, Kind::kFloat, doc);
  k.float_field = field;
  k.float_min = lo;
  k.min_open = lo_open;
  k.float_max = hi;
  k.max_open = hi_open;
  return k;
}

KeySpec bool_key(const char* section, const char* name, bool* (*field)(Config&), const char* doc) {
  KeySpec k = make_key(section, name, Kind::kBool, doc);
  k.bool_field = field;
  return k;
}

KeySpec string_key(const char* section, const char* name, std::string* (*field)(Config&),
                   StringRule rule, std::vector<std::string> choices, const char* doc) {
  KeySpec k = make_key(section, name, Kind::kString, doc);
  k.string_field = field;
  k.rule = rule;
  k.choices = std::move(choices);
  return k;
}

}  // namespace

// KEY(model, cell_size) -> "model", "cell_size", accessor of config.model.cell_size: the name
// in the file and the field in the struct cannot disagree.
#define ELMO_KEY(section, name) #section, #name, +[](Config & c) { return &c.section.name; }

const std::vector<KeySpec>& key_table() {
  static const std::vector<KeySpec> table = {
      // [run]
      string_key(ELMO_KEY(run, dir), StringRule::kNonEmpty, {},
                 "Folder for checkpoints, metrics, the built vocab and the token cache (created "
                 "if missing)"),
      int_key(ELMO_KEY(run, seed), 0, kInt64Max,
              "Seed of every random stream (init, shuffle, sampler, dropout): same seed, config "
              "and world size give the same run on CPU"),
      // [data]
      string_key(ELMO_KEY(data, corpus), StringRule::kNonEmpty, {},
                 "Training text: \"builtin:synthetic\", a file, a directory (all its files) or a "
                 "glob; one sentence per line, tokens separated by spaces"),
      string_key(ELMO_KEY(data, valid), StringRule::kAny, {},
                 "Held-out text for evaluation during and after training (\"\" = none; with "
                 "builtin:synthetic, \"\" = the generator's held-out sentences)"),
      string_key(ELMO_KEY(data, test), StringRule::kAny, {},
                 "Test text, evaluated at the end of training and by `eval` (\"\" = none)"),
      string_key(ELMO_KEY(data, vocab), StringRule::kAny, {},
                 "Vocab file, one token per line, most frequent first (\"\" = build it from the "
                 "training corpus into run.dir/vocab.txt)"),
      int_key(ELMO_KEY(data, min_count), 1, 1000000000,
              "Building the vocab: keep words seen at least this often (the rest become <UNK>)"),
      int_key(ELMO_KEY(data, max_vocab), 0, 50000000,
              "Building the vocab: keep at most this many words, most frequent first, plus <S> "
              "</S> <UNK> (0 = no limit)"),
      string_key(ELMO_KEY(data, cache_dir), StringRule::kAny, {},
                 "Token cache folder (\"\" = run.dir/cache); reused while corpus and vocab are "
                 "unchanged"),
      bool_key(ELMO_KEY(data, shuffle),
               "Shuffle the sentence order (seeded, every epoch) before packing rows"),
      string_key(ELMO_KEY(data, packing), StringRule::kChoice, {"sentences", "contiguous"},
                 "How training rows are cut: \"sentences\" (bilm-tf: each row an endless "
                 "stream of <S> w1 .. wn sentences) or \"contiguous\" (TF PTB tutorial: the "
                 "text in order as one stream, each sentence followed by </S>, no <S>, cut into "
                 "batch_size rows; state reset every epoch; forward LM, data.shuffle = false)"),
      // [synthetic]
      int_key(ELMO_KEY(synthetic, vocab_size), 2, 1000000,
              "Words of the built-in language (without <S> </S> <UNK>)"),
      int_key(ELMO_KEY(synthetic, classes), 1, 256,
              "Word classes K: the next-word distribution depends only on the current word's "
              "class"),
      float_key(ELMO_KEY(synthetic, zipf_exponent), 0, false, 10, false,
                "Exponent a of the Zipf law p(rank r) ~ (r+1)^-a that every state draws words "
                "from"),
      float_key(ELMO_KEY(synthetic, mean_sentence_length), 1, false, 10000, false,
                "Mean words per sentence L: after each word the sentence ends with probability "
                "1/L"),
      int_key(ELMO_KEY(synthetic, train_sentences), 1, 10000000,
              "Sentences in the generated training text"),
      int_key(ELMO_KEY(synthetic, valid_sentences), 0, 10000000,
              "Sentences in the generated held-out text (0 = none)"),
      int_key(ELMO_KEY(synthetic, seed), 0, kInt64Max,
              "Seed of the language (classes, word orders) and of its text; independent of "
              "run.seed"),
      // [model]
      int_key(ELMO_KEY(model, embedding_dim), 0, 65536,
              "Embedding width E (0 = projection_dim, or cell_size when the projection is off)"),
      int_key(ELMO_KEY(model, cell_size), 1, 65536, "LSTM cell size C"),
      int_key(ELMO_KEY(model, projection_dim), 0, 65536,
              "LSTMP projection P of each layer's output (0 = no projection: the output is the "
              "C-wide cell output)"),
      int_key(ELMO_KEY(model, layers), 1, 16, "LSTM layers per direction"),
      float_key(ELMO_KEY(model, cell_clip), 0, false, 1e6, false,
                "Clip the cell state to +-cell_clip (0 = off)"),
      float_key(ELMO_KEY(model, proj_clip), 0, false, 1e6, false,
                "Clip each layer's (projected) output to +-proj_clip (0 = off)"),
      bool_key(ELMO_KEY(model, skip_connections),
               "Layers after the first add their input to their output (residual)"),
      float_key(ELMO_KEY(model, dropout), 0, false, 1, true,
                "Dropout probability on each layer's input and on the top output (training "
                "only)"),
      bool_key(ELMO_KEY(model, bidirectional),
               "Train the backward LM too (false = forward LM only, as in the PTB configs)"),
      float_key(ELMO_KEY(model, init_scale), 0, true, 10, false,
                "LSTM weights and the softmax weight start uniform in +-init_scale; biases start "
                "at 0, the forget gate's at 1"),
      float_key(ELMO_KEY(model, embedding_init_scale), 0, true, 10, false,
                "Embedding rows start uniform in +-embedding_init_scale (1 = std 0.58, close to "
                "nn.Embedding's N(0,1) used by lapse-elmo)"),
      float_key(ELMO_KEY(model, forget_bias), -100, false, 100, false,
                "Starting bias of every LSTM forget gate (bilm-tf 1; the TF PTB tutorial's "
                "cell 0); the other LSTM biases start at 0"),
      string_key(ELMO_KEY(model, softmax_bias_init), StringRule::kChoice, {"zero", "uniform"},
                 "Softmax bias start: \"zero\" or \"uniform\" in +-init_scale (the TF PTB "
                 "tutorial's, whose one initializer covers every variable but the LSTM biases)"),
      // [softmax]
      string_key(ELMO_KEY(softmax, type), StringRule::kChoice, {"sampled", "full"},
                 "Training loss: \"sampled\" (true word + samples negatives) or \"full\" (all V); "
                 "evaluation always uses the full softmax"),
      int_key(ELMO_KEY(softmax, samples), 1, 50000000,
              "Negative samples S per step (log-uniform, unique, shared by the batch and both "
              "directions); must be < vocab size"),
      // [train]
      int_key(ELMO_KEY(train, batch_size), 1, 1048576,
              "Rows B per step over all ranks, each an endless stream of sentences (a rank takes "
              "B / world size)"),
      int_key(ELMO_KEY(train, unroll_steps), 1, 10000,
              "Steps T per batch (truncated backprop; LSTM state is carried across batches)"),
      float_key(ELMO_KEY(train, epochs), 0, false, 1e6, false,
                "Passes over the training corpus (fractions allowed); the run length unless "
                "max_steps > 0"),
      int_key(ELMO_KEY(train, max_steps), 0, kInt64Max,
              "Stop after this many steps (0 = run train.epochs epochs)"),
      int_key(ELMO_KEY(train, threads), 0, 4096, "CPU threads per process (0 = all cores)"),
      string_key(
          ELMO_KEY(train, device), StringRule::kDevice, {"auto", "cpu", "cuda", "cuda:N"},
          "\"auto\" (cuda:0 when a GPU is visible and --no_cuda is not given, else the "
          "CPU; distributed ranks: each its own GPU when every rank has one, else all on CPUs), "
          "\"cpu\", \"cuda\" or \"cuda:N\" (one process only); a CPU-only build refuses "
          "\"cuda\" and \"cuda:N\""),
      string_key(ELMO_KEY(train, precision), StringRule::kChoice, {"fp32", "tf32", "bf16"},
                 "GEMM precision on a GPU: \"fp32\" (exact f32), \"tf32\" (tensor cores round "
                 "inputs to TF32, f32 accumulation) or \"bf16\" (bf16 inputs, f32 accumulation); "
                 "weights and optimizer stay f32. The CPU computes fp32 only: \"tf32\"/\"bf16\" "
                 "with device \"cpu\" or --no_cuda is an error, with \"auto\" and no GPU a "
                 "warning; a CPU-only build refuses them"),
      string_key(ELMO_KEY(train, lstm_kernel), StringRule::kChoice,
                 {"auto", "standard", "persistent"},
                 "How the LSTM recurrence runs: \"standard\" (per-step GEMMs and a fused cell), "
                 "\"persistent\" (one launch per layer and direction, recurrent and projection "
                 "weights held on chip in bf16; needs a projection; on the CPU its bf16 twin) "
                 "or \"auto\" (standard until the persistent kernels are verified on a GPU)"),
      int_key(ELMO_KEY(train, log_every), 1, kInt64Max,
              "Log and write a metrics line every this many steps"),
      int_key(ELMO_KEY(train, eval_every), 0, kInt64Max,
              "Evaluate on data.valid every this many steps (0 = only at the end)"),
      bool_key(ELMO_KEY(train, deterministic),
               "Bit-reproducible results: fixed reduction order, no atomics in GPU reductions"),
      int_key(ELMO_KEY(train, early_stopping_patience), 0, 1000000,
              "Stop (final checkpoint, summary with the reason) after this many validations in "
              "a row that did not beat the best perplexity by more than early_stopping_min_delta "
              "(0 = never stop early; needs eval_every > 0 and validation data)"),
      float_key(ELMO_KEY(train, early_stopping_min_delta), 0, false, 1e9, false,
                "Perplexity points a validation must improve on the best so far to count as an "
                "improvement for early_stopping_patience (only with a patience > 0)"),
      int_key(ELMO_KEY(train, max_bad_steps), 1, 1000000,
              "A step whose loss or gradient norm is NaN or Inf is skipped (no update); after "
              "this many such steps in a row the run goes back to its last checkpoint"),
      float_key(ELMO_KEY(train, bad_step_lr_scale), 0, true, 1, false,
                "Going back to the last checkpoint after train.max_bad_steps bad steps "
                "multiplies the learning rate by this (again at every such return)"),
      int_key(ELMO_KEY(train, max_bad_step_reloads), 0, 1000000,
              "Returns to the last checkpoint a run may make for bad steps; one more streak "
              "stops it with an error (0 = stop at the first streak)"),
      // [optimizer]
      string_key(ELMO_KEY(optimizer, type), StringRule::kChoice, {"adagrad", "sgd"},
                 "\"adagrad\" (bilm-tf; sparse rows for embedding and softmax) or \"sgd\" (the "
                 "PTB configs)"),
      float_key(ELMO_KEY(optimizer, learning_rate), 0, true, 1e6, false,
                "Learning rate (bilm-tf Adagrad: 0.2; Zaremba SGD: 1.0)"),
      float_key(ELMO_KEY(optimizer, initial_accumulator), 0, false, 1e6, false,
                "Adagrad: starting value of every squared-gradient accumulator"),
      float_key(ELMO_KEY(optimizer, epsilon), 0, false, 1, false,
                "Adagrad: update = lr * g / (sqrt(accumulator) + epsilon), as lapse-elmo"),
      float_key(ELMO_KEY(optimizer, clip_norm), 0, false, 1e9, false,
                "Clip the global gradient norm (dense + touched rows, loss x T scale) to this "
                "(0 = off)"),
      float_key(ELMO_KEY(optimizer, lr_decay), 0, true, 1, false,
                "Epoch e (from 0) uses learning_rate * lr_decay^max(0, e + 1 - "
                "decay_after_epochs); 1 = constant"),
      int_key(ELMO_KEY(optimizer, decay_after_epochs), 0, 1000000,
              "Epochs at the full learning rate before lr_decay applies (TF PTB tutorial's "
              "max_epoch)"),
      // [checkpoint]
      int_key(ELMO_KEY(checkpoint, every_steps), 0, kInt64Max,
              "Write run.dir/step-<N>/ every this many steps (0 = off; the last step is always "
              "saved)"),
      int_key(ELMO_KEY(checkpoint, keep_last), 0, 1000000,
              "Keep the newest this many checkpoints and delete older ones (0 = keep all)"),
      float_key(ELMO_KEY(checkpoint, every_minutes), 0, false, 1e6, false,
                "Also checkpoint when this many minutes passed since the last one (0 = off)"),
      bool_key(ELMO_KEY(checkpoint, keep_best),
               "Keep the checkpoint with the best validation perplexity as "
               "run.dir/checkpoints/best (never deleted by keep_last; needs eval_every > 0 and "
               "validation data)"),
      string_key(ELMO_KEY(checkpoint, on_write_error), StringRule::kChoice, {"stop", "warn"},
                 "A checkpoint that cannot be written (disk full, I/O error; the previous one "
                 "and `latest` stay intact): \"stop\" the run with the error, or \"warn\" and "
                 "keep training (the final checkpoint must still succeed)"),
      // [eval]
      string_key(ELMO_KEY(eval, mode), StringRule::kChoice, {"stream", "sentence"},
                 "\"stream\": state carried through the file (bilm-tf, PTB); \"sentence\": every "
                 "sentence from zero state"),
      int_key(ELMO_KEY(eval, batch_size), 1, 1048576,
              "Rows evaluated together (stream mode: the file is cut into this many contiguous "
              "streams)"),
      int_key(ELMO_KEY(eval, unroll_steps), 1, 10000,
              "Steps per evaluation batch (speed and memory only)"),
      int_key(ELMO_KEY(eval, max_tokens), 0, kInt64Max,
              "Evaluate at most this many tokens of each file (0 = all)"),
      int_key(ELMO_KEY(eval, head_ids), 0, kInt64Max,
              "Perplexity slices: targets with ids (frequency ranks) below this, <S> </S> <UNK> "
              "aside, form the head slice (0 = the most frequent 1% of the words)"),
      int_key(ELMO_KEY(eval, torso_ids), 0, kInt64Max,
              "Targets from the head bound to below this form the torso slice, the rest the tail "
              "(0 = the most frequent 10% of the words); must exceed the head bound"),
      // [metrics]
      bool_key(ELMO_KEY(metrics, jsonl),
               "Write run.dir/metrics.jsonl (one JSON object per log interval)"),
      bool_key(ELMO_KEY(metrics, tensorboard),
               "Write TensorBoard event files with the same scalars under run.dir"),
      // [dist]
      int_key(ELMO_KEY(dist, hot_rows), -1, kInt64Max,
              "Ids below this are the hot head of the embedding and softmax, replicated on every "
              "rank and all-reduced; the tail is sharded by row over ranks (-1 = the smallest "
              "prefix covering dist.hot_coverage of the training tokens)"),
      float_key(ELMO_KEY(dist, hot_coverage), 0, false, 1, false,
                "Share of training-token occurrences the automatic hot head covers"),
      float_key(ELMO_KEY(dist, timeout_seconds), 0, true, 1e6, false,
                "Longest wait for a peer (rendezvous, all-reduce, row exchange) before the run "
                "stops with an error naming it"),
      string_key(ELMO_KEY(dist, allreduce_precision), StringRule::kChoice, {"fp32", "bf16"},
                 "How GPU ranks (NCCL) sum the LSTM gradients: \"bf16\" halves the bytes, "
                 "rounding each gradient and each partial sum to bf16; CPU ranks need \"fp32\""),
      string_key(ELMO_KEY(dist, overlap_allreduce), StringRule::kChoice, {"auto", "on", "off"},
                 "Sum each LSTM layer's gradients while the backward computes the layers below "
                 "(\"on\") or all after the backward (\"off\"); \"auto\": on for GPU ranks "
                 "and for CPU ranks on several machines, off for CPU ranks sharing one machine "
                 "(their all-reduce would compete with the backward for the same cores)"),
  };
  return table;
}

#undef ELMO_KEY

}  // namespace elmo::config_keys
