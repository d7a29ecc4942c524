/* The hot spot: Y = X · Wᵀ for one weight matrix, on the pool.
 *
 * One row (decode) goes through the SIMD matrix-vector kernels, reading each
 * weight once. Several rows (prefill, grouped by expert) go through OpenBLAS
 * sgemm; f16/bf16 weights are converted to f32 a tile of rows at a time. */
#ifndef MOE_MATMUL_H
#define MOE_MATMUL_H

#include <stddef.h>

#include "moescope/moescope.h"
#include "pool.h"

typedef struct matmul_ctx matmul_ctx;

/* Scratch for up to `max_cols` columns on a pool of `n_threads`. */
matmul_ctx *matmul_new(pool *p, size_t max_cols);
void matmul_free(matmul_ctx *c);

/* Y (n, rows) = X (n, cols) · W (rows, cols)ᵀ; W has type t. Y is overwritten.
 * cols <= max_cols. Allocates nothing. */
void matmul(matmul_ctx *c, moe_dtype t, const void *W, size_t rows, size_t cols,
            const float *X, size_t n, float *Y);

#endif
