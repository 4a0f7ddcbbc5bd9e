// StepRunner in one process: LocalStepRunner's steps are the hand-written step (next batch,
// train_step with the run's sampler stream, optimizer step) bit for bit, its checkpoint holds
// the model, optimizer and carried state, and it answers as a process alone; a
// DataParallelStepRunner of a one-rank job (in this process) trains to the same parameters,
// draws the same samples and leaves the batcher and sampler where the local runner does.
#include <gtest/gtest.h>

#include <limits>
#include <memory>
#include <tuple>

#include "app/data_parallel.h"
#include "app/session.h"
#include "app/step_runner.h"
#include "io/batcher.h"
#include "io/token_cache.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

constexpr int kSteps = 4;

std::string config_text(const std::string& run_dir) {
  return "[run]\ndir = \"" + run_dir +
         "\"\nseed = 3\n"
         "[synthetic]\nvocab_size = 120\nclasses = 4\ntrain_sentences = 800\n"
         "valid_sentences = 20\n"
         "[model]\nembedding_dim = 8\ncell_size = 16\nprojection_dim = 8\nlayers = 2\n"
         "dropout = 0.1\n"
         "[softmax]\ntype = \"sampled\"\nsamples = 30\n"
         "[train]\nbatch_size = 4\nunroll_steps = 6\nthreads = 1\ndevice = \"cpu\"\n"
         "[dist]\ntimeout_seconds = 20\nhot_coverage = 0.5\n";
}

// Everything a runner trains, built the way `elmo_fast train` builds it.
struct Training {
  Config config;
  DataFiles files;
  Vocab vocab;
  TokenCache data;
  std::unique_ptr<Batcher> batcher;
  std::unique_ptr<BiLM> model;
  std::unique_ptr<Optimizer> optimizer;
  LstmState states[2];

  explicit Training(const std::string& run_dir, const std::vector<std::string>& overrides = {})
      : config(config_from_string(config_text(run_dir), "test config", overrides)) {
    files = resolve_data_files(config);
    vocab = prepare_vocab(config, files, /*rebuild=*/true);
    data = TokenCache::open_or_build(files.train, vocab, cache_dir(config));
    BatcherOptions options;
    options.rows = config.train.batch_size;
    options.steps = config.train.unroll_steps;
    options.seed = static_cast<uint64_t>(config.run.seed);
    options.shuffle = config.data.shuffle;
    options.packing = packing_from_name(config.data.packing);
    batcher = std::make_unique<Batcher>(data, vocab, options);
    model = std::make_unique<BiLM>(bilm_shape(config, vocab.size()), bilm_options(config));
    model->init(static_cast<uint64_t>(config.run.seed), 0.1f, 1.0f);
    optimizer = std::make_unique<Optimizer>(model->params(), OptimizerOptions{});
    for (int d = 0; d < model->shape().directions(); ++d)
      states[d] = model->zero_state(config.train.batch_size);
  }
  TrainingParts parts() {
    return {&config, &data, batcher.get(), model.get(), optimizer.get(), states};
  }
};

// The TF PTB tutorial's packing on a short text: a forward LM over contiguous rows.
const std::vector<std::string> kContiguous = {"data.packing=contiguous", "data.shuffle=false",
                                              "model.bidirectional=false",
                                              "synthetic.train_sentences=60"};

std::tuple<uint64_t, uint64_t, uint64_t> fields(const RngState& s) {
  return {s.seed, s.stream, s.position};
}

// choose_device of a process told to use the CPU, and refused a GPU it cannot have.
void expect_cpu_chosen_and_gpu_refused(StepRunner& runner, const Config& config,
                                       const std::string& refused) {
  TrainArgs args;
  args.device = "cpu";
  EXPECT_TRUE(runner.choose_device(config, args).is_cpu());
  args.device = refused;
  EXPECT_THROW(runner.choose_device(config, args), UsageError) << refused;
}

TEST(LocalStepRunner, StepsAreTheHandWrittenStepBitForBit) {
  const std::string dir = testing::temp_dir("step_runner_local");
  Training by_runner(dir + "/a"), by_hand(dir + "/b");
  LocalStepRunner runner;
  runner.attach(by_runner.parts());
  runner.start(0, kSteps);
  Rng sampler(static_cast<uint64_t>(by_hand.config.run.seed), kRngSampler);  // the run's stream
  for (int64_t step = 0; step < kSteps; ++step) {
    const StepOutcome outcome = runner.run_step(step, false, step == 2);
    Batch batch[2];
    by_hand.batcher->next(&batch[0], &batch[1]);
    TokenBatch tokens[2];
    for (int d = 0; d < 2; ++d)
      tokens[d] = {batch[d].rows, batch[d].steps, batch[d].inputs.data(), batch[d].targets.data()};
    const TrainStepResult result =
        by_hand.model->train_step(tokens, by_hand.states, static_cast<uint64_t>(step), sampler);
    const Optimizer::StepStats stats = by_hand.optimizer->step(by_hand.batcher->epoch());
    EXPECT_EQ(outcome.loss, result.loss) << "step " << step;
    EXPECT_EQ(outcome.nll[0], result.nll[0]);
    EXPECT_EQ(outcome.nll[1], result.nll[1]);
    EXPECT_EQ(outcome.grad_norm, stats.grad_norm);
    EXPECT_EQ(outcome.lr, stats.lr);
    EXPECT_FALSE(outcome.stop) << "a process alone watches its own signal";
    EXPECT_EQ(outcome.checkpoint, step == 2) << "its own clock decides";
  }
  for (const Parameter* p : by_runner.model->params().all())
    EXPECT_EQ(p->value.to_floats(), by_hand.model->params().get(p->name).value.to_floats())
        << p->name;
  EXPECT_EQ(runner.batcher_state().to_json(), by_hand.batcher->state().to_json());
  EXPECT_EQ(fields(by_runner.model->sampler_state()), fields(sampler.state()));
}

// Contiguous packing: the first batch of every epoch trains from zero state (the tutorial's
// run_epoch), every other batch from the state the previous one left.
TEST(LocalStepRunner, ContiguousPackingRestartsTheRowsFromZeroStateEachEpoch) {
  const std::string dir = testing::temp_dir("step_runner_epoch_reset");
  Training runner_side(dir + "/a", kContiguous), zeroed(dir + "/b", kContiguous),
      carried(dir + "/c", kContiguous);
  const int64_t per_epoch =
      runner_side.batcher->epoch_positions() /
      (runner_side.config.train.batch_size * runner_side.config.train.unroll_steps);
  ASSERT_GE(per_epoch, 2);
  ASSERT_LE(per_epoch, 200);
  LocalStepRunner runner, zeroed_runner, carried_runner;
  runner.attach(runner_side.parts());
  zeroed_runner.attach(zeroed.parts());
  carried_runner.attach(carried.parts());
  for (int64_t step = 0; step < per_epoch; ++step) {
    runner.run_step(step, false, false);
    zeroed_runner.run_step(step, false, false);
    carried_runner.run_step(step, false, false);
  }
  EXPECT_EQ(runner_side.batcher->epoch(), 0);
  // Step `per_epoch` starts epoch 1: by hand from zero state, and from the carried state.
  const auto by_hand = [&](Training& t, bool zero) {
    Batch batch[2];
    t.batcher->next(&batch[0], &batch[1]);
    EXPECT_TRUE(batch[0].reset_state);
    if (zero) t.states[0] = t.model->zero_state(t.config.train.batch_size);
    const TokenBatch tokens{batch[0].rows, batch[0].steps, batch[0].inputs.data(),
                            batch[0].targets.data()};
    return t.model->train_step(&tokens, t.states, static_cast<uint64_t>(per_epoch)).loss;
  };
  const StepOutcome outcome = runner.run_step(per_epoch, false, false);
  EXPECT_EQ(runner_side.batcher->epoch(), 1);
  EXPECT_EQ(outcome.loss, by_hand(zeroed, true));
  EXPECT_NE(outcome.loss, by_hand(carried, false));  // the reset is what makes the difference
}

TEST(LocalStepRunner, AnswersAsAProcessAloneAndCheckpointsEverything) {
  const std::string dir = testing::temp_dir("step_runner_answers");
  Training t(dir + "/run");
  LocalStepRunner runner;
  EXPECT_TRUE(runner.is_root());
  EXPECT_EQ(runner.rank(), 0);
  EXPECT_EQ(runner.world_size(), 1);
  EXPECT_EQ(runner.processes_on_this_host(), 1);
  EXPECT_TRUE(runner.whole_model());
  int calls = 0;
  runner.root_first("data", [&] { ++calls; });
  EXPECT_EQ(calls, 1);
  expect_cpu_chosen_and_gpu_refused(runner, t.config, "cuda:9");
  runner.attach(t.parts());
  runner.start(0, 2);
  runner.run_step(0, false, false);
  runner.run_step(1, false, false);

  CheckpointData ckpt;
  ckpt.step = 2;
  ckpt.state["tokens"] = 48;
  const std::string path = runner.write_checkpoint(ckpt, t.config.run.dir, 0);
  EXPECT_EQ(path, t.config.run.dir + "/checkpoints/step-2");
  const CheckpointData loaded = load_checkpoint(t.config.run.dir);
  EXPECT_EQ(loaded.step, 2);
  ASSERT_NE(loaded.file("model"), nullptr);
  ASSERT_NE(loaded.file("optimizer"), nullptr);
  ASSERT_NE(loaded.file("carry"), nullptr);
  for (const auto& [name, tensor] : *loaded.file("model"))
    EXPECT_EQ(tensor.to_floats(), t.model->params().get(name).value.to_floats()) << name;
  for (const auto& [name, tensor] : *loaded.file("carry")) {
    const LstmState& s = t.states[name.find(".fwd.") != std::string::npos ? 0 : 1];
    EXPECT_EQ(tensor.to_floats(), (name.back() == 'h' ? s.h : s.c).to_floats()) << name;
  }
  nlohmann::json summary;
  runner.describe(summary);
  EXPECT_TRUE(summary.empty());
}

// A one-rank job in this process: the same rows, samples and updates as the local runner; the
// global norm is summed in another order (replicated part + owned rows), hence the tolerance
// (as tests/app/test_train_dist.cpp allows 1, 2 and 4 ranks).
// Rank 0 of a job of one, serving its own rendezvous (no launcher makes such a job: a world of
// one trains as a single process, so the plan is written out here).
ProcessPlan one_rank_plan(const std::string& job_token) {
  ProcessPlan plan;
  plan.kind = ProcessKind::kRank;
  plan.source = "test";
  plan.root_host = "127.0.0.1";
  plan.root_port = testing::free_port();
  plan.job_token = job_token;
  plan.serve_store = true;
  return plan;
}

TEST(DataParallelStepRunner, OneRankTrainsLikeTheLocalRunner) {
  const std::string dir = testing::temp_dir("step_runner_one_rank");
  DataParallel dist(one_rank_plan("step-runner-test"), 20.0);
  DataParallelStepRunner ranked(dist);
  LocalStepRunner local;
  Training a(dir + "/rank"), b(dir + "/local");
  EXPECT_TRUE(ranked.is_root());
  EXPECT_EQ(ranked.world_size(), 1);
  EXPECT_FALSE(ranked.whole_model());
  expect_cpu_chosen_and_gpu_refused(ranked, a.config, "cuda:1");  // no cuda:N in a job
  ranked.attach(a.parts());
  local.attach(b.parts());
  ranked.start(0, kSteps);
  local.start(0, kSteps);
  for (int64_t step = 0; step < kSteps; ++step) {
    const StepOutcome r = ranked.run_step(step, false, false);
    const StepOutcome l = local.run_step(step, false, false);
    EXPECT_NEAR(r.loss, l.loss, 1e-6) << "step " << step;
    EXPECT_NEAR(r.grad_norm, l.grad_norm, 1e-5 * l.grad_norm) << "step " << step;
    EXPECT_EQ(r.lr, l.lr);
    // After each step, the position a checkpoint stores is the same: the rank's plan of the
    // next step is not counted.
    EXPECT_EQ(fields(a.model->sampler_state()), fields(b.model->sampler_state())) << step;
    EXPECT_EQ(ranked.batcher_state().to_json(), local.batcher_state().to_json()) << step;
  }
  for (const Parameter* p : a.model->params().all())
    EXPECT_TRUE(testing::all_close(p->value.to_floats(),
                                   b.model->params().get(p->name).value.to_floats(), 1e-6f, 1e-5f))
        << p->name;
  nlohmann::json summary;
  ranked.describe(summary);
  EXPECT_TRUE(summary.contains("hot_rows"));
  ranked.finish();
}

// The same with contiguous packing, across the start of an epoch (its state reset).
TEST(DataParallelStepRunner, OneRankResetsTheStateAtEpochStartLikeTheLocalRunner) {
  const std::string dir = testing::temp_dir("step_runner_one_rank_contiguous");
  DataParallel dist(one_rank_plan("step-runner-contiguous-test"), 20.0);
  DataParallelStepRunner ranked(dist);
  LocalStepRunner local;
  Training a(dir + "/rank", kContiguous), b(dir + "/local", kContiguous);
  const int64_t per_epoch =
      a.batcher->epoch_positions() / (a.config.train.batch_size * a.config.train.unroll_steps);
  const int64_t steps = per_epoch + 2;
  ranked.attach(a.parts());
  local.attach(b.parts());
  ranked.start(0, steps);
  local.start(0, steps);
  for (int64_t step = 0; step < steps; ++step) {
    const StepOutcome r = ranked.run_step(step, false, false);
    const StepOutcome l = local.run_step(step, false, false);
    EXPECT_NEAR(r.loss, l.loss, 1e-5) << "step " << step;
    EXPECT_EQ(ranked.batcher_state().to_json(), local.batcher_state().to_json()) << step;
  }
  EXPECT_EQ(a.batcher->epoch(), 1);
  for (const Parameter* p : a.model->params().all())
    EXPECT_TRUE(testing::all_close(p->value.to_floats(),
                                   b.model->params().get(p->name).value.to_floats(), 1e-5f, 1e-4f))
        << p->name;
  ranked.finish();
}

// A skipped step resets the rows of the carried state that are not finite (in h or c, any
// layer) and leaves the others bit for bit.
TEST(StepRunner, NonFiniteCarriedRowsAreReset) {
  LstmState state;
  state.h = Tensor::from_floats({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 3, 2});  // [L, B, H]
  state.c = Tensor::from_floats({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 3, 2});
  EXPECT_EQ(reset_nonfinite_rows(state), 0);
  std::vector<float> h = state.h.to_floats(), c = state.c.to_floats();
  h[7] = std::numeric_limits<float>::quiet_NaN();  // layer 1, row 0
  c[4] = std::numeric_limits<float>::infinity();   // layer 0, row 2
  state.h = Tensor::from_floats(h, {2, 3, 2});
  state.c = Tensor::from_floats(c, {2, 3, 2});
  EXPECT_EQ(reset_nonfinite_rows(state), 2);
  EXPECT_EQ(state.h.to_floats(), (std::vector<float>{0, 0, 3, 4, 0, 0, 0, 0, 9, 10, 0, 0}));
  EXPECT_EQ(state.c.to_floats(), (std::vector<float>{0, 0, 3, 4, 0, 0, 0, 0, 9, 10, 0, 0}));
}

TEST(StepRunner, NanInjectionSpecsAreParsedStrictlyAndFireOncePerStep) {
  NanInjection hook("5, loss:6,7");
  EXPECT_FALSE(hook.gradient(4));
  EXPECT_TRUE(hook.gradient(5));
  EXPECT_FALSE(hook.gradient(5)) << "once per step";
  EXPECT_FALSE(hook.gradient(6));
  EXPECT_TRUE(hook.loss(6));
  EXPECT_TRUE(hook.gradient(7));
  EXPECT_NO_THROW(NanInjection(""));
  for (const char* bad : {"x", "0", "loss:", "5;6", "-3", "loss:1e3"})
    EXPECT_THROW(NanInjection{bad}, UsageError) << bad;
}
}  // namespace
}  // namespace elmo
