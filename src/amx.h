/* AMX tile products for f16 and bf16 weights against many vectors at once:
 * the tokens a prefill routes to one expert, a prompt's rows through the
 * attention projections. kernels.c decides when they are used; this is the
 * arithmetic.
 *
 * AMX-BF16 multiplies bfloat16 tiles into f32 sums. bfloat16 keeps 8
 * significant bits, so each operand is split in two: an f16 weight w is
 * exactly wh + wl (wh its top 8 significant bits, so |wl| < 2^-7 |w|), an
 * activation x is xh + xl (each rounded to nearest, |xl| <= 2^-8 |x|)
 * within 2^-16 |x|. Three tile products, wh·xh + wh·xl + wl·xh, leave out
 * wl·xl: each product of a weight and an activation is then within
 * (2^-15 + 2^-16) |w x| = 4.6e-5 |w x|, where f32 rounds to 6e-8 (on random
 * data a 1024-term dot product comes out within about 1e-6 of Σ|w x|).
 * bf16 weights are exact in one part (two products). The tile unit treats
 * bfloat16 subnormals as zero and flushes subnormal sums to zero. */
#ifndef MOE_AMX_H
#define MOE_AMX_H

#include <stddef.h>

#include "moescope/moescope.h"

/* 1 where this CPU has AMX-BF16 and the kernel lets this process use the
 * tile registers (Linux asks for that once, with arch_prctl), else 0.
 * Thread-safe; the first call does the asking. */
int amx_usable(void);

/* Bytes of n activation vectors of cols packed for amx_rows: groups of 16
 * vectors (the last padded with zeros) by blocks of 32 columns, 2 KiB each. */
size_t amx_act_bytes(size_t n, size_t cols);
/* X (n, cols) split and packed into out (amx_act_bytes of it). */
void amx_act(const float *X, size_t n, size_t cols, void *out);
/* Y[v*ldy + r] = W[r,:] · X[v,:] for v < n and r in [r0, r1), with W of
 * type MOE_F16 or MOE_BF16 and X as amx_act packed it. Only where
 * amx_usable() says so. scratch (any alignment, or NULL) is the calling
 * thread's: with more than 32 vectors each block of 32 rows is split into
 * it once for all of them (4 KiB per 32 columns, else once per 32
 * vectors). */
void amx_rows(moe_dtype t, const void *W, size_t cols, const void *XP, size_t n, float *Y, size_t ldy, size_t r0,
              size_t r1, void *scratch, size_t scratch_bytes);

#endif
