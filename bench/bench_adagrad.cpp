// bench_adagrad: row-sparse Adagrad on a CUDA device (kernels/adagrad.h, adagrad_rows_cuda, the
// call model/optimizer.cpp makes for the embedding and softmax tables) against a device-to-device
// cudaMemcpyAsync moving the same number of bytes, measured in the same invocation.
//
// Per case (table [V, dim], n unique touched rows, ascending ids as the optimizer passes them):
//   bytes moved = n*dim*20 + n*4: table and accumulator read and written (16 B per element), the
//   gradient row read (4 B), the id read (4 B per row; once per row, however many threads read it)
//   GB/s = bytes / median time;  copy GB/s = 2 * (bytes / 2) / median time of a cudaMemcpyAsync
//   of bytes / 2 (it reads and writes that many, so it moves the same total);  % of copy.
// Correctness before timing: one update, then every touched row is compared with
// adagrad_rows_cpu on the same initial values (kernels/adagrad.h promises bit-identical results:
// a fixed sequence of correctly rounded f32 operations on both sides, no contraction), so the
// tolerance is zero: #wrong counts elements that are not bitwise equal. 4096 untouched rows
// are checked to be unchanged (a wrong row index shows up there). Exit code 1 when any is wrong.
//
//   ./build/bench/bench_adagrad [--rows 10000,50000,200000] [--reps 20] [--quick]
//                               [--json bench/results/adagrad.json]
//
// Exit codes: gpu_bench.h (77 = no CUDA device, nothing measured).
// What it is not: a benchmark of the dense Adagrad or of the optimizer's host-side work
// (id upload, clipping).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_kernels.h"
#include "bench/gpu_bench.h"
#include "kernels/adagrad.h"
#include "runtime/cuda_check.h"
#include "runtime/cuda_memory.h"
#include "runtime/rng.h"
#include "runtime/stream.h"
#include "runtime/tensor.h"

namespace elmo::bench {
namespace {

constexpr uint64_t kSeedTable = 11, kSeedAcc = 12, kSeedGrad = 13;
constexpr float kLr = 0.2f, kEps = 1e-7f, kGradScale = 0.9f;
constexpr int64_t kUntouchedChecked = 4096;

struct Options : CommonOptions {  // --reps --warmup --quick --json (gpu_bench.h)
  Options() { json = "bench/results/adagrad.json"; }
  int64_t vocab = 793471;
  std::vector<int64_t> dims = {512, 1};  // weight tables (embedding, softmax.weight); softmax.bias
  std::vector<int64_t> rows = {10000, 50000, 200000};
};

float initial_table(int64_t at) { return hash_uniform(kSeedTable, at, -0.1f, 0.1f); }
float initial_acc(int64_t at) { return hash_uniform(kSeedAcc, at, 0.5f, 1.5f); }

// n distinct ids of [0, vocab), ascending; `rest` gets up to `n_rest` ids not among them.
std::vector<int32_t> draw_ids(int64_t vocab, int64_t n, uint64_t seed, int64_t n_rest,
                              std::vector<int32_t>& rest) {
  Rng rng(seed, kRngSynthetic);
  std::vector<uint8_t> taken(static_cast<size_t>(vocab), 0);
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(n));
  while (static_cast<int64_t>(ids.size()) < n) {
    const auto id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
    if (!taken[id]) {
      taken[id] = 1;
      ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  rest.clear();
  for (int64_t id = 0; id < vocab && static_cast<int64_t>(rest.size()) < n_rest;
       id += std::max<int64_t>(1, vocab / n_rest))
    if (!taken[id]) rest.push_back(static_cast<int32_t>(id));
  return ids;
}

struct Row {
  int64_t dim = 0, n = 0, bytes = 0;
  Timing ours, copy;
  int64_t wrong = 0, untouched_wrong = 0;
  double max_abs = 0;
};

// table/acc: [vocab, dim] device arrays, refilled here. copy_src/copy_dst: >= bytes/2 each.
Row run_case(const Options& o, int64_t dim, int64_t n, float* table, float* acc, float* grads,
             void* copy_src, void* copy_dst) {
  const Device gpu = Device::cuda(0);
  const int64_t v = o.vocab;
  fill_hash_uniform_cuda(table, v * dim, kSeedTable, -0.1f, 0.1f);
  fill_hash_uniform_cuda(acc, v * dim, kSeedAcc, 0.5f, 1.5f);
  fill_hash_uniform_cuda(grads, n * dim, kSeedGrad, -0.05f, 0.05f);
  std::vector<int32_t> untouched;
  const std::vector<int32_t> ids =
      draw_ids(v, n, 1000 + static_cast<uint64_t>(n) + static_cast<uint64_t>(dim),
               kUntouchedChecked, untouched);
  Tensor d_ids = Tensor::empty({n}, DType::kI32, gpu);
  Tensor d_untouched = Tensor::empty({static_cast<int64_t>(untouched.size())}, DType::kI32, gpu);
  cuda_copy(d_ids.raw(), gpu, ids.data(), Device::cpu(), sizeof(int32_t) * ids.size());
  cuda_copy(d_untouched.raw(), gpu, untouched.data(), Device::cpu(),
            sizeof(int32_t) * untouched.size());

  // --- check: one update against the CPU reference on the touched rows.
  std::vector<float> p(static_cast<size_t>(n * dim)), a(p.size()), g(p.size());
  std::vector<int32_t> compact(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    compact[k] = static_cast<int32_t>(k);
    for (int64_t c = 0; c < dim; ++c) {
      const int64_t at = static_cast<int64_t>(ids[k]) * dim + c;
      p[k * dim + c] = initial_table(at);
      a[k * dim + c] = initial_acc(at);
      g[k * dim + c] = hash_uniform(kSeedGrad, static_cast<uint64_t>(k * dim + c), -0.05f, 0.05f);
    }
  }
  adagrad_rows(Device::cpu(), p.data(), a.data(), dim, compact.data(), g.data(), n, kLr, kEps,
               kGradScale);
  adagrad_rows(Device::cuda(0), table, acc, dim, d_ids.data<int32_t>(), grads, n, kLr, kEps,
               kGradScale);
  Tensor gathered =
      Tensor::empty({std::max(n, static_cast<int64_t>(untouched.size())) * dim}, DType::kF32, gpu);
  Row row;
  row.dim = dim;
  row.n = n;
  for (int pass = 0; pass < 2; ++pass) {
    gather_rows_cuda(pass == 0 ? table : acc, dim, d_ids.data<int32_t>(), n,
                     gathered.data<float>());
    const std::vector<float> got = download_floats(gathered.data<float>(), n * dim);
    const std::vector<float>& want = pass == 0 ? p : a;
    for (size_t i = 0; i < got.size(); ++i) {
      row.wrong += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
      row.max_abs = std::max(row.max_abs, static_cast<double>(std::fabs(got[i] - want[i])));
    }
  }
  const int64_t nu = static_cast<int64_t>(untouched.size());
  gather_rows_cuda(table, dim, d_untouched.data<int32_t>(), nu, gathered.data<float>());
  const std::vector<float> kept = download_floats(gathered.data<float>(), nu * dim);
  for (int64_t k = 0; k < nu; ++k)
    for (int64_t c = 0; c < dim; ++c)
      row.untouched_wrong +=
          kept[k * dim + c] != initial_table(static_cast<int64_t>(untouched[k]) * dim + c);

  // --- timing: the same update again and again (the values drift; the cost does not).
  const cudaStream_t stream = current_stream();
  row.bytes = n * dim * 20 + n * 4;
  row.ours = time_on_stream(stream, o.warmup, o.reps, [&] {
    adagrad_rows(Device::cuda(0), table, acc, dim, d_ids.data<int32_t>(), grads, n, kLr, kEps,
                 kGradScale);
  });
  const size_t half = static_cast<size_t>(row.bytes / 2);
  row.copy = time_on_stream(stream, o.warmup, o.reps, [&] {
    ELMO_CUDA_CHECK(cudaMemcpyAsync(copy_dst, copy_src, half, cudaMemcpyDeviceToDevice, stream));
  });
  return row;
}

int run(const Options& o) {
  nlohmann::json device;
  if (const int rc = open_device("bench_adagrad", &device)) return rc;
  const Device gpu = Device::cuda(0);
  std::printf("Row-sparse Adagrad (kernels/adagrad adagrad_rows_cuda) vs cudaMemcpyAsync D2D of "
              "the same bytes moved; %s\n", device["name"].get<std::string>().c_str());
  std::printf("%9s %5s %8s %10s %10s %10s %10s %7s %8s %9s\n", "V", "dim", "rows", "bytes",
              "ours ms", "ours GB/s", "copy GB/s", "% copy", "#wrong", "untouched");
  int64_t max_n = 0, max_bytes = 0, max_dim = 0;
  for (int64_t n : o.rows) max_n = std::max(max_n, n);
  for (int64_t d : o.dims) max_dim = std::max(max_dim, d);
  max_bytes = max_n * max_dim * 20 + max_n * 4;
  Tensor table = Tensor::empty({o.vocab * max_dim}, DType::kF32, gpu);
  Tensor acc = Tensor::empty({o.vocab * max_dim}, DType::kF32, gpu);
  Tensor grads = Tensor::empty({max_n * max_dim}, DType::kF32, gpu);
  Tensor copy_src = Tensor::empty({max_bytes / 2 + 1}, DType::kU8, gpu);
  Tensor copy_dst = Tensor::empty({max_bytes / 2 + 1}, DType::kU8, gpu);
  cuda_zero(copy_src.raw(), 0, copy_src.nbytes());

  nlohmann::json cases = nlohmann::json::array();
  int64_t wrong = 0;
  for (int64_t dim : o.dims) {
    for (int64_t n : o.rows) {
      ELMO_REQUIRE(n <= o.vocab, "--rows ", n, " is more than the vocabulary (", o.vocab, ")");
      const Row r = run_case(o, dim, n, table.data<float>(), acc.data<float>(), grads.data<float>(),
                             copy_src.raw(), copy_dst.raw());
      const double gbps = static_cast<double>(r.bytes) / (r.ours.median_ms * 1e-3) / 1e9;
      const double copy_gbps =
          static_cast<double>(r.bytes / 2 * 2) / (r.copy.median_ms * 1e-3) / 1e9;
      std::printf("%9lld %5lld %8lld %8.1fMB %10.4f %10.1f %10.1f %6.1f%% %8lld %9lld\n",
                  static_cast<long long>(o.vocab), static_cast<long long>(dim),
                  static_cast<long long>(n), r.bytes / 1e6, r.ours.median_ms, gbps, copy_gbps,
                  100.0 * gbps / copy_gbps, static_cast<long long>(r.wrong),
                  static_cast<long long>(r.untouched_wrong));
      wrong += r.wrong + r.untouched_wrong;
      cases.push_back({{"vocab", o.vocab},
                       {"dim", dim},
                       {"table", dim == 1 ? "softmax.bias" : "embedding / softmax.weight"},
                       {"rows", n},
                       {"bytes_moved", r.bytes},
                       {"ours_ms", r.ours.median_ms},
                       {"ours_min_ms", r.ours.min_ms},
                       {"ours_max_ms", r.ours.max_ms},
                       {"ours_GBps", gbps},
                       {"copy_ms", r.copy.median_ms},
                       {"copy_GBps", copy_gbps},
                       {"percent_of_copy", 100.0 * gbps / copy_gbps},
                       {"reps", r.ours.reps},
                       {"wrong", r.wrong},
                       {"untouched_wrong", r.untouched_wrong},
                       {"max_abs_diff", r.max_abs}});
    }
  }
  const nlohmann::json out = {
      {"benchmark", "adagrad_rows"},
      {"device", device},
      {"what", "adagrad_rows_cuda vs cudaMemcpyAsync D2D of the same bytes moved"},
      {"bytes_model", "rows*dim*20 (table r/w, accumulator r/w, gradient r) + rows*4 (ids)"},
      {"check", "touched rows bitwise equal to adagrad_rows_cpu; 4096 untouched rows unchanged"},
      {"lr", kLr},
      {"eps", kEps},
      {"grad_scale", kGradScale},
      {"cases", cases}};
  return finish("bench_adagrad", o, out, wrong == 0,
                str(wrong,
                    " values differ from the CPU reference or changed outside the "
                    "touched rows"));
}

}  // namespace
}  // namespace elmo::bench

int main(int argc, char** argv) {
  elmo::bench::Options o;
  CLI::App app{"Row-sparse Adagrad on the GPU vs a device-to-device copy of the same bytes"};
  app.add_option("--vocab", o.vocab, "table rows V")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--dims", o.dims, "row widths to run (512: embedding/softmax.weight, 1: bias)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  app.add_option("--rows", o.rows, "unique touched rows per step, e.g. --rows 10000,50000")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  elmo::bench::add_common_flags(
      app, o, "small shapes (V 50000, dims 64 and 1, rows 1000 and 5000), 3 reps");
  return elmo::bench::bench_main("bench_adagrad", app, o, argc, argv, [&] {
    if (o.quick) {
      o.vocab = 50000;
      o.dims = {64, 1};
      o.rows = {1000, 5000};
    }
    return elmo::bench::run(o);
  });
}
