/* Vector kernels per weight type: the one place where SIMD lives.
 * AVX-512 or AVX2 is chosen at run time; a portable version exists for
 * every kernel. Weight pointers may be unaligned. */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "moescope/moescope.h"

/* Pick the implementation for this CPU. Idempotent and thread-safe. */
void kern_init(void);
/* "amx", "avx512", "avx2" or "portable". "amx" is AVX-512 with AMX tile
 * products for f16 and bf16 weights (kern_tiles). */
const char *kern_isa(void);
/* Use the named implementation from now on, as MOESCOPE_ISA=name does at
 * kern_init. Returns 0, or -1 and changes nothing if this CPU (or build)
 * cannot run it. For tests and benchmarks: not while kernels are running. */
int kern_set_isa(const char *name);

/* y[r] = W[r,:] · x for r in [r0, r1); W is (rows, cols) row-major of type t. */
void kern_matvec(moe_dtype t, const void *W, size_t cols, const float *x, float *y,
                 size_t r0, size_t r1);
/* Y[v*ldy + r] = W[r,:] · X[v,:] for v < n and r in [r0, r1); X is (n, cols).
 * Each weight row is read once per four vectors (small batches, grouped
 * tokens of one expert). kern_matvec is the case n = 1. */
void kern_matvec_n(moe_dtype t, const void *W, size_t cols, const float *X, size_t n,
                   float *Y, size_t ldy, size_t r0, size_t r1);
/* As kern_matvec_n with the activations quantised to 8 bits
 * (quant_dot_act) and integer dot products, for the weight types
 * quant_dot_supported accepts. */
void kern_q8_act(moe_dtype t, const float *x, size_t cols, void *out);
void kern_matvec_q8(moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y, size_t ldy,
                    size_t r0, size_t r1);
/* Tile products (AMX-BF16; amx.h): 1 when the kernels in use have them
 * for weights of type t (f16 and bf16 under "amx"). Worth it from 8
 * vectors on (matmul); each product of a weight and an activation within
 * 4.6e-5 of |w x| (amx.h). */
int kern_tiles(moe_dtype t);
/* Bytes of n vectors of cols packed for kern_matvec_tiles, and the packing. */
size_t kern_tile_act_bytes(size_t n, size_t cols);
void kern_tile_act(const float *X, size_t n, size_t cols, void *out);
/* As kern_matvec_n, with X as kern_tile_act packed it; t as kern_tiles
 * allows. scratch (or NULL) is the calling thread's: 128 KiB per 1024
 * columns spare the weights' conversion per 32 vectors beyond the first. */
void kern_matvec_tiles(moe_dtype t, const void *W, size_t cols, const void *XT, size_t n, float *Y, size_t ldy,
                       size_t r0, size_t r1, void *scratch, size_t scratch_bytes);
/* Bytes of one row of `cols` weights of type t (cols a multiple of the
 * type's block: 32 for Q8_0 and Q4_0, 256 for Q4_K, Q5_K and Q6_K). */
size_t kern_row_bytes(moe_dtype t, size_t cols);
/* dst[i] = (float)src[i] for i < n; quantised types are dequantised
 * exactly as ggml's dequantize_row_* does, n a multiple of the block. */
void kern_to_f32(moe_dtype t, const void *src, float *dst, size_t n);
/* O[v*ldo + d] = sum over p < np of A[v*lda + p] * V[p*ldv + d], for v < n
 * and d < cols: n weighted sums of the same np rows of V (type F32, F16 or
 * BF16, rows ldv elements apart; or Q8_0, rows side by side, ldv = cols
 * <= 1024, a multiple of 32), as attention sums its values. O is
 * overwritten; each row of V is read once per four weight vectors. */
void kern_wsum(moe_dtype t, const void *V, size_t ldv, size_t cols, const float *A, size_t lda, size_t n,
               size_t np, float *O, size_t ldo);
/* x = softmax(scale * x) over n finite values, in place: each becomes
 * e^(scale x[i] - max) / sum, within a few f32 ulps of the exact value. */
void kern_softmax(float *x, size_t n, float scale);
/* g[i] = g[i] / (1 + e^-g[i]) · u[i] for i < n (SwiGLU), within a few f32
 * ulps of the exact value for |g| < 87. */
void kern_silu_mul(float *g, const float *u, size_t n);
float kern_dot(const float *a, const float *b, size_t n);
/* y += a * x */
void kern_axpy(float a, const float *x, float *y, size_t n);

/* Scalar conversions, exact (round-to-nearest-even where narrowing). */
float kern_f16_to_f32(uint16_t h);
float kern_bf16_to_f32(uint16_t h);
uint16_t kern_f32_to_f16(float f);
uint16_t kern_f32_to_bf16(float f);

#endif
