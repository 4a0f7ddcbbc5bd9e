// CUDA persistent LSTMP recurrence (see lstmp_persistent.h for the function and the partition,
// docs/ARCHITECTURE.md "Persistent LSTMP kernel" for the design). Compiled for sm_90, never run
// on a GPU so far: the index arithmetic is written to be checked by reading, every launch
// precondition is checked on the host, and the CPU twin (lstmp_persistent_cpu.cpp) states the
// same computation as plain loops.
//
// Matrix products use the wmma API (16x16x16 bf16 tiles, fp32 accumulators; HMMA on sm_90):
//   A (row-major, activations) is loaded straight from global memory (L2): bf16 [Bpad, lda].
//   B (weights) comes from shared memory, stored "n-major": W_smem[n * ldw + k] with
//   ldw = K + kLstmpSmemPad, i.e. the wmma col_major layout of a [K, N] matrix.
// Memory ordering: data produced inside the kernel (h, m, dr, dz, partial sums, c, dc) is read
// with ordinary coherent loads (never __ldg / const __restrict__, which may use the
// non-coherent path) after a grid.sync(), which orders all prior writes of the grid before all
// later reads.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <mma.h>

#include "kernels/launchers.h"
#include "kernels/lstmp_cell.h"
#include "kernels/lstmp_persistent.h"
#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

namespace cg = cooperative_groups;
using bf16 = __nv_bfloat16;
using FragA =
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, bf16, nvcuda::wmma::row_major>;
using FragB =
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, bf16, nvcuda::wmma::col_major>;
using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;

static_assert(kLstmpTile == 16, "the wmma shape below is m16n16k16");
static_assert(kLstmpThreads % 32 == 0 && kLstmpWarps * 32 == kLstmpThreads, "whole warps");
static_assert((kLstmpTile * kLstmpTile) % 32 == 0, "a staged 16x16 tile splits evenly over lanes");
static_assert(kLstmpSmemPad % 8 == 0,
              "wmma needs the bf16 leading dimension to be a multiple of 8");
constexpr int kPerLane = kLstmpTile * kLstmpTile / 32;  // staged elements per lane: 8
constexpr int kStageFloats = kLstmpTile * kLstmpTile;   // one 16x16 fp32 tile

// Everything a kernel needs, passed by value. Sizes in elements.
struct FwdParams {
  int64_t T, B, Bpad, C, P;
  int64_t U, gate_blocks, tile_n, tile_k, tiles_n, tiles_k;
  float cell_clip, proj_clip;
  const float* w_hh;  // [4C, P]
  const float* w_hr;  // [P, C]
  const float* h0;    // [B, P] | null
  const float* c0;    // [B, C] | null
  float* z;           // [T, B, 4C]
  int save_gates;
  float* c;  // [c_slots, B, C]
  int64_t c_slots;
  float* c_raw;    // [T, B, C] | null
  float* m;        // [T, B, C] | null
  float* r;        // [T, B, P] | null
  float* y;        // [T, B, P]
  bf16* hb;        // [Bpad, P]
  bf16* mb;        // [Bpad, C]
  float* partial;  // [tiles_k, Bpad, P]
};

struct BwdParams {
  int64_t T, B, Bpad, C, P;
  int64_t U, gate_blocks, tile_n, tile_k, tiles_n, tiles_k;
  float cell_clip, proj_clip;
  const float* w_hh;   // [4C, P]
  const float* w_hr;   // [P, C]
  float* gates;        // [T, B, 4C] activated gates -> dz
  const float* c;      // [T, B, C]
  const float* c_raw;  // [T, B, C]
  const float* c0;     // [B, C] | null
  const float* r;      // [T, B, P] | null
  const float* dy;     // [T, B, P]
  float* dr;           // [T, B, P]
  float* dc;           // [B, C]
  bf16* drb;           // [Bpad, P]
  bf16* dzb;           // [Bpad, 4C]
  float* partial;      // [tiles_k, Bpad, P]
};

// One tile of the split-K GEMM that every tile block runs (forward projection, backward dh):
//   out[(kt * Bpad + b) * P + n0 + n] = sum_{k < tile_k} A[b * lda + k0 + k] * W[n * ldw + k]
// for b < Bpad, n < tile_n, with W the block's tile in shared memory (n-major). Work items are
// (16-row tile, group of up to kLstmpTileGroup 16-column tiles), spread over the warps; the A
// fragment of a k step is loaded once per item and used for the whole column group.
__device__ void tile_gemm_to_partial(const bf16* a, int64_t lda, int64_t a_col0, int64_t Bpad,
                                     const bf16* w, int64_t ldw, int64_t tile_n, int64_t tile_k,
                                     float* out, int64_t ldo, int64_t out_col0) {
  const int warp = threadIdx.x / 32;
  const int64_t col_tiles = tile_n / kLstmpTile;
  const int64_t groups = (col_tiles + kLstmpTileGroup - 1) / kLstmpTileGroup;
  const int64_t items = (Bpad / kLstmpTile) * groups;
  for (int64_t item = warp; item < items; item += kLstmpWarps) {
    const int64_t row_tile = item / groups, group = item % groups;
    FragC acc[kLstmpTileGroup];
#pragma unroll
    for (int q = 0; q < kLstmpTileGroup; ++q) nvcuda::wmma::fill_fragment(acc[q], 0.0f);
    const bf16* a_rows = a + row_tile * kLstmpTile * lda + a_col0;  // [16, tile_k] of A
    for (int64_t k = 0; k < tile_k; k += kLstmpTile) {
      FragA fa;
      nvcuda::wmma::load_matrix_sync(fa, a_rows + k, static_cast<unsigned>(lda));
#pragma unroll
      for (int q = 0; q < kLstmpTileGroup; ++q) {
        const int64_t col_tile = group * kLstmpTileGroup + q;
        if (col_tile < col_tiles) {  // warp-uniform
          FragB fb;
          nvcuda::wmma::load_matrix_sync(fb, w + col_tile * kLstmpTile * ldw + k,
                                         static_cast<unsigned>(ldw));
          nvcuda::wmma::mma_sync(acc[q], fa, fb, acc[q]);
        }
      }
    }
#pragma unroll
    for (int q = 0; q < kLstmpTileGroup; ++q) {
      const int64_t col_tile = group * kLstmpTileGroup + q;
      if (col_tile < col_tiles)
        nvcuda::wmma::store_matrix_sync(
            out + row_tile * kLstmpTile * ldo + out_col0 + col_tile * kLstmpTile, acc[q],
            static_cast<unsigned>(ldo), nvcuda::wmma::mem_row_major);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward. Shared memory: staging fp32 [warps][4][16][16] | w_gate bf16 [4U][P + pad] |
// w_tile bf16 [tile_n][tile_k + pad].
// w_gate row (s * 4 + g) * 16 + u holds W_hh row g * C + j0 + s * 16 + u (gate g of unit
// j0 + s*16 + u): the four gate tiles of each 16-unit group are adjacent, so a warp holds the
// i, f, g, o pre-activations of the same 16 units in acc[s][0..3].
template <int kSub>
__global__ void __launch_bounds__(kLstmpThreads, 1) lstmp_persistent_forward_kernel(FwdParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  cg::grid_group grid = cg::this_grid();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t C = p.C, P = p.P, G = 4 * p.C, B = p.B, Bpad = p.Bpad;
  const int64_t ldg = P + kLstmpSmemPad, ldt = p.tile_k + kLstmpSmemPad;
  float* staging = reinterpret_cast<float*>(smem) + warp * 4 * kStageFloats;
  bf16* w_gate = reinterpret_cast<bf16*>(smem + sizeof(float) * kLstmpWarps * 4 * kStageFloats);
  bf16* w_tile = w_gate + 4 * p.U * ldg;
  const bool gate_block = blockIdx.x < p.gate_blocks;
  const bool tile_block = blockIdx.x < p.tiles_n * p.tiles_k;
  const int64_t j0 = blockIdx.x * p.U;  // first cell unit of a gate block
  const int64_t tile_n_index = blockIdx.x % p.tiles_n, tile_k_index = blockIdx.x / p.tiles_n;
  const int64_t n0 = tile_n_index * p.tile_n;  // first projection output of the tile
  const int64_t k0 = tile_k_index * p.tile_k;  // first cell unit (input) of the tile

  // Prologue: weights to shared memory (bf16, round to nearest even).
  if (gate_block) {
    for (int64_t e = threadIdx.x; e < 4 * p.U * P; e += blockDim.x) {
      const int64_t row = e / P, k = e % P;  // row = (s * 4 + g) * 16 + u
      const int64_t u = row % kLstmpTile, g = (row / kLstmpTile) % 4, s = row / (4 * kLstmpTile);
      w_gate[row * ldg + k] =
          __float2bfloat16_rn(p.w_hh[(g * C + j0 + s * kLstmpTile + u) * P + k]);
    }
  }
  if (tile_block) {
    for (int64_t e = threadIdx.x; e < p.tile_n * p.tile_k; e += blockDim.x) {
      const int64_t n = e / p.tile_k, k = e % p.tile_k;
      w_tile[n * ldt + k] = __float2bfloat16_rn(p.w_hr[(n0 + n) * C + k0 + k]);
    }
  }
  // bf16(h0) (zeros without h0) over all Bpad rows; m's padding rows are zero.
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t e = first; e < Bpad * P; e += stride)
    p.hb[e] = __float2bfloat16_rn(e < B * P && p.h0 ? p.h0[e] : 0.0f);
  for (int64_t e = first; e < (Bpad - B) * C; e += stride)
    p.mb[B * C + e] = __float2bfloat16_rn(0.0f);
  __syncthreads();
  grid.sync();

  for (int64_t t = 0; t < p.T; ++t) {
    // Phase 1 (gate blocks): z = zx + bf16(h_{t-1}) W_hh^T for this block's units, then the cell.
    if (gate_block) {
      float* c_t = p.c + (t % p.c_slots) * B * C;
      const float* c_prev = t == 0 ? p.c0 : p.c + ((t - 1) % p.c_slots) * B * C;
      for (int64_t row_tile = warp; row_tile < Bpad / kLstmpTile; row_tile += kLstmpWarps) {
        FragC acc[kSub][4];
#pragma unroll
        for (int s = 0; s < kSub; ++s)
#pragma unroll
          for (int g = 0; g < 4; ++g) nvcuda::wmma::fill_fragment(acc[s][g], 0.0f);
        const bf16* h_rows = p.hb + row_tile * kLstmpTile * P;  // [16, P]
        for (int64_t k = 0; k < P; k += kLstmpTile) {
          FragA fa;
          nvcuda::wmma::load_matrix_sync(fa, h_rows + k, static_cast<unsigned>(P));
#pragma unroll
          for (int s = 0; s < kSub; ++s)
#pragma unroll
            for (int g = 0; g < 4; ++g) {
              FragB fb;
              nvcuda::wmma::load_matrix_sync(fb, w_gate + ((s * 4 + g) * kLstmpTile) * ldg + k,
                                             static_cast<unsigned>(ldg));
              nvcuda::wmma::mma_sync(acc[s][g], fa, fb, acc[s][g]);
            }
        }
#pragma unroll
        for (int s = 0; s < kSub; ++s) {
#pragma unroll
          for (int g = 0; g < 4; ++g)
            nvcuda::wmma::store_matrix_sync(staging + g * kStageFloats, acc[s][g], kLstmpTile,
                                            nvcuda::wmma::mem_row_major);
          __syncwarp();
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) {
            const int e = lane + 32 * i;  // staged element: row * 16 + unit
            const int row = e / kLstmpTile, u = e % kLstmpTile;
            const int64_t b = row_tile * kLstmpTile + row;
            const int64_t j = j0 + s * kLstmpTile + u;
            if (b < B) {
              float* zx = p.z + (t * B + b) * G;  // [4C]: input part, gates written over it
              const int64_t ce = b * C + j;
              const LstmCellForward f = lstmp_cell_forward_math(
                  zx[j] + staging[0 * kStageFloats + e], zx[C + j] + staging[1 * kStageFloats + e],
                  zx[2 * C + j] + staging[2 * kStageFloats + e],
                  zx[3 * C + j] + staging[3 * kStageFloats + e], c_prev ? c_prev[ce] : 0.0f,
                  p.cell_clip);
              c_t[ce] = f.c;
              if (p.c_raw) p.c_raw[t * B * C + ce] = f.c_raw;
              if (p.m) p.m[t * B * C + ce] = f.m;
              p.mb[ce] = __float2bfloat16_rn(f.m);
              if (p.save_gates) {  // this thread read all four zx values above
                zx[j] = f.i;
                zx[C + j] = f.f;
                zx[2 * C + j] = f.g;
                zx[3 * C + j] = f.o;
              }
            }
          }
          __syncwarp();  // staging is rewritten by the next group
        }
      }
    }
    grid.sync();
    // Phase 2 (tile blocks): partial[tile_k_index] [:, n0 : n0 + tile_n] = bf16(m) W_hr tile^T.
    if (tile_block)
      tile_gemm_to_partial(p.mb, C, k0, Bpad, w_tile, ldt, p.tile_n, p.tile_k,
                           p.partial + tile_k_index * Bpad * P, P, n0);
    grid.sync();
    // Phase 3 (all blocks): r = sum of the partials in tile order; h = y = clip(r).
    for (int64_t e = first; e < B * P; e += stride) {
      float sum = 0.0f;
      for (int64_t kt = 0; kt < p.tiles_k; ++kt) sum += p.partial[kt * Bpad * P + e];
      if (p.r) p.r[t * B * P + e] = sum;
      const float h = clip_symmetric(sum, p.proj_clip);
      p.y[t * B * P + e] = h;
      p.hb[e] = __float2bfloat16_rn(h);  // e = b * P + j with b < B: the same index in [Bpad, P]
    }
    if (t + 1 < p.T) grid.sync();
  }
}

// ---------------------------------------------------------------------------------------------
// Backward. Shared memory: staging fp32 [warps][16][16] | w_unit bf16 [U][P + pad] |
// w_tile bf16 [tile_n][tile_k + pad].
// w_unit row n holds column j0 + n of W_hr (over its P rows): W_unit[n][k] = W_hr[k][j0 + n],
// so dm[:, j0 + n] = sum_k dr[:, k] W_unit[n][k]. w_tile row n holds W_hh[k0 + k][n0 + n]
// over k < tile_k: the [tile_k, tile_n] block of W_hh with N (projection outputs) major.
template <int kSub>
__global__ void __launch_bounds__(kLstmpThreads, 1) lstmp_persistent_backward_kernel(BwdParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  cg::grid_group grid = cg::this_grid();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t C = p.C, P = p.P, G = 4 * p.C, B = p.B, Bpad = p.Bpad;
  const int64_t ldu = P + kLstmpSmemPad, ldt = p.tile_k + kLstmpSmemPad;
  float* staging = reinterpret_cast<float*>(smem) + warp * kStageFloats;
  bf16* w_unit = reinterpret_cast<bf16*>(smem + sizeof(float) * kLstmpWarps * kStageFloats);
  bf16* w_tile = w_unit + p.U * ldu;
  const bool gate_block = blockIdx.x < p.gate_blocks;
  const bool tile_block = blockIdx.x < p.tiles_n * p.tiles_k;
  const int64_t j0 = blockIdx.x * p.U;
  const int64_t tile_n_index = blockIdx.x % p.tiles_n, tile_k_index = blockIdx.x / p.tiles_n;
  const int64_t n0 = tile_n_index * p.tile_n;  // first projection output (column of W_hh)
  const int64_t k0 = tile_k_index * p.tile_k;  // first gate row of W_hh

  if (gate_block) {
    for (int64_t e = threadIdx.x; e < p.U * P; e += blockDim.x) {
      const int64_t n = e % p.U, k = e / p.U;  // consecutive threads read consecutive columns
      w_unit[n * ldu + k] = __float2bfloat16_rn(p.w_hr[k * C + j0 + n]);
    }
  }
  if (tile_block) {
    for (int64_t e = threadIdx.x; e < p.tile_n * p.tile_k; e += blockDim.x) {
      const int64_t n = e % p.tile_n, k = e / p.tile_n;
      w_tile[n * ldt + k] = __float2bfloat16_rn(p.w_hh[(k0 + k) * P + n0 + n]);
    }
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t e = first; e < (Bpad - B) * P; e += stride)
    p.drb[B * P + e] = __float2bfloat16_rn(0.0f);
  for (int64_t e = first; e < (Bpad - B) * G; e += stride)
    p.dzb[B * G + e] = __float2bfloat16_rn(0.0f);
  // dr_{T-1} = dy_{T-1} * clip mask (nothing comes from a later step).
  {
    const int64_t t = p.T - 1;
    for (int64_t e = first; e < B * P; e += stride) {
      float dh = p.dy[t * B * P + e];
      if (p.r) dh *= clip_pass(p.r[t * B * P + e], p.proj_clip);
      p.dr[t * B * P + e] = dh;
      p.drb[e] = __float2bfloat16_rn(dh);
    }
  }
  __syncthreads();
  grid.sync();

  for (int64_t t = p.T - 1; t >= 0; --t) {
    // Phase A (gate blocks): dm = bf16(dr_t) W_hr[:, units], then the cell backward.
    if (gate_block) {
      const float* c_prev = t > 0 ? p.c + (t - 1) * B * C : p.c0;
      for (int64_t row_tile = warp; row_tile < Bpad / kLstmpTile; row_tile += kLstmpWarps) {
        FragC acc[kSub];
#pragma unroll
        for (int s = 0; s < kSub; ++s) nvcuda::wmma::fill_fragment(acc[s], 0.0f);
        const bf16* dr_rows = p.drb + row_tile * kLstmpTile * P;  // [16, P]
        for (int64_t k = 0; k < P; k += kLstmpTile) {
          FragA fa;
          nvcuda::wmma::load_matrix_sync(fa, dr_rows + k, static_cast<unsigned>(P));
#pragma unroll
          for (int s = 0; s < kSub; ++s) {
            FragB fb;
            nvcuda::wmma::load_matrix_sync(fb, w_unit + s * kLstmpTile * ldu + k,
                                           static_cast<unsigned>(ldu));
            nvcuda::wmma::mma_sync(acc[s], fa, fb, acc[s]);
          }
        }
#pragma unroll
        for (int s = 0; s < kSub; ++s) {
          nvcuda::wmma::store_matrix_sync(staging, acc[s], kLstmpTile, nvcuda::wmma::mem_row_major);
          __syncwarp();
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) {
            const int e = lane + 32 * i;
            const int row = e / kLstmpTile, u = e % kLstmpTile;
            const int64_t b = row_tile * kLstmpTile + row;
            const int64_t j = j0 + s * kLstmpTile + u;
            if (b < B) {
              float* gi = p.gates + (t * B + b) * G;  // [4C]: activated gates -> dz
              const int64_t ce = b * C + j;
              const LstmCellBackward d = lstmp_cell_backward_math(
                  gi[j], gi[C + j], gi[2 * C + j], gi[3 * C + j], c_prev ? c_prev[ce] : 0.0f,
                  p.c_raw[t * B * C + ce], p.cell_clip, staging[e], t + 1 < p.T ? p.dc[ce] : 0.0f);
              gi[j] = d.dzi;
              gi[C + j] = d.dzf;
              gi[2 * C + j] = d.dzg;
              gi[3 * C + j] = d.dzo;
              bf16* dz_row = p.dzb + b * G;
              dz_row[j] = __float2bfloat16_rn(d.dzi);
              dz_row[C + j] = __float2bfloat16_rn(d.dzf);
              dz_row[2 * C + j] = __float2bfloat16_rn(d.dzg);
              dz_row[3 * C + j] = __float2bfloat16_rn(d.dzo);
              p.dc[ce] = d.dc_prev;  // read above by this thread only (the unit's owner)
            }
          }
          __syncwarp();
        }
      }
    }
    if (t == 0) break;  // grid-uniform
    grid.sync();
    // Phase B (tile blocks): partial[tile_k_index][:, n0 : n0 + tile_n] = bf16(dz_t) W_hh tile.
    if (tile_block)
      tile_gemm_to_partial(p.dzb, G, k0, Bpad, w_tile, ldt, p.tile_n, p.tile_k,
                           p.partial + tile_k_index * Bpad * P, P, n0);
    grid.sync();
    // Phase C (all blocks): dr_{t-1} = (dy_{t-1} + sum of the partials in tile order) * mask.
    for (int64_t e = first; e < B * P; e += stride) {
      float dh = p.dy[(t - 1) * B * P + e];
      for (int64_t kt = 0; kt < p.tiles_k; ++kt) dh += p.partial[kt * Bpad * P + e];
      if (p.r) dh *= clip_pass(p.r[(t - 1) * B * P + e], p.proj_clip);
      p.dr[(t - 1) * B * P + e] = dh;
      p.drb[e] = __float2bfloat16_rn(dh);
    }
    grid.sync();
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

using ForwardKernel = void (*)(FwdParams);
using BackwardKernel = void (*)(BwdParams);

// The instance for U = 16 * kSub units per gate block (nullptr for an unsupported U).
ForwardKernel forward_kernel_for(int64_t units) {
  static_assert(kLstmpMaxSub == 4, "instances for kSub = 1..4");
  switch (units / kLstmpTile) {
    case 1:
      return lstmp_persistent_forward_kernel<1>;
    case 2:
      return lstmp_persistent_forward_kernel<2>;
    case 3:
      return lstmp_persistent_forward_kernel<3>;
    case 4:
      return lstmp_persistent_forward_kernel<4>;
    default:
      return nullptr;
  }
}
BackwardKernel backward_kernel_for(int64_t units) {
  switch (units / kLstmpTile) {
    case 1:
      return lstmp_persistent_backward_kernel<1>;
    case 2:
      return lstmp_persistent_backward_kernel<2>;
    case 3:
      return lstmp_persistent_backward_kernel<3>;
    case 4:
      return lstmp_persistent_backward_kernel<4>;
    default:
      return nullptr;
  }
}

// "" or why `kernel` cannot run `grid` co-resident blocks of kLstmpThreads with `smem` bytes.
std::string residency_problem(const void* kernel, int grid, size_t smem, int device,
                              const char* which) {
  int smem_optin = 0, sm_count = 0;
  ELMO_CUDA_CHECK(
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  ELMO_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  if (smem > static_cast<size_t>(smem_optin))
    return str(which, " kernel needs ", smem, " bytes of shared memory per block, the device ",
               "allows ", smem_optin);
  ELMO_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
  int per_sm = 0;
  ELMO_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kLstmpThreads, smem));
  if (static_cast<int64_t>(per_sm) * sm_count < grid)
    return str(which, " kernel: ", grid, " cooperative blocks of ", kLstmpThreads, " threads with ",
               smem, " bytes of shared memory cannot all be resident (", per_sm,
               " per multiprocessor x ", sm_count, " multiprocessors)");
  return "";
}

int current_device() {
  int device = 0;
  ELMO_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

void check_scratch(const void* scratch, const char* where) {
  ELMO_CHECK(scratch != nullptr && reinterpret_cast<uintptr_t>(scratch) % 256 == 0, where,
             ": scratch must be a 256-byte aligned device buffer of "
             "lstmp_persistent_scratch_bytes(plan, B) bytes");
}

}  // namespace

LstmpDeviceLimits lstmp_persistent_device_limits(int device) {
  int sm_count = 0, smem_optin = 0, cooperative = 0, major = 0;
  ELMO_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  ELMO_CUDA_CHECK(
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  ELMO_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  ELMO_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  LstmpDeviceLimits limits;
  limits.sm_count = sm_count;
  limits.smem_per_block = static_cast<size_t>(smem_optin);
  limits.cooperative_launch = cooperative != 0;
  limits.compute_major = major;
  return limits;
}

std::string lstmp_persistent_supported(int64_t cell, int64_t proj, int device) {
  const LstmpPersistentPlan plan =
      lstmp_persistent_plan(cell, proj, lstmp_persistent_device_limits(device));
  if (!plan.ok()) return plan.reason;
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  const ForwardKernel fwd = forward_kernel_for(plan.units);
  const BackwardKernel bwd = backward_kernel_for(plan.units);
  if (!fwd || !bwd) return str("no kernel instance for ", plan.units, " units per block");
  std::string problem = residency_problem(reinterpret_cast<const void*>(fwd), plan.fwd_grid,
                                          plan.fwd_smem, device, "forward");
  if (problem.empty())
    problem = residency_problem(reinterpret_cast<const void*>(bwd), plan.bwd_grid, plan.bwd_smem,
                                device, "backward");
  return problem;
}

void lstmp_persistent_forward_cuda(const LstmpPersistentPlan& plan, const LstmpForwardArgs& a) {
  const char* where = "lstmp_persistent_forward_cuda";
  ELMO_CHECK(plan.ok(), where, ": ", plan.reason);
  ELMO_CHECK(a.T >= 0 && a.B >= 0, where, ": negative T ", a.T, " or B ", a.B);
  if (a.T == 0 || a.B == 0) return;
  ELMO_CHECK(a.w_hh && a.w_hr && a.z && a.c && a.y, where, ": w_hh, w_hr, z, c and y must be set");
  ELMO_CHECK(a.c_slots == a.T || a.c_slots == 2, where, ": c_slots must be T (training) or 2, got ",
             a.c_slots);
  check_scratch(a.scratch, where);
  const int device = current_device();
  const ForwardKernel kernel = forward_kernel_for(plan.units);
  ELMO_CHECK(kernel != nullptr, where, ": no kernel for ", plan.units, " units per block");
  const std::string problem = residency_problem(reinterpret_cast<const void*>(kernel),
                                                plan.fwd_grid, plan.fwd_smem, device, "forward");
  ELMO_CHECK(problem.empty(), where, ": ", problem);

  const LstmpScratchLayout s = lstmp_persistent_scratch_layout(plan, a.B, false);
  char* base = static_cast<char*>(a.scratch);
  FwdParams p{};
  p.T = a.T;
  p.B = a.B;
  p.Bpad = s.rows_padded;
  p.C = plan.cell;
  p.P = plan.proj;
  p.U = plan.units;
  p.gate_blocks = plan.gate_blocks;
  p.tile_n = plan.fwd_tile_n;
  p.tile_k = plan.fwd_tile_k;
  p.tiles_n = plan.fwd_tiles_n;
  p.tiles_k = plan.fwd_tiles_k;
  p.cell_clip = a.cell_clip;
  p.proj_clip = a.proj_clip;
  p.w_hh = a.w_hh;
  p.w_hr = a.w_hr;
  p.h0 = a.h0;
  p.c0 = a.c0;
  p.z = a.z;
  p.save_gates = a.save_gates ? 1 : 0;
  p.c = a.c;
  p.c_slots = a.c_slots;
  p.c_raw = a.c_raw;
  p.m = a.m;
  p.r = a.r;
  p.y = a.y;
  p.hb = reinterpret_cast<bf16*>(base + s.vec_a);
  p.mb = reinterpret_cast<bf16*>(base + s.vec_b);
  p.partial = reinterpret_cast<float*>(base + s.partial);
  void* args[] = {&p};
  ELMO_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel),
                                              dim3(plan.fwd_grid), dim3(kLstmpThreads), args,
                                              plan.fwd_smem, current_stream()));
  ELMO_CUDA_CHECK_LAUNCH();
}

void lstmp_persistent_backward_cuda(const LstmpPersistentPlan& plan, const LstmpBackwardArgs& a) {
  const char* where = "lstmp_persistent_backward_cuda";
  ELMO_CHECK(plan.ok(), where, ": ", plan.reason);
  ELMO_CHECK(a.T >= 0 && a.B >= 0, where, ": negative T ", a.T, " or B ", a.B);
  if (a.T == 0 || a.B == 0) return;
  ELMO_CHECK(a.w_hh && a.w_hr && a.gates && a.c && a.c_raw && a.dy && a.dr && a.dc, where,
             ": w_hh, w_hr, gates, c, c_raw, dy, dr and dc must be set");
  check_scratch(a.scratch, where);
  const int device = current_device();
  const BackwardKernel kernel = backward_kernel_for(plan.units);
  ELMO_CHECK(kernel != nullptr, where, ": no kernel for ", plan.units, " units per block");
  const std::string problem = residency_problem(reinterpret_cast<const void*>(kernel),
                                                plan.bwd_grid, plan.bwd_smem, device, "backward");
  ELMO_CHECK(problem.empty(), where, ": ", problem);

  const LstmpScratchLayout s = lstmp_persistent_scratch_layout(plan, a.B, true);
  char* base = static_cast<char*>(a.scratch);
  BwdParams p{};
  p.T = a.T;
  p.B = a.B;
  p.Bpad = s.rows_padded;
  p.C = plan.cell;
  p.P = plan.proj;
  p.U = plan.units;
  p.gate_blocks = plan.gate_blocks;
  p.tile_n = plan.bwd_tile_n;
  p.tile_k = plan.bwd_tile_k;
  p.tiles_n = plan.bwd_tiles_n;
  p.tiles_k = plan.bwd_tiles_k;
  p.cell_clip = a.cell_clip;
  p.proj_clip = a.proj_clip;
  p.w_hh = a.w_hh;
  p.w_hr = a.w_hr;
  p.gates = a.gates;
  p.c = a.c;
  p.c_raw = a.c_raw;
  p.c0 = a.c0;
  p.r = a.r;
  p.dy = a.dy;
  p.dr = a.dr;
  p.dc = a.dc;
  p.drb = reinterpret_cast<bf16*>(base + s.vec_a);
  p.dzb = reinterpret_cast<bf16*>(base + s.vec_b);
  p.partial = reinterpret_cast<float*>(base + s.partial);
  void* args[] = {&p};
  ELMO_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel),
                                              dim3(plan.bwd_grid), dim3(kLstmpThreads), args,
                                              plan.bwd_smem, current_stream()));
  ELMO_CUDA_CHECK_LAUNCH();
}

}  // namespace elmo
