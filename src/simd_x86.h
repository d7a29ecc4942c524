/* SIMD helpers that more than one kernel file needs (kernels.c, quant.c).
 * x86 only: include where <immintrin.h> is; each helper carries the target
 * it needs, a subset of its callers'. */
#ifndef MOE_SIMD_X86_H
#define MOE_SIMD_X86_H

#include <immintrin.h>

/* The sums of a, b, c and d, in that order, in a dozen instructions where
 * four reductions take about thirty: for short rows (attention's keys of
 * 64-128 columns) one row's reduction costs as much as its products. */
static inline __attribute__((always_inline, target("avx512f"))) __m128 simd_sum4(__m512 a, __m512 b, __m512 c,
                                                                                   __m512 d)
{
    /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same for c, d */
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    /* per lane: [a, b, c, d], each the sum of the lane's four */
    __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

#endif
