/* Block-quantised weights (ggml's Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): their
 * block layouts, dequantisation, and matrix-vector products that
 * dequantise each block on the fly and dot it with f32 activations.
 * kernels.c dispatches here; the same three implementations (portable,
 * AVX2, AVX-512) exist for every type. */
#ifndef MOE_QUANT_H
#define MOE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "moescope/moescope.h"

/* Which implementation: the index into kernels.c's table. */
enum { QUANT_PORTABLE = 0, QUANT_AVX2 = 1, QUANT_AVX512 = 2 };

/* 1 for the block-quantised types. */
int quant_is_quantised(moe_dtype t);
/* Weights per block (32 or 256) and bytes per block of a quantised type. */
size_t quant_block(moe_dtype t);
size_t quant_block_bytes(moe_dtype t);

/* x[0..n) (n a multiple of 32) as n/32 Q8_0 blocks at out, as ggml's
 * quantize_row_q8_0_ref writes them: d = max|x|/127 stored as f16,
 * q = round(x/d) (0 for a zero block). For the KV cache's q8_0 type. */
void quant_q8_0_from_f32(const float *x, size_t n, void *out);

/* dst[i] for i < n (a multiple of the block) from n/block blocks at src. The
 * values are exactly those of ggml's dequantize_row_* (each product and
 * difference rounded to f32 as ggml's C code rounds it), in every
 * implementation. */
void quant_to_f32(int isa, moe_dtype t, const void *src, float *dst, size_t n);

/* Y[v*ldy + r] = W[r,:] · X[v,:] for v < n and r in [r0, r1); cols is a
 * multiple of the block. Implementations differ only in the order of the
 * additions of the dot products. */
void quant_rows(int isa, moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y, size_t ldy,
                size_t r0, size_t r1);

/* O[v*ldo + d] = Σ over p < np of A[v*lda + p] · V[p][d] for v < n (1-4)
 * and d < cols, V being np rows of cols (a multiple of the block) side by
 * side: kern_wsum over a q8_0 KV cache's values. Only where
 * quant_wsum_supported (Q8_0 with AVX-512); kernels.c dequantises tiles
 * for its f32 kernels elsewhere. */
int quant_wsum_supported(int isa, moe_dtype t);
void quant_wsum(int isa, moe_dtype t, const void *V, size_t cols, const float *A, size_t lda, size_t n, size_t np,
                float *O, size_t ldo);

/* ---- integer products with 8-bit activations (quant_dot.c) ----------------
 * llama.cpp's arithmetic: each activation vector is quantised to int8 in
 * blocks of 256 with one f32 scale, and a weight block's dot product is
 * computed in integers, then scaled. 1 for the types that have it (Q4_K,
 * Q5_K, Q6_K). */
int quant_dot_supported(moe_dtype t);
/* One block of a quantised activation vector: x[i] ≈ d·q[i]. */
typedef struct {
    float d;           /* max |x| / 127 */
    int16_t bsums[16]; /* Σ q over each 16 */
    int8_t q[256];
} quant_q8k;
/* Bytes of one quantised activation vector of cols (a multiple of 256). */
size_t quant_dot_act_bytes(moe_dtype t, size_t cols);
/* x[0..cols) quantised into out (quant_dot_act_bytes of it): the same
 * bytes in every implementation. A non-finite x makes its block's
 * products NaN. */
void quant_dot_act(int isa, moe_dtype t, const float *x, size_t cols, void *out);
/* As quant_rows, with X the n vectors quant_dot_act wrote one after the
 * other. Portable, AVX2 and AVX-512 BW. */
void quant_dot_rows(int isa, moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y,
                    size_t ldy, size_t r0, size_t r1);

#endif
