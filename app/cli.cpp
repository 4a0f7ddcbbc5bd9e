#include "app/cli.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "app/commands.h"
#include "io/config.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

namespace {

void add_train_options(CLI::App& cmd, TrainArgs& args, bool required) {
  auto* config = cmd.add_option("--config,-c", args.config, "training configuration (TOML)");
  if (required) config->required();
  config->check(CLI::ExistingFile);
  cmd.add_option("--set", args.overrides,
                 "override a config key, e.g. --set train.batch_size=64 (repeatable)")
      ->allow_extra_args(false);
  cmd.add_flag("--resume{latest}", args.resume,
               "continue from the latest checkpoint of run.dir, or --resume=PATH");
  cmd.add_option("--device", args.device, "cpu, cuda or cuda:N (overrides train.device)");
  cmd.add_flag("--no_cuda,--no-cuda", args.no_cuda, "never use a GPU");
  cmd.add_option("--init-from", args.init_from,
                 "start a new run from these weights: a checkpoint or run folder, or a "
                 "bilm-tf/allennlp HDF5 (fine-tuning; the vocabularies may differ)");
  cmd.add_option("--init-vocab", args.init_vocab,
                 "vocabulary of the --init-from tables' rows (default: the checkpoint's)");
  cmd.add_flag("--skip-memory-check", args.skip_memory_check,
               "train even when the memory plan says the configuration does not fit");
  cmd.add_flag("--init-optimizer", args.init_optimizer,
               "keep the --init-from checkpoint's Adagrad accumulators (matched rows, dense "
               "parameters) instead of starting the optimizer fresh");
  LaunchOptions& l = args.launch;
  const char* group = "Distributed (see README: Multi-node)";
  cmd.add_option("--nodes", l.nodes, "start this many nodes' ranks on this machine")
      ->group(group);
  cmd.add_option("--workers_per_node", l.workers_per_node,
                 "rank processes per node (one per GPU or CPU worker)")
      ->group(group);
  cmd.add_option("--role", l.role, "scheduler (serves the rendezvous) or worker (one node)")
      ->check(CLI::IsMember({"scheduler", "worker"}))
      ->group(group);
  cmd.add_option("--root_uri", l.root_uri, "address of the scheduler")->group(group);
  cmd.add_option("--root_port", l.root_port, "port of the scheduler")
      ->check(CLI::Range(1, 65535))
      ->group(group);
  cmd.add_option("--world_size", l.world_size, "number of nodes in the job")->group(group);
  cmd.add_option("--device_ids", l.device_ids, "GPU of each worker of this node")
      ->group(group);
  cmd.add_option("--host_map", l.host_map,
                 "workers per host as JSON, e.g. '{\"host-a\": 4, \"host-b\": 2}'")
      ->group(group);
  cmd.add_option("--job_token", l.job_token,
                 "secret every process of the job presents (default: $ELMO_JOB_TOKEN)")
      ->group(group);
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{
      "elmo_fast: train ELMo-style bidirectional LSTM language models.\n"
      "  elmo_fast --config run.toml          train (same as `elmo_fast train --config ...`)"};
  app.set_version_flag("--version", "elmo_fast 0.1.0");
  app.require_subcommand(0, 1);
  app.fallthrough(false);

  TrainArgs top_train;
  add_train_options(app, top_train, false);

  TrainArgs train_args;
  CLI::App* train = app.add_subcommand("train", "train a biLM from a config");
  add_train_options(*train, train_args, true);

  VocabArgs vocab_args;
  CLI::App* vocab = app.add_subcommand("vocab", "build a vocabulary (most frequent first)");
  vocab->add_option("--corpus", vocab_args.corpus, "file, folder or glob of text")->required();
  vocab->add_option("--out,-o", vocab_args.out, "vocabulary file to write")->required();
  vocab->add_option("--min-count", vocab_args.min_count, "drop words seen fewer times")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  vocab->add_option("--max-size", vocab_args.max_size, "keep at most this many words (0: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));

  PrepareArgs prepare_args;
  CLI::App* prepare =
      app.add_subcommand("prepare", "tokenise the config's corpora into the token cache");
  prepare->add_option("--config,-c", prepare_args.config, "configuration (TOML)")
      ->required()
      ->check(CLI::ExistingFile);
  prepare->add_option("--set", prepare_args.overrides, "override a config key");

  EvalArgs eval_args;
  CLI::App* eval = app.add_subcommand("eval", "perplexity with the full softmax");
  eval->add_option("--checkpoint", eval_args.checkpoint, "checkpoint or run folder")->required();
  eval->add_option("--corpus", eval_args.corpus, "held-out text: file, folder or glob")
      ->required();
  eval->add_option("--vocab", eval_args.vocab, "vocabulary (default: the checkpoint's)");
  eval->add_option("--mode", eval_args.mode, "stream (state carried) or sentence")
      ->check(CLI::IsMember({"stream", "sentence"}));
  eval->add_option("--batch-size", eval_args.batch_size, "rows evaluated together (stream)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  eval->add_option("--unroll-steps", eval_args.unroll_steps, "steps per batch (stream)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  eval->add_option("--max-tokens", eval_args.max_tokens, "stop after this many (0: all)")
      ->check(CLI::NonNegativeNumber);
  eval->add_option("--head-ids", eval_args.head_ids,
                   "perplexity slices: head = ids below this (default: the checkpoint's "
                   "eval.head_ids; 0 = the most frequent 1%)")
      ->check(CLI::NonNegativeNumber);
  eval->add_option("--torso-ids", eval_args.torso_ids,
                   "torso = ids from the head bound to below this, tail = the rest (default: "
                   "the checkpoint's eval.torso_ids; 0 = the most frequent 10%)")
      ->check(CLI::NonNegativeNumber);
  eval->add_option("--json", eval_args.json_out, "also write the result as JSON here");

  PlanArgs plan_args;
  CLI::App* plan = app.add_subcommand(
      "plan",
      "parameters, memory per process, FLOPs and a timed probe of a config, without "
      "training (prepares the data as `prepare` does)");
  plan->add_option("--config,-c", plan_args.config, "training configuration (TOML)")
      ->required()
      ->check(CLI::ExistingFile);
  plan->add_option("--set", plan_args.overrides, "override a config key (repeatable)");
  plan->add_option("--world-size", plan_args.world_size,
                   "processes (ranks) sharing train.batch_size")
      ->check(CLI::Range(1, 1 << 20));
  plan->add_option("--device", plan_args.device, "cpu, cuda or cuda:N (overrides train.device)");
  plan->add_flag("--no-probe", plan_args.no_probe, "skip the timed training steps");
  plan->add_option("--probe-steps", plan_args.probe_steps, "timed steps of the probe")
      ->check(CLI::Range(1, 1000));
  plan->add_option("--json", plan_args.json_out, "also write the plan as JSON here");

  ScoreArgs score_args;
  CLI::App* score = app.add_subcommand(
      "score", "log-probability of every sentence (full softmax), as JSON lines");
  score->add_option("--checkpoint", score_args.checkpoint, "checkpoint or run folder")->required();
  score->add_option("--input,-i", score_args.input, "text, one tokenised sentence per line")
      ->required()
      ->check(CLI::ExistingFile);
  score->add_option("--out,-o", score_args.out, "JSON lines file to write (default: stdout)");
  score->add_option("--vocab", score_args.vocab, "vocabulary (default: the checkpoint's)");
  score->add_flag("--tokens", score_args.tokens,
                  "add each token's forward and backward log-probability");
  score
      ->add_option("--batch-size", score_args.batch_size,
                   "sentences evaluated together (speed; with 1, the default, the sums equal "
                   "eval --mode sentence's bit for bit)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));

  ImportArgs import_args;
  CLI::App* import_cmd =
      app.add_subcommand("import-bilm", "bilm-tf/allennlp HDF5 weights -> checkpoint");
  import_cmd->add_option("--weights", import_args.weights, "lm_weights.hdf5")
      ->required()
      ->check(CLI::ExistingFile);
  import_cmd->add_option("--embedding", import_args.embedding,
                         "token embeddings HDF5 (dataset 'embedding'), if not in --weights")
      ->check(CLI::ExistingFile);
  import_cmd->add_option("--softmax", import_args.softmax,
                         "HDF5 with softmax/W and softmax/b, if not in --weights")
      ->check(CLI::ExistingFile);
  import_cmd->add_option("--vocab", import_args.vocab, "vocabulary matching the embedding rows")
      ->required()
      ->check(CLI::ExistingFile);
  import_cmd->add_option("--out,-o", import_args.out, "run folder to create")->required();
  import_cmd->add_option("--cell-clip", import_args.cell_clip, "cell clip of the model (0: off)");
  import_cmd->add_option("--proj-clip", import_args.proj_clip, "projection clip (0: off)");
  import_cmd->add_flag("!--no-skip-connections", import_args.skip_connections,
                       "the model has no residual connections");

  ExportArgs export_args;
  CLI::App* export_cmd =
      app.add_subcommand("export-bilm", "checkpoint -> bilm-tf HDF5 (with embedding, softmax)");
  export_cmd->add_option("--checkpoint", export_args.checkpoint, "checkpoint or run folder")
      ->required();
  export_cmd->add_option("--out,-o", export_args.out, "HDF5 file to write")->required();

  EmbedArgs embed_args;
  CLI::App* embed =
      app.add_subcommand("embed", "sentences -> per-layer biLM representations (HDF5)");
  embed->add_option("--checkpoint", embed_args.checkpoint, "checkpoint or run folder")
      ->required();
  embed->add_option("--input,-i", embed_args.input, "text, one tokenised sentence per line")
      ->required()
      ->check(CLI::ExistingFile);
  embed->add_option("--out,-o", embed_args.out, "HDF5 file to write")->required();
  embed->add_option("--vocab", embed_args.vocab, "vocabulary (default: the checkpoint's)");
  embed->add_flag("--stateful", embed_args.stateful,
                  "carry state: row r of a batch starts where row r of the previous ended "
                  "(allennlp behaviour)");
  embed->add_option("--batch-size", embed_args.batch_size, "sentences per batch")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  embed->add_option("--scalar-mix", embed_args.mix_weights,
                    "mix the L+1 layers with these (softmax-normalised) weights")
      ->delimiter(',');
  embed->add_option("--gamma", embed_args.mix_gamma, "scale of the scalar mix");

  ReportArgs report_args;
  CLI::App* report = app.add_subcommand(
      "report", "one self-contained HTML page of runs: summary, config, plots of their metrics");
  report->add_option("run_dirs", report_args.run_dirs, "run folders (run.dir), one or more")
      ->required();
  report->add_option("--out,-o", report_args.out, "HTML file to write")->required();

  std::string show_config;
  std::vector<std::string> show_overrides;
  bool show_reference = false;
  CLI::App* config_cmd = app.add_subcommand(
      "config", "print the effective config (defaults + file + --set) or the key reference");
  config_cmd->add_option("--config,-c", show_config, "configuration (TOML)")
      ->check(CLI::ExistingFile);
  config_cmd->add_option("--set", show_overrides, "override a config key");
  config_cmd->add_flag("--reference", show_reference, "print every key as a Markdown table");

  try {
    app.parse(argc, argv);
    for (TrainArgs* args : {&top_train, &train_args}) {
      args->argv.assign(argv, argv + argc);
      args->launch.no_cuda = args->no_cuda;
    }
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    if (*train) return train_command(train_args);
    if (*vocab) return vocab_command(vocab_args);
    if (*prepare) return prepare_command(prepare_args);
    if (*eval) return eval_command(eval_args);
    if (*score) return score_command(score_args);
    if (*plan) return plan_command(plan_args);
    if (*import_cmd) return import_bilm_command(import_args);
    if (*export_cmd) return export_bilm_command(export_args);
    if (*embed) return embed_command(embed_args);
    if (*report) return report_command(report_args);
    if (*config_cmd) {
      if (show_reference) {
        std::fputs(config_reference_markdown().c_str(), stdout);
      } else {
        const Config config = show_config.empty()
                                  ? config_from_string("", "defaults", show_overrides)
                                  : load_config(show_config, show_overrides);
        std::fputs(config_to_toml(config, /*with_comments=*/true).c_str(), stdout);
      }
      return 0;
    }
    // A scheduler needs no config; a worker without one is told it needs it.
    if (!top_train.config.empty() || !top_train.launch.role.empty())
      return train_command(top_train);
    std::fputs(app.help().c_str(), stdout);
    return 2;
  } catch (const UsageError& e) {
    log_error(e.what());
    return 2;
  } catch (const Error& e) {
    log_error(e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    log_error("out of memory: reduce train.batch_size, model sizes or softmax.samples");
    return 1;
  } catch (const std::exception& e) {
    log_error("unexpected failure: ", e.what());
    return 1;
  }
}

}  // namespace elmo
