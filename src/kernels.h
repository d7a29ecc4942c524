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
/* "avx512", "avx2" or "portable". */
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
/* Bytes of one row of `cols` weights of type t (cols a multiple of the
 * type's block). */
size_t kern_row_bytes(moe_dtype t, size_t cols);
/* dst[i] = (float)src[i] for i < n. */
void kern_to_f32(moe_dtype t, const void *src, float *dst, size_t n);
float kern_dot(const float *a, const float *b, size_t n);
/* y += a * x */
void kern_axpy(float a, const float *x, float *y, size_t n);

/* Scalar conversions, exact (round-to-nearest-even where narrowing). */
float kern_f16_to_f32(uint16_t h);
float kern_bf16_to_f32(uint16_t h);
uint16_t kern_f32_to_f16(float f);
uint16_t kern_f32_to_bf16(float f);

#endif
