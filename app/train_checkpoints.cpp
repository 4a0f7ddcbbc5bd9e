// TrainingRun's checkpoints (app/training_run.h): what a checkpoint of the run holds and how it
// is written, and the run's starting points: --resume, --init-from, and the return to the last
// checkpoint after train.max_bad_steps steps that were not finite.
#include <algorithm>
#include <string>

#include "app/training_run.h"
#include "io/checkpoint.h"
#include "model/embedding.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

void TrainingRun::resume_from(const std::string& where) {
  const std::string path = where == "latest" ? config_.run.dir : where;
  CheckpointData ckpt;
  try {
    ckpt = load_checkpoint(path, checkpoint_part());
  } catch (const CheckpointChecksumError& e) {
    if (e.fallback().empty()) throw;
    throw Error(str(e.what(), ": resume from it with --resume=", e.fallback()));
  }
  const nlohmann::json& s = ckpt.state;
  const uint64_t shape_hash = model_shape_hash(config_, vocab_.size());
  if (s.value("model_shape_hash", uint64_t{0}) != shape_hash) {
    std::string theirs = "(unknown)";
    if (s.contains("config") && s["config"].is_string()) {
      const Config old = config_from_string(s["config"].get<std::string>(), "checkpoint config");
      theirs = str("cell ", old.model.cell_size, ", projection ", old.model.projection_dim,
                   ", layers ", old.model.layers, ", embedding ", old.model.input_dim(), ", vocab ",
                   s.value("vocab_size", int64_t{0}));
    }
    throw UsageError(str("cannot resume from ", path, ": the checkpoint's model shape (", theirs,
                         ") differs from the config's (cell ", config_.model.cell_size,
                         ", projection ", config_.model.projection_dim, ", layers ",
                         config_.model.layers, ", embedding ", config_.model.input_dim(),
                         ", vocab ", vocab_.size(), "); use the config it was trained with"));
  }
  if (s.value("vocab_hash", uint64_t{0}) != vocab_.hash())
    throw UsageError(
        str("cannot resume from ", path, ": it was trained with a different vocabulary"));
  if (s.value("batch_size", int64_t{0}) != config_.train.batch_size ||
      s.value("unroll_steps", int64_t{0}) != config_.train.unroll_steps)
    throw UsageError(str("cannot resume from ", path,
                         ": it used train.batch_size = ", s.value("batch_size", int64_t{0}),
                         " and train.unroll_steps = ", s.value("unroll_steps", int64_t{0}),
                         "; the carried LSTM state and data positions need the same values"));
  restore(ckpt, path);
  // What the run went through before (a resumed run continues its counts and learning rate).
  skipped_steps_ = s.value("skipped_steps", int64_t{0});
  bad_step_reloads_ = s.value("bad_step_reloads", int64_t{0});
  const int64_t saved_world = s.value("world_size", int64_t{1});
  const int64_t world = runner_.world_size();
  if (saved_world != world)
    log_warn("resuming a run saved by ", saved_world, " rank(s) with ", world,
             ": training continues from the same state, but float sums now run in another "
             "order, so results are not bit-identical to an uninterrupted run");
  log_info("resumed from step ", step_, " (", tokens_, " tokens, epoch ", batcher_->epochs_done(),
           ")");
}

CheckpointPart TrainingRun::checkpoint_part() const {
  // Both tables sharded alike: a checkpoint of as many ranks with the same hot head loads only
  // this rank's share (no whole table on any rank); anything else loads whole.
  const RowLayout* embedding = model_->table_layout(kEmbeddingWeight);
  const RowLayout* softmax = model_->table_layout("softmax.weight");
  if (!embedding || !softmax || !embedding->is_sharded() || !softmax->is_sharded() ||
      embedding->hot != softmax->hot)
    return CheckpointPart{-1, 0, 0};
  return CheckpointPart{embedding->rank, embedding->world, embedding->hot};
}

void TrainingRun::restore(const CheckpointData& ckpt, const std::string& path) {
  const nlohmann::json& s = ckpt.state;
  const NamedTensors* model_file = ckpt.file("model");
  const NamedTensors* optimizer_file = ckpt.file("optimizer");
  const NamedTensors* carry_file = ckpt.file("carry");
  if (!model_file || !optimizer_file || !carry_file)
    throw Error(str(path, ": checkpoint is incomplete (model, optimizer and carry files needed)"));
  load_model_tensors(*model_, *model_file, path);
  // A rank storing only its rows of a table takes those rows of the whole tensors (or has just
  // them: a share loaded with its CheckpointPart).
  for (const auto& [name, tensor] : *optimizer_file) {
    const size_t dot = name.rfind(".adagrad_acc");
    const RowLayout* layout =
        dot == std::string::npos ? nullptr : model_->table_layout(name.substr(0, dot));
    optimizer_->load_state(name, layout ? take_home_rows(*layout, tensor) : tensor);
  }
  for (int d = 0; d < model_->shape().directions(); ++d) {
    const std::string dir = BiLM::direction_name(d);
    bool found_h = false, found_c = false;
    // A distributed rank keeps its rows [begin, end) of the carried state [L, B, .].
    const RowSplit mine = batcher_->my_rows();
    const auto take_rows = [&](Tensor& into, const Tensor& whole) {
      // A rank's share of the checkpoint (CheckpointData::part_rank) holds just its rows.
      if (ckpt.part_rank >= 0 && whole.ndim() == 3 && whole.shape() == into.shape())
        return into.copy_from(whole);
      if (whole.ndim() != 3 || whole.size(1) != config_.train.batch_size)
        throw Error(str(path, ": carried state ", whole.describe(), " does not have ",
                        config_.train.batch_size, " rows"));
      if (into.size(1) == whole.size(1)) return into.copy_from(whole);
      const int64_t width = whole.size(2), rows = into.size(1);
      Tensor part = Tensor::empty(into.shape());  // host; the state may live on a GPU
      for (int64_t l = 0; l < whole.size(0); ++l)
        std::copy_n(whole.data<float>() + (l * whole.size(1) + mine.begin) * width, rows * width,
                    part.data<float>() + l * rows * width);
      into.copy_from(part);
    };
    for (const auto& [name, tensor] : *carry_file) {
      if (name == "carry." + dir + ".h") take_rows(states_[d].h, tensor), found_h = true;
      if (name == "carry." + dir + ".c") take_rows(states_[d].c, tensor), found_c = true;
    }
    if (!found_h || !found_c) throw Error(str(path, ": carried state of ", dir, " is missing"));
  }
  batcher_->restore(BatcherState::from_json(s.at("batcher")));
  // The sampler's position after the checkpoint's steps (a step planned ahead not counted).
  model_->set_sampler_state(rng_from_json(s.at("sampler_rng")));
  step_ = ckpt.step;
  tokens_ = s.at("tokens").get<int64_t>();
  optimizer_->set_lr_scale(s.value("lr_scale", 1.0));
  last_checkpoint_ = ckpt.dir;
  if (s.contains("init_from")) init_report_ = s["init_from"];
  if (s.contains("validation")) {
    validation_.restore(s["validation"]);
    if (validation_.exhausted())
      log_warn("this run had stopped early (", validation_.stop_reason(), "); it trains on ",
               "until the next validation that does not improve (raise ",
               "train.early_stopping_patience to allow more)");
  }
}

std::optional<InitSource> TrainingRun::read_init_source() const {
  if (args_.init_from.empty()) return std::nullopt;
  InitSource source = load_init_source({args_.init_from, args_.init_vocab, args_.init_optimizer});
  check_sizes_match(source, config_);
  return source;
}

void TrainingRun::init_model_from(const InitSource& source) {
  const InitReport report =
      apply_init_source(source, vocab_, *model_, *optimizer_, args_.init_optimizer, train_data_);
  init_report_ = report.to_json(source.origin);
  std::string fresh;
  for (const std::string& t : report.fresh_tables) fresh += (fresh.empty() ? "" : ", ") + t;
  log_info("init: weights from ", source.origin, ": ", report.matched, " vocabulary rows matched, ",
           report.added, " added (initialised as a fresh run), ", report.dropped,
           " dropped; matched rows cover ", str(100.0 * report.matched_token_share).substr(0, 5),
           "% of the training tokens");
  if (!fresh.empty())
    log_info("init: ", fresh, " not in ", source.origin, ": initialised as a fresh run");
  log_info("init: optimizer ", report.optimizer_kept
                                   ? "accumulators of the matched rows and dense parameters kept"
                                   : "state fresh (--init-optimizer keeps the source's)");
}

// Model, optimizer, carried state, data position and sampler all come back to the checkpoint,
// so the batches after it are trained again (with the lower learning rate); the skipped steps'
// counts stay (they happened).
void TrainingRun::return_to_last_checkpoint() {
  const int64_t bad_step = step_;
  runner_.abandon_ahead();
  const CheckpointData ckpt = load_checkpoint(last_checkpoint_, checkpoint_part());
  restore(ckpt, last_checkpoint_);
  runner_.restored();
  ++bad_step_reloads_;
  bad_in_a_row_ = 0;
  optimizer_->set_lr_scale(optimizer_->lr_scale() * config_.train.bad_step_lr_scale);
  log_warn("went back to checkpoint ", last_checkpoint_, " (step ", step_, ") after ",
           config_.train.max_bad_steps, " bad steps in a row (the last was step ", bad_step,
           "): steps ", step_ + 1, " to ", bad_step, " are trained again with the learning rate ",
           "scaled by ", optimizer_->lr_scale(), " (return ", bad_step_reloads_, " of ",
           config_.train.max_bad_step_reloads, ")");
  runner_.start(step_, total_steps_);
}

bool TrainingRun::save(bool final_save) {
  CheckpointData ckpt;
  ckpt.step = step_;
  nlohmann::json& s = ckpt.state;
  s["tokens"] = tokens_;
  s["epoch"] = batcher_->epochs_done();
  s["config"] = config_to_toml(config_);
  s["config_hash"] = config_hash(config_);
  s["model_shape_hash"] = model_shape_hash(config_, vocab_.size());
  s["vocab_size"] = vocab_.size();
  s["vocab_hash"] = vocab_.hash();
  s["batch_size"] = config_.train.batch_size;
  s["unroll_steps"] = config_.train.unroll_steps;
  s["world_size"] = runner_.world_size();
  s["batcher"] = runner_.batcher_state().to_json();
  s["sampler_rng"] = rng_to_json(model_->sampler_state());
  s["lr_scale"] = optimizer_->lr_scale();
  s["skipped_steps"] = skipped_steps_;
  s["bad_step_reloads"] = bad_step_reloads_;
  s["dropout_rng"] = {{"seed", config_.run.seed}, {"counter_based", "philox(seed, step, site)"}};
  if (!init_report_.is_null()) s["init_from"] = init_report_;
  if (validation_.active()) s["validation"] = validation_.to_json();
  progress_.finish();
  // A write that fails (a full disk, an I/O error) leaves the previous checkpoint and `latest`
  // as they were and no partial folder (io/checkpoint.h); every process gets the error.
  const std::string kept = last_checkpoint_.empty()
                               ? std::string("there is no earlier checkpoint")
                               : str("the previous checkpoint ", last_checkpoint_, " and ",
                                     config_.run.dir, "/checkpoints/latest are intact");
  try {
    last_checkpoint_ = runner_.write_checkpoint(ckpt, config_.run.dir,
                                                static_cast<int>(config_.checkpoint.keep_last));
  } catch (const CommError&) {
    throw;
  } catch (const Error& e) {
    last_checkpoint_time_ = Clock::now();  // a time-based checkpoint waits its interval again
    if (final_save || config_.checkpoint.on_write_error != "warn")
      throw Error(str("the checkpoint of step ", step_, " could not be written: ", e.what(), "; ",
                      kept,
                      final_save ? std::string()
                                 : std::string(" (checkpoint.on_write_error = \"warn\" would "
                                               "keep training)")));
    log_warn("the checkpoint of step ", step_, " could not be written: ", e.what(), "; ", kept,
             "; training continues (checkpoint.on_write_error = \"warn\")");
    return false;
  }
  last_checkpoint_time_ = Clock::now();
  last_checkpoint_step_ = step_;
  log_info(final_save ? "final checkpoint: " : "checkpoint: ", last_checkpoint_);
  return true;
}

}  // namespace elmo
