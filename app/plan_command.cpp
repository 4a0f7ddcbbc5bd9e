// `elmo_fast plan`: what a configuration will cost before it trains. Prepares the data as
// `prepare` does (vocabulary, token cache: reused by the training run), then prints the
// parameter counts per table and layer, the bytes per process on the host and its device
// (app/training_plan.h), what this machine has available, FLOPs per token and, unless
// --no-probe, a short timed probe: a few real training steps of this rank's rows on the chosen
// device, in memory (ids drawn from the log-uniform distribution the sampler uses, so the
// sampled softmax touches a realistic number of rows), giving tokens/s and the run's wall time.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "app/commands.h"
#include "app/data_parallel.h"
#include "app/progress.h"
#include "app/session.h"
#include "app/step_runner.h"
#include "app/training_plan.h"
#include "io/atomic_file.h"
#include "io/batcher.h"
#include "kernels/log_uniform_sampler.h"
#include "model/optimizer.h"
#include "runtime/cuda_memory.h"
#include "runtime/log.h"
#include "runtime/parallel.h"
#include "runtime/rng.h"

namespace elmo {

namespace {

struct ProbeResult {
  int64_t steps = 0;
  double seconds_per_step = 0.0;
  double tokens_per_s = 0.0;  // this process's rows
  int64_t peak_rss = -1;      // of this process after the probe
};

// `steps` timed training steps (after one untimed: allocations) of `rows` x T tokens at the
// config's sizes, on `device`.
ProbeResult probe(const Config& config, int64_t vocab, int64_t rows, Device device, int steps) {
  BiLM model(bilm_shape(config, vocab), bilm_options(config), device);
  model.init(static_cast<uint64_t>(config.run.seed), bilm_init(config));
  Optimizer optimizer(model.params(), optimizer_options(config));
  const int dirs = model.shape().directions();
  LstmState states[2];
  for (int d = 0; d < dirs; ++d) states[d] = model.zero_state(rows);
  const int64_t T = config.train.unroll_steps;
  Rng rng(static_cast<uint64_t>(config.run.seed), kRngSynthetic);
  std::vector<int32_t> ids[2], targets[2];
  const auto draw_batch = [&] {
    for (int d = 0; d < dirs; ++d) {
      ids[d].resize(static_cast<size_t>(rows * (T + 1)));
      for (int32_t& id : ids[d])
        id = static_cast<int32_t>(log_uniform_draw(rng.uniform_double(), vocab));
      targets[d].assign(ids[d].begin() + 1, ids[d].end());
      ids[d].resize(static_cast<size_t>(rows * T));
      targets[d].resize(static_cast<size_t>(rows * T));
    }
  };
  const auto step = [&](int64_t k) {
    draw_batch();
    TokenBatch batches[2];
    for (int d = 0; d < dirs; ++d)
      batches[d] = {rows, T, ids[d].data(), targets[d].data(), config.train.batch_size, 0};
    model.train_step(batches, states, static_cast<uint64_t>(k));
    optimizer.step(0);
  };
  step(0);
  if (device.is_cuda()) cuda_synchronize(device.index);
  const auto start = std::chrono::steady_clock::now();
  for (int k = 1; k <= steps; ++k) step(k);
  if (device.is_cuda()) cuda_synchronize(device.index);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ProbeResult r;
  r.steps = steps;
  r.seconds_per_step = seconds / steps;
  r.tokens_per_s = static_cast<double>(rows * T) / r.seconds_per_step;
  r.peak_rss = process_peak_rss_bytes();
  return r;
}

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

void print_items(const char* title, const std::vector<MemoryItem>& items, int64_t total) {
  std::printf("\n%s\n", title);
  for (const MemoryItem& item : items)
    std::printf("  %-86s %12s\n", item.name.c_str(), format_bytes(item.bytes).c_str());
  std::printf("  %-86s %12s\n", "total", format_bytes(total).c_str());
}

}  // namespace

int plan_command(const PlanArgs& args) {
  const int64_t process_bytes = process_rss_bytes();
  const Config config = load_config(args.config, args.overrides);
  if (args.world_size < 1) throw UsageError("--world-size must be at least 1");
  if (config.train.batch_size < args.world_size)
    throw UsageError(str("train.batch_size = ", config.train.batch_size, " is smaller than ",
                         "--world-size ", args.world_size, ": every rank needs at least one row"));
  TrainArgs train_args;
  train_args.device = args.device;
  LocalStepRunner local;
  const Device device = local.choose_device(config, train_args);
  int threads = static_cast<int>(config.train.threads);
  if (threads == 0)  // as train: this machine's cores shared by the ranks (all on it, here)
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / args.world_size);
  set_num_threads(threads);

  // The data, as `prepare` leaves it (the training run reuses it).
  const DataFiles files = resolve_data_files(config);
  const Vocab vocab = prepare_vocab(config, files, /*rebuild=*/false);
  const TokenCache train = TokenCache::open_or_build(files.train, vocab, cache_dir(config));
  int64_t cache_bytes = 0;
  const auto mapped = [](const TokenCache& cache) {
    const TokenStats s = cache.stats();
    return (s.tokens + s.sentences) * 4 + (s.sentences + cache.num_shards()) * 8;
  };
  cache_bytes += mapped(train);
  if (!files.valid.empty())
    cache_bytes += mapped(TokenCache::open_or_build(files.valid, vocab, cache_dir(config)));
  int64_t token_bytes = 0;
  for (const std::string& t : vocab.tokens()) token_bytes += t.size() > 15 ? t.size() + 1 : 0;

  PlanInputs in;
  in.config = &config;
  in.vocab = vocab.size();
  in.world_size = args.world_size;
  in.hot_rows = args.world_size == 1 ? 0
                : config.dist.hot_rows >= 0
                    ? config.dist.hot_rows
                    : choose_hot_rows(train, vocab.size(), config.dist.hot_coverage);
  in.on_gpu = device.is_cuda();
  in.validation = !files.valid.empty() || !files.test.empty();
  in.train_tokens = train.stats().tokens;
  in.train_sentences = train.stats().sentences;
  in.token_cache_bytes = cache_bytes;
  in.vocab_bytes = vocab_memory_bytes(vocab.size(), token_bytes);
  in.process_bytes = process_bytes;
  const TrainingPlan plan = plan_training(in);

  const HostMemoryAvailable host = host_memory_available();
  size_t device_free = 0, device_total = 0;
  if (device.is_cuda()) cuda_memory_info(device.index, &device_free, &device_total);

  std::printf("plan for %s: %d process(es), %s, %d CPU thread(s) each\n", args.config.c_str(),
              args.world_size, device.str().c_str(), num_threads());
  std::printf("vocabulary %s entries; training corpus %s sentences, %s tokens\n",
              with_commas(vocab.size()).c_str(), with_commas(in.train_sentences).c_str(),
              with_commas(in.train_tokens).c_str());
  std::printf("batch %lld x %lld = %s tokens per step (%lld rows per process); %s steps%s\n",
              static_cast<long long>(config.train.batch_size),
              static_cast<long long>(config.train.unroll_steps),
              with_commas(plan.tokens_per_step).c_str(), static_cast<long long>(plan.rows_per_rank),
              with_commas(plan.steps).c_str(),
              config.train.max_steps > 0 ? " (train.max_steps)"
                                         : str(" (", config.train.epochs, " epochs)").c_str());
  std::printf("\nparameters\n");
  for (const auto& [name, count] : plan.parameter_counts)
    std::printf("  %-40s %16s\n", name.c_str(), with_commas(count).c_str());
  std::printf("  %-40s %16s  (%s as f32)\n", "total", with_commas(plan.parameters).c_str(),
              format_bytes(plan.parameters * 4).c_str());
  print_items("host memory per process", plan.host, plan.host_bytes());
  if (device.is_cuda())
    print_items(str("device memory per process (", device.str(), ")").c_str(), plan.device,
                plan.device_bytes());
  const int64_t host_need = plan.host_bytes(true) * args.world_size;
  const bool host_fits = host.bytes < 0 || host_need <= host.bytes;
  std::printf("\nthis machine: %s available (%s); %s to allocate for %d process(es): %s\n",
              host.bytes < 0 ? "unknown" : format_bytes(host.bytes).c_str(), host.source.c_str(),
              format_bytes(host_need).c_str(), args.world_size,
              host_fits ? "fits" : "does NOT fit");
  bool fits = host_fits;
  if (device.is_cuda()) {
    const bool device_fits = plan.device_bytes() <= static_cast<int64_t>(device_free);
    fits = fits && device_fits;
    std::printf("%s: %s free of %s (cudaMemGetInfo): %s\n", device.str().c_str(),
                format_bytes(static_cast<int64_t>(device_free)).c_str(),
                format_bytes(static_cast<int64_t>(device_total)).c_str(),
                device_fits ? "fits" : "does NOT fit");
  }
  std::printf(
      "\ncompute: %.1f MFLOP per token (3 x the forward GEMMs: LSTM input, recurrent and "
      "projection products, softmax logits); %.2f TFLOP per step\n",
      plan.flops_per_token / 1e6,
      plan.flops_per_token * static_cast<double>(plan.tokens_per_step) / 1e12);

  nlohmann::json j = plan.to_json();
  j["config"] = args.config;
  j["world_size"] = args.world_size;
  j["device"] = device.str();
  j["vocab"] = vocab.size();
  j["available_host_bytes"] = host.bytes;
  j["available_host_source"] = host.source;
  j["fits"] = fits;
  if (device.is_cuda()) j["device_free_bytes"] = static_cast<int64_t>(device_free);
  if (args.no_probe) {
    std::printf("probe: skipped (--no-probe)\n");
  } else if (!fits) {
    std::printf("probe: skipped (the configuration does not fit this machine)\n");
  } else {
    const ProbeResult r = probe(config, vocab.size(), plan.rows_per_rank, device, args.probe_steps);
    const double job_rate = r.tokens_per_s * args.world_size;
    const double total_seconds = static_cast<double>(plan.steps) * r.seconds_per_step;
    std::printf(
        "probe: %lld steps of %lld x %lld on %s after one untimed: %.1f ms per step, "
        "%.0f tokens/s%s\n",
        static_cast<long long>(r.steps), static_cast<long long>(plan.rows_per_rank),
        static_cast<long long>(config.train.unroll_steps), device.str().c_str(),
        1e3 * r.seconds_per_step, r.tokens_per_s,
        args.world_size > 1 ? str(" per process, ", static_cast<int64_t>(job_rate),
                                  " for the job if communication were free")
                                  .c_str()
                            : "");
    if (plan.steps > 0)
      std::printf(
          "estimate: %s steps in %s (training steps only: validations, checkpoints and "
          "start-up come on top)\n",
          with_commas(plan.steps).c_str(), format_duration(total_seconds).c_str());
    j["probe"] = {{"steps", r.steps},
                  {"seconds_per_step", r.seconds_per_step},
                  {"tokens_per_s", r.tokens_per_s},
                  {"job_tokens_per_s", job_rate},
                  {"estimated_train_seconds", total_seconds},
                  {"peak_rss_bytes", r.peak_rss}};
  }
  if (!args.json_out.empty()) write_file_atomic(args.json_out, j.dump(2) + "\n");
  return 0;
}

}  // namespace elmo
