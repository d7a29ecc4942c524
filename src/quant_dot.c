/* Integer dot products of K-quant weights (Q4_K, Q5_K, Q6_K) with
 * activations quantised to 8 bits, the arithmetic of llama.cpp's
 * ggml_vec_dot_q*_K_q8_K.
 *
 * An activation vector is cut into blocks of 256 (a weight block's width),
 * each with one scale d = max|x| / 127, int8 values q = round(x / d), and
 * the sums of q over each 16 (the `bsums` that the weights' mins and Q6_K's
 * offset of 32 multiply). Within a block everything is integer: with the
 * weights' 6/8-bit sub-block scales sc and mins m,
 *
 *   Q4_K/Q5_K:  Σ w·x = (d_w·d_x)·Σ_j sc_j Σ_l q_l x_l − (dmin_w·d_x)·Σ_j m_j Σ_l x_l
 *   Q6_K:       Σ w·x = (d_w·d_x)·Σ_g sc_g (Σ_l q_l x_l − 32 Σ_l x_l)
 *
 * so the only rounding is the activations' own, and each block's integers
 * are exact in every implementation; implementations differ in the order
 * of the per-block float additions only. The SIMD versions multiply bytes
 * with vpmaddubsw (weights unsigned, activations signed; no product pair
 * exceeds 63·127·2 < 2^15) and apply the sub-block scales with vpmaddwd:
 * llama.cpp's scheme, with AVX2 on 32 bytes at a time and AVX-512 BW on 64. */
#include "quant.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define QDOT_X86 1
#include <immintrin.h>
#endif

#define INLINE static inline __attribute__((always_inline))

/* Bytes ahead in a row stream that the kernels prefetch (as quant.c). */
enum { QK = 256, PREFETCH_BYTES = 2048 };

int quant_dot_supported(moe_dtype t)
{
    return t == MOE_Q4_K || t == MOE_Q5_K || t == MOE_Q6_K;
}

size_t quant_dot_act_bytes(moe_dtype t, size_t cols)
{
    assert(quant_dot_supported(t) && cols % QK == 0);
    (void)t;
    return cols / QK * sizeof(quant_q8k);
}

static void p_act(const float *x, size_t cols, quant_q8k *y)
{
    for (size_t b = 0; b < cols / QK; b++, x += QK, y++) {
        float amax = 0;
        int finite = 1;
        for (int i = 0; i < QK; i++) {
            amax = fmaxf(amax, fabsf(x[i]));
            finite &= isfinite(x[i]) != 0;
        }
        memset(y->q, 0, sizeof y->q);
        memset(y->bsums, 0, sizeof y->bsums);
        if (!finite) { /* a NaN or infinity: the products are NaN, as in f32 */
            y->d = NAN;
            continue;
        }
        y->d = amax / 127;
        if (amax == 0)
            continue;
        float iscale = 127 / amax;
        for (int i = 0; i < QK; i++) {
            long v = lrintf(x[i] * iscale);
            y->q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
            y->bsums[i / 16] = (int16_t)(y->bsums[i / 16] + y->q[i]);
        }
    }
}

/* ggml's get_scale_min_k4 for all eight sub-blocks at once (the utmp
 * shuffle of its vec_dot): sc[j] = bytes 0-7, m[j] = bytes 8-15. */
INLINE void k_scales(const unsigned char *s, uint8_t out[16])
{
    uint32_t u[4];
    memcpy(u, s, 12);
    const uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
    u[3] = ((u[2] >> 4) & m2) | (((u[1] >> 6) & m3) << 4);
    uint32_t mins_lo = u[1] & m1;
    u[1] = (u[2] & m2) | (((u[0] >> 6) & m3) << 4);
    u[2] = mins_lo;
    u[0] &= m1;
    memcpy(out, u, 16);
}

static float half(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return kern_f16_to_f32(h);
}

/* ---- portable ------------------------------------------------------------ */

/* The 6-bit (Q6_K), 5-bit or 4-bit weight i (0-255) of a block. */
static int p_weight(moe_dtype t, const unsigned char *p, int i)
{
    if (t == MOE_Q6_K) {
        int h = i / 128, k = i % 128 / 32, l = i % 32;
        const unsigned char *ql = p + 64 * h + 32 * (k & 1), *qh = p + 128 + 32 * h;
        int lo = k < 2 ? ql[l] & 0xF : ql[l] >> 4;
        return lo | ((qh[l] >> (2 * k) & 3) << 4);
    }
    int j = i / 32, l = i % 32; /* sub-block j, weight l */
    const unsigned char *q = p + (t == MOE_Q5_K ? 48 : 16) + 32 * (j / 2);
    int v = j % 2 ? q[l] >> 4 : q[l] & 0xF;
    if (t == MOE_Q5_K)
        v |= (p[16 + l] >> j & 1) << 4;
    return v;
}

static float p_dot(moe_dtype t, const unsigned char *row, const quant_q8k *x, size_t nb)
{
    const size_t bb = quant_block_bytes(t);
    float sum = 0;
    for (size_t b = 0; b < nb; b++, row += bb, x++) {
        int32_t isum = 0, imin = 0;
        if (t == MOE_Q6_K) {
            const int8_t *sc = (const int8_t *)(row + 192);
            for (int g = 0; g < 16; g++) {
                int32_t s = 0;
                for (int l = 0; l < 16; l++)
                    s += p_weight(t, row, 16 * g + l) * x->q[16 * g + l];
                isum += sc[g] * (s - 32 * x->bsums[g]);
            }
            sum += half(row + 208) * x->d * (float)isum;
            continue;
        }
        uint8_t sm[16];
        k_scales(row + 4, sm);
        for (int j = 0; j < 8; j++) {
            int32_t s = 0;
            for (int l = 0; l < 32; l++)
                s += p_weight(t, row, 32 * j + l) * x->q[32 * j + l];
            isum += sm[j] * s;
            imin += sm[8 + j] * (x->bsums[2 * j] + x->bsums[2 * j + 1]);
        }
        sum += half(row) * x->d * (float)isum - half(row + 2) * x->d * (float)imin;
    }
    return sum;
}

static void p_rows(moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y, size_t ldy,
                   size_t r0, size_t r1)
{
    const size_t nb = cols / QK, rb = nb * quant_block_bytes(t);
    const quant_q8k *X = XQ;
    for (size_t r = r0; r < r1; r++)
        for (size_t v = 0; v < n; v++)
            Y[v * ldy + r] = p_dot(t, (const unsigned char *)W + r * rb, X + v * nb, nb);
}

#ifdef QDOT_X86

/* ---- AVX2: 8 lanes --------------------------------------------------------- */

#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* Vectors per pass over a row: each block is decoded once for up to YV. */
enum { YV = 4 };

/* p_act with 8 lanes: the same maximum, products and rounding (vcvtps2dq
 * rounds to nearest even, as lrintf), so the same bytes. */
AVX2 static void y_act(const float *x, size_t cols, quant_q8k *y)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(INFINITY);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t b = 0; b < cols / QK; b++, x += QK, y++) {
        __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
        for (int i = 0; i < QK; i += 8) {
            __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
            amax = _mm256_max_ps(amax, a);
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ)); /* infinite or NaN */
        }
        memset(y, 0, sizeof *y);
        if (_mm256_movemask_ps(bad)) {
            y->d = NAN;
            continue;
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        y->d = m / 127;
        if (m == 0)
            continue;
        __m256 iscale = _mm256_set1_ps(127 / m);
        for (int i = 0; i < QK; i += 32) {
            __m256i q[4];
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), iscale));
            /* the packs work within 128-bit lanes: dwords q0 q1 q2 q3 (low
             * halves), then the high halves; the permutation restores order */
            __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(y->q + i), _mm256_permutevar8x32_epi32(bytes, order));
            /* the sums of the two 16s: lanes 0 and 1 after two hadds */
            __m256i s = _mm256_hadd_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            s = _mm256_hadd_epi32(s, s);
            __m128i s2 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            y->bsums[i / 16] = (int16_t)_mm_cvtsi128_si32(s2);
            y->bsums[i / 16 + 1] = (int16_t)_mm_extract_epi32(s2, 1);
        }
    }
}

AVX2 INLINE float y_half(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

AVX2 INLINE float y_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row of Q4_K/Q5_K/Q6_K against NV (1-4) quantised vectors X[v]: 32
 * weights per vpmaddubsw, whose 16 products of pairs take one 16-bit scale
 * (Q4_K/Q5_K) or two, one per 128-bit lane (Q6_K), in the vpmaddwd. */
AVX2 INLINE void y_row(moe_dtype t, const int NV, const unsigned char *row, size_t nb, const quant_q8k *X,
                       float *Y, size_t ldy)
{
    const size_t bb = quant_block_bytes(t);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    __m256 acc[YV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        acc[v] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const unsigned char *p = row + b * bb;
#pragma GCC unroll 4
        for (size_t o = 0; o < bb; o += 64)
            _mm_prefetch((const char *)p + PREFETCH_BYTES + o, _MM_HINT_T0);
        __m256i isum[YV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            isum[v] = _mm256_setzero_si256();
        if (t == MOE_Q6_K) {
            __m128i sc8 = _mm_loadu_si128((const __m128i *)(p + 192));
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i ql[2] = {_mm256_loadu_si256((const __m256i *)(p + 64 * h)),
                                 _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32))};
                __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    /* quarter k: weights 32k .. 32k+31 of the half */
                    __m256i lo = k < 2 ? ql[k] : _mm256_srli_epi16(ql[k - 2], 4);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2);
                    __m256i w = _mm256_or_si256(_mm256_and_si256(lo, m4), _mm256_slli_epi16(hi, 4));
                    /* scale s for the lower 16 weights, s + 1 for the upper */
                    const long long s = 8 * h + 2 * k, bytes = 0x0101010101010101LL;
                    __m256i sc =
                        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_set_epi64x(bytes * (s + 1), bytes * s)));
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) {
                        __m256i x = _mm256_loadu_si256((const __m256i *)(X[v * nb + b].q + 128 * h + 32 * k));
                        isum[v] = _mm256_add_epi32(isum[v], _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), sc));
                    }
                }
            }
            __m256i s16 = _mm256_cvtepi8_epi16(sc8);
            float d = y_half(p + 208);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                const quant_q8k *x = &X[v * nb + b];
                /* the offset: 32·Σ_g sc_g·bsum_g */
                __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), s16);
                isum[v] = _mm256_sub_epi32(isum[v], _mm256_slli_epi32(off, 5));
                acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[v]), _mm256_set1_ps(d * x->d), acc[v]);
            }
            continue;
        }
        const int five = t == MOE_Q5_K;
        uint8_t sm[16];
        k_scales(p + 4, sm);
        __m128i smv = _mm_loadu_si128((const __m128i *)sm);
        /* the eight scales as 16 bits in both 128-bit lanes; the mins, each twice */
        __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(smv));
        __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(smv, smv));
        const unsigned char *qs = p + (five ? 48 : 16);
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(p + 16)) : _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            /* sub-block 2g from the low nibbles, 2g+1 from the high */
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
            __m256i w0 = _mm256_and_si256(q, m4), w1 = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (five) {
                w0 = _mm256_or_si256(w0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), m1), 4));
                w1 = _mm256_or_si256(w1,
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * g + 1), m1), 4));
            }
            /* 16-bit scale j is bytes 2j, 2j+1 */
            __m256i s0 = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short)(0x0404 * g + 0x0100)));
            __m256i s1 = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short)(0x0404 * g + 0x0302)));
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                const int8_t *xq = X[v * nb + b].q + 64 * g;
                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(w0, _mm256_loadu_si256((const __m256i *)xq)), s0);
                __m256i p1 =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(w1, _mm256_loadu_si256((const __m256i *)(xq + 32))), s1);
                isum[v] = _mm256_add_epi32(isum[v], _mm256_add_epi32(p0, p1));
            }
        }
        float d = y_half(p), dmin = y_half(p + 2);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            const quant_q8k *x = &X[v * nb + b];
            __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), mins);
            acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[v]), _mm256_set1_ps(d * x->d), acc[v]);
            acc[v] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(im), _mm256_set1_ps(dmin * x->d), acc[v]);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        Y[v * ldy] = y_hsum(acc[v]);
}

AVX2 INLINE void y_rows_t(moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y, size_t ldy,
                          size_t r0, size_t r1)
{
    const size_t nb = cols / QK, rb = nb * quant_block_bytes(t);
    const quant_q8k *X = XQ;
    for (size_t r = r0; r < r1; r++) {
        const unsigned char *row = (const unsigned char *)W + r * rb;
        for (size_t v = 0; v < n; v += YV) {
            const quant_q8k *x = X + v * nb;
            float *y = Y + v * ldy + r;
            switch (n - v < YV ? n - v : YV) {
            case 1: y_row(t, 1, row, nb, x, y, ldy); break;
            case 2: y_row(t, 2, row, nb, x, y, ldy); break;
            case 3: y_row(t, 3, row, nb, x, y, ldy); break;
            default: y_row(t, 4, row, nb, x, y, ldy); break;
            }
        }
    }
}

AVX2 static void y_rows(moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y, size_t ldy,
                        size_t r0, size_t r1)
{
    switch (t) {
    case MOE_Q4_K: y_rows_t(MOE_Q4_K, W, cols, XQ, n, Y, ldy, r0, r1); break;
    case MOE_Q5_K: y_rows_t(MOE_Q5_K, W, cols, XQ, n, Y, ldy, r0, r1); break;
    default: y_rows_t(MOE_Q6_K, W, cols, XQ, n, Y, ldy, r0, r1); break;
    }
}

/* ---- AVX-512 BW ------------------------------------------------------------ */

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/* Vectors per pass over a row: each block is decoded once for up to ZV. */
enum { ZV = 8 };

/* p_act with 16 lanes: the same maximum, products and rounding (vcvtps2dq
 * rounds to nearest even, as lrintf), so the same bytes. */
AVX512 static void z_act(const float *x, size_t cols, quant_q8k *y)
{
    const __m512 inf = _mm512_set1_ps(INFINITY);
    for (size_t b = 0; b < cols / QK; b++, x += QK, y++) {
        __m512 amax = _mm512_setzero_ps();
        __mmask16 bad = 0;
        for (int i = 0; i < QK; i += 16) {
            __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
            amax = _mm512_max_ps(amax, a);
            bad |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ); /* infinite or NaN */
        }
        float m = _mm512_reduce_max_ps(amax);
        memset(y, 0, sizeof *y);
        if (bad) {
            y->d = NAN;
            continue;
        }
        y->d = m / 127;
        if (m == 0)
            continue;
        __m512 iscale = _mm512_set1_ps(127 / m);
        for (int i = 0; i < QK; i += 16) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), iscale));
            _mm_storeu_si128((__m128i *)(y->q + i), _mm512_cvtsepi32_epi8(q));
            y->bsums[i / 16] = (int16_t)_mm512_reduce_add_epi32(q);
        }
    }
}

AVX512 INLINE float z_half(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 32 bytes in both halves of a register. */
AVX512 INLINE __m512i z_twice(const unsigned char *p)
{
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}

/* Each 16-bit lane of the lower half shifted right by lo, of the upper by hi. */
AVX512 INLINE __m512i z_shift(__m512i v, int lo, int hi)
{
    return _mm512_srlv_epi16(v, _mm512_inserti64x4(_mm512_set1_epi16((short)lo), _mm256_set1_epi16((short)hi), 1));
}

/* The 16-bit scale lanes for 64 weights whose pairs of bytes fall, 8 pairs
 * at a time, under the sub-block scales s[first], s[first + 1], ...: idx
 * gives for each 16-bit lane the index of its scale in s. */
AVX512 INLINE __m512i z_scales(__m512i s16, __m512i idx)
{
    return _mm512_permutexvar_epi16(idx, s16);
}

/* One row of Q4_K/Q5_K/Q6_K against NV (1-4) quantised vectors X[v]. */
AVX512 INLINE void z_row(moe_dtype t, const int NV, const unsigned char *row, size_t nb, const quant_q8k *X,
                         float *Y, size_t ldy)
{
    const size_t bb = quant_block_bytes(t);
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3), m1 = _mm512_set1_epi8(1);
    __m512 acc[ZV];
    __m256 accm[ZV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
        acc[v] = _mm512_setzero_ps();
        accm[v] = _mm256_setzero_ps();
    }
    for (size_t b = 0; b < nb; b++) {
        const unsigned char *p = row + b * bb;
#pragma GCC unroll 4
        for (size_t o = 0; o < bb; o += 64)
            _mm_prefetch((const char *)p + PREFETCH_BYTES + o, _MM_HINT_T0);
        __m512i isum[ZV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            isum[v] = _mm512_setzero_si512();
        if (t == MOE_Q6_K) {
            __m512i s16 = _mm512_cvtepi8_epi16(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(p + 192))));
            __m512i ql_all[2] = {_mm512_loadu_si512(p), _mm512_loadu_si512(p + 64)};
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512i ql = ql_all[h], qh = z_twice(p + 128 + 32 * h);
                /* quarters 0 and 1 (low nibbles), 2 and 3 (high): weights 0-63 and 64-127 of the half */
                __m512i w[2] = {
                    _mm512_or_si512(_mm512_and_si512(ql, m4),
                                    _mm512_slli_epi16(_mm512_and_si512(z_shift(qh, 0, 2), m2), 4)),
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                    _mm512_slli_epi16(_mm512_and_si512(z_shift(qh, 4, 6), m2), 4)),
                };
#pragma GCC unroll 2
                for (int k = 0; k < 2; k++) {
                    /* 16-bit lanes 8q .. 8q+7 take scale 8h + 4k + q */
                    int s0 = 8 * h + 4 * k;
                    __m512i sc = z_scales(s16, _mm512_set_epi16(
                        s0 + 3, s0 + 3, s0 + 3, s0 + 3, s0 + 3, s0 + 3, s0 + 3, s0 + 3,
                        s0 + 2, s0 + 2, s0 + 2, s0 + 2, s0 + 2, s0 + 2, s0 + 2, s0 + 2,
                        s0 + 1, s0 + 1, s0 + 1, s0 + 1, s0 + 1, s0 + 1, s0 + 1, s0 + 1,
                        s0, s0, s0, s0, s0, s0, s0, s0));
#pragma GCC unroll 8
                    for (int v = 0; v < NV; v++) {
                        __m512i x = _mm512_loadu_si512(X[v * nb + b].q + 128 * h + 64 * k);
                        isum[v] = _mm512_add_epi32(isum[v], _mm512_madd_epi16(_mm512_maddubs_epi16(w[k], x), sc));
                    }
                }
            }
            __m256i s16y = _mm512_castsi512_si256(s16);
            float d = z_half(p + 208);
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) {
                const quant_q8k *x = &X[v * nb + b];
                /* the offset: 32·Σ_g sc_g·bsum_g */
                __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), s16y);
                isum[v] = _mm512_sub_epi32(isum[v], _mm512_castsi256_si512(_mm256_slli_epi32(off, 5)));
                isum[v] = _mm512_zextsi256_si512(_mm256_add_epi32(_mm512_castsi512_si256(isum[v]),
                                                                  _mm512_extracti64x4_epi64(isum[v], 1)));
                acc[v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[v]), _mm512_set1_ps(d * x->d), acc[v]);
            }
            continue;
        }
        const int five = t == MOE_Q5_K;
        uint8_t sm[16];
        k_scales(p + 4, sm);
        __m128i smv = _mm_loadu_si128((const __m128i *)sm);
        __m512i s16 = _mm512_cvtepu8_epi16(_mm256_castsi128_si256(smv));
        /* the mins, each twice, against the 16 bsums */
        __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(smv, smv));
        const unsigned char *qs = p + (five ? 48 : 16);
        __m512i qh = five ? z_twice(p + 16) : _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int g = 0; g < 4; g++) {
            /* sub-block 2g from the low nibbles (lower half), 2g+1 from the high (upper) */
            __m512i w = _mm512_and_si512(z_shift(z_twice(qs + 32 * g), 0, 4), m4);
            if (five)
                w = _mm512_or_si512(w, _mm512_slli_epi16(_mm512_and_si512(z_shift(qh, 2 * g, 2 * g + 1), m1), 4));
            __m512i sc = z_scales(s16, _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * g)),
                                                          _mm256_set1_epi16((short)(2 * g + 1)), 1));
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) {
                __m512i x = _mm512_loadu_si512(X[v * nb + b].q + 64 * g);
                isum[v] = _mm512_add_epi32(isum[v], _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), sc));
            }
        }
        float d = z_half(p), dmin = z_half(p + 2);
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            const quant_q8k *x = &X[v * nb + b];
            __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), mins);
            acc[v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[v]), _mm512_set1_ps(d * x->d), acc[v]);
            accm[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im), _mm256_set1_ps(dmin * x->d), accm[v]);
        }
    }
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
        __m256 m = accm[v];
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        Y[v * ldy] = _mm512_reduce_add_ps(acc[v]) - _mm_cvtss_f32(s);
    }
}

AVX512 INLINE void z_rows_t(moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y,
                            size_t ldy, size_t r0, size_t r1)
{
    const size_t nb = cols / QK, rb = nb * quant_block_bytes(t);
    const quant_q8k *X = XQ;
    for (size_t r = r0; r < r1; r++) {
        const unsigned char *row = (const unsigned char *)W + r * rb;
        for (size_t v = 0; v < n; v += ZV) {
            const quant_q8k *x = X + v * nb;
            float *y = Y + v * ldy + r;
            switch (n - v < ZV ? n - v : ZV) {
            case 1: z_row(t, 1, row, nb, x, y, ldy); break;
            case 2: z_row(t, 2, row, nb, x, y, ldy); break;
            case 3: z_row(t, 3, row, nb, x, y, ldy); break;
            case 4: z_row(t, 4, row, nb, x, y, ldy); break;
            case 5: z_row(t, 5, row, nb, x, y, ldy); break;
            case 6: z_row(t, 6, row, nb, x, y, ldy); break;
            case 7: z_row(t, 7, row, nb, x, y, ldy); break;
            default: z_row(t, 8, row, nb, x, y, ldy); break;
            }
        }
    }
}

AVX512 static void z_rows(moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y, size_t ldy,
                          size_t r0, size_t r1)
{
    switch (t) {
    case MOE_Q4_K: z_rows_t(MOE_Q4_K, W, cols, XQ, n, Y, ldy, r0, r1); break;
    case MOE_Q5_K: z_rows_t(MOE_Q5_K, W, cols, XQ, n, Y, ldy, r0, r1); break;
    default: z_rows_t(MOE_Q6_K, W, cols, XQ, n, Y, ldy, r0, r1); break;
    }
}

#endif /* QDOT_X86 */

void quant_dot_act(int isa, moe_dtype t, const float *x, size_t cols, void *out)
{
    assert(quant_dot_supported(t) && cols % QK == 0);
    (void)t;
#ifdef QDOT_X86
    if (isa == QUANT_AVX512) {
        z_act(x, cols, out);
        return;
    }
    if (isa == QUANT_AVX2) {
        y_act(x, cols, out);
        return;
    }
#else
    (void)isa;
#endif
    p_act(x, cols, out);
}

void quant_dot_rows(int isa, moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y,
                    size_t ldy, size_t r0, size_t r1)
{
    assert(quant_dot_supported(t) && cols % QK == 0);
#ifdef QDOT_X86
    if (isa == QUANT_AVX512) {
        z_rows(t, W, cols, XQ, n, Y, ldy, r0, r1);
        return;
    }
    if (isa == QUANT_AVX2) {
        y_rows(t, W, cols, XQ, n, Y, ldy, r0, r1);
        return;
    }
#else
    (void)isa;
#endif
    p_rows(t, W, cols, XQ, n, Y, ldy, r0, r1);
}
