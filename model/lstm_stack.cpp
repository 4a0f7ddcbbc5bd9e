// One direction's LSTMP stack on its parameters' device: dropout, layers, residuals, backward.
// See lstm_stack.h.
#include "model/lstm_stack.h"

#include <algorithm>

#include "kernels/dropout.h"
#include "kernels/pointwise.h"

namespace elmo {

namespace {

constexpr uint32_t kTopDropoutSite = 63;

int direction_index(const std::string& direction) {
  if (direction == "fwd") return 0;
  if (direction == "bwd") return 1;
  throw UsageError(str("LSTM direction must be \"fwd\" or \"bwd\", got \"", direction, "\""));
}

}  // namespace

void check_lstm_stack_shape(const LstmStackShape& s) {
  ELMO_REQUIRE(s.embedding_dim > 0, "LSTM embedding_dim must be > 0, got ", s.embedding_dim);
  ELMO_REQUIRE(s.cell_size > 0, "LSTM cell_size must be > 0, got ", s.cell_size);
  ELMO_REQUIRE(s.proj_dim >= 0, "LSTM proj_dim must be >= 0 (0 = no projection), got ",
               s.proj_dim);
  ELMO_REQUIRE(s.layers >= 1 && s.layers < 63, "LSTM layers must be in [1, 62], got ", s.layers);
}

std::string lstm_parameter_name(const std::string& direction, int64_t layer, const char* what) {
  return str("lstm.", direction, ".", layer, ".", what);
}

void register_lstm_parameters(ParameterStore& store, const std::string& direction,
                              const LstmStackShape& shape, Device device) {
  check_lstm_stack_shape(shape);
  direction_index(direction);
  const int64_t G = 4 * shape.cell_size, H = shape.hidden();
  for (int64_t l = 0; l < shape.layers; ++l) {
    const LstmLayerShape ls = shape.layer(l);
    store.add(lstm_parameter_name(direction, l, "weight_ih"), {G, ls.input_dim}, false, device);
    store.add(lstm_parameter_name(direction, l, "weight_hh"), {G, H}, false, device);
    store.add(lstm_parameter_name(direction, l, "bias"), {G}, false, device);
    if (shape.proj_dim > 0)
      store.add(lstm_parameter_name(direction, l, "weight_hr"), {shape.proj_dim, shape.cell_size},
                false, device);
  }
}

void init_lstm_parameters(ParameterStore& store, const std::string& direction,
                          const LstmStackShape& shape, float init_scale, Rng& rng,
                          float forget_bias) {
  check_lstm_stack_shape(shape);
  // Values are drawn on the host (into the parameter itself on the CPU) and copied to the
  // parameter's device, so every device gets the same initial weights.
  auto host_view = [](Parameter& p) {
    return p.value.device().is_cpu() ? p.value : Tensor::empty(p.value.shape());
  };
  auto fill_uniform = [&](Parameter& p) {
    Tensor host = host_view(p);
    float* v = host.data<float>();
    for (int64_t e = 0; e < host.numel(); ++e) v[e] = init_scale * (2.0f * rng.uniform() - 1.0f);
    if (!p.value.device().is_cpu()) p.value.copy_from(host);
  };
  const int64_t C = shape.cell_size;
  for (int64_t l = 0; l < shape.layers; ++l) {
    fill_uniform(store.get(lstm_parameter_name(direction, l, "weight_ih")));
    fill_uniform(store.get(lstm_parameter_name(direction, l, "weight_hh")));
    Parameter& bias = store.get(lstm_parameter_name(direction, l, "bias"));
    Tensor host = host_view(bias);
    host.zero_();
    float* b = host.data<float>();
    std::fill(b + C, b + 2 * C, forget_bias);  // forget gate
    if (!bias.value.device().is_cpu()) bias.value.copy_from(host);
    if (shape.proj_dim > 0) fill_uniform(store.get(lstm_parameter_name(direction, l, "weight_hr")));
  }
}

LstmStack::LstmStack(ParameterStore& store, const std::string& direction,
                     const LstmStackShape& shape, LstmKernel kernel)
    : shape_(shape),
      direction_(direction),
      kernel_(kernel),
      dir_index_(direction_index(direction)) {
  check_lstm_stack_shape(shape);
  const int64_t G = 4 * shape.cell_size, H = shape.hidden();
  device_ = store.get(lstm_parameter_name(direction, 0, "weight_ih")).value.device();
  auto bind = [&](int64_t l, const char* what, const Shape& expected) {
    Parameter& p = store.get(lstm_parameter_name(direction, l, what));
    check_tensor(p.value, p.name.c_str(), DType::kF32, expected);
    check_tensor(p.grad, (p.name + ".grad").c_str(), DType::kF32, expected);
    ELMO_CHECK(p.value.device() == device_ && p.grad.device() == device_, "LstmStack: ", p.name,
               " is ", p.value.describe(), " (gradient ", p.grad.describe(), ") but ",
               lstm_parameter_name(direction, 0, "weight_ih"), " is on ", device_.str(),
               "; a stack's parameters must share one device");
    return &p;
  };
  layers_.resize(shape.layers);
  for (int64_t l = 0; l < shape.layers; ++l) {
    Layer& layer = layers_[l];
    layer.w_ih = bind(l, "weight_ih", {G, shape.layer(l).input_dim});
    layer.w_hh = bind(l, "weight_hh", {G, H});
    layer.bias = bind(l, "bias", {G});
    if (shape.proj_dim > 0) layer.w_hr = bind(l, "weight_hr", {shape.proj_dim, shape.cell_size});
  }
}

LstmLayerWeights LstmStack::weights(const Layer& layer) const {
  return {layer.w_ih->value.data<float>(), layer.w_hh->value.data<float>(),
          layer.bias->value.data<float>(),
          layer.w_hr ? layer.w_hr->value.data<float>() : nullptr, device_, kernel_};
}

const float* LstmStack::layer_output(int64_t l) const {
  ELMO_CHECK(l >= 0 && l < shape_.layers, "LstmStack::layer_output: layer ", l, " of ",
             shape_.layers);
  return layers_[l].outp;
}

DropoutParams LstmStack::dropout_params(const LstmStackRun& run, uint32_t site, int64_t B,
                                        int64_t dim) {
  DropoutParams params{run.dropout, run.seed, dropout_stream(run.step, site), {}};
  if (run.global_rows > 0) params.layout = {B, run.global_rows, run.row_offset, dim};
  return params;
}

void LstmStack::forward(int64_t T, int64_t B, const float* x, const float* h0, const float* c0,
                        float* h_last, float* c_last, const LstmStackRun& run) {
  ELMO_CHECK(T >= 0 && B >= 0, "LstmStack::forward: negative T ", T, " or B ", B);
  ELMO_CHECK(!run.training || (run.dropout >= 0.0f && run.dropout < 1.0f),
             "LstmStack::forward: dropout ", run.dropout, " is outside [0, 1)");
  ready_for_backward_ = false;
  const int64_t H = shape_.hidden(), C = shape_.cell_size, n_out = T * B * H;
  const bool drop = run.training && run.dropout > 0.0f;
  const float* in = x;  // [T, B, in_l]
  for (int64_t l = 0; l < shape_.layers; ++l) {
    Layer& layer = layers_[l];
    const LstmLayerShape ls = shape_.layer(l);
    const int64_t n_in = T * B * ls.input_dim;
    layer.in = in;
    layer.x = in;
    if (drop) {
      float* xd = layer.x_drop.ensure(n_in, device_);
      dropout(device_, in, xd, n_in, dropout_params(run, dropout_site(l), B, ls.input_dim));
      layer.x = xd;
    }
    float* y = layer.y.ensure(n_out, device_);
    lstm_layer_forward(ls, weights(layer), T, B, layer.x, h0 ? h0 + l * B * H : nullptr,
                       c0 ? c0 + l * B * C : nullptr, y, h_last ? h_last + l * B * H : nullptr,
                       c_last ? c_last + l * B * C : nullptr, &layer.ws, run.training);
    if (shape_.skip_connections && l > 0) {
      float* out = layer.out.ensure(n_out, device_);
      add_floats(device_, y, layer.x, out, n_out);  // bilm-tf Dropout(Residual(cell)): dropped input
      layer.outp = out;
    } else {
      layer.outp = y;
    }
    in = layer.outp;
  }
  top_ = in;
  if (drop) {
    float* top = top_drop_.ensure(n_out, device_);
    dropout(device_, in, top, n_out, dropout_params(run, dropout_site(kTopDropoutSite), B, H));
    top_ = top;
  }
  T_ = T;
  B_ = B;
  run_ = run;
  ready_for_backward_ = run.training;
}

void LstmStack::backward(const float* d_output, float* d_input,
                         const std::function<void(int64_t)>& layer_done) {
  ELMO_CHECK(ready_for_backward_,
             "LstmStack::backward: no training-mode forward to differentiate (run forward with "
             "training = true before each backward)");
  ready_for_backward_ = false;
  const int64_t T = T_, B = B_, H = shape_.hidden(), n_out = T * B * H;
  const int64_t width = std::max(shape_.embedding_dim, H);
  const bool drop = run_.dropout > 0.0f;
  float* buf[2] = {grad_a_.ensure(T * B * width, device_), grad_b_.ensure(T * B * width, device_)};
  int cur = 0;
  const float* g = d_output;  // d out_l, [T, B, H]
  if (drop) {  // the top dropout's backward is the same mask and scale applied to the gradient
    dropout(device_, d_output, buf[cur], n_out,
            dropout_params(run_, dropout_site(kTopDropoutSite), B, H));
    g = buf[cur];
    cur ^= 1;
  }
  for (int64_t l = shape_.layers - 1; l >= 0; --l) {
    Layer& layer = layers_[l];
    const LstmLayerShape ls = shape_.layer(l);
    const int64_t n_in = T * B * ls.input_dim;
    // d in_l goes to the caller's buffer for layer 0 (or nowhere when d_input is null).
    float* dx = l > 0 ? buf[cur] : d_input;
    const LstmLayerGrads grads{layer.w_ih->grad.data<float>(), layer.w_hh->grad.data<float>(),
                               layer.bias->grad.data<float>(),
                               layer.w_hr ? layer.w_hr->grad.data<float>() : nullptr};
    lstm_layer_backward(ls, weights(layer), T, B, layer.x, layer.y.data(), layer.ws, g, dx, grads);
    if (layer_done) layer_done(l);
    if (!dx) break;
    if (shape_.skip_connections && l > 0)
      add_floats(device_, dx, g, dx, n_in);  // residual: d x_l += d out_l
    if (drop)
      dropout(device_, dx, dx, n_in, dropout_params(run_, dropout_site(l), B, ls.input_dim));
    g = dx;
    cur ^= 1;
  }
}

}  // namespace elmo
