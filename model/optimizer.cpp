#include "model/optimizer.h"

#include "runtime/cuda_memory.h"
#include "runtime/parallel.h"
#include "runtime/partition.h"
#include "runtime/pinned.h"

#include <cmath>

#include "kernels/adagrad.h"
#include "kernels/grad_norm.h"
#include "kernels/sgd.h"

namespace elmo {

namespace {
constexpr const char* kAccumulatorSuffix = ".adagrad_acc";

Tensor filled(const Shape& shape, float value, Device device) {
  Tensor host = Tensor::empty(shape);
  host.fill_(value);
  return host.to(device);
}
}  // namespace

Optimizer::Optimizer(ParameterStore& params, const OptimizerOptions& config)
    : params_(params), config_(config) {
  ELMO_REQUIRE(config.type == "adagrad" || config.type == "sgd", "optimizer.type \"", config.type,
               "\" is not known; use \"adagrad\" or \"sgd\"");
  adagrad_ = config.type == "adagrad";
  ELMO_REQUIRE(std::isfinite(config.learning_rate) && config.learning_rate > 0.0f,
               "optimizer.learning_rate must be a positive number, got ", config.learning_rate);
  ELMO_REQUIRE(std::isfinite(config.initial_accumulator) && config.initial_accumulator >= 0.0f,
               "optimizer.initial_accumulator must be >= 0, got ", config.initial_accumulator);
  ELMO_REQUIRE(std::isfinite(config.epsilon) && config.epsilon >= 0.0f,
               "optimizer.epsilon must be >= 0, got ", config.epsilon);
  ELMO_REQUIRE(!adagrad_ || config.initial_accumulator > 0.0f || config.epsilon > 0.0f,
               "optimizer.initial_accumulator and optimizer.epsilon are both 0: Adagrad would "
               "divide by zero; make one of them positive");
  ELMO_REQUIRE(std::isfinite(config.clip_norm) && config.clip_norm >= 0.0f,
               "optimizer.clip_norm must be >= 0 (0 turns clipping off), got ", config.clip_norm);
  ELMO_REQUIRE(std::isfinite(config.lr_decay) && config.lr_decay > 0.0f,
               "optimizer.lr_decay must be a positive number, got ", config.lr_decay);
  ELMO_REQUIRE(config.decay_after_epochs >= 0, "optimizer.decay_after_epochs must be >= 0, got ",
               config.decay_after_epochs);
  for (Parameter* p : params.all()) {
    Slot slot{p, Tensor()};
    if (adagrad_) {  // only the rows with state (a rank's step cache has none)
      std::vector<int64_t> dims = p->value.shape().vec();
      if (p->row_sparse) dims[0] = p->updatable_rows();
      slot.accumulator = filled(Shape(dims), config.initial_accumulator, p->value.device());
    }
    slots_.push_back(std::move(slot));
  }
}

float Optimizer::learning_rate(int64_t epoch) const {
  const int64_t exponent = std::max<int64_t>(epoch + 1 - config_.decay_after_epochs, 0);
  return static_cast<float>(
      static_cast<double>(config_.learning_rate) *
      std::pow(static_cast<double>(config_.lr_decay), static_cast<double>(exponent)) * lr_scale_);
}

void Optimizer::set_lr_scale(double scale) {
  ELMO_CHECK(std::isfinite(scale) && scale > 0.0, "learning-rate scale must be positive, got ",
             scale);
  lr_scale_ = scale;
}

void Optimizer::check_sparse_grad(const Parameter& p) const {
  const SparseRows& g = p.sparse_grad;
  if (g.ids.empty()) return;
  const int64_t n = static_cast<int64_t>(g.ids.size());
  ELMO_CHECK(
      g.values.defined() && g.values.dtype() == DType::kF32 && g.values.numel() == n * p.row_dim(),
      "sparse gradient of '", p.name, "': ", n, " ids need f32 values of ", n, " x ", p.row_dim(),
      " elements, got ", g.values.defined() ? g.values.describe() : std::string("undefined"));
  ELMO_CHECK(g.values.device() == p.value.device(), "sparse gradient of '", p.name, "' is on ",
             g.values.device().str(), ", the parameter on ", p.value.device().str());
  for (int64_t k = 0; k < n; ++k) {
    ELMO_CHECK(g.ids[k] >= 0 && g.ids[k] < p.updatable_rows(), "sparse gradient of '", p.name,
               "': id ", g.ids[k], " is outside the ", p.updatable_rows(), " rows");
    ELMO_CHECK(k == 0 || g.ids[k - 1] < g.ids[k], "sparse gradient of '", p.name,
               "': ids must be unique and ascending (", g.ids[k - 1], " then ", g.ids[k], " at ", k,
               ")");
  }
}

double Optimizer::global_grad_norm() const {
  std::vector<Tensor> grads;  // registry order
  for (const Slot& slot : slots_) {
    const Parameter& p = *slot.param;
    if (p.row_sparse) {
      check_sparse_grad(p);
      if (!p.sparse_grad.ids.empty()) grads.push_back(p.sparse_grad.values);
    } else {
      grads.push_back(p.grad);
    }
  }
  return std::sqrt(sum_of_squares(grads));
}

float Optimizer::clip_scale(double norm) const {
  if (config_.clip_norm > 0.0f && norm > config_.clip_norm)
    return static_cast<float>(static_cast<double>(config_.clip_norm) / norm);
  return 1.0f;
}

void Optimizer::apply(float lr, float grad_scale) {
  ELMO_CHECK(slots_.size() == params_.size(), "optimizer: ", params_.size() - slots_.size(),
             " parameters were registered after the optimizer was created; create it last");
  const float eps = config_.epsilon;
  bool all_cpu = true;
  for (Slot& slot : slots_) {
    Parameter& p = *slot.param;
    all_cpu = all_cpu && p.value.device().is_cpu();
    if (!p.row_sparse) {
      check_tensor(p.grad, str("gradient of ", p.name).c_str(), DType::kF32, p.value.shape());
      check_same_device(p.value, p.grad, p.name.c_str());
    } else {
      check_sparse_grad(p);
    }
  }
  if (all_cpu) {
    // One parallel region for the whole update: thread t updates the t-th even part of every
    // parameter's elements (dense) or touched rows (sparse). The updates are elementwise, so
    // the result does not depend on the split.
    const int threads = num_threads();
    run_concurrently(threads, [&](int t) {
      for (Slot& slot : slots_) {
        Parameter& p = *slot.param;
        float* value = p.value.data<float>();
        float* acc = adagrad_ ? slot.accumulator.data<float>() : nullptr;
        if (!p.row_sparse) {
          const IndexRange r = even_part(p.value.numel(), t, threads);
          const float* g = p.grad.data<float>() + r.begin;
          if (adagrad_)
            adagrad_dense(Device::cpu(), value + r.begin, acc + r.begin, g, r.end - r.begin, lr,
                          eps, grad_scale);
          else
            sgd_dense(Device::cpu(), value + r.begin, g, r.end - r.begin, lr, grad_scale);
          continue;
        }
        const SparseRows& sg = p.sparse_grad;
        const int64_t dim = p.row_dim();
        const IndexRange r = even_part(static_cast<int64_t>(sg.ids.size()), t, threads);
        if (r.end == r.begin) continue;
        const int32_t* ids = sg.ids.data() + r.begin;
        const float* rows = sg.values.data<float>() + r.begin * dim;
        if (adagrad_)
          adagrad_rows(Device::cpu(), value, acc, dim, ids, rows, r.end - r.begin, lr, eps,
                       grad_scale);
        else
          sgd_rows(Device::cpu(), value, dim, ids, rows, r.end - r.begin, lr, grad_scale);
      }
    });
    return;
  }
  for (Slot& slot : slots_) {
    Parameter& p = *slot.param;
    const Device device = p.value.device();
    const bool cpu = device.is_cpu();
    if (!cpu) cuda_set_device(device.index);  // launches go to the parameter's GPU
    float* value = p.value.data<float>();
    float* acc = adagrad_ ? slot.accumulator.data<float>() : nullptr;
    if (!p.row_sparse) {
      const float* g = p.grad.data<float>();
      const int64_t n = p.value.numel();
      if (adagrad_)
        adagrad_dense(device, value, acc, g, n, lr, eps, grad_scale);
      else
        sgd_dense(device, value, g, n, lr, grad_scale);
      continue;
    }
    const SparseRows& sg = p.sparse_grad;
    if (sg.ids.empty()) continue;
    const int64_t n_ids = static_cast<int64_t>(sg.ids.size()), dim = p.row_dim();
    const float* rows = sg.values.data<float>();
    const int32_t* ids = sg.ids.data();
    Tensor device_ids;
    if (!cpu) {  // pinned, asynchronous: the update does not wait for the host
      device_ids = Tensor::empty({n_ids}, DType::kI32, p.value.device());
      upload_to_device(p.value.device().index, device_ids.data<int32_t>(), sg.ids.data(),
                       sizeof(int32_t) * static_cast<size_t>(n_ids));
      ids = device_ids.data<int32_t>();
    }
    if (adagrad_)
      adagrad_rows(device, value, acc, dim, ids, rows, n_ids, lr, eps, grad_scale);
    else
      sgd_rows(device, value, dim, ids, rows, n_ids, lr, grad_scale);
  }
}

Optimizer::StepStats Optimizer::step(int64_t epoch) {
  StepStats stats;
  stats.grad_norm = global_grad_norm();
  ELMO_CHECK(std::isfinite(stats.grad_norm), "gradient norm is ", stats.grad_norm,
             ": the loss diverged (lower optimizer.learning_rate or enable optimizer.clip_norm)");
  stats.lr = learning_rate(epoch);
  stats.grad_scale = clip_scale(stats.grad_norm);
  apply(stats.lr, stats.grad_scale);
  params_.zero_grads();
  return stats;
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state_tensors() {
  std::vector<std::pair<std::string, Tensor>> out;
  if (!adagrad_) return out;
  for (Slot& slot : slots_)
    out.emplace_back(slot.param->name + kAccumulatorSuffix, slot.accumulator);
  return out;
}

void Optimizer::load_state(const std::string& name, const Tensor& value) {
  for (Slot& slot : slots_) {
    if (!adagrad_ || name != slot.param->name + kAccumulatorSuffix) continue;
    ELMO_CHECK(value.defined() && value.dtype() == DType::kF32 &&
                   value.shape() == slot.accumulator.shape(),
               "optimizer state '", name, "': expected f32", slot.accumulator.shape().str(),
               ", got ", value.defined() ? value.describe() : std::string("undefined"),
               " (checkpoint from a different model size?)");
    slot.accumulator.copy_from(value);
    return;
  }
  throw Error(str("optimizer state '", name, "' is unknown to the ", config_.type,
                  " optimizer (checkpoint from a different model or optimizer?)"));
}

}  // namespace elmo
