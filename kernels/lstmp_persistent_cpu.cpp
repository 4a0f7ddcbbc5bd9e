// Persistent LSTMP recurrence: the partition plan (host code shared with the CUDA launcher) and
// the CPU twin of both kernels. The twin follows the kernels phase by phase - bf16 roundings of
// W_hh, W_hr and of the exchanged vectors (h, m forward; dr, dz backward), fp32 accumulation,
// cross-tile partial sums added in tile order, the cell math of lstmp_cell.h - written as plain
// loops so that it reads as the specification of the kernels. See lstmp_persistent.h.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/launchers.h"
#include "kernels/lstmp_cell.h"
#include "kernels/lstmp_persistent.h"
#include "kernels/pointwise.h"
#include "runtime/error.h"

namespace elmo {

float lstmp_round_bf16(float x) {
  const uint32_t bits = static_cast<uint32_t>(float_to_bf16_bits(x)) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

LstmpDeviceLimits lstmp_persistent_h100_limits() {
  LstmpDeviceLimits limits;
  limits.sm_count = 132;
  limits.smem_per_block = 232448;  // 227 KB opt-in per block on sm_90
  limits.cooperative_launch = true;
  limits.compute_major = 9;
  return limits;
}

size_t lstmp_persistent_forward_smem(int64_t units, int64_t proj, int64_t tile_n, int64_t tile_k) {
  const size_t staging = size_t{kLstmpWarps} * 4 * kLstmpTile * kLstmpTile * sizeof(float);
  const size_t w_gate = static_cast<size_t>(4 * units * (proj + kLstmpSmemPad)) * 2;
  const size_t w_tile = static_cast<size_t>(tile_n * (tile_k + kLstmpSmemPad)) * 2;
  return staging + w_gate + w_tile;
}

size_t lstmp_persistent_backward_smem(int64_t units, int64_t proj, int64_t tile_n, int64_t tile_k) {
  const size_t staging = size_t{kLstmpWarps} * kLstmpTile * kLstmpTile * sizeof(float);
  const size_t w_unit = static_cast<size_t>(units * (proj + kLstmpSmemPad)) * 2;
  const size_t w_tile = static_cast<size_t>(tile_n * (tile_k + kLstmpSmemPad)) * 2;
  return staging + w_unit + w_tile;
}

namespace {

// A representative batch for the cost model only (the plan does not depend on B).
constexpr double kCostRows = 128.0;
// Rough H100 rates for the cost model: L2 bytes per ns, tensor-core FLOP per ns per SM.
constexpr double kL2BytesPerNs = 5000.0, kSmFlopPerNs = 3000.0;

struct TileChoice {
  int64_t tile_n = 0, tile_k = 0;
  size_t smem = 0;
  bool found = false;
};

// Best 2-D tiling of a GEMM [rows, k_total] x [k_total, n_total] into tiles of tile_k x tile_n
// (multiples of 16 dividing the totals), at most max_tiles of them, each with smem(tile) bytes
// <= limit. Cost per step (an estimate, only used to rank the choices): the A operand is read
// once per column of tiles (bf16), the fp32 partials are written and read once per row of
// tiles, and the busiest SM multiplies one tile.
template <typename Smem>
TileChoice choose_tiles(int64_t n_total, int64_t k_total, int64_t max_tiles, size_t limit,
                        const Smem& smem) {
  TileChoice best;
  double best_cost = std::numeric_limits<double>::infinity();
  for (int64_t tn = kLstmpTile; tn <= n_total; tn += kLstmpTile) {
    if (n_total % tn != 0) continue;
    for (int64_t tk = kLstmpTile; tk <= k_total; tk += kLstmpTile) {
      if (k_total % tk != 0) continue;
      const int64_t tiles_n = n_total / tn, tiles_k = k_total / tk;
      if (tiles_n * tiles_k > max_tiles) continue;
      const size_t bytes = smem(tn, tk);
      if (bytes > limit) continue;
      const double traffic = tiles_n * kCostRows * k_total * 2.0 +       // A reads
                             2.0 * tiles_k * kCostRows * n_total * 4.0;  // partials
      const double cost = traffic / kL2BytesPerNs + 2.0 * kCostRows * tn * tk / kSmFlopPerNs;
      if (cost < best_cost) {
        best_cost = cost;
        best = {tn, tk, bytes, true};
      }
    }
  }
  return best;
}

}  // namespace

LstmpPersistentPlan lstmp_persistent_plan(int64_t cell, int64_t proj,
                                          const LstmpDeviceLimits& limits) {
  LstmpPersistentPlan plan;
  plan.cell = cell;
  plan.proj = proj;
  const int64_t C = cell, P = proj;
  if (P <= 0) {
    plan.reason = "the persistent LSTMP kernel needs a projection (proj_dim > 0)";
    return plan;
  }
  if (C <= 0 || C % kLstmpTile != 0 || P % kLstmpTile != 0) {
    plan.reason = str("the persistent LSTMP kernel needs cell_size and proj_dim to be positive ",
                      "multiples of ", kLstmpTile, " (got cell_size ", C, ", proj_dim ", P, ")");
    return plan;
  }
  if (limits.compute_major < 8) {
    plan.reason = str("the persistent LSTMP kernel needs bf16 tensor cores (compute capability ",
                      ">= 8.0), the device has ", limits.compute_major, ".x");
    return plan;
  }
  if (!limits.cooperative_launch) {
    plan.reason = "the device does not support cooperative launches";
    return plan;
  }
  if (limits.sm_count <= 0) {
    plan.reason = "the device reports no multiprocessors";
    return plan;
  }
  const int64_t max_blocks = limits.sm_count;
  std::string last_failure;
  for (int sub = 1; sub <= kLstmpMaxSub; ++sub) {
    const int64_t U = int64_t{kLstmpTile} * sub;
    if (C % U != 0 || C / U > max_blocks) continue;
    const TileChoice fwd = choose_tiles(
        P, C, max_blocks, limits.smem_per_block,
        [&](int64_t tn, int64_t tk) { return lstmp_persistent_forward_smem(U, P, tn, tk); });
    const TileChoice bwd = choose_tiles(
        P, 4 * C, max_blocks, limits.smem_per_block,
        [&](int64_t tn, int64_t tk) { return lstmp_persistent_backward_smem(U, P, tn, tk); });
    if (!fwd.found || !bwd.found) {
      last_failure = str("with ", U, " cell units per block (", C / U, " blocks) the weights do ",
                         "not fit in ", limits.smem_per_block, " bytes of shared memory per ",
                         "block on ", max_blocks, " blocks");
      continue;
    }
    plan.units = U;
    plan.gate_blocks = C / U;
    plan.fwd_tile_n = fwd.tile_n;
    plan.fwd_tile_k = fwd.tile_k;
    plan.fwd_tiles_n = P / fwd.tile_n;
    plan.fwd_tiles_k = C / fwd.tile_k;
    plan.fwd_smem = fwd.smem;
    plan.bwd_tile_n = bwd.tile_n;
    plan.bwd_tile_k = bwd.tile_k;
    plan.bwd_tiles_n = P / bwd.tile_n;
    plan.bwd_tiles_k = 4 * C / bwd.tile_k;
    plan.bwd_smem = bwd.smem;
    plan.fwd_grid =
        static_cast<int>(std::max(plan.gate_blocks, plan.fwd_tiles_n * plan.fwd_tiles_k));
    plan.bwd_grid =
        static_cast<int>(std::max(plan.gate_blocks, plan.bwd_tiles_n * plan.bwd_tiles_k));
    return plan;
  }
  plan.reason = last_failure.empty()
                    ? str("cell_size ", C, " cannot be split into at most ", max_blocks,
                          " blocks of 16, 32, 48 or 64 cell units (one block per multiprocessor)")
                    : str("cell_size ", C, ", proj_dim ", P, ": ", last_failure);
  return plan;
}

LstmpScratchLayout lstmp_persistent_scratch_layout(const LstmpPersistentPlan& plan, int64_t B,
                                                   bool backward) {
  auto align = [](size_t n) { return (n + 255) / 256 * 256; };
  LstmpScratchLayout s;
  s.rows_padded = (B + kLstmpTile - 1) / kLstmpTile * kLstmpTile;
  const size_t rows = static_cast<size_t>(s.rows_padded);
  const size_t P = static_cast<size_t>(plan.proj), C = static_cast<size_t>(plan.cell);
  const size_t b_cols = backward ? 4 * C : C;
  const size_t tiles_k = static_cast<size_t>(backward ? plan.bwd_tiles_k : plan.fwd_tiles_k);
  s.vec_a = 0;
  s.vec_b = align(s.vec_a + rows * P * 2);
  s.partial = align(s.vec_b + rows * b_cols * 2);
  s.total = align(s.partial + tiles_k * rows * P * sizeof(float));
  return s;
}

size_t lstmp_persistent_scratch_bytes(const LstmpPersistentPlan& plan, int64_t B) {
  return std::max(lstmp_persistent_scratch_layout(plan, B, false).total,
                  lstmp_persistent_scratch_layout(plan, B, true).total);
}

namespace {

void check_plan(const LstmpPersistentPlan& plan, const char* where) {
  ELMO_CHECK(plan.ok(), where, ": ", plan.reason);
}

std::vector<float> rounded(const float* x, int64_t n, bool round_bf16) {
  std::vector<float> v(x, x + n);
  if (round_bf16)
    for (float& e : v) e = lstmp_round_bf16(e);
  return v;
}

}  // namespace

void lstmp_persistent_forward_cpu(const LstmpPersistentPlan& plan, const LstmpForwardArgs& a,
                                  bool round_bf16) {
  check_plan(plan, "lstmp_persistent_forward_cpu");
  const int64_t T = a.T, B = a.B, C = plan.cell, P = plan.proj, G = 4 * C;
  ELMO_CHECK(T >= 0 && B >= 0 && a.c_slots >= 1 && (a.c_slots >= T || a.c_slots == 2),
             "lstmp_persistent_forward_cpu: bad T ", T, ", B ", B, " or c_slots ", a.c_slots);
  if (T == 0 || B == 0) return;
  auto rnd = [&](float x) { return round_bf16 ? lstmp_round_bf16(x) : x; };
  const std::vector<float> w_hh = rounded(a.w_hh, G * P, round_bf16);  // [4C, P]
  const std::vector<float> w_hr = rounded(a.w_hr, P * C, round_bf16);  // [P, C]
  std::vector<float> hb(B * P, 0.0f), mb(B * C), z(G), r(B * P);
  std::vector<float> partial(plan.fwd_tiles_k * B * P);  // [tiles_k, B, P]
  if (a.h0)
    for (int64_t e = 0; e < B * P; ++e) hb[e] = rnd(a.h0[e]);

  for (int64_t t = 0; t < T; ++t) {
    float* c_t = a.c + (t % a.c_slots) * B * C;
    const float* c_prev = t == 0 ? a.c0 : a.c + ((t - 1) % a.c_slots) * B * C;
    // Phase 1 (gate blocks): z = zx + bf16(h_{t-1}) bf16(W_hh)^T, then the cell.
    for (int64_t b = 0; b < B; ++b) {
      float* zx = a.z + (t * B + b) * G;  // [4C]
      for (int64_t n = 0; n < G; ++n) {
        float acc = 0.0f;
        for (int64_t k = 0; k < P; ++k) acc += hb[b * P + k] * w_hh[n * P + k];
        z[n] = zx[n] + acc;
      }
      for (int64_t j = 0; j < C; ++j) {
        const int64_t e = b * C + j;
        const LstmCellForward f = lstmp_cell_forward_math(
            z[j], z[C + j], z[2 * C + j], z[3 * C + j], c_prev ? c_prev[e] : 0.0f, a.cell_clip);
        c_t[e] = f.c;
        if (a.c_raw) a.c_raw[t * B * C + e] = f.c_raw;
        if (a.m) a.m[t * B * C + e] = f.m;
        mb[e] = rnd(f.m);
        if (a.save_gates) {
          zx[j] = f.i;
          zx[C + j] = f.f;
          zx[2 * C + j] = f.g;
          zx[3 * C + j] = f.o;
        }
      }
    }
    // Phase 2 (tile blocks): partial[kt][b][p] = sum over the k-tile of bf16(m) bf16(W_hr).
    for (int64_t kt = 0; kt < plan.fwd_tiles_k; ++kt) {
      const int64_t k0 = kt * plan.fwd_tile_k;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p = 0; p < P; ++p) {
          float acc = 0.0f;
          for (int64_t k = k0; k < k0 + plan.fwd_tile_k; ++k)
            acc += mb[b * C + k] * w_hr[p * C + k];
          partial[(kt * B + b) * P + p] = acc;
        }
    }
    // Phase 3 (all blocks): r = partials summed in tile order, y = h = clip(r).
    for (int64_t e = 0; e < B * P; ++e) {
      float sum = 0.0f;
      for (int64_t kt = 0; kt < plan.fwd_tiles_k; ++kt) sum += partial[kt * B * P + e];
      if (a.r) a.r[t * B * P + e] = sum;
      const float h = clip_symmetric(sum, a.proj_clip);
      a.y[t * B * P + e] = h;
      hb[e] = rnd(h);
    }
  }
}

void lstmp_persistent_backward_cpu(const LstmpPersistentPlan& plan, const LstmpBackwardArgs& a,
                                   bool round_bf16) {
  check_plan(plan, "lstmp_persistent_backward_cpu");
  const int64_t T = a.T, B = a.B, C = plan.cell, P = plan.proj, G = 4 * C;
  ELMO_CHECK(T >= 0 && B >= 0, "lstmp_persistent_backward_cpu: bad T ", T, " or B ", B);
  if (T == 0 || B == 0) return;
  auto rnd = [&](float x) { return round_bf16 ? lstmp_round_bf16(x) : x; };
  const std::vector<float> w_hh = rounded(a.w_hh, G * P, round_bf16);  // [4C, P]
  const std::vector<float> w_hr = rounded(a.w_hr, P * C, round_bf16);  // [P, C]
  std::vector<float> drb(B * P), dzb(B * G), partial(plan.bwd_tiles_k * B * P);

  // dr_t = (dy_t + sum of the dh partials) * clip mask; has_partials = false for t = T-1.
  auto finish_dr = [&](int64_t t, bool has_partials) {
    for (int64_t e = 0; e < B * P; ++e) {
      float dh = a.dy[t * B * P + e];
      if (has_partials)
        for (int64_t kt = 0; kt < plan.bwd_tiles_k; ++kt) dh += partial[kt * B * P + e];
      if (a.r) dh *= clip_pass(a.r[t * B * P + e], a.proj_clip);
      a.dr[t * B * P + e] = dh;
      drb[e] = rnd(dh);
    }
  };
  finish_dr(T - 1, false);
  for (int64_t t = T - 1; t >= 0; --t) {
    // Phase A (gate blocks): dm = bf16(dr_t) bf16(W_hr), then the cell backward.
    const float* c_prev = t > 0 ? a.c + (t - 1) * B * C : a.c0;
    for (int64_t b = 0; b < B; ++b) {
      float* g = a.gates + (t * B + b) * G;  // [4C] activated gates -> dz
      for (int64_t j = 0; j < C; ++j) {
        float dm = 0.0f;
        for (int64_t k = 0; k < P; ++k) dm += drb[b * P + k] * w_hr[k * C + j];
        const int64_t e = b * C + j;
        const LstmCellBackward d = lstmp_cell_backward_math(
            g[j], g[C + j], g[2 * C + j], g[3 * C + j], c_prev ? c_prev[e] : 0.0f,
            a.c_raw[t * B * C + e], a.cell_clip, dm, t + 1 < T ? a.dc[e] : 0.0f);
        g[j] = d.dzi;
        g[C + j] = d.dzf;
        g[2 * C + j] = d.dzg;
        g[3 * C + j] = d.dzo;
        for (int k = 0; k < 4; ++k) dzb[b * G + k * C + j] = rnd(g[k * C + j]);
        a.dc[e] = d.dc_prev;
      }
    }
    if (t == 0) break;
    // Phase B (tile blocks): partial[kt][b][p] = sum over the k-tile of bf16(dz) bf16(W_hh).
    for (int64_t kt = 0; kt < plan.bwd_tiles_k; ++kt) {
      const int64_t k0 = kt * plan.bwd_tile_k;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p = 0; p < P; ++p) {
          float acc = 0.0f;
          for (int64_t k = k0; k < k0 + plan.bwd_tile_k; ++k)
            acc += dzb[b * G + k] * w_hh[k * P + p];
          partial[(kt * B + b) * P + p] = acc;
        }
    }
    // Phase C (all blocks): dr_{t-1}.
    finish_dr(t - 1, true);
  }
}

LstmpPersistentPlan lstmp_persistent_plan_for(int64_t cell, int64_t proj, Device device) {
  if (device.is_cpu()) return lstmp_persistent_plan(cell, proj, lstmp_persistent_h100_limits());
  LstmpPersistentPlan plan =
      lstmp_persistent_plan(cell, proj, lstmp_persistent_device_limits(device.index));
  if (plan.ok()) plan.reason = lstmp_persistent_supported(cell, proj, device.index);
  return plan;
}

void lstmp_persistent_forward(Device device, const LstmpPersistentPlan& plan,
                              const LstmpForwardArgs& a) {
  if (device.is_cpu())
    lstmp_persistent_forward_cpu(plan, a);
  else
    lstmp_persistent_forward_cuda(plan, a);
}

void lstmp_persistent_backward(Device device, const LstmpPersistentPlan& plan,
                               const LstmpBackwardArgs& a) {
  if (device.is_cpu())
    lstmp_persistent_backward_cpu(plan, a);
  else
    lstmp_persistent_backward_cuda(plan, a);
}

}  // namespace elmo
