// The subcommands of elmo_fast. Each returns the exit code; errors are thrown (elmo::UsageError
// -> 2, elmo::Error -> 1) and mapped in run_cli().
#pragma once

#include <string>
#include <vector>

#include "comm/launch.h"

namespace elmo {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;  // --set section.key=value
  std::string resume;                  // "" = fresh run (refuses to overwrite), "latest" or a path
  std::string device;                  // "" = from config
  bool no_cuda = false;
  // --init-from PATH [--init-vocab V] [--init-optimizer]: a new run from other weights
  // (app/init_from.h).
  std::string init_from, init_vocab;
  bool init_optimizer = false;
  bool skip_memory_check = false;      // train even when the plan says it does not fit
  LaunchOptions launch;                // distributed flags (lapse-elmo's), see comm/launch.h
  std::vector<std::string> argv;       // the whole command line, for the processes it starts
};
int train_command(const TrainArgs& args);

struct VocabArgs {
  std::string corpus, out;
  int64_t min_count = 1, max_size = 0;
};
int vocab_command(const VocabArgs& args);

struct PrepareArgs {
  std::string config;
  std::vector<std::string> overrides;
};
int prepare_command(const PrepareArgs& args);

struct EvalArgs {
  std::string checkpoint, corpus, vocab, mode = "stream";
  int64_t batch_size = 1, unroll_steps = 20, max_tokens = 0;
  int64_t head_ids = -1, torso_ids = -1;  // -1: the checkpoint config's eval.head_ids/torso_ids
  std::string json_out;
};
int eval_command(const EvalArgs& args);

struct PlanArgs {
  std::string config;
  std::vector<std::string> overrides;
  int world_size = 1;
  std::string device;  // "" = train.device
  bool no_probe = false;
  int probe_steps = 3;
  std::string json_out;
};
int plan_command(const PlanArgs& args);

struct ScoreArgs {
  std::string checkpoint, input, out, vocab;
  bool tokens = false;     // per-token log-probabilities too
  int64_t batch_size = 1;  // sentences evaluated together (1: eval --mode sentence's default)
};
int score_command(const ScoreArgs& args);

struct ImportArgs {
  std::string weights, embedding, vocab, out, softmax;
  float cell_clip = 3.0f, proj_clip = 3.0f;
  bool skip_connections = true;
};
int import_bilm_command(const ImportArgs& args);

struct ExportArgs {
  std::string checkpoint, out;
};
int export_bilm_command(const ExportArgs& args);

struct EmbedArgs {
  std::string checkpoint, input, out, vocab;
  bool stateful = false;
  int64_t batch_size = 32;
  std::vector<float> mix_weights;  // empty = all layers; else L+1 weights (softmax-normalised)
  float mix_gamma = 1.0f;
};
int embed_command(const EmbedArgs& args);

struct ReportArgs {
  std::vector<std::string> run_dirs;
  std::string out;
};
int report_command(const ReportArgs& args);

}  // namespace elmo
