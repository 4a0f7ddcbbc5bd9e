// `elmo_fast score`: the log-probability of every sentence of a text under a checkpoint, as JSON
// lines (one per input line, in order), from the same evaluation `eval --mode sentence` runs:
// evaluate_corpus in sentence mode (each sentence from zero state, full softmax) with an
// observer that receives the NLL of every position (app/evaluate.h).
//
// A sentence w1..wn is scored as bilm-tf trains it: the forward direction predicts w1..wn and
// </S> (n + 1 predictions, "tokens"), the backward direction wn..w1 and <S>. Per line:
//   {"line": 3, "words": n, "tokens": n + 1, "unk": k,
//    "logprob_fwd": -sum of the forward NLLs, "logprob_bwd": ..., "logprob_mean": their mean,
//    "ppl_fwd": exp(-logprob_fwd / tokens), "ppl_bwd": ..., "perplexity": exp of the mean NLL
//    per prediction over both directions (eval's "mean"),
//    "token_logprobs": [{"token": "<S>", "bwd": ..}, {"token": w1, "fwd": .., "bwd": ..,
//                       "unk": true when w1 is not in the vocabulary}, ..,
//                       {"token": "</S>", "fwd": ..}]}          (with --tokens)
// A blank line gives {"line": k, "blank": true} (eval skips blank lines too). Forward-only models
// have no backward fields. Numbers are written with the 17 significant digits that round-trip a
// double, so -logprob_fwd summed over the lines in order equals eval's forward NLL sum
// (nll_fwd of `eval --json`) bit for bit with --batch-size 1 (both commands' default): each
// sentence's NLLs are the very terms eval adds, added in the same order. With B sentences per
// batch eval adds a batch's positions step by step across its rows, which groups the same terms
// differently: equal to rounding (the per-sentence values may differ in the last bits too, as
// the GEMMs see another batch shape).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

#include "app/commands.h"
#include "app/evaluate.h"
#include "app/session.h"
#include "io/atomic_file.h"
#include "io/corpus.h"
#include "runtime/log.h"
#include "runtime/parallel.h"

namespace elmo {

namespace {

struct ScoredLine {
  int64_t line = 0;
  std::vector<std::string> words;  // as written (empty: a blank line)
  std::vector<int32_t> ids;
  std::vector<double> nll[2];  // per direction, per position 0..n (forward order of the batch)
};

// The input's lines, tokenised; UsageError/Error before anything is scored.
std::vector<ScoredLine> read_lines(const std::string& path, const Vocab& vocab) {
  std::vector<ScoredLine> lines;
  LineReader reader(path);  // Error naming file and line on invalid UTF-8
  std::string_view text;
  std::vector<std::string_view> tokens;
  while (reader.next_line(&text)) {
    split_tokens(text, &tokens);
    ScoredLine line;
    line.line = reader.line_number();
    for (const std::string_view token : tokens) {
      line.words.emplace_back(token);
      line.ids.push_back(vocab.id(token));
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

nlohmann::ordered_json to_json(const ScoredLine& s, int dirs, int32_t unk, bool with_tokens) {
  nlohmann::ordered_json j;
  j["line"] = s.line;
  if (s.words.empty()) {
    j["blank"] = true;
    return j;
  }
  const int64_t n = static_cast<int64_t>(s.words.size());
  j["words"] = n;
  j["tokens"] = n + 1;
  int64_t unknown = 0;
  for (const int32_t id : s.ids) unknown += id == unk;
  j["unk"] = unknown;
  double logprob[2] = {0.0, 0.0};
  for (int d = 0; d < dirs; ++d)
    for (const double nll : s.nll[d]) logprob[d] -= nll;  // position order, as eval sums
  j["logprob_fwd"] = logprob[0];
  if (dirs == 2) j["logprob_bwd"] = logprob[1];
  j["logprob_mean"] = dirs == 2 ? 0.5 * (logprob[0] + logprob[1]) : logprob[0];
  j["ppl_fwd"] = std::exp(-logprob[0] / static_cast<double>(n + 1));
  if (dirs == 2) j["ppl_bwd"] = std::exp(-logprob[1] / static_cast<double>(n + 1));
  j["perplexity"] = std::exp(-(logprob[0] + (dirs == 2 ? logprob[1] : 0.0)) /
                             static_cast<double>(dirs * (n + 1)));
  if (!with_tokens) return j;
  // Forward position i predicts word i (i = n: </S>); backward position i predicts word
  // n - 1 - i (i = n: <S>).
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  if (dirs == 2) list.push_back({{"token", kBosToken}, {"bwd", -s.nll[1][n]}});
  for (int64_t i = 0; i < n; ++i) {
    nlohmann::ordered_json t;
    t["token"] = s.words[i];
    t["fwd"] = -s.nll[0][i];
    if (dirs == 2) t["bwd"] = -s.nll[1][n - 1 - i];
    if (s.ids[i] == unk) t["unk"] = true;
    list.push_back(t);
  }
  list.push_back({{"token", kEosToken}, {"fwd", -s.nll[0][n]}});
  j["token_logprobs"] = list;
  return j;
}

}  // namespace

int score_command(const ScoreArgs& args) {
  set_num_threads(0);
  LoadedModel loaded = load_model(args.checkpoint);
  BiLM& model = *loaded.model;
  const Vocab vocab = load_model_vocab(loaded, args.vocab);
  const int dirs = model.shape().directions();
  std::vector<ScoredLine> lines = read_lines(args.input, vocab);

  std::vector<std::vector<int32_t>> sentences;
  std::vector<ScoredLine*> scored;  // sentence i -> its line
  for (ScoredLine& line : lines) {
    if (line.words.empty()) continue;
    sentences.push_back(line.ids);
    scored.push_back(&line);
  }
  if (sentences.empty())
    throw Error(str(args.input, " holds no sentence to score (", lines.size(),
                    lines.size() == 1 ? " line" : " lines",
                    ", all blank): give one tokenised sentence per line"));
  const TokenCache data = TokenCache::from_sentences({sentences}, vocab.size(), vocab.unk_id());

  // Sentence mode: batch k holds sentences k*B .. k*B + B - 1, one per row, positions 0..n.
  EvalSettings settings;
  settings.mode = EvalMode::kSentence;
  settings.rows = args.batch_size;
  int64_t batches[2] = {0, 0};
  const auto observe = [&](int d, const Batch& batch, const std::vector<double>& nll) {
    const int64_t first = batches[d]++ * args.batch_size;
    for (int64_t r = 0; r < batch.rows && first + r < static_cast<int64_t>(scored.size()); ++r) {
      ScoredLine& line = *scored[first + r];
      const int64_t positions = static_cast<int64_t>(line.words.size()) + 1;
      line.nll[d].assign(nll.begin() + r * batch.steps, nll.begin() + r * batch.steps + positions);
    }
  };
  const EvalResult totals = evaluate_corpus(model, data, vocab, settings, observe);

  std::string out;
  for (const ScoredLine& line : lines)
    out += to_json(line, dirs, vocab.unk_id(), args.tokens).dump() + "\n";
  if (args.out.empty()) {
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  } else {
    write_file_atomic(args.out, out);
  }
  log_info("scored ", sentences.size(), " sentences of ", args.input, " (", lines.size(),
           " lines) with step ", loaded.checkpoint.step, ": ", describe(totals),
           args.out.empty() ? std::string() : str("; JSON lines in ", args.out));
  return 0;
}

}  // namespace elmo
