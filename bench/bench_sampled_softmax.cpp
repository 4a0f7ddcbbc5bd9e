// bench_sampled_softmax: the trainer's sampled softmax on a CUDA device (model/sampled_softmax.h
// with kernels/sampled_softmax.*) against a plain reference in the same invocation
// (sampled_softmax_reference.h: gathers, cuBLAS GEMMs, a straightforward softmax/cross-entropy
// kernel and atomic scatters), forward + backward of one direction's N = B*T rows.
//
// Per case (V, P, S, N, precision):
//   ours  = forward_backward_deferred + finish_step (the device work of one direction's step;
//           begin_step - the host sampler, the touched-row plan and its upload - runs before
//           the timed interval, its host time is reported separately as "begin ms")
//   ref   = the reference's run() on the same samples, targets, h, weight and bias
//   FLOPs = 6*N*S*P (logits, dh and dW_s GEMMs); TFLOP/s = FLOPs / median time of each
// Correctness before timing: the mean loss, dh [N, P] and the gradient rows of the touched ids
// U (weight [|U|, P], bias [|U|]) of ours against the reference's; U itself must be identical.
// Tolerances are on max|ours - ref| / max|ref| per output (bench/gpu_bench.h), see kTolerance.
// Exit code 1 when any output is off.
//
//   ./build/bench/bench_sampled_softmax [--rows 2560,5120] [--precisions fp32,tf32,bf16]
//                                       [--reps 20] [--quick] [--json PATH]
//
// Exit codes: gpu_bench.h (77 = no CUDA device, nothing measured).
// What it is not: a benchmark of the sampler (host) or of the full softmax used in evaluation.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_kernels.h"
#include "bench/gpu_bench.h"
#include "bench/sampled_softmax_reference.h"
#include "model/parameters.h"
#include "model/sampled_softmax.h"
#include "runtime/cuda_memory.h"
#include "runtime/gemm.h"
#include "runtime/rng.h"
#include "runtime/stream.h"

namespace elmo::bench {
namespace {

constexpr uint64_t kSeedWeight = 21, kSeedBias = 22, kSeedH = 23, kSeedTargets = 24;
constexpr uint64_t kSeedSampler = 25;

// Tolerance on max|ours - ref| / max|ref| of each output, by precision.
//   fp32: both sides run f32 GEMMs (K = P = 512 for logits, S = 8192 for dh, N <= 5120 for dW)
//     and f32 row sums in different orders; rounding differences are ~sqrt(K) * 2^-24 relative
//     to the largest terms, a few 1e-6 at most, and the softmax is well conditioned (inputs of
//     order 1). 1e-4 leaves a wide margin while a wrong mask, correction, scale or row index
//     moves an output by O(1) of its maximum.
//   tf32 / bf16: both sides round the same GEMM operands the same way (TF32 in cuBLAS; bf16 by a
//     round-to-nearest-even conversion), so the remaining differences are accumulation order
//     inside the tensor-core GEMMs plus the f32 parts, amplified through the softmax: logits
//     carry errors of ~2^-11 (tf32) / 2^-8 (bf16) of |h||w| only where the two sides' GEMM
//     kernels split K differently. 5e-3 (tf32) and 2e-2 (bf16) are ~10x the unit roundoff;
//     a real bug is still O(1).
double tolerance_for(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::kFp32: return 1e-4;
    case GemmPrecision::kTf32: return 5e-3;
    case GemmPrecision::kBf16: return 2e-2;
  }
  return 0;
}

struct Options : CommonOptions {  // --reps --warmup --quick --json (gpu_bench.h)
  Options() { json = "bench/results/sampled_softmax.json"; }
  int64_t vocab = 793471;
  int64_t dim = 512;
  int64_t samples = 8192;
  std::vector<int64_t> rows = {2560, 5120};
  std::vector<std::string> precisions = {"fp32", "tf32", "bf16"};
  int unroll = 20;  // T, for the trainer's grad_scale 0.5 * T / N
};

// Targets drawn log-uniform over the vocabulary (ids are frequency ranks, so this is the
// Zipf-like mix of frequent and rare words a real batch has, with repeats).
std::vector<int32_t> draw_targets(int64_t vocab, int64_t n) {
  Rng rng(kSeedTargets, kRngSynthetic);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& id : t) {
    const double value = std::exp(rng.uniform_double() * std::log(static_cast<double>(vocab) + 1));
    id = static_cast<int32_t>(std::clamp<int64_t>(static_cast<int64_t>(value) - 1, 0, vocab - 1));
  }
  return t;
}

// log E(k) = log(-expm1(tries * log1p(-P(k)))), P(k) = (ln(k+2) - ln(k+1)) / ln(V+1); written
// here again (not taken from kernels/) so the reference does not share the formula's code.
float log_expected(int64_t id, int64_t tries, int64_t vocab) {
  const double p = (std::log(id + 2.0) - std::log(id + 1.0)) / std::log(vocab + 1.0);
  return static_cast<float>(std::log(-std::expm1(static_cast<double>(tries) * std::log1p(-p))));
}

Tensor upload_i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kI32, Device::cuda(0));
  cuda_copy(t.raw(), t.device(), v.data(), Device::cpu(), sizeof(int32_t) * v.size());
  return t;
}
Tensor upload_f32(const std::vector<float>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kF32, Device::cuda(0));
  cuda_copy(t.raw(), t.device(), v.data(), Device::cpu(), sizeof(float) * v.size());
  return t;
}

struct CaseResult {
  nlohmann::json json;
  bool ok = true;
};

CaseResult run_case(const Options& o, int64_t n, GemmPrecision precision, Parameter& weight,
                    Parameter& bias) {
  const Device gpu = Device::cuda(0);
  const int64_t v = o.vocab, d = o.dim, s = o.samples;
  const float scale = 0.5f * static_cast<float>(o.unroll) / static_cast<float>(n);
  GemmPrecisionGuard guard(precision);  // ours: the thread's GEMM precision

  Tensor h = Tensor::empty({n, d}, DType::kF32, gpu);
  fill_hash_uniform_cuda(h.data<float>(), n * d, kSeedH, -1.0f, 1.0f);
  const std::vector<int32_t> targets = draw_targets(v, n);
  const Tensor d_targets = upload_i32(targets);
  Tensor dh = Tensor::zeros({n, d}, DType::kF32, gpu);
  SampledSoftmax layer(v, d, s, gpu);
  const float* w = weight.value.data<float>();
  const float* b = bias.value.data<float>();
  auto begin = [&] {
    Rng sampler(kSeedSampler, kRngSampler);  // the same samples every repetition
    layer.begin_step(sampler, {{targets.data(), n}});
  };
  auto ours = [&] {
    layer.forward_backward_deferred(w, b, h.data<float>(), d_targets.data<int32_t>(), n, scale,
                                    dh.data<float>());
    layer.finish_step(weight, bias);
  };

  // --- ours, once, for the check.
  begin();
  ours();
  const double ours_loss = layer.loss_sums().at(0) / static_cast<double>(n);
  const std::vector<float> ours_dh = download_floats(dh.data<float>(), n * d);
  const std::vector<int32_t> touched = layer.touched_ids();
  const int64_t u = static_cast<int64_t>(touched.size());
  const std::vector<float> ours_gw = download_floats(weight.sparse_grad.values.data<float>(), u * d);
  const std::vector<float> ours_gb = download_floats(bias.sparse_grad.values.data<float>(), u);

  // --- the reference's inputs: same samples, its own U, slots and log expected counts.
  const SampleSet& sample_set = layer.samples();
  std::vector<int32_t> u_ref(sample_set.ids.begin(), sample_set.ids.end());
  u_ref.insert(u_ref.end(), targets.begin(), targets.end());
  std::sort(u_ref.begin(), u_ref.end());
  u_ref.erase(std::unique(u_ref.begin(), u_ref.end()), u_ref.end());
  ELMO_CHECK(u_ref == touched, "the layer's touched ids (", u, ") are not sorted unique(samples ",
             "+ targets) (", u_ref.size(), ")");
  auto slot_of = [&](int32_t id) {
    return static_cast<int32_t>(std::lower_bound(u_ref.begin(), u_ref.end(), id) - u_ref.begin());
  };
  std::vector<int32_t> sample_slot(static_cast<size_t>(s)), target_slot(static_cast<size_t>(n));
  std::vector<float> sample_le(static_cast<size_t>(s)), target_le(static_cast<size_t>(n));
  for (int64_t j = 0; j < s; ++j) {
    sample_slot[j] = slot_of(sample_set.ids[j]);
    sample_le[j] = log_expected(sample_set.ids[j], sample_set.tries, v);
  }
  for (int64_t r = 0; r < n; ++r) {
    target_slot[r] = slot_of(targets[r]);
    target_le[r] = log_expected(targets[r], sample_set.tries, v);
  }
  const Tensor d_samples = upload_i32(sample_set.ids), d_sample_slot = upload_i32(sample_slot);
  const Tensor d_target_slot = upload_i32(target_slot);
  const Tensor d_sample_le = upload_f32(sample_le), d_target_le = upload_f32(target_le);
  SampledSoftmaxProblem problem;
  problem.vocab = v;
  problem.dim = d;
  problem.samples = s;
  problem.rows = n;
  problem.touched = u;
  problem.weight = w;
  problem.bias = b;
  problem.h = h.data<float>();
  problem.targets = d_targets.data<int32_t>();
  problem.sample_ids = d_samples.data<int32_t>();
  problem.sample_log_expected = d_sample_le.data<float>();
  problem.target_log_expected = d_target_le.data<float>();
  problem.sample_slot = d_sample_slot.data<int32_t>();
  problem.target_slot = d_target_slot.data<int32_t>();
  problem.grad_scale = scale;
  SampledSoftmaxReference reference(problem, precision);
  reference.run();
  const std::vector<float> ref_loss_rows = download_floats(reference.loss(), n);
  double ref_loss = 0;
  for (float l : ref_loss_rows) ref_loss += l;
  ref_loss /= static_cast<double>(n);
  const std::vector<float> ref_dh = download_floats(reference.dh(), n * d);
  const std::vector<float> ref_gw = download_floats(reference.grad_w(), u * d);
  const std::vector<float> ref_gb = download_floats(reference.grad_b(), u);

  const double tol = tolerance_for(precision);
  const std::vector<float> ours_l{static_cast<float>(ours_loss)}, ref_l{static_cast<float>(ref_loss)};
  const Diff diffs[] = {compare_outputs("loss", ours_l, ref_l, tol),
                        compare_outputs("dh", ours_dh, ref_dh, tol),
                        compare_outputs("dW[U]", ours_gw, ref_gw, tol),
                        compare_outputs("db[U]", ours_gb, ref_gb, tol)};
  const std::vector<float>* sides[][2] = {
      {&ours_l, &ref_l}, {&ours_dh, &ref_dh}, {&ours_gw, &ref_gw}, {&ours_gb, &ref_gb}};
  CaseResult result;
  nlohmann::json checks = nlohmann::json::array();
  for (size_t i = 0; i < 4; ++i) {
    std::printf("    check %s\n", diff_line(diffs[i], *sides[i][0], *sides[i][1]).c_str());
    result.ok &= diffs[i].ok();
    checks.push_back(diff_json(diffs[i]));
  }

  // --- timing.
  std::vector<double> begin_ms;
  const cudaStream_t stream = current_stream();
  const Timing t_ours = time_on_stream(stream, o.warmup, o.reps, ours, [&] {
    const auto start = std::chrono::steady_clock::now();
    begin();
    begin_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  });
  const Timing t_ref = time_on_stream(stream, o.warmup, o.reps, [&] { reference.run(); });
  std::sort(begin_ms.begin(), begin_ms.end());
  const double flops = 6.0 * static_cast<double>(n) * s * d;
  const double tf_ours = flops / (t_ours.median_ms * 1e-3) / 1e12;
  const double tf_ref = flops / (t_ref.median_ms * 1e-3) / 1e12;
  std::printf("%8lld %5lld %6lld %6lld %5s %9.3f %9.3f %7.3f %8.1f %8.1f %8.2f %6s\n",
              static_cast<long long>(v), static_cast<long long>(d), static_cast<long long>(s),
              static_cast<long long>(n), gemm_precision_name(precision), t_ours.median_ms,
              t_ref.median_ms, t_ours.median_ms / t_ref.median_ms, tf_ours, tf_ref,
              begin_ms[begin_ms.size() / 2], result.ok ? "ok" : "WRONG");
  result.json = {{"vocab", v},
                 {"dim", d},
                 {"samples", s},
                 {"rows", n},
                 {"touched_rows", u},
                 {"tries", sample_set.tries},
                 {"precision", gemm_precision_name(precision)},
                 {"grad_scale", scale},
                 {"ours_ms", t_ours.median_ms},
                 {"ours_min_ms", t_ours.min_ms},
                 {"ours_max_ms", t_ours.max_ms},
                 {"ref_ms", t_ref.median_ms},
                 {"ref_min_ms", t_ref.min_ms},
                 {"ref_max_ms", t_ref.max_ms},
                 {"ratio_ours_over_ref", t_ours.median_ms / t_ref.median_ms},
                 {"flops", flops},
                 {"ours_TFLOPs", tf_ours},
                 {"ref_TFLOPs", tf_ref},
                 {"begin_step_host_ms_median", begin_ms[begin_ms.size() / 2]},
                 {"reps", o.reps},
                 {"loss_ours", ours_loss},
                 {"loss_ref", ref_loss},
                 {"checks", checks},
                 {"ok", result.ok}};
  return result;
}

int run(const Options& o) {
  std::vector<GemmPrecision> precisions;  // flags first: a bad one is an error even without a GPU
  for (const std::string& p : o.precisions) precisions.push_back(parse_gemm_precision(p));
  nlohmann::json device;
  if (const int rc = open_device("bench_sampled_softmax", &device)) return rc;
  const Device gpu = Device::cuda(0);
  std::printf("Sampled softmax fwd+bwd, one direction: ours (model/sampled_softmax) vs plain "
              "reference (gather + cuBLAS + softmax kernel + scatter); %s\n",
              device["name"].get<std::string>().c_str());
  std::printf("%8s %5s %6s %6s %5s %9s %9s %7s %8s %8s %8s %6s\n", "V", "P", "S", "N", "prec",
              "ours ms", "ref ms", "ours/ref", "ours TF/s", "ref TF/s", "begin ms", "check");
  // Shared tables: softmax weight [V, P] and bias [V] (values do not change: nothing is updated).
  Parameter weight, bias;
  weight.name = "softmax.weight";
  weight.value = Tensor::empty({o.vocab, o.dim}, DType::kF32, gpu);
  bias.name = "softmax.bias";
  bias.value = Tensor::empty({o.vocab}, DType::kF32, gpu);
  weight.row_sparse = bias.row_sparse = true;
  fill_hash_uniform_cuda(weight.value.data<float>(), o.vocab * o.dim, kSeedWeight, -0.05f, 0.05f);
  fill_hash_uniform_cuda(bias.value.data<float>(), o.vocab, kSeedBias, -0.5f, 0.5f);

  nlohmann::json cases = nlohmann::json::array();
  bool ok = true;
  for (int64_t n : o.rows)
    for (GemmPrecision p : precisions) {
      CaseResult r = run_case(o, n, p, weight, bias);
      ok &= r.ok;
      cases.push_back(std::move(r.json));
    }
  const nlohmann::json out = {
      {"benchmark", "sampled_softmax"},
      {"device", device},
      {"ours",
       "model/sampled_softmax: forward_backward_deferred + finish_step (begin_step untimed)"},
      {"reference",
       "bench/sampled_softmax_reference: gather, cuBLAS GEMMs, softmax kernel, "
       "atomic scatter into the touched rows"},
      {"flop_model", "6*N*S*P"},
      {"cases", cases}};
  return finish("bench_sampled_softmax", o, out, ok,
                "an output differs from the reference beyond its tolerance (see the check lines)");
}

}  // namespace
}  // namespace elmo::bench

int main(int argc, char** argv) {
  elmo::bench::Options o;
  CLI::App app{"Sampled softmax forward+backward on the GPU vs a plain cuBLAS reference"};
  app.add_option("--vocab", o.vocab, "V")->check(CLI::Range(int64_t{2}, int64_t{2147483647}));
  app.add_option("--dim", o.dim, "P")->check(CLI::Range(int64_t{1}, int64_t{65536}));
  app.add_option("--samples", o.samples, "S")->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--rows", o.rows, "N = B*T rows of one direction, e.g. --rows 2560,5120")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--precisions", o.precisions, "GEMM precisions: fp32, tf32, bf16")
      ->delimiter(',');
  app.add_option("--unroll", o.unroll, "T in the trainer's grad_scale 0.5*T/N")
      ->check(CLI::Range(1, 100000));
  elmo::bench::add_common_flags(app, o,
                                "small shapes (V 20000, P 64, S 512, N 256 and 512), 3 reps");
  return elmo::bench::bench_main("bench_sampled_softmax", app, o, argc, argv, [&] {
    if (o.quick) {
      o.vocab = 20000;
      o.dim = 64;
      o.samples = 512;
      o.rows = {256, 512};
    }
    if (o.samples >= o.vocab)
      throw elmo::UsageError(elmo::str("--samples ", o.samples, " must be below --vocab ", o.vocab));
    return elmo::bench::run(o);
  });
}
