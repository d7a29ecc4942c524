/* The hot spot: Y = X · Wᵀ for one weight matrix, on the pool.
 *
 * A few rows (decode, and the handful of tokens routed to one expert: up to
 * 24 for f32 and 48 for f16/bf16 weights, where measurement put the
 * crossover) go through the SIMD matrix-vector kernels, which read each
 * weight once for up to four rows. More rows (prefill) go through OpenBLAS
 * sgemm, single-threaded per pool task; f16/bf16 weights are converted to
 * f32 a tile of rows at a time. */
#ifndef MOE_MATMUL_H
#define MOE_MATMUL_H

#include <stddef.h>

#include "moescope/moescope.h"
#include "pool.h"

typedef struct matmul_ctx matmul_ctx;

/* Scratch for up to `max_cols` columns on a pool of `n_threads`. */
matmul_ctx *matmul_new(pool *p, size_t max_cols);
void matmul_free(matmul_ctx *c);

/* Whether activations meeting quantised weights that have integer kernels
 * (quant_dot_supported) are quantised to 8 bits (1) or stay f32, meeting
 * the dequantised weights (0). matmul_new turns it on where those kernels
 * have SIMD code for the kernels in use (AVX2, AVX-512). */
void matmul_set_act_q8(matmul_ctx *c, int on);
int matmul_act_q8(const matmul_ctx *c);
/* 1 when a product of n rows of X with weights of type t takes the AMX
 * tile products (kern_tiles), whose error bound is theirs (amx.h). */
int matmul_tiles(const matmul_ctx *c, moe_dtype t, size_t n);

/* Y (n, rows) = X (n, cols) · W (rows, cols)ᵀ; W has type t. Y is overwritten.
 * cols <= max_cols. Allocates only to grow the buffer of 8-bit activations
 * (grow-only: the first products of each larger size); without it, the
 * f32 path is taken. */
void matmul(matmul_ctx *c, moe_dtype t, const void *W, size_t rows, size_t cols,
            const float *X, size_t n, float *Y);

/* One product of a batch given to matmul_many. */
typedef struct {
    moe_dtype t;
    const void *W; /* (rows, cols) of type t */
    size_t rows, cols;
    const float *X; /* (n, cols) */
    size_t n;
    float *Y; /* (n, rows), overwritten */
} matmul_item;

/* The products of items[0..n_items) as if matmul ran on each in turn, with
 * the same results. Those small enough for the matrix-vector kernels share
 * one pool dispatch, so that independent products of one step (q, k and
 * v; the gate and up projections of every chosen expert) cost one wait for
 * the pool instead of one each. The outputs must not overlap the inputs. */
void matmul_many(matmul_ctx *c, const matmul_item *items, int n_items);

#endif
