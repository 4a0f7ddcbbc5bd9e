// The whole biLM on CUDA against the CPU reference (DESIGN.md §7), plus the golden fixture on
// the GPU:
//   - one train_step (sampled and full softmax, both directions, projection, clips, residuals,
//     dropout): losses, every dense gradient, the sparse embedding/softmax rows, carried states
//   - N = 5 optimizer steps (Adagrad with the global-norm clip): losses, gradient norms and
//     every parameter and accumulator stay close to the CPU run
//   - GPU runs are bit-identical run to run (no atomics anywhere in a step)
//   - evaluate (both directions concurrently from two host threads, ignored targets) and
//     representations against the CPU
//   - TF32 and bf16 GEMMs: the same step within looser bounds
//   - allennlp's ELMo fixture imported from bilm-tf HDF5 reproduces the stored top-layer outputs
//     within 1e-5 on the GPU (stateful batches of 3, as tests/app/test_embed.cpp on the CPU)
//
// Tolerances (fp32, TF32 off unless a test sets it): the only intended differences are GEMM
// summation orders (cuBLAS vs OpenBLAS, ~K * 2^-24 relative per product), the CUDA row
// kernels' expf/float block sums vs the CPU's polynomial exp/double sums (~1e-6 relative), and
// double tree vs sequential sums of the losses. Through 2 layers x T = 7 recurrent steps they
// stay below ~1e-5 relative: losses rtol 1e-5; gradients atol 1e-4 / rtol 1e-3 per element and a
// relative L2 error below 1e-4 per tensor; after 5 optimizer steps parameters atol 2e-5 /
// rtol 1e-4 (Adagrad moves a weight by ~lr * g / sqrt(acc), so gradient differences of 1e-5
// relative move it by ~1e-6). Dropout masks, samples and touched rows are identical by
// construction (Philox counters, host sampler). A clip decision flipping between backends is
// the one non-smooth effect; with ~8000 clipped quantities and differences ~1e-6 its
// probability is ~1e-3, and the data are fixed, so a pass or fail is reproducible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "io/atomic_file.h"
#include "io/bilm_hdf5.h"
#include "io/corpus.h"
#include "io/embeddings_hdf5.h"
#include "io/vocab.h"
#include "model/bilm.h"
#include "model/embedding.h"
#include "model/optimizer.h"
#include "runtime/parallel.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

const Device kGpu = Device::cuda(0);
constexpr int64_t kVocab = 500, kRows = 6, kSteps = 7;

BilmShape small_shape() {
  BilmShape s;
  s.vocab = kVocab;
  s.embedding_dim = 16;
  s.cell_size = 32;
  s.proj_dim = 16;
  s.layers = 2;
  s.cell_clip = 1.0f;
  s.proj_clip = 0.5f;
  return s;
}

BilmTrainOptions options(SoftmaxKind kind, GemmPrecision precision = GemmPrecision::kFp32) {
  BilmTrainOptions o;
  o.softmax = kind;
  o.samples = 64;
  o.dropout = 0.1f;
  o.seed = 11;
  o.precision = precision;
  return o;
}

std::unique_ptr<BiLM> make_model(Device device, const BilmTrainOptions& o) {
  auto model = std::make_unique<BiLM>(small_shape(), o, device);
  model->init(3, 0.3f, 1.0f);
  return model;
}

struct Batches {
  std::vector<int32_t> inputs[2], targets[2];
  TokenBatch batch[2];
  explicit Batches(uint64_t seed) {
    Rng rng(seed, kRngSynthetic);
    for (int d = 0; d < 2; ++d) {
      for (int64_t i = 0; i < kRows * kSteps; ++i) {
        inputs[d].push_back(static_cast<int32_t>(rng.below(kVocab)));
        targets[d].push_back(static_cast<int32_t>(rng.below(i % 4 == 0 ? 10 : kVocab)));
      }
      batch[d] = {kRows, kSteps, inputs[d].data(), targets[d].data()};
    }
  }
};

// Relative L2 error of a against b.
double relative_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, float atol,
                  float rtol, double l2, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_TRUE(testing::all_close(got, want, atol, rtol)) << what;
  EXPECT_LE(relative_l2(got, want), l2) << what;
}

// Every gradient of `gpu` against `cpu` (registry order; sparse: ids equal, rows close).
void compare_gradients(const BiLM& gpu, const BiLM& cpu, float atol, float rtol, double l2) {
  const auto g = gpu.params().all(), c = cpu.params().all();
  ASSERT_EQ(g.size(), c.size());
  for (size_t k = 0; k < g.size(); ++k) {
    SCOPED_TRACE(c[k]->name);
    if (!c[k]->row_sparse) {
      expect_close(g[k]->grad.to_floats(), c[k]->grad.to_floats(), atol, rtol, l2, c[k]->name);
      continue;
    }
    EXPECT_EQ(g[k]->sparse_grad.ids, c[k]->sparse_grad.ids);
    if (c[k]->sparse_grad.ids.empty()) continue;
    EXPECT_EQ(g[k]->sparse_grad.values.device(), kGpu);
    expect_close(g[k]->sparse_grad.values.to_floats(), c[k]->sparse_grad.values.to_floats(), atol,
                 rtol, l2, c[k]->name);
  }
}

void train_step_matches_cpu(SoftmaxKind kind) {
  auto cpu = make_model(Device::cpu(), options(kind));
  auto gpu = make_model(kGpu, options(kind));
  // Same initial values on both devices, bit for bit (drawn on the host).
  for (size_t k = 0; k < cpu->params().size(); ++k)
    ASSERT_EQ(gpu->params().all()[k]->value.to_floats(), cpu->params().all()[k]->value.to_floats());
  const Batches batches(21);
  LstmState cs[2] = {cpu->zero_state(kRows), cpu->zero_state(kRows)};
  LstmState gs[2] = {gpu->zero_state(kRows), gpu->zero_state(kRows)};
  EXPECT_EQ(gs[0].h.device(), kGpu);
  Rng cpu_sampler(5, kRngSampler), gpu_sampler(5, kRngSampler);
  const TrainStepResult c = cpu->train_step(batches.batch, cs, 9, cpu_sampler);
  const TrainStepResult g = gpu->train_step(batches.batch, gs, 9, gpu_sampler);
  EXPECT_NEAR(g.loss, c.loss, 1e-5 * c.loss);
  EXPECT_NEAR(g.nll[0], c.nll[0], 1e-5 * c.nll[0]);
  EXPECT_NEAR(g.nll[1], c.nll[1], 1e-5 * c.nll[1]);
  EXPECT_EQ(gpu_sampler.state().position, cpu_sampler.state().position);  // same draws
  compare_gradients(*gpu, *cpu, 1e-4f, 1e-3f, 1e-4);
  for (int d = 0; d < 2; ++d) {
    expect_close(gs[d].h.to_floats(), cs[d].h.to_floats(), 2e-5f, 2e-5f, 1e-5, "carried h");
    expect_close(gs[d].c.to_floats(), cs[d].c.to_floats(), 2e-5f, 2e-5f, 1e-5, "carried c");
  }
}

TEST(BiLMGpu, TrainStepMatchesCpuSampledSoftmax) {
  ELMO_SKIP_WITHOUT_GPU();
  train_step_matches_cpu(SoftmaxKind::kSampled);
}

TEST(BiLMGpu, TrainStepMatchesCpuFullSoftmax) {
  ELMO_SKIP_WITHOUT_GPU();
  train_step_matches_cpu(SoftmaxKind::kFull);
}

// N steps of training with the optimizer; returns per-step (loss, grad norm).
std::vector<std::pair<double, double>> train(BiLM& model, Optimizer& optimizer, int steps) {
  LstmState states[2] = {model.zero_state(kRows), model.zero_state(kRows)};
  Rng sampler(6, kRngSampler);
  std::vector<std::pair<double, double>> out;
  for (int s = 0; s < steps; ++s) {
    const Batches batches(100 + s);
    const TrainStepResult r = model.train_step(batches.batch, states, s, sampler);
    const Optimizer::StepStats stats = optimizer.step(0);
    out.emplace_back(r.loss, stats.grad_norm);
  }
  return out;
}

TEST(BiLMGpu, FiveOptimizerStepsTrackCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  OptimizerOptions config;
  config.clip_norm = 1.0f;  // the clip is active: the norm's value matters
  auto cpu = make_model(Device::cpu(), options(SoftmaxKind::kSampled));
  auto gpu = make_model(kGpu, options(SoftmaxKind::kSampled));
  Optimizer cpu_opt(cpu->params(), config), gpu_opt(gpu->params(), config);
  const auto c = train(*cpu, cpu_opt, 5), g = train(*gpu, gpu_opt, 5);
  for (int s = 0; s < 5; ++s) {
    EXPECT_NEAR(g[s].first, c[s].first, 1e-5 * c[s].first) << "loss at step " << s;
    EXPECT_NEAR(g[s].second, c[s].second, 1e-4 * c[s].second) << "grad norm at step " << s;
  }
  for (size_t k = 0; k < cpu->params().size(); ++k) {
    const Parameter& cp = *cpu->params().all()[k];
    expect_close(gpu->params().all()[k]->value.to_floats(), cp.value.to_floats(), 2e-5f, 1e-4f,
                 1e-5, cp.name);
  }
  const auto cs = cpu_opt.state_tensors(), gs = gpu_opt.state_tensors();
  ASSERT_EQ(cs.size(), gs.size());
  for (size_t k = 0; k < cs.size(); ++k)
    expect_close(gs[k].second.to_floats(), cs[k].second.to_floats(), 2e-5f, 1e-4f, 1e-5,
                 cs[k].first);
}

TEST(BiLMGpu, RunsAreBitIdentical) {
  ELMO_SKIP_WITHOUT_GPU();
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 2; ++run) {
    auto gpu = make_model(kGpu, options(SoftmaxKind::kSampled));
    Optimizer opt(gpu->params(), OptimizerOptions{});
    train(*gpu, opt, 3);
    for (size_t k = 0; k < gpu->params().size(); ++k) {
      const std::vector<float> v = gpu->params().all()[k]->value.to_floats();
      if (run == 0) first.push_back(v);
      else EXPECT_EQ(v, first[k]) << gpu->params().all()[k]->name;
    }
  }
}

TEST(BiLMGpu, EvaluateAndRepresentationsMatchCpu) {
  ELMO_SKIP_WITHOUT_GPU();
  auto cpu = make_model(Device::cpu(), options(SoftmaxKind::kSampled));
  auto gpu = make_model(kGpu, options(SoftmaxKind::kSampled));
  Batches batches(31);
  for (int d = 0; d < 2; ++d)
    for (size_t i = 0; i < batches.targets[d].size(); i += 5) batches.targets[d][i] = kIgnoreTarget;
  LstmState cs[2] = {cpu->zero_state(kRows), cpu->zero_state(kRows)};
  LstmState gs[2] = {gpu->zero_state(kRows), gpu->zero_state(kRows)};
  for (int round = 0; round < 2; ++round) {  // the second round starts from the carried state
    NllSum c[2], g[2];
    for (int d = 0; d < 2; ++d) c[d] = cpu->evaluate(d, batches.batch[d], cs[d]);
    // As evaluate_corpus does: the two directions from two host threads at once.
    run_concurrently(2, [&](int d) { g[d] = gpu->evaluate(d, batches.batch[d], gs[d]); });
    for (int d = 0; d < 2; ++d) {
      EXPECT_EQ(g[d].count, c[d].count);
      EXPECT_NEAR(g[d].nll, c[d].nll, 1e-5 * c[d].nll) << "direction " << d;
      expect_close(gs[d].h.to_floats(), cs[d].h.to_floats(), 2e-5f, 2e-5f, 1e-5, "state h");
    }
  }
  LstmState cr = cpu->zero_state(kRows), gr = gpu->zero_state(kRows);
  const auto c = cpu->representations(1, batches.inputs[1].data(), kRows, kSteps, cr);
  const auto g = gpu->representations(1, batches.inputs[1].data(), kRows, kSteps, gr);
  ASSERT_EQ(g.size(), c.size());
  for (size_t l = 0; l < c.size(); ++l) {
    EXPECT_EQ(g[l].device(), kGpu);
    EXPECT_EQ(g[l].shape(), c[l].shape());
    expect_close(g[l].to_floats(), c[l].to_floats(), 2e-5f, 2e-5f, 1e-5, "layer " + str(l));
  }
}

// Lower GEMM precisions: the same step, looser. TF32 rounds GEMM inputs to 10 mantissa bits
// (~5e-4 relative per product), bf16 to 7 (~4e-3): the loss moves by about that much relative,
// gradients keep their direction (cosine > 0.999 for TF32, > 0.99 for bf16).
void lower_precision_step(GemmPrecision precision, double loss_rtol, double min_cosine) {
  auto exact = make_model(kGpu, options(SoftmaxKind::kSampled));
  auto low = make_model(kGpu, options(SoftmaxKind::kSampled, precision));
  const Batches batches(41);
  LstmState es[2] = {exact->zero_state(kRows), exact->zero_state(kRows)};
  LstmState ls[2] = {low->zero_state(kRows), low->zero_state(kRows)};
  Rng s1(7, kRngSampler), s2(7, kRngSampler);
  const double a = exact->train_step(batches.batch, es, 1, s1).loss;
  const double b = low->train_step(batches.batch, ls, 1, s2).loss;
  EXPECT_NEAR(b, a, loss_rtol * a);
  double dot = 0.0, na = 0.0, nb = 0.0;
  for (size_t k = 0; k < exact->params().size(); ++k) {
    const Parameter& p = *exact->params().all()[k];
    const Parameter& q = *low->params().all()[k];
    const std::vector<float> x = p.row_sparse ? p.sparse_grad.values.to_floats() : p.grad.to_floats();
    const std::vector<float> y = q.row_sparse ? q.sparse_grad.values.to_floats() : q.grad.to_floats();
    ASSERT_EQ(x.size(), y.size()) << p.name;
    for (size_t i = 0; i < x.size(); ++i) {
      dot += double(x[i]) * y[i];
      na += double(x[i]) * x[i];
      nb += double(y[i]) * y[i];
    }
  }
  EXPECT_GT(dot / std::sqrt(na * nb), min_cosine) << gemm_precision_name(precision);
}

TEST(BiLMGpu, Tf32StepIsCloseToFp32) {
  ELMO_SKIP_WITHOUT_GPU();
  lower_precision_step(GemmPrecision::kTf32, 2e-3, 0.999);
}

TEST(BiLMGpu, Bf16StepIsCloseToFp32) {
  ELMO_SKIP_WITHOUT_GPU();
  lower_precision_step(GemmPrecision::kBf16, 2e-2, 0.99);
}

// allennlp's fixture: import the bilm-tf weights, run `embed --stateful --batch-size 3` in
// process on the GPU, compare the top layer with lm_embeddings_{0,1,2}.hdf5.
TEST(BiLMGpu, GoldenAllennlpFixture) {
  ELMO_SKIP_WITHOUT_GPU();
  ELMO_SKIP_WITHOUT_DATA();
  const std::string elmo = testing::data_dir() + "/elmo-fixtures/allennlp/elmo";
  const BilmWeights weights = import_bilm_hdf5(elmo + "/lm_weights.hdf5");
  const Vocab vocab = Vocab::load(elmo + "/vocab_test.txt");
  BilmShape shape;
  shape.vocab = vocab.size();
  shape.embedding_dim = weights.input_dim;
  shape.cell_size = weights.cell_size;
  shape.proj_dim = weights.has_projection ? weights.proj_dim : 0;
  shape.layers = weights.layers;
  shape.cell_clip = 3.0f;  // options.json
  shape.proj_clip = 3.0f;
  shape.skip_connections = true;
  shape.bidirectional = weights.bidirectional;
  BilmTrainOptions o;
  o.samples = std::min<int64_t>(8192, vocab.size() - 1);
  BiLM model(shape, o, kGpu);
  for (const auto& [name, tensor] : weights.tensors)
    if (model.params().has(name)) model.params().get(name).value.copy_from(tensor);
  model.params().get(kEmbeddingWeight).value.copy_from(
      read_hdf5_matrix(elmo + "/elmo_token_embeddings.hdf5", "embedding"));

  const auto sentences = nlohmann::json::parse(read_file(elmo + "/sentences.json"))
                             .get<std::vector<std::vector<std::string>>>();  // [3][10]
  const int64_t H = shape.hidden(), L = shape.layers;
  LstmState carried[2][3];  // per direction, per batch row
  for (auto& direction : carried)
    for (LstmState& s : direction) s = model.zero_state(1);
  std::vector<EmbeddingsHdf5> expected;
  for (int k = 0; k < 3; ++k)
    expected.push_back(read_embeddings_hdf5(elmo + "/lm_embeddings_" + std::to_string(k) + ".hdf5"));
  int64_t compared = 0;
  for (int i = 0; i < 10; ++i) {
    for (int k = 0; k < 3; ++k) {  // batch i holds sentences[0][i], [1][i], [2][i] as rows 0..2
      std::vector<std::string_view> tokens;
      split_tokens(sentences[k][i], &tokens);
      const int64_t n = static_cast<int64_t>(tokens.size());
      std::vector<int32_t> ids = {vocab.bos_id()};
      for (std::string_view t : tokens) ids.push_back(vocab.id(t));
      ids.push_back(vocab.eos_id());
      const std::vector<float> want = expected[k].sentences[i].to_floats();  // [2, n, H]: fwd, bwd
      ASSERT_EQ(static_cast<int64_t>(want.size()), 2 * n * H);
      std::vector<float> top(2 * n * H);
      for (int d = 0; d < 2; ++d) {
        std::vector<int32_t> seq = ids;
        if (d == 1) std::reverse(seq.begin(), seq.end());
        const std::vector<Tensor> reps = model.representations(d, seq.data(), 1, n + 2, carried[d][k]);
        ASSERT_EQ(reps.size(), static_cast<size_t>(L + 1));
        const std::vector<float> layer = reps[L].to_floats();  // [n + 2, 1, H]
        for (int64_t j = 0; j < n; ++j) {
          const int64_t pos = d == 0 ? j + 1 : n - j;
          for (int64_t c = 0; c < H; ++c) top[(d * n + j) * H + c] = layer[pos * H + c];
        }
      }
      // 1e-5: as on the CPU (the fixture's own re-implementations agree to 1e-6).
      EXPECT_TRUE(testing::all_close(top, want, 1e-5f, 0.0f)) << "sentence [" << k << "][" << i << "]";
      compared += 2 * n * H;
    }
  }
  EXPECT_EQ(compared, 744 * 32);
}

}  // namespace
}  // namespace elmo
