// Persistent LSTMP recurrence: the whole T-step loop of one LSTMP layer direction (forward, and
// the backward BPTT loop) in ONE cooperative kernel launch, with the recurrent weights W_hh and
// the projection weights W_hr kept on chip (shared memory, bf16) for all T steps.
//
// What it is. Given the input part of the gates for every step (zx = x W_ih^T + b, computed by
// the caller with one big GEMM), the forward computes per step t (gate blocks i, f, g, o):
//   z_t  = zx_t + bf16(h_{t-1}) bf16(W_hh)^T              fp32 accumulation
//   c_t, m_t from z_t and c_{t-1}                           kernels/lstmp_cell.h math, cell clip
//   r_t  = sum_{k-tiles} bf16(m_t) bf16(W_hr)^T             fp32 partial sums added in tile order
//   h_t  = clip(r_t, ±proj_clip) = y_t
// and saves exactly what the standard layer (model/lstm_layer.cpp) saves: activated gates,
// clipped and pre-clip cell states, m, pre-clip projection r. The backward runs the reverse loop
//   dh_t = dy_t + sum_{k-tiles} bf16(dz_{t+1}) bf16(W_hh)     (t < T-1; dh_{T-1} = dy_{T-1})
//   dr_t = dh_t * [|r_t| <= proj_clip]                       saved for dW_hr
//   dm_t = bf16(dr_t) bf16(W_hr)                             fp32 accumulation
//   dz_t, dc_{t-1} from the cell backward (lstmp_cell.h math)  dz_t overwrites the gates
// so that the caller finishes with the same batched weight-gradient GEMMs as the standard path.
// The bf16 roundings are treated as the identity in the backward (straight-through), as a bf16
// GEMM path does. Only the LSTMP form (proj_dim > 0) is supported.
//
// What it is not: the input GEMM, the weight-gradient GEMMs, dropout, residuals. Not verified
// on a GPU yet: see docs/ARCHITECTURE.md "Persistent LSTMP kernel".
//
// Partition (one thread block per SM, grid <= SM count, co-residency checked before launch):
//   gate blocks   block g < C/U owns cell units [g*U, (g+1)*U): W_hh rows {k*C + j} of its units
//                 (forward) and the W_hr columns of its units (backward); it runs the cell for
//                 those units for all B rows, so c and dc never leave their owner.
//   tile blocks   block k < tiles_n*tiles_k owns one 2-D tile of the "other" GEMM: forward the
//                 projection r = m W_hr^T (tile [P/tiles_n outputs x C/tiles_k inputs] of W_hr),
//                 backward dh = dz W_hh (tile [P/tiles_n outputs x 4C/tiles_k inputs] of W_hh).
//                 Each tile writes an fp32 partial [B, P/tiles_n] into a [tiles_k, Bpad, P]
//                 buffer, summed by every block over a grid-stride range of (b, p) afterwards.
// Per step: 3 grid-wide barriers (after the cell phase, after the tile phase, after the sum).
// Activations are exchanged through global memory (L2); nothing is sent by atomics, so a run is
// bit-identical to the next one.
//
// CPU twin (lstmp_persistent_cpu.cpp): the same function with the same bf16 roundings (or none,
// `round_bf16 = false`, for finite-difference checks), the same partial-sum order across tiles,
// fp32 accumulation; the sum order inside a tile differs from the tensor cores'.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/dtype.h"

namespace elmo {

// What limits the plan; read from the device (lstmp_persistent_device_limits) or, for CPU runs
// and tests, from lstmp_persistent_h100_limits().
struct LstmpDeviceLimits {
  int sm_count = 0;                 // multiprocessors; the grid is at most this (1 block/SM)
  size_t smem_per_block = 0;        // opt-in dynamic shared memory per block, bytes
  bool cooperative_launch = false;  // cudaDevAttrCooperativeLaunch
  int compute_major = 0;            // wmma bf16 needs >= 8
};

LstmpDeviceLimits lstmp_persistent_h100_limits();  // 132 SMs, 227 KB, cooperative, 9.0

// Kernel constants shared by the plan and the kernels.
constexpr int kLstmpThreads = 256;  // 8 warps per block
constexpr int kLstmpWarps = kLstmpThreads / 32;
constexpr int kLstmpTile = 16;      // wmma m16n16k16: rows, columns and K step
constexpr int kLstmpMaxSub = 4;     // units per gate block U <= 16 * kLstmpMaxSub
constexpr int kLstmpSmemPad = 8;    // bf16 elements added to each shared-memory weight row
                                    // (16 bytes: consecutive rows start in different banks)
constexpr int kLstmpTileGroup = 4;  // output 16-column tiles a warp accumulates at once

// The partition for one (C, P) on one device. Independent of B and T.
struct LstmpPersistentPlan {
  std::string reason;  // empty: supported; else why not
  int64_t cell = 0, proj = 0;
  int64_t units = 0;        // U: cell units per gate block (multiple of 16, divides C)
  int64_t gate_blocks = 0;  // C / U
  // Forward projection tiles of W_hr [P, C]: fwd_tile_n outputs x fwd_tile_k inputs.
  int64_t fwd_tile_n = 0, fwd_tile_k = 0, fwd_tiles_n = 0, fwd_tiles_k = 0;
  // Backward dh tiles of W_hh [4C, P] seen as [K = 4C, N = P]: bwd_tile_k x bwd_tile_n.
  int64_t bwd_tile_n = 0, bwd_tile_k = 0, bwd_tiles_n = 0, bwd_tiles_k = 0;
  int fwd_grid = 0, bwd_grid = 0;     // blocks launched
  size_t fwd_smem = 0, bwd_smem = 0;  // dynamic shared memory per block, bytes
  bool ok() const { return reason.empty(); }
};

// Shared-memory bytes of each kernel for a partition (the budget formulas, see ARCHITECTURE.md).
//   staging: per warp, fp32 [4 gates][16][16] (forward) or [16][16] (backward)
//   forward  = staging + 4U x (P + pad) bf16 + fwd_tile_n x (fwd_tile_k + pad) bf16
//   backward = staging + U  x (P + pad) bf16 + bwd_tile_n x (bwd_tile_k + pad) bf16
size_t lstmp_persistent_forward_smem(int64_t units, int64_t proj, int64_t tile_n, int64_t tile_k);
size_t lstmp_persistent_backward_smem(int64_t units, int64_t proj, int64_t tile_n, int64_t tile_k);

// Chooses the partition, or says in plan.reason why (C, P) does not fit these limits.
LstmpPersistentPlan lstmp_persistent_plan(int64_t cell, int64_t proj,
                                          const LstmpDeviceLimits& limits);

// Reads the limits of CUDA device `device` (throws elmo::Error if CUDA fails).
LstmpDeviceLimits lstmp_persistent_device_limits(int device);

// "" when the persistent kernels can run (C, P) on CUDA device `device`: the plan fits and the
// CUDA occupancy calculator confirms one block per SM for both kernels with their shared memory
// and registers; otherwise the reason. Never throws for an unsupported shape.
std::string lstmp_persistent_supported(int64_t cell, int64_t proj, int device);

// Pointers of one forward. Row counts: B (rows), Bpad = B rounded up to 16.
struct LstmpForwardArgs {
  int64_t T = 0, B = 0;
  float cell_clip = 0.0f, proj_clip = 0.0f;  // <= 0: no clip
  const float* w_hh = nullptr;               // [4C, P] f32 (rounded to bf16 on load)
  const float* w_hr = nullptr;               // [P, C]  f32 (rounded to bf16 on load)
  const float* h0 = nullptr;                 // [B, P] | nullptr (zeros)
  const float* c0 = nullptr;                 // [B, C] | nullptr (zeros)
  float* z = nullptr;       // [T, B, 4C] in: zx; out (save_gates): activated gates
  bool save_gates = false;  // write the activated gates over z
  float* c = nullptr;       // [c_slots, B, C] clipped cell state of step t in slot t % c_slots
  int64_t c_slots = 0;      // T (training) or 2 (inference ping-pong)
  float* c_raw = nullptr;   // [T, B, C] | nullptr: pre-clip cell states
  float* m = nullptr;       // [T, B, C] | nullptr: o * tanh(c)
  float* r = nullptr;       // [T, B, P] | nullptr: pre-clip projections
  float* y = nullptr;       // [T, B, P] outputs h_t
  void* scratch = nullptr;  // lstmp_persistent_scratch_bytes(plan, B) bytes, 256-aligned
};

struct LstmpBackwardArgs {
  int64_t T = 0, B = 0;
  float cell_clip = 0.0f, proj_clip = 0.0f;
  const float* w_hh = nullptr;   // [4C, P]
  const float* w_hr = nullptr;   // [P, C]
  float* gates = nullptr;        // [T, B, 4C] in: activated gates; out: dz
  const float* c = nullptr;      // [T, B, C] clipped cell states
  const float* c_raw = nullptr;  // [T, B, C] pre-clip (== c when cell_clip <= 0)
  const float* c0 = nullptr;     // [B, C] | nullptr
  const float* r = nullptr;      // [T, B, P] pre-clip projections | nullptr (no proj clip)
  const float* dy = nullptr;     // [T, B, P]
  float* dr = nullptr;           // [T, B, P] out: gradient w.r.t. the pre-clip projection
  float* dc = nullptr;           // [B, C] scratch: cell-state gradient carried back in time
  void* scratch = nullptr;       // lstmp_persistent_scratch_bytes(plan, B) bytes, 256-aligned
};

// Scratch of one launch, carved from one allocation (offsets in bytes, 256-aligned):
//   forward:  vec_a = bf16(h) [Bpad, P], vec_b = bf16(m)  [Bpad, C],  partial f32 [tiles_k, Bpad,
//   P] backward: vec_a = bf16(dr) [Bpad, P], vec_b = bf16(dz) [Bpad, 4C], partial f32 [tiles_k,
//   Bpad, P]
// Rows >= B of vec_a / vec_b are zeroed by the kernel's prologue and never written after.
struct LstmpScratchLayout {
  int64_t rows_padded = 0;  // Bpad
  size_t vec_a = 0, vec_b = 0, partial = 0, total = 0;
};
LstmpScratchLayout lstmp_persistent_scratch_layout(const LstmpPersistentPlan& plan, int64_t B,
                                                   bool backward);
// Bytes of scratch that serve both directions.
size_t lstmp_persistent_scratch_bytes(const LstmpPersistentPlan& plan, int64_t B);

// The plan for (C, P) on `device`: on the CPU the H100 plan (the twin runs what an H100 would);
// on CUDA the device's limits, and the reason the kernels cannot run there if the occupancy
// calculator says so (lstmp_persistent_supported).
LstmpPersistentPlan lstmp_persistent_plan_for(int64_t cell, int64_t proj, Device device);

// Entry points: pointers on `device`. CPU: the twin (`scratch` unused, may be nullptr); CUDA: one
// cooperative launch each on the current stream of the current device. Throw elmo::Error with
// the plan's reason if !plan.ok(), and on any launch precondition.
void lstmp_persistent_forward(Device device, const LstmpPersistentPlan& plan,
                              const LstmpForwardArgs& a);
void lstmp_persistent_backward(Device device, const LstmpPersistentPlan& plan,
                               const LstmpBackwardArgs& a);

// f32 -> bf16 -> f32, round to nearest even (NaN stays NaN): what __float2bfloat16_rn does.
float lstmp_round_bf16(float x);

}  // namespace elmo
