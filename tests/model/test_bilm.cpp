// BiLM: whole-model finite-difference gradient check of train_step (sampled and full softmax,
// both directions with projection, clips, dropout and residuals; forward-only plain LSTM),
// evaluate() against a direct full softmax over representations(), state carrying, zero_state,
// the samples planned ahead (plan_step) and the sampler position, and the constructor's usage
// errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/full_softmax.h"
#include "kernels/log_uniform_sampler.h"
#include "model/bilm.h"
#include "model/embedding.h"
#include "model/optimizer.h"
#include "runtime/error.h"
#include "runtime/parallel.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

std::vector<int32_t> random_ids(uint64_t seed, int64_t n, int64_t vocab) {
  Rng rng(seed, kRngSynthetic);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return ids;
}

void fill_random(Tensor& t, uint64_t seed, float scale) {
  Rng rng(seed, kRngSynthetic);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = scale * (2.0f * rng.uniform() - 1.0f);
}

LstmState clone_state(const LstmState& s) { return {s.h.clone(), s.c.clone()}; }

// Inputs and targets of both directions for a [B, T] batch (independent random ids; the model
// does not care whether the backward batch is the mirror of the forward one).
struct Batches {
  std::vector<int32_t> inputs[2], targets[2];
  TokenBatch batch[2];
  Batches(int64_t rows, int64_t steps, int64_t vocab, uint64_t seed) {
    for (int d = 0; d < 2; ++d) {
      inputs[d] = random_ids(seed + 10 * d, rows * steps, vocab);
      targets[d] = random_ids(seed + 10 * d + 1, rows * steps, vocab);
      batch[d] = {rows, steps, inputs[d].data(), targets[d].data()};
    }
  }
};

// Serial execution for the finite differences: ~1000 tiny steps per check, where thread hand-offs
// on a loaded machine would cost far more than the work. The threaded path is compared with the
// serial one separately (ThreadedStepEqualsSerialStep).
class SerialThreads {
 public:
  SerialThreads() : saved_(num_threads()) { set_num_threads(1); }
  ~SerialThreads() { set_num_threads(saved_); }

 private:
  int saved_;
};

constexpr uint64_t kStep = 7;
constexpr uint64_t kSamplerSeed = 99;

// Loss of one train_step from copies of the carried states, with a fresh sampler of a fixed seed
// (so the same samples are drawn) and a fixed step (so the same dropout masks are used).
double step_loss(BiLM& model, const TokenBatch* batches, const LstmState* carried) {
  LstmState states[2];
  for (int d = 0; d < model.shape().directions(); ++d) states[d] = clone_state(carried[d]);
  Rng sampler(kSamplerSeed, kRngSampler);
  return model.train_step(batches, states, kStep, sampler).loss;
}

// Dense copy of a parameter's analytic gradient (sparse rows expanded, absent rows zero).
std::vector<float> dense_grad(const Parameter& p, std::vector<char>* row_touched) {
  const int64_t dim = p.row_dim();
  row_touched->assign(p.rows(), p.row_sparse ? 0 : 1);
  if (!p.row_sparse) return p.grad.to_floats();
  std::vector<float> out(p.value.numel(), 0.0f);
  const std::vector<int32_t>& ids = p.sparse_grad.ids;
  if (ids.empty()) return out;
  EXPECT_EQ(p.sparse_grad.values.numel(), static_cast<int64_t>(ids.size()) * dim) << p.name;
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end())) << p.name;
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end()) << p.name << " ids not unique";
  const std::vector<float> values = p.sparse_grad.values.to_floats();
  for (size_t i = 0; i < ids.size(); ++i) {
    (*row_touched)[ids[i]] = 1;
    for (int64_t k = 0; k < dim; ++k) out[ids[i] * dim + k] = values[i * dim + k];
  }
  return out;
}

struct GradCheckStats {
  int64_t checked = 0, skipped_kinks = 0, zero_rows_checked = 0;
  double sum_abs_diff = 0.0, sum_abs_numeric = 0.0, dot = 0.0, norm_a = 0.0, norm_n = 0.0;
};

// Compares every element of every parameter's analytic gradient (of loss x T) with T times the
// central difference of the reported loss.
//
// Tolerances: the loss is computed in float (about 1e-7 relative on a loss of ~2.5), so the
// central difference with eps 1e-3 carries ~3e-4 absolute noise after the x T; atol 2e-3
// covers it. rtol 2e-2 is the usual float FD tolerance; a missing factor (x 0.5, x 2, / T) or a
// wrong sign is far outside it, and the aggregate checks below (relative L1 error and cosine over
// all elements) catch any systematic error even among small gradients.
// Clips make the loss piecewise smooth: where a clip boundary lies within +-eps of the point the
// central difference is off by exactly |f+ - 2 f0 + f-| / (2 eps); such points (second
// difference far above smooth curvature) are skipped and counted, and must stay a minority.
GradCheckStats check_gradients(BiLM& model, const TokenBatch* batches, const LstmState* carried,
                               const std::string& label) {
  SerialThreads serial;
  const double eps = 1e-3, atol = 2e-3, rtol = 2e-2;
  const double T = static_cast<double>(batches[0].steps);
  model.params().zero_grads();
  const double f0 = step_loss(model, batches, carried);
  // Copy the analytic gradients now: the sparse values are views of buffers reused by the next
  // train_step, and the dense ones accumulate.
  std::vector<std::vector<float>> analytic;
  std::vector<std::vector<char>> touched;
  for (Parameter* p : model.params().all()) {
    touched.emplace_back();
    analytic.push_back(dense_grad(*p, &touched.back()));
  }
  GradCheckStats stats;
  int64_t failures = 0;
  const auto params = model.params().all();
  for (size_t pi = 0; pi < params.size(); ++pi) {
    Parameter& p = *params[pi];
    float* x = p.value.data<float>();
    const int64_t dim = p.row_dim();
    for (int64_t i = 0; i < p.value.numel(); ++i) {
      const float saved = x[i];
      x[i] = saved + static_cast<float>(eps);
      const double fp = step_loss(model, batches, carried);
      x[i] = saved - static_cast<float>(eps);
      const double fm = step_loss(model, batches, carried);
      x[i] = saved;
      const double numeric = T * (fp - fm) / (2.0 * eps);
      const double a = analytic[pi][i];
      if (!touched[pi][i / dim]) {
        // A row the step did not touch must not influence the loss at all.
        ++stats.zero_rows_checked;
        EXPECT_EQ(fp, fm) << label << ": " << p.name << "[" << i << "] is outside the sparse "
                          << "gradient rows but changes the loss (numeric " << numeric << ")";
        continue;
      }
      const double kink_error = T * std::fabs(fp - 2.0 * f0 + fm) / (2.0 * eps);
      if (kink_error > 0.5 * atol) {
        ++stats.skipped_kinks;
        continue;
      }
      ++stats.checked;
      stats.sum_abs_diff += std::fabs(a - numeric);
      stats.sum_abs_numeric += std::fabs(numeric);
      stats.dot += a * numeric;
      stats.norm_a += a * a;
      stats.norm_n += numeric * numeric;
      if (std::fabs(a - numeric) > atol + rtol * std::max(std::fabs(a), std::fabs(numeric))) {
        if (++failures <= 10)
          ADD_FAILURE() << label << ": " << p.name << "[" << i << "] analytic " << a
                        << " vs T * numeric " << numeric;
      }
    }
  }
  EXPECT_EQ(failures, 0) << label << ": " << failures << " gradient elements differ";
  EXPECT_GT(stats.checked, 0) << label;
  // Kinks are rare: at most 10% of the elements may be skipped.
  EXPECT_LE(stats.skipped_kinks * 10, stats.checked + stats.skipped_kinks)
      << label << ": " << stats.skipped_kinks << " of " << stats.checked + stats.skipped_kinks
      << " elements skipped near a clip boundary";
  EXPECT_LT(stats.sum_abs_diff, 1e-2 * stats.sum_abs_numeric)
      << label << ": relative L1 error of the whole gradient";
  EXPECT_GT(stats.dot / std::sqrt(stats.norm_a * stats.norm_n), 0.9999) << label << ": cosine";
  // The check must be about real gradients, not about zeros.
  EXPECT_GT(stats.sum_abs_numeric, 1.0) << label;
  return stats;
}

// V 12, E = P 3, C 4, 2 layers, clips 0.5 (active with init scale 0.5), skip connections.
BilmShape projected_shape() {
  BilmShape s;
  s.vocab = 12;
  s.embedding_dim = 3;
  s.cell_size = 4;
  s.proj_dim = 3;
  s.layers = 2;
  s.cell_clip = 0.3f;
  s.proj_clip = 0.15f;
  s.skip_connections = true;
  s.bidirectional = true;
  return s;
}

// Forward-only plain LSTM: E = C = 4, no projection.
BilmShape plain_forward_shape() {
  BilmShape s = projected_shape();
  s.embedding_dim = 4;
  s.proj_dim = 0;
  s.bidirectional = false;
  return s;
}

BilmTrainOptions train_options(SoftmaxKind kind, float dropout) {
  BilmTrainOptions o;
  o.softmax = kind;
  o.samples = 5;
  o.dropout = dropout;
  o.seed = 31;
  return o;
}

std::vector<LstmState> random_states(const BiLM& model, int64_t rows, uint64_t seed) {
  std::vector<LstmState> states;
  for (int d = 0; d < 2; ++d) {
    LstmState s = model.zero_state(rows);
    fill_random(s.h, seed + 2 * d, 0.3f);
    fill_random(s.c, seed + 2 * d + 1, 0.4f);
    states.push_back(s);
  }
  return states;
}

// Copies every parameter value of `from` into `to` (same registry).
void copy_params(const BiLM& from, BiLM& to) {
  for (Parameter* p : to.params().all()) p->value.copy_from(from.params().get(p->name).value);
}

// The loss with a clip switched off must differ, or the check would not exercise the clip.
void expect_clip_active(const BiLM& model, const TokenBatch* batches, const LstmState* carried,
                        bool cell) {
  BilmShape shape = model.shape();
  (cell ? shape.cell_clip : shape.proj_clip) = 0.0f;
  BiLM unclipped(shape, model.options());
  copy_params(model, unclipped);
  BiLM& clipped = const_cast<BiLM&>(model);
  const double with_clip = step_loss(clipped, batches, carried);
  const double without = step_loss(unclipped, batches, carried);
  EXPECT_GT(std::fabs(with_clip - without), 1e-4)
      << (cell ? "cell" : "projection") << " clip is not active in this configuration";
}

TEST(BiLM, GradientsMatchFiniteDifferencesSampledSoftmax) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kSampled, 0.2f));
  model.init(3, 0.8f, 1.0f);
  Batches b(2, 3, 12, 100);
  const std::vector<LstmState> carried = random_states(model, 2, 200);
  expect_clip_active(model, b.batch, carried.data(), true);
  expect_clip_active(model, b.batch, carried.data(), false);
  const GradCheckStats stats = check_gradients(model, b.batch, carried.data(), "sampled");
  // 5 of 12 sampled plus at most 12 targets: some softmax rows stay untouched in general, and
  // unused embedding rows are untouched for sure (12 inputs over 12 ids with repeats).
  EXPECT_GT(stats.zero_rows_checked, 0);
  const Parameter& w = model.params().get("softmax.weight");
  EXPECT_LT(w.sparse_grad.ids.size(), 12u);
}

TEST(BiLM, GradientsMatchFiniteDifferencesFullSoftmax) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kFull, 0.2f));
  model.init(4, 0.8f, 1.0f);
  Batches b(2, 3, 12, 300);
  const std::vector<LstmState> carried = random_states(model, 2, 400);
  expect_clip_active(model, b.batch, carried.data(), true);
  check_gradients(model, b.batch, carried.data(), "full");
  // The full softmax touches every row.
  EXPECT_EQ(model.params().get("softmax.weight").sparse_grad.ids.size(), 12u);
  EXPECT_EQ(model.params().get("softmax.bias").sparse_grad.ids.size(), 12u);
}

TEST(BiLM, GradientsMatchFiniteDifferencesForwardOnlyPlainLstm) {
  for (SoftmaxKind kind : {SoftmaxKind::kSampled, SoftmaxKind::kFull}) {
    BiLM model(plain_forward_shape(), train_options(kind, 0.2f));
    model.init(5, 0.8f, 1.0f);
    EXPECT_FALSE(model.params().has("lstm.bwd.0.weight_ih"));
    EXPECT_FALSE(model.params().has("lstm.fwd.0.weight_hr"));
    Batches b(2, 3, 12, 500);
    const std::vector<LstmState> carried = random_states(model, 2, 600);
    expect_clip_active(model, b.batch, carried.data(), true);
    check_gradients(model, b.batch, carried.data(),
                    kind == SoftmaxKind::kSampled ? "forward-only sampled" : "forward-only full");
  }
}

// The two directions run concurrently when threads are available; results must not depend on it.
TEST(BiLM, ThreadedStepEqualsSerialStep) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kSampled, 0.2f));
  model.init(13, 0.8f, 1.0f);
  Batches b(4, 5, 12, 1300);
  const std::vector<LstmState> carried = random_states(model, 4, 1400);
  auto run = [&](int threads, std::vector<std::vector<float>>* grads, LstmState* out) {
    const int saved = num_threads();
    set_num_threads(threads);
    model.params().zero_grads();
    out[0] = clone_state(carried[0]);
    out[1] = clone_state(carried[1]);
    Rng sampler(kSamplerSeed, kRngSampler);
    const double loss = model.train_step(b.batch, out, kStep, sampler).loss;
    set_num_threads(saved);
    std::vector<char> touched;
    for (Parameter* p : model.params().all()) grads->push_back(dense_grad(*p, &touched));
    return loss;
  };
  std::vector<std::vector<float>> serial, threaded;
  LstmState s1[2], s2[2];
  const double l1 = run(1, &serial, s1);
  const double l2 = run(2, &threaded, s2);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(serial, threaded);
  for (int d = 0; d < 2; ++d) {
    EXPECT_EQ(s1[d].h.to_floats(), s2[d].h.to_floats());
    EXPECT_EQ(s1[d].c.to_floats(), s2[d].c.to_floats());
  }
}

// Data parallelism: two ranks holding rows [0, 1) and [1, 4) of a 4-row batch (same sampler
// seed, same step) produce gradients that sum to the gradients of one rank holding all 4 rows,
// with the same dropout masks, and carry the same per-row states. Only the float summation
// order differs (tolerance 1e-5 relative + 1e-7 absolute).
TEST(BiLM, RowShardsSumToTheWholeBatchGradient) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kSampled, 0.3f));
  model.init(17, 0.8f, 1.0f);
  const int64_t B = 4, T = 5, V = 12;
  Batches whole(B, T, V, 1700);
  const std::vector<LstmState> carried = random_states(model, B, 1800);
  std::vector<char> touched;

  model.params().zero_grads();
  LstmState whole_states[2] = {clone_state(carried[0]), clone_state(carried[1])};
  Rng sampler(kSamplerSeed, kRngSampler);
  const TrainStepResult whole_result = model.train_step(whole.batch, whole_states, kStep, sampler);
  std::vector<std::vector<float>> expected;
  for (Parameter* p : model.params().all()) expected.push_back(dense_grad(*p, &touched));

  std::vector<std::vector<float>> summed;
  double nll_sum[2] = {0, 0};
  for (const auto& [offset, rows] : {std::pair<int64_t, int64_t>{0, 1}, {1, 3}}) {
    TokenBatch part[2];
    LstmState states[2];
    for (int d = 0; d < 2; ++d) {
      part[d] = {rows, T, whole.inputs[d].data() + offset * T, whole.targets[d].data() + offset * T,
                 B, offset};
      const int64_t L = carried[d].h.size(0), H = carried[d].h.size(2), C = carried[d].c.size(2);
      states[d] = {Tensor::empty({L, rows, H}), Tensor::empty({L, rows, C})};
      for (int64_t l = 0; l < L; ++l) {
        std::copy_n(carried[d].h.data<float>() + (l * B + offset) * H, rows * H,
                    states[d].h.data<float>() + l * rows * H);
        std::copy_n(carried[d].c.data<float>() + (l * B + offset) * C, rows * C,
                    states[d].c.data<float>() + l * rows * C);
      }
    }
    model.params().zero_grads();
    Rng rank_sampler(kSamplerSeed, kRngSampler);
    const TrainStepResult r = model.train_step(part, states, kStep, rank_sampler);
    size_t k = 0;
    for (Parameter* p : model.params().all()) {
      std::vector<float> g = dense_grad(*p, &touched);
      if (summed.size() <= k) summed.emplace_back(g.size(), 0.0f);
      for (size_t i = 0; i < g.size(); ++i) summed[k][i] += g[i];
      ++k;
    }
    for (int d = 0; d < 2; ++d) {
      nll_sum[d] += r.nll[d] * rows;
      const int64_t L = carried[d].h.size(0), H = carried[d].h.size(2);
      for (int64_t l = 0; l < L; ++l)
        for (int64_t i = 0; i < rows * H; ++i)
          EXPECT_NEAR(states[d].h.data<float>()[l * rows * H + i],
                      whole_states[d].h.data<float>()[(l * B + offset) * H + i], 1e-6)
              << "carried h of rows from " << offset;
    }
  }
  size_t k = 0;
  for (Parameter* p : model.params().all()) {
    EXPECT_TRUE(testing::all_close(summed[k], expected[k], 1e-7f, 1e-5f)) << p->name;
    ++k;
  }
  for (int d = 0; d < 2; ++d) EXPECT_NEAR(nll_sum[d] / B, whole_result.nll[d], 1e-6);
}

// A rank's model (model/row_layout.h: hot head, its dealt tail rows, a step cache) with the
// step's remote rows placed in its caches and filled with the whole model's values computes the
// whole model's step exactly: the same loss, carried states and gradients by vocabulary id.
// Its optimizer state covers only its home rows; a row it does not hold is an Error.
TEST(BiLM, ShardedTablesComputeTheWholeModelsStep) {
  SerialThreads serial;
  const BilmShape shape = projected_shape();
  const int64_t V = shape.vocab, B = 3, T = 4;
  BiLM whole(shape, train_options(SoftmaxKind::kSampled, 0.3f));
  whole.init(17, 0.8f, 1.0f);
  const RowLayout layout = RowLayout::sharded(V, 3, 1, 3, V);  // owns 4, 7, 10
  BiLM rank(shape, train_options(SoftmaxKind::kSampled, 0.3f), Device::cpu(),
            TableLayouts{layout, layout});
  rank.init(17, 0.8f, 1.0f);
  EXPECT_FALSE(rank.holds_every_row());
  EXPECT_EQ(rank.params().get(kEmbeddingWeight).rows(), layout.stored());
  EXPECT_EQ(rank.params().get("softmax.bias").state_rows, layout.home());
  // The same initial values at the home rows (and the same values of everything else).
  for (Parameter* p : rank.params().all()) {
    const Tensor expected = rank.table_layout(p->name)
                                ? take_home_rows(layout, whole.params().get(p->name).value)
                                : whole.params().get(p->name).value;
    const Tensor got = rank.table_layout(p->name) ? p->value.rows(0, layout.home()) : p->value;
    EXPECT_EQ(got.to_floats(), expected.to_floats()) << p->name;
  }
  Batches batches(B, T, V, 2100);
  const std::vector<LstmState> carried = random_states(whole, B, 2200);
  // A remote row not placed: the rank does not hold it.
  {
    LstmState states[2] = {clone_state(carried[0]), clone_state(carried[1])};
    Rng sampler(kSamplerSeed, kRngSampler);
    EXPECT_THROW(rank.train_step(batches.batch, states, kStep, sampler), Error);
    rank.params().zero_grads();
  }
  // Every remote row placed (the cache holds the whole tail here) with the whole model's values.
  std::vector<int32_t> remote;
  for (int32_t id = 0; id < V; ++id)
    if (!layout.is_home(id)) remote.push_back(id);
  for (const BiLM::TableGroup group : {BiLM::kEmbeddingRows, BiLM::kSoftmaxRows})
    rank.row_slots(group).place(remote);
  for (const char* name : {kEmbeddingWeight, "softmax.weight", "softmax.bias"}) {
    Parameter& p = rank.params().get(name);
    const RowSlots& slots = rank.row_slots(
        std::string(name) == kEmbeddingWeight ? BiLM::kEmbeddingRows : BiLM::kSoftmaxRows);
    const std::vector<float> from = whole.params().get(name).value.to_floats();
    for (const int32_t id : remote)
      std::copy_n(from.data() + id * p.row_dim(), p.row_dim(),
                  p.value.data<float>() + slots.slot(id) * p.row_dim());
  }
  LstmState whole_states[2] = {clone_state(carried[0]), clone_state(carried[1])};
  LstmState rank_states[2] = {clone_state(carried[0]), clone_state(carried[1])};
  Rng s1(kSamplerSeed, kRngSampler), s2(kSamplerSeed, kRngSampler);
  const TrainStepResult a = whole.train_step(batches.batch, whole_states, kStep, s1);
  const TrainStepResult b = rank.train_step(batches.batch, rank_states, kStep, s2);
  EXPECT_EQ(a.loss, b.loss);
  for (int d = 0; d < 2; ++d) {
    EXPECT_EQ(a.nll[d], b.nll[d]);
    EXPECT_EQ(whole_states[d].h.to_floats(), rank_states[d].h.to_floats());
  }
  for (Parameter* p : rank.params().all()) {
    const Parameter& w = whole.params().get(p->name);
    if (!p->row_sparse) {
      EXPECT_EQ(p->grad.to_floats(), w.grad.to_floats()) << p->name;
      continue;
    }
    EXPECT_EQ(p->sparse_grad.ids, w.sparse_grad.ids) << p->name;
    EXPECT_EQ(p->sparse_grad.values.to_floats(), w.sparse_grad.values.to_floats()) << p->name;
  }
  // Only the home rows have optimizer state.
  Optimizer optimizer(rank.params(), OptimizerOptions{});
  for (const auto& [name, acc] : optimizer.state_tensors())
    if (rank.table_layout(name.substr(0, name.rfind('.'))))
      EXPECT_EQ(acc.size(0), layout.home()) << name;
  // Whole-table reads refuse a rank's model.
  LstmState state = clone_state(carried[0]);
  EXPECT_THROW(rank.evaluate(0, batches.batch[0], state), Error);
}

TEST(BiLM, ReportedLossIsMeanOfDirectionMeans) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kFull, 0.0f));
  model.init(6, 0.3f, 1.0f);
  Batches b(2, 3, 12, 700);
  LstmState states[2] = {model.zero_state(2), model.zero_state(2)};
  Rng sampler(1, kRngSampler);
  const TrainStepResult r = model.train_step(b.batch, states, 0, sampler);
  EXPECT_NEAR(r.loss, 0.5 * (r.nll[0] + r.nll[1]), 1e-12);
  EXPECT_GT(r.nll[0], 0.0);
  EXPECT_GT(r.nll[1], 0.0);
  EXPECT_NE(r.nll[0], r.nll[1]);  // separate directions, separate data
  // A near-uniform model (small init) has a loss close to log V.
  EXPECT_NEAR(r.loss, std::log(12.0), 0.5);
}

// Direct full-softmax NLL (double) of one direction from representations() of the top layer.
NllSum direct_nll(BiLM& model, int d, const TokenBatch& batch) {
  LstmState state = model.zero_state(batch.rows);
  const std::vector<Tensor> reps =
      model.representations(d, batch.inputs, batch.rows, batch.steps, state);
  const int64_t L = model.shape().layers, H = model.shape().hidden(), V = model.shape().vocab;
  EXPECT_EQ(reps.size(), static_cast<size_t>(L + 1));
  const std::vector<float> top = reps[L].to_floats();  // [T, B, H]
  const std::vector<float> w = model.params().get("softmax.weight").value.to_floats();
  const std::vector<float> bias = model.params().get("softmax.bias").value.to_floats();
  NllSum sum;
  for (int64_t t = 0; t < batch.steps; ++t)
    for (int64_t r = 0; r < batch.rows; ++r) {
      const int32_t target = batch.targets[r * batch.steps + t];  // row-major [B, T]
      if (target == kIgnoreTarget) continue;
      const float* h = &top[(t * batch.rows + r) * H];
      std::vector<double> logits(V);
      double mx = -1e300;
      for (int64_t v = 0; v < V; ++v) {
        double z = bias[v];
        for (int64_t k = 0; k < H; ++k) z += static_cast<double>(w[v * H + k]) * h[k];
        logits[v] = z;
        mx = std::max(mx, z);
      }
      double se = 0.0;
      for (double z : logits) se += std::exp(z - mx);
      sum.nll += mx + std::log(se) - logits[target];
      ++sum.count;
    }
  return sum;
}

TEST(BiLM, EvaluateMatchesDirectSoftmaxOverRepresentations) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kSampled, 0.3f));
  model.init(8, 0.5f, 1.0f);
  fill_random(model.params().get("softmax.bias").value, 9, 0.5f);  // bias must count
  Batches b(3, 4, 12, 800);
  b.targets[0][5] = kIgnoreTarget;
  for (int d = 0; d < 2; ++d) {
    LstmState state = model.zero_state(3);
    const NllSum got = model.evaluate(d, b.batch[d], state);
    const NllSum want = direct_nll(model, d, b.batch[d]);
    EXPECT_EQ(got.count, d == 0 ? 11 : 12) << "direction " << d;
    EXPECT_EQ(got.count, want.count);
    EXPECT_NEAR(got.nll, want.nll, 1e-4 * want.nll) << "direction " << d;
    // No dropout in evaluation: a second call from zero state gives the same NLL.
    LstmState again = model.zero_state(3);
    EXPECT_EQ(model.evaluate(d, b.batch[d], again).nll, got.nll);
    EXPECT_TRUE(testing::all_close(again.h.to_floats(), state.h.to_floats(), 0.0f, 0.0f));
  }
  // The directions use their own LSTMs: same data, different NLL.
  LstmState s0 = model.zero_state(3), s1 = model.zero_state(3);
  EXPECT_NE(model.evaluate(0, b.batch[0], s0).nll, model.evaluate(1, b.batch[0], s1).nll);
}

TEST(BiLM, EvaluateCarriesStateAcrossBatches) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kFull, 0.0f));
  model.init(10, 0.5f, 1.0f);
  const int64_t B = 2, T = 6;
  Batches b(B, T, 12, 900);
  for (int d = 0; d < 2; ++d) {
    LstmState whole = model.zero_state(B);
    const NllSum full = model.evaluate(d, b.batch[d], whole);
    // The same rows as two consecutive batches of T/2 steps with the state carried.
    LstmState halves = model.zero_state(B);
    NllSum sum;
    for (int half = 0; half < 2; ++half) {
      std::vector<int32_t> in(B * T / 2), tg(B * T / 2);
      for (int64_t r = 0; r < B; ++r)
        for (int64_t t = 0; t < T / 2; ++t) {
          in[r * T / 2 + t] = b.inputs[d][r * T + half * T / 2 + t];
          tg[r * T / 2 + t] = b.targets[d][r * T + half * T / 2 + t];
        }
      const NllSum part = model.evaluate(d, {B, T / 2, in.data(), tg.data()}, halves);
      sum.nll += part.nll;
      sum.count += part.count;
    }
    EXPECT_EQ(sum.count, full.count);
    EXPECT_NEAR(sum.nll, full.nll, 1e-5 * full.nll) << "direction " << d;
    EXPECT_TRUE(testing::all_close(halves.h.to_floats(), whole.h.to_floats(), 1e-6f, 1e-5f));
    EXPECT_TRUE(testing::all_close(halves.c.to_floats(), whole.c.to_floats(), 1e-6f, 1e-5f));
    // The second half from zero state instead differs: the state matters.
    LstmState fresh = model.zero_state(B);
    std::vector<int32_t> in(B * T / 2), tg(B * T / 2);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t < T / 2; ++t) {
        in[r * T / 2 + t] = b.inputs[d][r * T + T / 2 + t];
        tg[r * T / 2 + t] = b.targets[d][r * T + T / 2 + t];
      }
    LstmState carried = model.zero_state(B);
    std::vector<int32_t> in0(B * T / 2), tg0(B * T / 2);
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t < T / 2; ++t) {
        in0[r * T / 2 + t] = b.inputs[d][r * T + t];
        tg0[r * T / 2 + t] = b.targets[d][r * T + t];
      }
    model.evaluate(d, {B, T / 2, in0.data(), tg0.data()}, carried);
    const double with_state = model.evaluate(d, {B, T / 2, in.data(), tg.data()}, carried).nll;
    const double from_zero = model.evaluate(d, {B, T / 2, in.data(), tg.data()}, fresh).nll;
    EXPECT_GT(std::fabs(with_state - from_zero), 1e-6);
  }
}

TEST(BiLM, TrainStepWithoutDropoutMatchesEvaluateAndAdvancesState) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kFull, 0.0f));
  model.init(11, 0.5f, 1.0f);
  Batches b(2, 5, 12, 1000);
  const std::vector<LstmState> start = random_states(model, 2, 1100);
  LstmState train_states[2] = {clone_state(start[0]), clone_state(start[1])};
  Rng sampler(1, kRngSampler);
  const TrainStepResult r = model.train_step(b.batch, train_states, 3, sampler);
  for (int d = 0; d < 2; ++d) {
    LstmState eval_state = clone_state(start[d]);
    const NllSum nll = model.evaluate(d, b.batch[d], eval_state);
    EXPECT_NEAR(r.nll[d], nll.nll / nll.count, 1e-5) << "direction " << d;
    EXPECT_TRUE(testing::all_close(train_states[d].h.to_floats(), eval_state.h.to_floats(),
                                   1e-6f, 1e-5f))
        << "direction " << d;
    EXPECT_TRUE(testing::all_close(train_states[d].c.to_floats(), eval_state.c.to_floats(),
                                   1e-6f, 1e-5f));
    EXPECT_FALSE(testing::all_close(train_states[d].h.to_floats(), start[d].h.to_floats(), 1e-3f,
                                    0.0f))
        << "train_step did not advance the carried state";
  }
}

TEST(BiLM, DropoutDependsOnStepAndSeedOnly) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kFull, 0.3f));
  model.init(12, 0.5f, 1.0f);
  Batches b(2, 3, 12, 1200);
  auto loss_at = [&](uint64_t step) {
    LstmState s[2] = {model.zero_state(2), model.zero_state(2)};
    Rng sampler(1, kRngSampler);
    return model.train_step(b.batch, s, step, sampler).loss;
  };
  EXPECT_EQ(loss_at(4), loss_at(4));
  EXPECT_NE(loss_at(4), loss_at(5));
}

// RngState has no ==: its three fields.
std::tuple<uint64_t, uint64_t, uint64_t> rng_position(const RngState& s) {
  return {s.seed, s.stream, s.position};
}

// plan_step: the samples it returns are the ones train_step then uses (the softmax rows a step
// touches are exactly its targets and those samples), and planning one or two steps ahead
// changes nothing a step computes, nor the sampler position a checkpoint stores.
TEST(BiLM, PlannedSamplesAreTheOnesTheStepUses) {
  BilmShape shape = projected_shape();
  shape.vocab = 60;  // room for rows a step does not touch
  BiLM model(shape, train_options(SoftmaxKind::kSampled, 0.0f));
  model.init(21, 0.5f, 1.0f);
  Batches b(2, 3, shape.vocab, 2100);
  LstmState states[2] = {model.zero_state(2), model.zero_state(2)};
  const std::vector<int32_t>* planned = model.plan_step(4);
  ASSERT_NE(planned, nullptr);
  const std::vector<int32_t> samples = *planned;
  ASSERT_EQ(samples.size(), 5u);
  model.train_step(b.batch, states, 4);
  std::vector<int32_t> expected = samples;
  for (int d = 0; d < 2; ++d)
    expected.insert(expected.end(), b.targets[d].begin(), b.targets[d].end());
  std::sort(expected.begin(), expected.end());
  expected.erase(std::unique(expected.begin(), expected.end()), expected.end());
  EXPECT_EQ(model.params().get("softmax.weight").sparse_grad.ids, expected);
  EXPECT_EQ(model.params().get("softmax.bias").sparse_grad.ids, expected);
}

TEST(BiLM, PlanningAheadChangesNothingAStepComputes) {
  BilmShape shape = projected_shape();
  shape.vocab = 60;
  const BilmTrainOptions options = train_options(SoftmaxKind::kSampled, 0.2f);
  BiLM planned(shape, options), unplanned(shape, options);
  planned.init(22, 0.5f, 1.0f);
  unplanned.init(22, 0.5f, 1.0f);
  const RngState start = planned.sampler_state();
  EXPECT_EQ(rng_position(start), rng_position(Rng(options.seed, kRngSampler).state()));
  LstmState ps[2] = {planned.zero_state(2), planned.zero_state(2)};
  LstmState us[2] = {unplanned.zero_state(2), unplanned.zero_state(2)};
  Rng replay(options.seed, kRngSampler);
  SampleSet draw;
  std::vector<uint8_t> seen;
  for (uint64_t step = 0; step < 4; ++step) {
    Batches b(2, 3, shape.vocab, 2200 + step);
    // Two steps planned before this one trains, as a data-parallel rank does.
    if (step == 0) {
      ASSERT_NE(planned.plan_step(0), nullptr);
    }
    const RngState before = planned.sampler_state();
    const std::vector<int32_t> next = *planned.plan_step(step + 1);
    EXPECT_EQ(rng_position(planned.sampler_state()), rng_position(before))
        << "a planned draw must not move the position a checkpoint stores";
    planned.params().zero_grads();
    unplanned.params().zero_grads();
    const TrainStepResult a = planned.train_step(b.batch, ps, step);
    const TrainStepResult u = unplanned.train_step(b.batch, us, step);
    EXPECT_EQ(a.loss, u.loss) << "step " << step;
    for (Parameter* p : planned.params().all()) {
      const Parameter& q = unplanned.params().get(p->name);
      if (p->row_sparse) {
        EXPECT_EQ(p->sparse_grad.ids, q.sparse_grad.ids) << p->name;
        EXPECT_EQ(p->sparse_grad.values.to_floats(), q.sparse_grad.values.to_floats()) << p->name;
      } else {
        EXPECT_EQ(p->grad.to_floats(), q.grad.to_floats()) << p->name;
      }
    }
    // Both streams stand after step + 1 draws of the sampler.
    sample_log_uniform_unique(shape.vocab, options.samples, replay, draw, seen);
    EXPECT_EQ(rng_position(planned.sampler_state()), rng_position(replay.state()));
    EXPECT_EQ(rng_position(unplanned.sampler_state()), rng_position(replay.state()));
    // The step after is the next draw of the stream.
    Rng peek = replay;
    SampleSet following;
    sample_log_uniform_unique(shape.vocab, options.samples, peek, following, seen);
    EXPECT_EQ(next, following.ids) << "samples planned for step " << step + 1;
  }
}

// The sampler position restores the stream (as --resume does) and drops plans; the
// train_step overload with the caller's Rng draws from it and leaves it where the step did.
TEST(BiLM, SamplerStateRestoresTheStreamAndDropsPlans) {
  const BilmTrainOptions options = train_options(SoftmaxKind::kSampled, 0.0f);
  BiLM model(projected_shape(), options);
  model.init(23, 0.5f, 1.0f);
  Batches b(2, 3, 12, 2300);
  LstmState states[2] = {model.zero_state(2), model.zero_state(2)};
  Rng replay(kSamplerSeed, kRngSampler);
  SampleSet first;
  std::vector<uint8_t> seen;
  sample_log_uniform_unique(12, options.samples, replay, first, seen);
  model.plan_step(0);  // dropped by the restore
  model.set_sampler_state(Rng(kSamplerSeed, kRngSampler).state());
  EXPECT_EQ(*model.plan_step(9), first.ids);
  model.train_step(b.batch, states, 9);
  EXPECT_EQ(rng_position(model.sampler_state()), rng_position(replay.state()));

  Rng caller(kSamplerSeed, kRngSampler);
  model.plan_step(10);  // dropped: the caller's stream decides
  model.train_step(b.batch, states, 10, caller);
  EXPECT_EQ(rng_position(caller.state()), rng_position(replay.state()));
  EXPECT_EQ(rng_position(model.sampler_state()), rng_position(replay.state()));
}

TEST(BiLM, FullSoftmaxPlansNothingAndKeepsTheSamplerStill) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kFull, 0.0f));
  model.init(24, 0.5f, 1.0f);
  Batches b(2, 3, 12, 2400);
  LstmState states[2] = {model.zero_state(2), model.zero_state(2)};
  const RngState start = model.sampler_state();
  EXPECT_EQ(model.plan_step(0), nullptr);
  model.train_step(b.batch, states, 0);
  EXPECT_EQ(rng_position(model.sampler_state()), rng_position(start));
}

TEST(BiLM, StepsTrainInTheOrderTheyWerePlanned) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kSampled, 0.0f));
  model.init(25, 0.5f, 1.0f);
  Batches b(2, 3, 12, 2500);
  LstmState states[2] = {model.zero_state(2), model.zero_state(2)};
  model.plan_step(3);
  EXPECT_NE(testing::error_of([&] { model.plan_step(5); }).find("planned after step 3"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              model.train_step(b.batch, states, 4);
            }).find("step 3 is the next one planned"),
            std::string::npos);
}

TEST(BiLM, ZeroStateShapes) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kSampled, 0.0f));
  const LstmState s = model.zero_state(5);
  EXPECT_EQ(s.h.shape(), Shape({2, 5, 3}));  // [L, B, P]
  EXPECT_EQ(s.c.shape(), Shape({2, 5, 4}));  // [L, B, C]
  EXPECT_EQ(s.rows(), 5);
  for (float v : s.h.to_floats()) EXPECT_EQ(v, 0.0f);
  for (float v : s.c.to_floats()) EXPECT_EQ(v, 0.0f);
  BiLM plain(plain_forward_shape(), train_options(SoftmaxKind::kFull, 0.0f));
  const LstmState p = plain.zero_state(3);
  EXPECT_EQ(p.h.shape(), Shape({2, 3, 4}));  // H = C without projection
  EXPECT_EQ(p.c.shape(), Shape({2, 3, 4}));
  EXPECT_EQ(LstmState{}.rows(), 0);
}

TEST(BiLM, RegistersParametersInDesignOrder) {
  BiLM model(projected_shape(), train_options(SoftmaxKind::kSampled, 0.0f));
  const auto all = model.params().all();
  ASSERT_EQ(all.size(), 1u + 2 * 2 * 4 + 2);
  EXPECT_EQ(all.front()->name, "embedding.weight");
  EXPECT_EQ(all[1]->name, "lstm.fwd.0.weight_ih");
  EXPECT_EQ(all[9]->name, "lstm.bwd.0.weight_ih");
  EXPECT_EQ(all[all.size() - 2]->name, "softmax.weight");
  EXPECT_EQ(all.back()->name, "softmax.bias");
  EXPECT_EQ(model.params().get("softmax.weight").value.shape(), Shape({12, 3}));
  EXPECT_TRUE(model.params().get("embedding.weight").row_sparse);
  EXPECT_TRUE(model.params().get("softmax.bias").row_sparse);
  EXPECT_FALSE(model.params().get("lstm.fwd.1.bias").row_sparse);
}

TEST(BiLM, InitIsDeterministicWithZeroSoftmaxBias) {
  BiLM a(projected_shape(), train_options(SoftmaxKind::kSampled, 0.0f));
  BiLM b(projected_shape(), train_options(SoftmaxKind::kSampled, 0.0f));
  a.init(21, 0.1f, 0.7f);
  b.init(21, 0.1f, 0.7f);
  for (Parameter* p : a.params().all())
    EXPECT_EQ(p->value.to_floats(), b.params().get(p->name).value.to_floats()) << p->name;
  for (float v : a.params().get("softmax.bias").value.to_floats()) EXPECT_EQ(v, 0.0f);
  float emax = 0.0f, wmax = 0.0f;
  for (float v : a.params().get("embedding.weight").value.to_floats())
    emax = std::max(emax, std::fabs(v));
  for (float v : a.params().get("softmax.weight").value.to_floats())
    wmax = std::max(wmax, std::fabs(v));
  EXPECT_LE(emax, 0.7f);
  EXPECT_GT(emax, 0.1f);  // the embedding scale, not the init scale
  EXPECT_LE(wmax, 0.1f);
  b.init(22, 0.1f, 0.7f);
  EXPECT_NE(a.params().get("softmax.weight").value.to_floats(),
            b.params().get("softmax.weight").value.to_floats());
}

// model.forget_bias and model.softmax_bias_init (the TF PTB tutorial's starting values): the
// forget block [C, 2C) of every LSTM bias holds forget_bias, the other blocks 0; a uniform softmax
// bias is drawn after everything else, so every other parameter keeps the values of the default
// init of the same seed.
TEST(BiLM, InitTakesTheForgetBiasAndAUniformSoftmaxBias) {
  BiLM defaults(projected_shape(), train_options(SoftmaxKind::kSampled, 0.0f));
  BiLM tutorial(projected_shape(), train_options(SoftmaxKind::kSampled, 0.0f));
  defaults.init(21, 0.1f, 0.7f);
  BilmInit init;
  init.init_scale = 0.1f;
  init.embedding_scale = 0.7f;
  init.forget_bias = -0.5f;
  init.uniform_softmax_bias = true;
  tutorial.init(21, init);
  const int64_t C = projected_shape().cell_size;
  for (Parameter* p : tutorial.params().all()) {
    const std::vector<float> values = p->value.to_floats();
    if (p->name.find(".bias") != std::string::npos && p->name.rfind("lstm.", 0) == 0) {
      for (int64_t i = 0; i < 4 * C; ++i)
        EXPECT_EQ(values[i], i >= C && i < 2 * C ? -0.5f : 0.0f) << p->name << " " << i;
      const std::vector<float> old = defaults.params().get(p->name).value.to_floats();
      EXPECT_EQ(old[C], 1.0f);  // the default forget bias
    } else if (p->name == "softmax.bias") {
      float most = 0.0f;
      for (float v : values) most = std::max(most, std::fabs(v));
      EXPECT_LE(most, 0.1f);
      EXPECT_GT(most, 0.0f);
    } else {
      EXPECT_EQ(values, defaults.params().get(p->name).value.to_floats()) << p->name;
    }
  }
  // The two-scale form is the default BilmInit.
  BiLM same(projected_shape(), train_options(SoftmaxKind::kSampled, 0.0f));
  BilmInit plain;
  plain.init_scale = 0.1f;
  plain.embedding_scale = 0.7f;
  same.init(21, plain);
  for (Parameter* p : same.params().all())
    EXPECT_EQ(p->value.to_floats(), defaults.params().get(p->name).value.to_floats()) << p->name;
}

TEST(BiLM, InvalidConfigurationsAreUsageErrors) {
  const BilmShape shape = projected_shape();
  BilmTrainOptions o = train_options(SoftmaxKind::kSampled, 0.0f);
  o.samples = 12;  // == vocab
  EXPECT_THROW((BiLM{shape, o}), UsageError);
  o.samples = 20;
  EXPECT_THROW((BiLM{shape, o}), UsageError);
  o.samples = 0;
  EXPECT_THROW((BiLM{shape, o}), UsageError);
  o.samples = 11;
  EXPECT_NO_THROW((BiLM{shape, o}));
  // The full softmax ignores samples.
  BilmTrainOptions full = train_options(SoftmaxKind::kFull, 0.0f);
  full.samples = 100;
  EXPECT_NO_THROW((BiLM{shape, full}));
  BilmTrainOptions drop = train_options(SoftmaxKind::kFull, 1.0f);
  EXPECT_THROW((BiLM{shape, drop}), UsageError);
  drop.dropout = -0.1f;
  EXPECT_THROW((BiLM{shape, drop}), UsageError);
  BilmShape tiny = shape;
  tiny.vocab = 3;
  EXPECT_THROW((BiLM{tiny, full}), UsageError);
  BilmShape no_cell = shape;
  no_cell.cell_size = 0;
  EXPECT_THROW((BiLM{no_cell, full}), UsageError);
  try {
    BiLM bad(shape, [] {
      BilmTrainOptions x;
      x.samples = 12;
      return x;
    }());
    FAIL() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("softmax.samples"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace elmo
