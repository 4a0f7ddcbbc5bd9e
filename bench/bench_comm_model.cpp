// Communication model of one distributed training step (DESIGN.md §6) for a given config on a
// given cluster: counts, for simulated steps of one rank, exactly what the trainer exchanges
// (app/data_parallel.cpp) and turns the bytes into time at a given network speed.
//
//   ./build/bench/bench_comm_model [--nodes 8] [--gpus_per_node 8] [--rows 128] [--unroll 20]
//       [--vocab 793471] [--samples 8192] [--dim 512] [--cell 4096] [--layers 2]
//       [--zipf 1.0] [--steps 20] [--hot_rows -1,0,16384,65536] [--json out.json]
//
// Per step and rank, measured on simulated batches (word ids ~ Zipf(s) over the vocabulary, as
// word frequencies roughly are; the sampler is the trainer's log-uniform unique sampler):
//   embedding tail rows  = unique input ids >= hot_rows of the rank's rows x unroll x 2 dirs
//   softmax tail rows    = unique (targets of both directions + the shared samples) >= hot_rows
// Bytes (wire format of comm/sparse_exchange: 4 * dim + 4 per row and table):
//   fetch  = remote share (N-1)/N of the tail rows, embedding (dim E) + softmax weight (dim P) +
//            bias (dim 1); the gradient push sends the same rows back to their owners
//   dense  = LSTM parameters + the hot rows of the three tables, fp32, summed with a ring
//            all-reduce: every rank sends and receives 2 (N-1)/N of it
// Time on the network: inter-node links are the bottleneck (NVLink inside a node is not
// modelled); each node has one NIC of the given speed shared by its GPUs. The dense all-reduce
// is hierarchical (reduce inside the node, ring over nodes: 2 (n-1)/n of the bucket per node);
// a rank's sparse traffic leaves the node for the (N - G)/N share of rows owned elsewhere.
// Memory per rank (app/training_plan.h table_bytes_per_rank, the trainer's own formula): the
// embedding and softmax tables with their Adagrad accumulators as a rank stores them (hot head,
// its share of the tail, a step cache of the rows one step can fetch), against one full copy
// (what every rank held before the tables were sharded).
// What it is not: a transport benchmark (bench_sparse_exchange, bench_allreduce measure those
// on loopback, beside ucx_perftest).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "app/training_plan.h"
#include "comm/sparse_exchange.h"
#include "kernels/log_uniform_sampler.h"
#include "runtime/rng.h"

namespace {

struct Options {
  int nodes = 8, gpus_per_node = 8;
  int64_t rows = 128, unroll = 20, vocab = 793471, samples = 8192, dim = 512, cell = 4096;
  int64_t layers = 2, steps = 20;
  double zipf = 1.0;
  std::vector<int64_t> hot_rows = {-1, 0, 16384, 65536};
  std::string json;
};

// Inverse-CDF sampler of Zipf(s) over ids 0..V-1 (id 0 the most frequent).
class Zipf {
 public:
  Zipf(int64_t vocab, double s) : cdf_(static_cast<size_t>(vocab)) {
    double sum = 0.0;
    for (int64_t k = 0; k < vocab; ++k) cdf_[k] = (sum += std::pow(static_cast<double>(k + 1), -s));
    for (double& c : cdf_) c /= sum;
  }
  int32_t draw(elmo::Rng& rng) const {
    const double u = rng.uniform_double();
    return static_cast<int32_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
  }
  // Probability of ids below `prefix`.
  double coverage(int64_t prefix) const {
    return prefix <= 0 ? 0.0 : cdf_[std::min<size_t>(prefix, cdf_.size()) - 1];
  }
  // Smallest prefix whose probability reaches `coverage`.
  int64_t prefix_covering(double coverage) const {
    return std::lower_bound(cdf_.begin(), cdf_.end(), coverage) - cdf_.begin() + 1;
  }

 private:
  std::vector<double> cdf_;
};

struct StepCounts {
  double embedding_tail = 0, softmax_tail = 0;  // unique tail rows per rank and step (mean)
  // Rows served + received by the busiest owner per step, over the mean owner (1 = balanced),
  // for contiguous id ranges per owner (the first layout, kept for comparison) and for ids
  // dealt out round-robin (comm/sparse_exchange's tail_owner, what training does).
  double imbalance_ranges = 0, imbalance_strided = 0;
};

// Simulates `o.steps` steps of all N ranks (each its own word stream, shared samples).
StepCounts count_rows(const Options& o, const Zipf& zipf, int64_t hot) {
  const int N = o.nodes * o.gpus_per_node;
  elmo::Rng sampler(12, elmo::kRngSampler);
  std::vector<elmo::Rng> words;
  for (int r = 0; r < N; ++r) words.emplace_back(11 + r, elmo::kRngSynthetic);
  std::vector<uint8_t> seen_e(static_cast<size_t>(o.vocab)), seen_s(static_cast<size_t>(o.vocab));
  std::vector<uint8_t> scratch;
  elmo::SampleSet samples;
  StepCounts c;
  const int64_t tail = o.vocab - hot;
  auto range_owner = [&](int64_t id) {  // rank_rows: even contiguous split of [hot, V)
    const int64_t base = tail / N, extra = tail % N, i = id - hot;
    const int64_t cut = extra * (base + 1);
    return static_cast<int>(i < cut ? i / (base + 1) : extra + (i - cut) / std::max<int64_t>(1, base));
  };
  for (int64_t step = 0; step < o.steps; ++step) {
    elmo::sample_log_uniform_unique(o.vocab, o.samples, sampler, samples, scratch);
    std::vector<double> load_ranges(N, 0.0), load_strided(N, 0.0);
    for (int r = 0; r < N; ++r) {
      std::vector<int32_t> touched_e, touched_s;
      auto add = [&](std::vector<uint8_t>& seen, std::vector<int32_t>& touched, int32_t id) {
        if (id >= hot && !seen[id]) seen[id] = 1, touched.push_back(id);
      };
      // Forward inputs and targets are one stream shifted by one; the backward direction reads
      // the same words mirrored: the step's distinct words are those of rows x (unroll + 1).
      for (int64_t i = 0; i < o.rows * (o.unroll + 1); ++i) {
        const int32_t id = zipf.draw(words[r]);
        add(seen_e, touched_e, id);
        add(seen_s, touched_s, id);
      }
      for (const int32_t id : samples.ids) add(seen_s, touched_s, id);
      c.embedding_tail += static_cast<double>(touched_e.size()) / (o.steps * N);
      c.softmax_tail += static_cast<double>(touched_s.size()) / (o.steps * N);
      // Each remote row is served (fetch) and received (gradient) by its owner.
      for (const int32_t id : touched_e) {
        seen_e[id] = 0;
        if (range_owner(id) != r) load_ranges[range_owner(id)] += 1;
        if (const int owner = elmo::tail_owner(o.vocab, hot, N, id); owner != r)
          load_strided[owner] += 1;
      }
      for (const int32_t id : touched_s) {
        seen_s[id] = 0;
        if (range_owner(id) != r) load_ranges[range_owner(id)] += 1;
        if (const int owner = elmo::tail_owner(o.vocab, hot, N, id); owner != r)
          load_strided[owner] += 1;
      }
    }
    const auto ratio = [&](const std::vector<double>& load) {
      double sum = 0, max = 0;
      for (double l : load) sum += l, max = std::max(max, l);
      return sum > 0 ? max / (sum / N) : 1.0;
    };
    c.imbalance_ranges += ratio(load_ranges) / o.steps;
    c.imbalance_strided += ratio(load_strided) / o.steps;
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Per-step communication model of distributed elmo_fast training"};
  app.add_option("--nodes", o.nodes);
  app.add_option("--gpus_per_node", o.gpus_per_node);
  app.add_option("--rows", o.rows, "batch rows per rank");
  app.add_option("--unroll", o.unroll);
  app.add_option("--vocab", o.vocab);
  app.add_option("--samples", o.samples);
  app.add_option("--dim", o.dim, "embedding = projection width");
  app.add_option("--cell", o.cell);
  app.add_option("--layers", o.layers);
  app.add_option("--zipf", o.zipf, "Zipf exponent of word frequencies");
  app.add_option("--steps", o.steps, "simulated steps to average over");
  app.add_option("--hot_rows", o.hot_rows, "hot head sizes (-1 = 90% token coverage)")
      ->delimiter(',');
  app.add_option("--json", o.json);
  CLI11_PARSE(app, argc, argv);

  const Zipf zipf(o.vocab, o.zipf);
  const int N = o.nodes * o.gpus_per_node, G = o.gpus_per_node, n = o.nodes;
  const double row_bytes_e = 4.0 * o.dim + 4, row_bytes_s = (4.0 * o.dim + 4) + (4.0 + 4);
  // LSTMP per direction and layer: W_ih [4C, in], W_hh [4C, P], bias [4C], W_hr [P, C].
  const double lstm_floats =
      2.0 * o.layers * (4.0 * o.cell * o.dim * 2 + 4.0 * o.cell + 1.0 * o.dim * o.cell);
  std::printf("config: %d nodes x %d GPUs, %lld rows x %lld steps per rank, V %lld, S %lld, "
              "E = P %lld, C %lld, %lld layers, Zipf %.2f; LSTM %.1fM floats\n",
              o.nodes, o.gpus_per_node, (long long)o.rows, (long long)o.unroll,
              (long long)o.vocab, (long long)o.samples, (long long)o.dim, (long long)o.cell,
              (long long)o.layers, o.zipf, lstm_floats / 1e6);
  // Tables (values + Adagrad) of one process holding every row.
  const double whole_gb =
      (elmo::table_bytes_per_rank(o.vocab, o.dim, 1, 0, true) +
       elmo::table_bytes_per_rank(o.vocab, o.dim + 1, 1, 0, true)) / 1e9;
  std::printf("tables (embedding + softmax, values + Adagrad): %.2f GB for every row\n", whole_gb);
  std::printf("%9s %8s | %9s %9s | %9s %9s %9s | %13s | %22s | %22s | %s\n", "hot_rows", "covers",
              "emb rows", "smx rows", "fetch MB", "push MB", "dense MB", "owner max/avg",
              "100 Gb/s: d+p | fetch ms", "400 Gb/s: d+p | fetch ms", "tables GB/rank");
  nlohmann::json out = nlohmann::json::array();
  for (int64_t hot_arg : o.hot_rows) {
    const int64_t hot = hot_arg < 0 ? zipf.prefix_covering(0.9) : hot_arg;
    const StepCounts c = count_rows(o, zipf, hot);
    const double remote = (N - 1.0) / N, off_node = (N - G) / static_cast<double>(N);
    const double rank_fetch = remote * (c.embedding_tail * row_bytes_e + c.softmax_tail * row_bytes_s);
    const double rank_push = rank_fetch;  // one gradient row back per fetched row
    const double dense_bytes = 4.0 * (lstm_floats + hot * (2.0 * o.dim + 1));
    // Per node through its NIC: the ring over nodes, and the off-node share of its ranks' rows,
    // scaled by the owners' imbalance (the busiest owner serves max/avg times the mean; a
    // per-rank ratio, so an upper bound for a node of G ranks).
    const double node_dense = 2.0 * (n - 1) / n * dense_bytes;
    const double node_fetch = G * rank_fetch * off_node / remote * c.imbalance_strided;
    const double node_push = node_fetch;
    // This rank's tables: the embedding cache holds its tokens of both directions, the
    // softmax cache their targets and the samples (app/step_runner.cpp table_layouts).
    const int64_t tokens = o.rows * o.unroll * 2;
    const double table_gb =
        (elmo::table_bytes_per_rank(o.vocab, o.dim, N, hot, true, tokens) +
         elmo::table_bytes_per_rank(o.vocab, o.dim + 1, N, hot, true, tokens + o.samples)) / 1e9;
    nlohmann::json row = {{"hot_rows", hot},
                          {"table_bytes_per_rank", table_gb * 1e9},
                          {"table_bytes_every_row", whole_gb * 1e9},
                          {"embedding_tail_rows_per_rank", c.embedding_tail},
                          {"softmax_tail_rows_per_rank", c.softmax_tail},
                          {"fetch_bytes_per_rank", rank_fetch},
                          {"push_bytes_per_rank", rank_push},
                          {"dense_bytes", dense_bytes},
                          {"owner_imbalance_ranges", c.imbalance_ranges},
                          {"owner_imbalance_strided", c.imbalance_strided}};
    double ms[2][2];
    const double gbps[2] = {100.0, 400.0};
    for (int b = 0; b < 2; ++b) {
      const double bytes_per_s = gbps[b] * 1e9 / 8.0;
      // The dense all-reduce runs concurrently with the gradient push on the same NIC: their
      // bytes add up. The fetch of the next step overlaps this step's compute.
      ms[b][0] = 1e3 * (node_dense + node_push) / bytes_per_s;
      ms[b][1] = 1e3 * node_fetch / bytes_per_s;
      row[b == 0 ? "ms_100g" : "ms_400g"] = {{"dense_plus_push", ms[b][0]}, {"fetch", ms[b][1]}};
    }
    std::printf("%9lld %7.1f%% | %9.0f %9.0f | %9.1f %9.1f %9.1f | %5.2f / %5.2f | %10.1f | %9.1f | "
                "%10.1f | %9.1f | %.2f\n",
                (long long)hot, 100.0 * zipf.coverage(hot), c.embedding_tail, c.softmax_tail,
                rank_fetch / 1e6, rank_push / 1e6, dense_bytes / 1e6, c.imbalance_ranges,
                c.imbalance_strided, ms[0][0], ms[0][1], ms[1][0], ms[1][1], table_gb);
    out.push_back(row);
  }
  if (!o.json.empty()) std::ofstream(o.json) << out.dump(2) << "\n";
  return 0;
}
