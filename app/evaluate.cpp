#include "app/evaluate.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "kernels/full_softmax.h"
#include "runtime/parallel.h"

namespace elmo {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double perplexity_of(double nll, int64_t count) { return count ? std::exp(nll / count) : kNaN; }

std::string fixed(double value, int decimals) {  // "-": an empty slice
  if (std::isnan(value)) return "-";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[48];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

std::string pad(const std::string& text, size_t width, bool right) {
  if (text.size() >= width) return text;
  const std::string fill(width - text.size(), ' ');
  return right ? fill + text : text + fill;
}

}  // namespace

double EvalResult::perplexity(int d) const {
  return direction[d].count ? std::exp(direction[d].nll / direction[d].count) : 0.0;
}

double EvalResult::mean_perplexity() const {
  double nll = 0.0;
  int64_t count = 0;
  for (int d = 0; d < directions; ++d) {
    nll += direction[d].nll;
    count += direction[d].count;
  }
  return count ? std::exp(nll / count) : 0.0;
}

double EvalResult::slice_perplexity(int slice, int d) const {
  if (d >= 0) return perplexity_of(slices[d].slice[slice].nll, slices[d].slice[slice].count);
  double nll = 0.0;
  int64_t count = 0;
  for (int e = 0; e < directions; ++e) {
    nll += slices[e].slice[slice].nll;
    count += slices[e].slice[slice].count;
  }
  return perplexity_of(nll, count);
}

double EvalResult::slice_share(int slice) const {
  int64_t in_slice = 0, all = 0;
  for (int d = 0; d < directions; ++d) {
    in_slice += slices[d].slice[slice].count;
    all += direction[d].count;
  }
  return all ? static_cast<double>(in_slice) / static_cast<double>(all) : 0.0;
}

nlohmann::json EvalResult::to_json() const {
  const auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nullptr; };
  nlohmann::json j;
  j["ppl_fwd"] = perplexity(0);
  if (directions == 2) j["ppl_bwd"] = perplexity(1);
  j["ppl"] = mean_perplexity();
  j["tokens"] = direction[0].count;
  j["nll_fwd"] = direction[0].nll;  // the sums the perplexities come from
  if (directions == 2) j["nll_bwd"] = direction[1].nll;
  nlohmann::json slices_json = nlohmann::json::object();
  for (int s = 0; s < kEvalSlices; ++s) {
    nlohmann::json& o = slices_json[slice_name(s)];
    o["ids"] = bounds.ids(s);
    o["share"] = slice_share(s);
    o["ppl"] = number(slice_perplexity(s));
    o["ppl_fwd"] = number(slice_perplexity(s, 0));
    o["tokens_fwd"] = slices[0].slice[s].count;
    if (directions == 2) {
      o["ppl_bwd"] = number(slice_perplexity(s, 1));
      o["tokens_bwd"] = slices[1].slice[s].count;
    }
  }
  j["slices"] = slices_json;
  return j;
}

std::string describe(const EvalResult& result) {
  char line[160];
  if (result.directions == 2)
    std::snprintf(line, sizeof line, "fwd %.2f  bwd %.2f  mean %.2f (%lld tokens per direction)",
                  result.perplexity(0), result.perplexity(1), result.mean_perplexity(),
                  static_cast<long long>(result.direction[0].count));
  else
    std::snprintf(line, sizeof line, "fwd %.2f (%lld tokens)", result.perplexity(0),
                  static_cast<long long>(result.direction[0].count));
  return line;
}

std::vector<std::string> slice_table(const EvalResult& result) {
  const bool both = result.directions == 2;
  const auto row = [&](const std::string& name, const std::string& ids, const std::string& share,
                       const std::string& fwd, const std::string& bwd, const std::string& mean) {
    std::string line =
        pad(name, 10, false) + pad(ids, 14, false) + pad(share, 7, true) + pad(fwd, 10, true);
    if (both) line += pad(bwd, 10, true) + pad(mean, 10, true);
    return line;
  };
  std::vector<std::string> lines = {row("slice", "ids", "share", "fwd", "bwd", "mean")};
  for (int s = 0; s < kEvalSlices; ++s)
    lines.push_back(
        row(slice_label(s), result.bounds.ids(s), fixed(100.0 * result.slice_share(s), 1) + "%",
            fixed(result.slice_perplexity(s, 0), 2), fixed(result.slice_perplexity(s, 1), 2),
            fixed(result.slice_perplexity(s), 2)));
  lines.push_back(row("all", "", "100.0%", fixed(result.perplexity(0), 2),
                      fixed(result.perplexity(1), 2), fixed(result.mean_perplexity(), 2)));
  return lines;
}

Scalars validation_scalars(const EvalResult& result, double time) {
  Scalars scalars{{"time", time}, {"valid_ppl", result.mean_perplexity()}};
  scalars.push_back({"valid_ppl_fwd", result.perplexity(0)});
  if (result.directions == 2) scalars.push_back({"valid_ppl_bwd", result.perplexity(1)});
  for (int s = 0; s < kEvalSlices; ++s)
    scalars.push_back({str("valid_ppl_", slice_name(s)), result.slice_perplexity(s)});
  for (int s = 0; s < kEvalSlices; ++s)
    scalars.push_back({str("valid_share_", slice_name(s)), result.slice_share(s)});
  return scalars;
}

EvalSettings eval_settings(const EvalConfig& eval) {
  EvalSettings settings;
  settings.mode = eval.mode == "sentence" ? EvalMode::kSentence : EvalMode::kStream;
  settings.rows = eval.batch_size;
  settings.steps = eval.unroll_steps;
  settings.max_tokens = eval.max_tokens;
  settings.head_ids = eval.head_ids;
  settings.torso_ids = eval.torso_ids;
  return settings;
}

EvalResult evaluate_corpus(BiLM& model, const TokenCache& data, const Vocab& vocab,
                           const EvalSettings& settings, const PositionNllObserver& observer,
                           RankSum* ranks) {
  EvalOptions options;
  options.mode = settings.mode;
  options.rows = settings.rows;
  options.steps = settings.steps;
  options.packing = settings.packing;
  EvalResult result;
  result.bounds = slice_bounds(vocab, settings.head_ids, settings.torso_ids);
  EvalBatcher batcher(data, vocab, options);
  result.directions = model.shape().directions();
  LstmState state[2];
  Batch batch[2];
  std::vector<double> position_nll[2];
  int64_t rows = -1;
  while (batcher.next(&batch[0], &batch[1])) {
    if (batch[0].rows != rows || settings.mode == EvalMode::kSentence) {
      rows = batch[0].rows;
      for (int d = 0; d < result.directions; ++d) state[d] = model.zero_state(rows);
    }
    // The directions are independent: one thread each.
    NllSum sums[2];
    // (In turn when the ranks take part: their sums must come in one order.)
    const auto each_direction = [&](const std::function<void(int)>& task) {
      if (ranks == nullptr) return run_concurrently(result.directions, task);
      for (int d = 0; d < result.directions; ++d) task(d);
    };
    each_direction([&](int d) {
      Batch& b = batch[d];
      if (!b.mask.empty())
        for (size_t i = 0; i < b.mask.size(); ++i)
          if (!b.mask[i]) b.targets[i] = kIgnoreTarget;
      TokenBatch tokens{b.rows, b.steps, b.inputs.data(), b.targets.data()};
      position_nll[d].resize(b.targets.size());
      sums[d] = model.evaluate(d, tokens, state[d], position_nll[d].data(), ranks);
      // The slices sort the very NLLs that make up sums[d].
      for (size_t i = 0; i < b.targets.size(); ++i)
        if (b.targets[i] != kIgnoreTarget)
          result.slices[d].add(result.bounds, b.targets[i], position_nll[d][i]);
    });
    if (observer)
      for (int d = 0; d < result.directions; ++d) observer(d, batch[d], position_nll[d]);
    for (int d = 0; d < result.directions; ++d) {
      result.direction[d].nll += sums[d].nll;
      result.direction[d].count += sums[d].count;
    }
    if (settings.max_tokens > 0 && result.direction[0].count >= settings.max_tokens) break;
  }
  return result;
}

}  // namespace elmo
