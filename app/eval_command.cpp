// `elmo_fast eval`: forward, backward and mean perplexity of a checkpoint on a corpus, and per
// slice of target words by frequency (app/eval_slices.h).
#include <cstdio>

#include "app/commands.h"
#include "app/evaluate.h"
#include "app/session.h"
#include "io/atomic_file.h"
#include "runtime/log.h"
#include "runtime/parallel.h"

namespace elmo {

int eval_command(const EvalArgs& args) {
  set_num_threads(0);
  LoadedModel loaded = load_model(args.checkpoint);
  const Vocab vocab = load_model_vocab(loaded, args.vocab);
  const TokenCache data = TokenCache::tokenize(args.corpus, vocab);
  const TokenStats stats = data.stats();
  log_info("evaluating step ", loaded.checkpoint.step, " on ", args.corpus, ": ",
           stats.sentences, " sentences, ", stats.tokens, " tokens");
  EvalSettings settings;
  settings.mode = args.mode == "sentence" ? EvalMode::kSentence : EvalMode::kStream;
  settings.rows = args.batch_size;
  settings.steps = args.unroll_steps;
  settings.max_tokens = args.max_tokens;
  settings.packing = packing_from_name(loaded.config.data.packing);  // as it was trained
  // The slices the run was configured with, unless the command line says otherwise.
  settings.head_ids = args.head_ids >= 0 ? args.head_ids : loaded.config.eval.head_ids;
  settings.torso_ids = args.torso_ids >= 0 ? args.torso_ids : loaded.config.eval.torso_ids;
  const EvalResult result = evaluate_corpus(*loaded.model, data, vocab, settings);
  std::printf("perplexity (%s): %s\n", args.mode.c_str(), describe(result).c_str());
  for (const std::string& line : slice_table(result)) std::printf("  %s\n", line.c_str());
  if (!args.json_out.empty()) {
    nlohmann::json j = result.to_json();
    j["mode"] = args.mode;
    j["checkpoint_step"] = loaded.checkpoint.step;
    write_file_atomic(args.json_out, j.dump(2) + "\n");
  }
  return 0;
}

}  // namespace elmo
