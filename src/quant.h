/* Block-quantised weights (ggml's Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): their
 * block layouts, dequantisation, and matrix-vector products that
 * dequantise each block on the fly and dot it with f32 activations.
 * kernels.c dispatches here; the same three implementations (portable,
 * AVX2, AVX-512) exist for every type. */
#ifndef MOE_QUANT_H
#define MOE_QUANT_H

#include <stddef.h>

#include "moescope/moescope.h"

/* Which implementation: the index into kernels.c's table. */
enum { QUANT_PORTABLE = 0, QUANT_AVX2 = 1, QUANT_AVX512 = 2 };

/* 1 for the block-quantised types. */
int quant_is_quantised(moe_dtype t);
/* Weights per block (32 or 256) and bytes per block of a quantised type. */
size_t quant_block(moe_dtype t);
size_t quant_block_bytes(moe_dtype t);

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

#endif
