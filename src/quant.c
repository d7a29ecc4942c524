/* Block-quantised weights: ggml's layouts, written from ggml-common.h
 * (block_q8_0, block_q4_0, block_q4_K, block_q5_K, block_q6_K) and the
 * dequantize_row_* functions of ggml-quants.c.
 *
 * Q8_0   34 bytes / 32:  f16 d, int8 q[32];              w = d·q
 * Q4_0   18 bytes / 32:  f16 d, u8 qs[16];               w = d·(nibble − 8); low nibbles are
 *                        weights 0-15, high nibbles 16-31
 * Q4_K  144 bytes / 256: f16 d, f16 dmin, u8 scales[12], u8 qs[128]; eight sub-blocks of 32
 *                        with 6-bit scale sc and min m: w = (d·sc)·q − dmin·m; each 32
 *                        bytes of qs hold two sub-blocks (low nibbles, then high)
 * Q5_K  176 bytes / 256: as Q4_K plus u8 qh[32] after the scales: bit 2i of qh[l] is the
 *                        fifth bit of weight l of sub-block 2i, bit 2i+1 of sub-block 2i+1
 * Q6_K  210 bytes / 256: u8 ql[128], u8 qh[64], int8 scales[16], f16 d; sixteen groups
 *                        of 16 with w = (d·sc)·(q − 32), q six bits (four in ql, two in qh)
 *
 * Every implementation gives exactly ggml's dequantised values: each
 * product and difference is rounded to f32 as ggml's C code rounds it (no
 * FMA there). A matrix-vector product decodes each block once for up to
 * four activation vectors and multiplies it into their accumulators; the
 * implementations differ only in the order of the additions. */
#include "quant.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define QUANT_X86 1
#include <immintrin.h>

#include "simd_x86.h"
#endif

#define INLINE static inline __attribute__((always_inline))

/* The fused kernels prefetch each row stream this many bytes ahead (every
 * line of a block; rows of a chunk are contiguous, so past a row's end it
 * is the next row's start). Four blocks ahead (136 bytes of Q8_0) left one
 * thread reading Q8_0 at 5.8 GB/s from DRAM; 2048 bytes ahead, 10.8
 * (kernels_bench qstream; 2 threads 11.0 and 19.6). */
enum { QK = 256, MAX_BLOCK = 256, PREFETCH_BYTES = 2048 };

int quant_is_quantised(moe_dtype t)
{
    return t == MOE_Q8_0 || t == MOE_Q4_0 || t == MOE_Q4_K || t == MOE_Q5_K || t == MOE_Q6_K;
}

size_t quant_block(moe_dtype t)
{
    return t == MOE_Q8_0 || t == MOE_Q4_0 ? 32 : QK;
}

size_t quant_block_bytes(moe_dtype t)
{
    switch (t) {
    case MOE_Q8_0: return 34;
    case MOE_Q4_0: return 18;
    case MOE_Q4_K: return 144;
    case MOE_Q5_K: return 176;
    case MOE_Q6_K: return 210;
    default: return 0;
    }
}

static float half(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return kern_f16_to_f32(h);
}

/* ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j. */
static void scale_min(int j, const unsigned char *s, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* The per-sub-block factors of a Q4_K/Q5_K block: d·sc and dmin·m. */
static void k_factors(const unsigned char *p, float dl[8], float ml[8])
{
    float d = half(p), dmin = half(p + 2);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        scale_min(j, p + 4, &sc, &m);
        dl[j] = d * (float)sc;
        ml[j] = dmin * (float)m;
    }
}

/* ---- portable dequantisation of one block ------------------------------- */

static void p_deq(moe_dtype t, const unsigned char *p, float *y)
{
    float dl[8], ml[8];
    switch (t) {
    case MOE_Q8_0: {
        float d = half(p);
        for (int j = 0; j < 32; j++)
            y[j] = d * (float)(int8_t)p[2 + j];
        break;
    }
    case MOE_Q4_0: {
        float d = half(p);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((p[2 + j] & 0xF) - 8) * d;
            y[j + 16] = (float)((p[2 + j] >> 4) - 8) * d;
        }
        break;
    }
    case MOE_Q4_K: {
        k_factors(p, dl, ml);
        const unsigned char *q = p + 16;
        for (int g = 0; g < 4; g++, q += 32)
            for (int l = 0; l < 32; l++) {
                y[64 * g + l] = dl[2 * g] * (float)(q[l] & 0xF) - ml[2 * g];
                y[64 * g + 32 + l] = dl[2 * g + 1] * (float)(q[l] >> 4) - ml[2 * g + 1];
            }
        break;
    }
    case MOE_Q5_K: {
        k_factors(p, dl, ml);
        const unsigned char *qh = p + 16, *q = p + 48;
        for (int g = 0; g < 4; g++, q += 32)
            for (int l = 0; l < 32; l++) {
                int lo = (q[l] & 0xF) | ((qh[l] >> (2 * g) & 1) << 4);
                int hi = (q[l] >> 4) | ((qh[l] >> (2 * g + 1) & 1) << 4);
                y[64 * g + l] = dl[2 * g] * (float)lo - ml[2 * g];
                y[64 * g + 32 + l] = dl[2 * g + 1] * (float)hi - ml[2 * g + 1];
            }
        break;
    }
    case MOE_Q6_K: {
        const unsigned char *ql = p, *qh = p + 128;
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = half(p + 208);
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128)
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0 & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2 & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        break;
    }
    default: assert(!"not a quantised type");
    }
}

/* Blocks are decoded into buf and shared by up to four vectors; eight
 * partial sums per dot product, as kernels.c's portable code keeps. */
static void p_rows(moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y, size_t ldy, size_t r0,
                   size_t r1)
{
    const size_t B = quant_block(t), bb = quant_block_bytes(t), rb = cols / B * bb;
    float buf[MAX_BLOCK];
    for (size_t r = r0; r < r1; r++) {
        const unsigned char *row = (const unsigned char *)W + r * rb;
        for (size_t v0 = 0; v0 < n; v0 += 4) {
            size_t nv = n - v0 < 4 ? n - v0 : 4;
            float acc[4][8] = {{0}};
            for (size_t b = 0; b < cols / B; b++) {
                p_deq(t, row + b * bb, buf);
                for (size_t v = 0; v < nv; v++) {
                    const float *x = X + (v0 + v) * cols + b * B;
                    for (size_t j = 0; j < B; j += 8)
                        for (int k = 0; k < 8; k++)
                            acc[v][k] += buf[j + k] * x[j + k];
                }
            }
            for (size_t v = 0; v < nv; v++)
                Y[(v0 + v) * ldy + r] = ((acc[v][0] + acc[v][1]) + (acc[v][2] + acc[v][3])) +
                                        ((acc[v][4] + acc[v][5]) + (acc[v][6] + acc[v][7]));
        }
    }
}

#ifdef QUANT_X86

/* ---- AVX2: 8 lanes -------------------------------------------------------
 * Bytes are widened eight at a time to i32 and converted; the products and
 * differences are separate instructions (no FMA), so that they round as
 * ggml's C code does. */

#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* k_factors with SIMD: the eight 6-bit scales and mins unpacked in 32-bit
 * lanes, then d·sc and dmin·m (the same products, rounded alike). */
AVX2 INLINE void y_k_factors(const unsigned char *p, float dl[8], float ml[8])
{
    uint32_t w[3];
    memcpy(w, p + 4, 12);
    const __m128i m63 = _mm_set1_epi32(63), m15 = _mm_set1_epi32(15);
    __m128i a = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)w[0])); /* s[0..3] */
    __m128i b = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)w[1])); /* s[4..7] */
    __m128i c = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)w[2])); /* s[8..11] */
    __m128i sc_hi = _mm_or_si128(_mm_and_si128(c, m15), _mm_slli_epi32(_mm_srli_epi32(a, 6), 4));
    __m128i m_hi = _mm_or_si128(_mm_srli_epi32(c, 4), _mm_slli_epi32(_mm_srli_epi32(b, 6), 4));
    __m256 sc = _mm256_cvtepi32_ps(_mm256_set_m128i(sc_hi, _mm_and_si128(a, m63)));
    __m256 m = _mm256_cvtepi32_ps(_mm256_set_m128i(m_hi, _mm_and_si128(b, m63)));
    uint16_t h[2];
    memcpy(h, p, 4);
    _mm256_storeu_ps(dl, _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h[0])), sc));
    _mm256_storeu_ps(ml, _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h[1])), m));
}

/* An f16 scale, converted in this target (a call to the portable
 * converter would mix legacy SSE code into the AVX loop). */
AVX2 INLINE float y_half(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 8 unsigned (or signed) bytes at lane offset 0 of v, as floats. */
AVX2 INLINE __m256 y_u8(__m128i v)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}

AVX2 INLINE __m256 y_i8(__m128i v)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

/* 32 bytes (values in a byte each) → y[0..32) = d·b − m (m may be 0 and is then
 * not subtracted, to keep ggml's rounding: its Q6_K/Q8_0/Q4_0 have no min). */
AVX2 INLINE void y_store32(__m256i b, int is_signed, __m256 d, __m256 m, int has_min, float *y)
{
    __m128i lo = _mm256_castsi256_si128(b), hi = _mm256_extracti128_si256(b, 1);
    __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++) {
        __m256 f = is_signed ? y_i8(parts[k]) : y_u8(parts[k]);
        __m256 w = _mm256_mul_ps(d, f);
        _mm256_storeu_ps(y + 8 * k, has_min ? _mm256_sub_ps(w, m) : w);
    }
}

AVX2 static void y_deq(moe_dtype t, const unsigned char *p, float *y)
{
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    switch (t) {
    case MOE_Q8_0: {
        /* ggml: d * q; multiplication commutes exactly */
        __m256 d = _mm256_set1_ps(y_half(p));
        y_store32(_mm256_loadu_si256((const __m256i *)(p + 2)), 1, d, d, 0, y);
        break;
    }
    case MOE_Q4_0: {
        __m128i q = _mm_loadu_si128((const __m128i *)(p + 2));
        __m128i lo = _mm_and_si128(q, _mm_set1_epi8(0x0F)),
                hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0F));
        __m256i b = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
        __m256 d = _mm256_set1_ps(y_half(p));
        y_store32(b, 1, d, d, 0, y);
        break;
    }
    case MOE_Q4_K:
    case MOE_Q5_K: {
        float dl[8], ml[8];
        y_k_factors(p, dl, ml);
        const int five = t == MOE_Q5_K;
        const unsigned char *q = p + (five ? 48 : 16);
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(p + 16)) : _mm256_setzero_si256();
        const __m256i one = _mm256_set1_epi8(1);
        for (int g = 0; g < 4; g++) {
            __m256i b = _mm256_loadu_si256((const __m256i *)(q + 32 * g));
            __m256i lo = _mm256_and_si256(b, low4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low4);
            if (five) {
                __m128i s0 = _mm_cvtsi32_si128(2 * g), s1 = _mm_cvtsi32_si128(2 * g + 1);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s0), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s1), one), 4));
            }
            y_store32(lo, 0, _mm256_set1_ps(dl[2 * g]), _mm256_set1_ps(ml[2 * g]), 1, y + 64 * g);
            y_store32(hi, 0, _mm256_set1_ps(dl[2 * g + 1]), _mm256_set1_ps(ml[2 * g + 1]), 1, y + 64 * g + 32);
        }
        break;
    }
    case MOE_Q6_K: {
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = y_half(p + 208);
        const __m256i three = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
        for (int h = 0; h < 2; h++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
            __m256i b = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
            __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(a, low4), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4)),
                _mm256_or_si256(_mm256_and_si256(b, low4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), low4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), low4),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4)),
            };
            for (int k = 0; k < 4; k++) {
                __m256i s = _mm256_sub_epi8(q[k], off);
                __m128i lo = _mm256_castsi256_si128(s), hi = _mm256_extracti128_si256(s, 1);
                /* weights 0-15 of this quarter have scale sc[2k], 16-31 sc[2k+1] */
                __m256 d0 = _mm256_set1_ps(d * (float)sc[8 * h + 2 * k]);
                __m256 d1 = _mm256_set1_ps(d * (float)sc[8 * h + 2 * k + 1]);
                float *o = y + 128 * h + 32 * k;
                _mm256_storeu_ps(o, _mm256_mul_ps(d0, y_i8(lo)));
                _mm256_storeu_ps(o + 8, _mm256_mul_ps(d0, y_i8(_mm_srli_si128(lo, 8))));
                _mm256_storeu_ps(o + 16, _mm256_mul_ps(d1, y_i8(hi)));
                _mm256_storeu_ps(o + 24, _mm256_mul_ps(d1, y_i8(_mm_srli_si128(hi, 8))));
            }
        }
        break;
    }
    default: assert(!"not a quantised type");
    }
}

AVX2 INLINE float y_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row against NV (1-4) vectors; two accumulators per vector. */
AVX2 INLINE void y_row(moe_dtype t, const int NV, const unsigned char *row, size_t cols, const float *X, float *Y,
                       size_t ldy)
{
    const size_t B = quant_block(t), bb = quant_block_bytes(t);
    float buf[MAX_BLOCK] __attribute__((aligned(32)));
    __m256 acc[4][2];
    for (int v = 0; v < NV; v++)
        acc[v][0] = acc[v][1] = _mm256_setzero_ps();
    for (size_t b = 0; b < cols / B; b++) {
        y_deq(t, row + b * bb, buf);
        for (size_t j = 0; j < B; j += 16) {
            __m256 w0 = _mm256_load_ps(buf + j), w1 = _mm256_load_ps(buf + j + 8);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                const float *x = X + v * cols + b * B + j;
                acc[v][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), acc[v][0]);
                acc[v][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), acc[v][1]);
            }
        }
    }
    for (int v = 0; v < NV; v++)
        Y[v * ldy] = y_hsum(_mm256_add_ps(acc[v][0], acc[v][1]));
}

AVX2 static void y_rows(moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y, size_t ldy,
                        size_t r0, size_t r1)
{
    const size_t rb = cols / quant_block(t) * quant_block_bytes(t);
    for (size_t r = r0; r < r1; r++) {
        const unsigned char *row = (const unsigned char *)W + r * rb;
        for (size_t v = 0; v < n; v += 4) {
            const float *x = X + v * cols;
            float *y = Y + v * ldy + r;
            switch (n - v < 4 ? n - v : 4) {
            case 1: y_row(t, 1, row, cols, x, y, ldy); break;
            case 2: y_row(t, 2, row, cols, x, y, ldy); break;
            case 3: y_row(t, 3, row, cols, x, y, ldy); break;
            default: y_row(t, 4, row, cols, x, y, ldy); break;
            }
        }
    }
}

/* ---- AVX-512 F/BW/VL: 16 lanes --------------------------------------------
 * Fused: each block is decoded into registers, 16 weights per register,
 * and multiplied into the accumulators of up to four vectors; nothing goes
 * through memory. Bytes are widened to 32-bit lanes (one vpmovzxbd per 16
 * weights), where nibbles and bit fields are plain shifts and masks. */

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

AVX512 INLINE float z_half(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h); /* exact, subnormals included, as kern_f16_to_f32 */
}

AVX512 INLINE __m512i z_bytes(const unsigned char *p)
{
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}

/* (d·q − m) rounded twice as ggml rounds it, or d·q. */
AVX512 INLINE __m512 z_scale(__m512i q, float d)
{
    return _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(q));
}

AVX512 INLINE __m512 z_scale_min(__m512i q, float d, float m)
{
    return _mm512_sub_ps(z_scale(q, d), _mm512_set1_ps(m));
}

/* The weights of one block of type t: w[c] holds weights 16c .. 16c + 15. */
AVX512 INLINE void z_block(moe_dtype t, const unsigned char *p, __m512 *w)
{
    const __m512i m4 = _mm512_set1_epi32(0xF), m2 = _mm512_set1_epi32(3), m1 = _mm512_set1_epi32(1);
    switch (t) {
    case MOE_Q8_0: {
        float d = z_half(p);
        w[0] = z_scale(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2))), d);
        w[1] = z_scale(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18))), d);
        break;
    }
    case MOE_Q4_0: {
        float d = z_half(p);
        __m512i q = z_bytes(p + 2), eight = _mm512_set1_epi32(8);
        w[0] = z_scale(_mm512_sub_epi32(_mm512_and_si512(q, m4), eight), d);
        w[1] = z_scale(_mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight), d);
        break;
    }
    case MOE_Q4_K:
    case MOE_Q5_K: {
        const int five = t == MOE_Q5_K;
        float dl[8], ml[8];
        y_k_factors(p, dl, ml);
        const unsigned char *q = p + (five ? 48 : 16);
        __m512i qh[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
        if (five) {
            qh[0] = z_bytes(p + 16);
            qh[1] = z_bytes(p + 32);
        }
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++)
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512i b = z_bytes(q + 32 * g + 16 * h);
                __m512i lo = _mm512_and_si512(b, m4), hi = _mm512_srli_epi32(b, 4);
                if (five) {
                    lo = _mm512_or_si512(lo,
                                         _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(qh[h], 2 * g), m1), 4));
                    hi = _mm512_or_si512(
                        hi, _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(qh[h], 2 * g + 1), m1), 4));
                }
                w[4 * g + h] = z_scale_min(lo, dl[2 * g], ml[2 * g]);
                w[4 * g + 2 + h] = z_scale_min(hi, dl[2 * g + 1], ml[2 * g + 1]);
            }
        break;
    }
    case MOE_Q6_K: {
        const int8_t *sc = (const int8_t *)(p + 192);
        float d = z_half(p + 208);
        const __m512i off = _mm512_set1_epi32(32);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
#pragma GCC unroll 2
            for (int c = 0; c < 2; c++) {
                __m512i a = z_bytes(p + 64 * h + 16 * c), b = z_bytes(p + 64 * h + 32 + 16 * c);
                __m512i qh = z_bytes(p + 128 + 32 * h + 16 * c);
                __m512i q[4] = {
                    _mm512_or_si512(_mm512_and_si512(a, m4), _mm512_slli_epi32(_mm512_and_si512(qh, m2), 4)),
                    _mm512_or_si512(_mm512_and_si512(b, m4),
                                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(qh, 2), m2), 4)),
                    _mm512_or_si512(_mm512_srli_epi32(a, 4),
                                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(qh, 4), m2), 4)),
                    _mm512_or_si512(_mm512_srli_epi32(b, 4), _mm512_slli_epi32(_mm512_srli_epi32(qh, 6), 4)),
                };
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++)
                    w[8 * h + 2 * k + c] = z_scale(_mm512_sub_epi32(q[k], off), d * (float)sc[8 * h + 2 * k + c]);
            }
        break;
    }
    default: assert(!"not a quantised type");
    }
}

AVX512 INLINE void z_deq_t(moe_dtype t, const unsigned char *p, float *y, size_t nblocks)
{
    const size_t B = quant_block(t), bb = quant_block_bytes(t);
    for (size_t b = 0; b < nblocks; b++) {
        __m512 w[16];
        z_block(t, p + b * bb, w);
#pragma GCC unroll 16
        for (size_t c = 0; c < B / 16; c++)
            _mm512_storeu_ps(y + b * B + 16 * c, w[c]);
    }
}

AVX512 static void z_deq(moe_dtype t, const unsigned char *p, float *y, size_t nblocks)
{
    switch (t) {
    case MOE_Q8_0: z_deq_t(MOE_Q8_0, p, y, nblocks); break;
    case MOE_Q4_0: z_deq_t(MOE_Q4_0, p, y, nblocks); break;
    case MOE_Q4_K: z_deq_t(MOE_Q4_K, p, y, nblocks); break;
    case MOE_Q5_K: z_deq_t(MOE_Q5_K, p, y, nblocks); break;
    default: z_deq_t(MOE_Q6_K, p, y, nblocks); break;
    }
}

/* One row against NV (1-4) vectors; two accumulators per vector. */
AVX512 INLINE void z_row(moe_dtype t, const int NV, const unsigned char *row, size_t cols, const float *X, float *Y,
                         size_t ldy)
{
    const size_t B = quant_block(t), bb = quant_block_bytes(t);
    __m512 acc[4][2];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        acc[v][0] = acc[v][1] = _mm512_setzero_ps();
    for (size_t b = 0; b < cols / B; b++) {
        __m512 w[16];
#pragma GCC unroll 4
        for (size_t o = 0; o < bb; o += 64)
            _mm_prefetch((const char *)row + b * bb + PREFETCH_BYTES + o, _MM_HINT_T0);
        z_block(t, row + b * bb, w);
#pragma GCC unroll 16
        for (size_t c = 0; c < B / 16; c++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[v][c & 1] = _mm512_fmadd_ps(w[c], _mm512_loadu_ps(X + v * cols + b * B + 16 * c), acc[v][c & 1]);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        Y[v * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(acc[v][0], acc[v][1]));
}

/* Four short rows of 32-blocks (Q8_0, Q4_0) against NV (1-4) vectors:
 * where a row is a few blocks (attention's keys in a q8_0 cache, 64-128
 * columns), reducing each row's sum alone costs as much as its products,
 * so the four rows' sums of a vector are reduced together. */
AVX512 INLINE void z_rows4(moe_dtype t, const int NV, const unsigned char *row, size_t rb, size_t cols,
                           const float *X, float *Y, size_t ldy)
{
    const size_t bb = quant_block_bytes(t);
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
    for (size_t b = 0; b < cols / 32; b++) {
        __m512 x[4][2];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            x[v][0] = _mm512_loadu_ps(X + v * cols + 32 * b);
            x[v][1] = _mm512_loadu_ps(X + v * cols + 32 * b + 16);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const unsigned char *p = row + i * rb + b * bb;
            _mm_prefetch((const char *)p + PREFETCH_BYTES, _MM_HINT_T0);
            __m512 w[16];
            z_block(t, p, w);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_ps(w[1], x[v][1], _mm512_fmadd_ps(w[0], x[v][0], acc[i][v]));
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        _mm_storeu_ps(Y + v * ldy, simd_sum4(acc[0][v], acc[1][v], acc[2][v], acc[3][v]));
}

AVX512 INLINE void z_rows_t(moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y, size_t ldy,
                            size_t r0, size_t r1)
{
    const size_t rb = cols / quant_block(t) * quant_block_bytes(t);
    if (quant_block(t) == 32 && cols <= 256)
        for (; r0 + 4 <= r1; r0 += 4) {
            const unsigned char *row = (const unsigned char *)W + r0 * rb;
            for (size_t v = 0; v < n; v += 4) {
                const float *x = X + v * cols;
                float *y = Y + v * ldy + r0;
                switch (n - v < 4 ? n - v : 4) {
                case 1: z_rows4(t, 1, row, rb, cols, x, y, ldy); break;
                case 2: z_rows4(t, 2, row, rb, cols, x, y, ldy); break;
                case 3: z_rows4(t, 3, row, rb, cols, x, y, ldy); break;
                default: z_rows4(t, 4, row, rb, cols, x, y, ldy); break;
                }
            }
        }
    for (size_t r = r0; r < r1; r++) {
        const unsigned char *row = (const unsigned char *)W + r * rb;
        for (size_t v = 0; v < n; v += 4) {
            const float *x = X + v * cols;
            float *y = Y + v * ldy + r;
            switch (n - v < 4 ? n - v : 4) {
            case 1: z_row(t, 1, row, cols, x, y, ldy); break;
            case 2: z_row(t, 2, row, cols, x, y, ldy); break;
            case 3: z_row(t, 3, row, cols, x, y, ldy); break;
            default: z_row(t, 4, row, cols, x, y, ldy); break;
            }
        }
    }
}

AVX512 static void z_rows(moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y, size_t ldy,
                          size_t r0, size_t r1)
{
    switch (t) {
    case MOE_Q8_0: z_rows_t(MOE_Q8_0, W, cols, X, n, Y, ldy, r0, r1); break;
    case MOE_Q4_0: z_rows_t(MOE_Q4_0, W, cols, X, n, Y, ldy, r0, r1); break;
    case MOE_Q4_K: z_rows_t(MOE_Q4_K, W, cols, X, n, Y, ldy, r0, r1); break;
    case MOE_Q5_K: z_rows_t(MOE_Q5_K, W, cols, X, n, Y, ldy, r0, r1); break;
    default: z_rows_t(MOE_Q6_K, W, cols, X, n, Y, ldy, r0, r1); break;
    }
}

/* kern_wsum over Q8_0 rows side by side (a q8_0 KV cache's values), each
 * block decoded in registers: 64 columns (two blocks) per pass, each
 * weight times the block's scale once per row, the rows prefetched
 * PREFETCH_BYTES ahead. */
AVX512 INLINE void z_wsum_q8_n(const int NX, const unsigned char *V, size_t cols, const float *A, size_t lda,
                               size_t np, float *O, size_t ldo)
{
    const size_t rb = cols / 32 * 34;
    for (size_t d = 0; d < cols; d += 64) {
        const int nb = cols - d >= 64 ? 2 : 1;
        __m512 acc[4][4];
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                acc[v][c] = _mm512_setzero_ps();
        const unsigned char *blk = V + d / 32 * 34;
        for (size_t p = 0; p < np; p++, blk += rb) {
            _mm_prefetch((const char *)blk + PREFETCH_BYTES, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + PREFETCH_BYTES + 64, _MM_HINT_T0);
#pragma GCC unroll 2
            for (int b = 0; b < 2; b++) {
                if (b == nb)
                    break;
                const unsigned char *q = blk + 34 * b;
                float scale = z_half(q);
                __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 2))));
                __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 18))));
#pragma GCC unroll 4
                for (int v = 0; v < NX; v++) {
                    __m512 a = _mm512_set1_ps(A[v * lda + p] * scale);
                    acc[v][2 * b] = _mm512_fmadd_ps(a, w0, acc[v][2 * b]);
                    acc[v][2 * b + 1] = _mm512_fmadd_ps(a, w1, acc[v][2 * b + 1]);
                }
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
#pragma GCC unroll 4
            for (int c = 0; c < 2 * nb; c++)
                _mm512_storeu_ps(O + v * ldo + d + 16 * c, acc[v][c]);
    }
}

AVX512 static void z_wsum(const void *V, size_t cols, const float *A, size_t lda, size_t n, size_t np, float *O,
                             size_t ldo)
{
    switch (n) {
    case 1: z_wsum_q8_n(1, V, cols, A, lda, np, O, ldo); break;
    case 2: z_wsum_q8_n(2, V, cols, A, lda, np, O, ldo); break;
    case 3: z_wsum_q8_n(3, V, cols, A, lda, np, O, ldo); break;
    default: z_wsum_q8_n(4, V, cols, A, lda, np, O, ldo); break;
    }
}

#endif /* QUANT_X86 */

/* ---- dispatch ------------------------------------------------------------ */

void quant_q8_0_from_f32(const float *x, size_t n, void *out)
{
    unsigned char *o = out;
    for (size_t b = 0; b < n / 32; b++, x += 32, o += 34) {
        float amax = 0;
        int finite = 1;
        for (int j = 0; j < 32; j++) {
            finite &= fabsf(x[j]) <= FLT_MAX;
            amax = fmaxf(amax, fabsf(x[j]));
        }
        /* a NaN or infinity makes the whole block NaN (d = NaN), as it
         * would make the attention's result */
        float d = finite ? amax / 127 : NAN, id = finite && d != 0 ? 1.0f / d : 0.0f;
        uint16_t h = kern_f32_to_f16(d);
        memcpy(o, &h, 2);
        for (int j = 0; j < 32; j++)
            o[2 + j] = (unsigned char)(int8_t)(finite ? roundf(x[j] * id) : 0);
    }
}

void quant_to_f32(int isa, moe_dtype t, const void *src, float *dst, size_t n)
{
    assert(quant_is_quantised(t) && n % quant_block(t) == 0);
    const size_t B = quant_block(t), bb = quant_block_bytes(t);
    const unsigned char *p = src;
    void (*deq)(moe_dtype, const unsigned char *, float *) = p_deq;
#ifdef QUANT_X86
    if (isa == QUANT_AVX512) {
        z_deq(t, p, dst, n / B);
        return;
    }
    if (isa == QUANT_AVX2)
        deq = y_deq;
#else
    (void)isa;
#endif
    for (size_t b = 0; b < n / B; b++)
        deq(t, p + b * bb, dst + b * B);
}

int quant_wsum_supported(int isa, moe_dtype t)
{
    return isa == QUANT_AVX512 && t == MOE_Q8_0;
}

void quant_wsum(int isa, moe_dtype t, const void *V, size_t cols, const float *A, size_t lda, size_t n, size_t np,
                float *O, size_t ldo)
{
    assert(quant_wsum_supported(isa, t) && cols % 32 == 0 && n >= 1 && n <= 4);
#ifdef QUANT_X86
    z_wsum(V, cols, A, lda, n, np, O, ldo);
#else
    (void)V, (void)cols, (void)A, (void)lda, (void)n, (void)np, (void)O, (void)ldo;
#endif
}

void quant_rows(int isa, moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y, size_t ldy,
                size_t r0, size_t r1)
{
    assert(quant_is_quantised(t) && cols % quant_block(t) == 0);
#ifdef QUANT_X86
    if (isa == QUANT_AVX512) {
        z_rows(t, W, cols, X, n, Y, ldy, r0, r1);
        return;
    }
    if (isa == QUANT_AVX2) {
        y_rows(t, W, cols, X, n, Y, ldy, r0, r1);
        return;
    }
#else
    (void)isa;
#endif
    p_rows(t, W, cols, X, n, Y, ldy, r0, r1);
}
