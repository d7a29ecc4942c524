/* Vector kernels: the one place where SIMD lives.
 *
 * Every kernel exists three times: portable C, AVX2 (with FMA and F16C) and
 * AVX-512 (F, BW, VL). All three are compiled into every x86-64 build; the
 * ISA-specific ones carry target attributes, and kern_init picks the best
 * one this CPU runs, or the one MOESCOPE_ISA names. A fourth level, "amx",
 * is AVX-512 plus AMX tile products for f16 and bf16 weights against many
 * vectors (amx.c). Weights are read with unaligned loads, since tensors in
 * a mapped file may sit at any offset. */
#include "kernels.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "amx.h"
#include "quant.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KERN_X86 1
#include <cpuid.h>
#include <immintrin.h>

#include "simd_x86.h"
#endif

#define INLINE static inline __attribute__((always_inline))

/* The matrix-vector kernels prefetch each row this many columns ahead. The
 * hardware prefetcher alone keeps too few misses in flight for four 16-bit
 * row streams: on Sapphire Rapids one thread reads f16 from DRAM at
 * 11.5 GB/s without this and 14.5 GB/s with it (f32 reads 14.5 either way). */
enum { PREFETCH_COLS = 256 };

/* Where a row stream prefetches from column j: PREFETCH_COLS ahead in the
 * row, or, past its end, the same distance into the same row of the next
 * block of rows (block_bytes further on), so that the streams do not stall
 * at the start of every block. Measured on the Mixtral-shaped f16 model,
 * tg64 at 2 threads, alternating with the previous version: AVX-512 median
 * 66.6 against 60.9 t/s over three rounds (faster in 9 of 11 rounds in all),
 * AVX2 63.5 and 60.7 against 58.7 and 53.8. A prefetch past the matrix is
 * harmless. */
static inline size_t prefetch_at(size_t j, size_t cols, size_t es, size_t block_bytes)
{
    return j + PREFETCH_COLS < cols ? (j + PREFETCH_COLS) * es : block_bytes + (j + PREFETCH_COLS - cols) * es;
}

static size_t dtype_size(moe_dtype t)
{
    return t == MOE_F32 ? 4 : 2;
}

/* ---- scalar conversions ----------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float kern_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* inf, or NaN with its payload kept */
        return bits_f32(sign | 0x7f800000 | man << 13);
    if (exp == 0) { /* zero or subnormal: man · 2^-24, exact in f32 */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    return bits_f32(sign | (exp + 127 - 15) << 23 | man << 13);
}

float kern_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t kern_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t x = u & 0x7fffffff;

    if (x > 0x7f800000) /* NaN: quiet, with the top of the payload */
        return sign | 0x7e00 | ((x >> 13) & 0x3ff);
    if (x >= 0x477ff000) /* >= 65520, halfway past the largest f16: inf */
        return sign | 0x7c00;
    if (x >= 0x38800000) { /* normal: rebias, round the 13 dropped bits */
        x -= (uint32_t)(127 - 15) << 23;
        x += 0xfff + ((x >> 13) & 1);
        return sign | (uint16_t)(x >> 13);
    }
    if (x <= 0x33000000) /* <= 2^-25: rounds to zero (the tie goes to even) */
        return sign;
    /* subnormal: the value in units of 2^-24 is man · 2^(exp - 126) */
    uint32_t exp = x >> 23, man = (x & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - exp; /* 14 .. 24 */
    uint32_t r = man >> shift, rest = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (r & 1)))
        r++; /* may carry into the smallest normal, which is right */
    return sign | (uint16_t)r;
}

uint16_t kern_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) /* NaN: quiet, so it cannot become inf */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1); /* overflow rounds to inf, as it should */
    return (uint16_t)(u >> 16);
}

/* ---- portable C ------------------------------------------------------- */

static void p_to_f32(moe_dtype t, const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    uint16_t h;
    switch (t) {
    case MOE_F16:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, s + 2 * i, 2);
            dst[i] = kern_f16_to_f32(h);
        }
        break;
    case MOE_BF16:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, s + 2 * i, 2);
            dst[i] = kern_bf16_to_f32(h);
        }
        break;
    default:
        memcpy(dst, src, n * sizeof *dst);
    }
}

static float sum8(const float *a)
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* Rows are converted a chunk at a time and shared by the n (<= 4) vectors.
 * Eight partial sums per dot product bound the rounding error as the SIMD
 * versions do. */
static void p_rows(moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y,
                   size_t ldy, size_t r0, size_t r1)
{
    enum { CHUNK = 256 };
    size_t rb = cols * dtype_size(t);
    float w[CHUNK];
    for (size_t r = r0; r < r1; r++) {
        const unsigned char *row = (const unsigned char *)W + r * rb;
        float acc[4][8] = {{0}};
        for (size_t j0 = 0; j0 < cols; j0 += CHUNK) {
            size_t m = cols - j0 < CHUNK ? cols - j0 : CHUNK;
            p_to_f32(t, row + j0 * dtype_size(t), w, m);
            for (size_t v = 0; v < n; v++) {
                const float *x = X + v * cols + j0;
                size_t j = 0;
                for (; j + 8 <= m; j += 8)
                    for (int k = 0; k < 8; k++)
                        acc[v][k] += w[j + k] * x[j + k];
                for (; j < m; j++)
                    acc[v][j % 8] += w[j] * x[j];
            }
        }
        for (size_t v = 0; v < n; v++)
            Y[v * ldy + r] = sum8(acc[v]);
    }
}

static float p_dot(const float *a, const float *b, size_t n)
{
    float acc[8] = {0};
    for (size_t i = 0; i < n; i++)
        acc[i % 8] += a[i] * b[i];
    return sum8(acc);
}

static void p_axpy(float a, const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* Instantiate a row kernel for each weight type and 1-4 vectors: with both
 * as constants the compiler keeps every accumulator in a register. */
// clang-format off
#define ROWS_DISPATCH(kernel, t, n, ...)                                                       \
    switch ((int)(t) * 4 + (int)(n) - 1) {                                                     \
    case 0: kernel(MOE_F32, 1, __VA_ARGS__); break;                                            \
    case 1: kernel(MOE_F32, 2, __VA_ARGS__); break;                                            \
    case 2: kernel(MOE_F32, 3, __VA_ARGS__); break;                                            \
    case 3: kernel(MOE_F32, 4, __VA_ARGS__); break;                                            \
    case 4: kernel(MOE_F16, 1, __VA_ARGS__); break;                                            \
    case 5: kernel(MOE_F16, 2, __VA_ARGS__); break;                                            \
    case 6: kernel(MOE_F16, 3, __VA_ARGS__); break;                                            \
    case 7: kernel(MOE_F16, 4, __VA_ARGS__); break;                                            \
    case 8: kernel(MOE_BF16, 1, __VA_ARGS__); break;                                           \
    case 9: kernel(MOE_BF16, 2, __VA_ARGS__); break;                                           \
    case 10: kernel(MOE_BF16, 3, __VA_ARGS__); break;                                          \
    case 11: kernel(MOE_BF16, 4, __VA_ARGS__); break;                                          \
    default: assert(!"bad dtype or vector count");                                             \
    }
// clang-format on

#ifdef KERN_X86

/* ---- AVX2 + FMA + F16C: 8 lanes --------------------------------------- */

#define AVX2 __attribute__((target("avx2,fma,f16c")))

/* 8 weights starting at p, as f32. */
AVX2 INLINE __m256 y_load(moe_dtype t, const unsigned char *p)
{
    switch (t) {
    case MOE_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    case MOE_BF16: /* bf16 is the top half of an f32 */
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    default:
        return _mm256_loadu_ps((const float *)p);
    }
}

/* k < 8 weights, zero-padded; AVX2 has no 16-bit masked load. */
AVX2 INLINE __m256 y_load_part(moe_dtype t, const unsigned char *p, size_t k)
{
    unsigned char buf[32] = {0};
    memcpy(buf, p, k * dtype_size(t));
    return y_load(t, buf);
}

AVX2 INLINE float y_sum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* R rows of W (starting at W) against NX vectors: Y[v*ldy + i] for i < R.
 * With U accumulators per (row, vector) pair, 6 to 16 independent FMA
 * chains are in flight, enough to hide the FMA latency. */
AVX2 INLINE void y_block(moe_dtype t, const int R, const int NX, const unsigned char *W,
                         size_t cols, const float *X, float *Y, size_t ldy)
{
    const int U = R * NX >= 6 ? 1 : 2;
    const size_t es = dtype_size(t), rb = cols * es;
    __m256 acc[4][4][2];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
#pragma GCC unroll 2
            for (int u = 0; u < U; u++)
                acc[i][v][u] = _mm256_setzero_ps();

    size_t j = 0;
    for (; j + 8 * (size_t)U <= cols; j += 8 * (size_t)U) {
        size_t pf = prefetch_at(j, cols, es, R * rb);
#pragma GCC unroll 2
        for (int u = 0; u < U; u++) {
            __m256 x[4];
#pragma GCC unroll 4
            for (int v = 0; v < NX; v++)
                x[v] = _mm256_loadu_ps(X + v * cols + j + 8 * u);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) {
                if (u == 0)
                    _mm_prefetch((const char *)W + i * rb + pf, _MM_HINT_T0);
                __m256 w = y_load(t, W + i * rb + (j + 8 * u) * es);
#pragma GCC unroll 4
                for (int v = 0; v < NX; v++)
                    acc[i][v][u] = _mm256_fmadd_ps(w, x[v], acc[i][v][u]);
            }
        }
    }
    for (; j < cols; j += 8) {
        size_t k = cols - j < 8 ? cols - j : 8;
        __m256 x[4];
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
            x[v] = y_load_part(MOE_F32, (const unsigned char *)(X + v * cols + j), k);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256 w = y_load_part(t, W + i * rb + j * es, k);
#pragma GCC unroll 4
            for (int v = 0; v < NX; v++)
                acc[i][v][0] = _mm256_fmadd_ps(w, x[v], acc[i][v][0]);
        }
    }

#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
            Y[v * ldy + i] =
                y_sum(U == 2 ? _mm256_add_ps(acc[i][v][0], acc[i][v][1]) : acc[i][v][0]);
}

/* Four rows at a time share each load of x (two when there are three or
 * four vectors: 16 registers hold no more accumulators). */
AVX2 INLINE void y_rows_n(moe_dtype t, const int NX, const void *W, size_t cols, const float *X,
                          float *Y, size_t ldy, size_t r0, size_t r1)
{
    const int R = NX <= 2 ? 4 : 2;
    const size_t rb = cols * dtype_size(t);
    size_t r = r0;
    for (; r + R <= r1; r += R)
        y_block(t, R, NX, (const unsigned char *)W + r * rb, cols, X, Y + r, ldy);
    for (; r < r1; r++)
        y_block(t, 1, NX, (const unsigned char *)W + r * rb, cols, X, Y + r, ldy);
}

AVX2 static void y_rows(moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y,
                        size_t ldy, size_t r0, size_t r1)
{
    ROWS_DISPATCH(y_rows_n, t, n, W, cols, X, Y, ldy, r0, r1);
}

AVX2 static void y_to_f32(moe_dtype t, const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    size_t es = dtype_size(t), i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, y_load(t, s + i * es));
    p_to_f32(t, s + i * es, dst + i, n - i);
}

AVX2 static float y_dot(const float *a, const float *b, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = y_sum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

AVX2 static void y_axpy(float a, const float *x, float *y, size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* Weighted sum of rows (kern_wsum) for NX weight vectors: 16 columns per
 * pass in 8 accumulators; the tail of the columns zero-padded. */
AVX2 INLINE void y_wsum_n(moe_dtype t, const int NX, const unsigned char *V, size_t ldv, size_t cols,
                          const float *A, size_t lda, size_t np, float *O, size_t ldo)
{
    const size_t es = dtype_size(t);
    for (size_t d = 0; d < cols; d += 16) {
        size_t k0 = cols - d < 8 ? cols - d : 8, k1 = cols - d <= 8 ? 0 : cols - d - 8 < 8 ? cols - d - 8 : 8;
        __m256 acc[4][2];
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
            acc[v][0] = acc[v][1] = _mm256_setzero_ps();
        for (size_t p = 0; p < np; p++) {
            const unsigned char *row = V + (p * ldv + d) * es;
            __m256 w0 = k0 == 8 ? y_load(t, row) : y_load_part(t, row, k0);
            __m256 w1 = k1 == 8 ? y_load(t, row + 8 * es)
                        : k1    ? y_load_part(t, row + 8 * es, k1)
                                : _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int v = 0; v < NX; v++) {
                __m256 a = _mm256_set1_ps(A[v * lda + p]);
                acc[v][0] = _mm256_fmadd_ps(a, w0, acc[v][0]);
                acc[v][1] = _mm256_fmadd_ps(a, w1, acc[v][1]);
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++) {
            float buf[16];
            _mm256_storeu_ps(buf, acc[v][0]);
            _mm256_storeu_ps(buf + 8, acc[v][1]);
            memcpy(O + v * ldo + d, buf, (k0 + k1) * sizeof *buf);
        }
    }
}

AVX2 static void y_wsum(moe_dtype t, const void *V, size_t ldv, size_t cols, const float *A, size_t lda,
                        size_t n, size_t np, float *O, size_t ldo)
{
    ROWS_DISPATCH(y_wsum_n, t, n, V, ldv, cols, A, lda, np, O, ldo);
}

/* ---- AVX-512 F/BW/VL: 16 lanes ---------------------------------------- */

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

/* The first k (<= 16) lanes set. */
AVX512 INLINE __mmask16 z_mask(size_t k)
{
    return (__mmask16)(k >= 16 ? 0xffff : (1u << k) - 1);
}

/* 16 weights starting at p, as f32. */
AVX512 INLINE __m512 z_load(moe_dtype t, const unsigned char *p)
{
    switch (t) {
    case MOE_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    case MOE_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
    default:
        return _mm512_loadu_ps((const float *)p);
    }
}

/* The lanes in m; the others are zero and their memory is not touched. */
AVX512 INLINE __m512 z_load_part(moe_dtype t, const unsigned char *p, __mmask16 m)
{
    switch (t) {
    case MOE_F16:
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    case MOE_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    default:
        return _mm512_maskz_loadu_ps(m, p);
    }
}

/* As y_block, 16 columns per step; the tail uses masked loads. */
AVX512 INLINE void z_block(moe_dtype t, const int R, const int NX, const unsigned char *W,
                           size_t cols, const float *X, float *Y, size_t ldy)
{
    const int U = R * NX >= 6 ? 1 : 2;
    const size_t es = dtype_size(t), rb = cols * es;
    __m512 acc[4][4][2];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
#pragma GCC unroll 2
            for (int u = 0; u < U; u++)
                acc[i][v][u] = _mm512_setzero_ps();

    size_t j = 0;
    for (; j + 16 * (size_t)U <= cols; j += 16 * (size_t)U) {
        size_t pf = prefetch_at(j, cols, es, R * rb);
#pragma GCC unroll 2
        for (int u = 0; u < U; u++) {
            __m512 x[4];
#pragma GCC unroll 4
            for (int v = 0; v < NX; v++)
                x[v] = _mm512_loadu_ps(X + v * cols + j + 16 * u);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) {
                if (u == 0)
                    _mm_prefetch((const char *)W + i * rb + pf, _MM_HINT_T0);
                __m512 w = z_load(t, W + i * rb + (j + 16 * u) * es);
#pragma GCC unroll 4
                for (int v = 0; v < NX; v++)
                    acc[i][v][u] = _mm512_fmadd_ps(w, x[v], acc[i][v][u]);
            }
        }
    }
    for (; j < cols; j += 16) {
        __mmask16 m = z_mask(cols - j);
        __m512 x[4];
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
            x[v] = _mm512_maskz_loadu_ps(m, X + v * cols + j);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512 w = z_load_part(t, W + i * rb + j * es, m);
#pragma GCC unroll 4
            for (int v = 0; v < NX; v++)
                acc[i][v][0] = _mm512_fmadd_ps(w, x[v], acc[i][v][0]);
        }
    }

    if (R == 4) { /* each vector's four row sums at once, into adjacent outputs */
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++) {
            __m512 a[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                a[i] = U == 2 ? _mm512_add_ps(acc[i][v][0], acc[i][v][1]) : acc[i][v][0];
            _mm_storeu_ps(Y + v * ldy, simd_sum4(a[0], a[1], a[2], a[3]));
        }
        return;
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
            Y[v * ldy + i] = _mm512_reduce_add_ps(U == 2 ? _mm512_add_ps(acc[i][v][0], acc[i][v][1])
                                                         : acc[i][v][0]);
}

/* 32 registers: four rows at a time for any vector count up to four. */
AVX512 INLINE void z_rows_n(moe_dtype t, const int NX, const void *W, size_t cols, const float *X,
                            float *Y, size_t ldy, size_t r0, size_t r1)
{
    const size_t rb = cols * dtype_size(t);
    size_t r = r0;
    for (; r + 4 <= r1; r += 4)
        z_block(t, 4, NX, (const unsigned char *)W + r * rb, cols, X, Y + r, ldy);
    for (; r < r1; r++)
        z_block(t, 1, NX, (const unsigned char *)W + r * rb, cols, X, Y + r, ldy);
}

AVX512 static void z_rows(moe_dtype t, const void *W, size_t cols, const float *X, size_t n,
                          float *Y, size_t ldy, size_t r0, size_t r1)
{
    ROWS_DISPATCH(z_rows_n, t, n, W, cols, X, Y, ldy, r0, r1);
}

AVX512 static void z_to_f32(moe_dtype t, const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    size_t es = dtype_size(t), i = 0;
    for (; i + 64 <= n; i += 64) {
        _mm512_storeu_ps(dst + i, z_load(t, s + i * es));
        _mm512_storeu_ps(dst + i + 16, z_load(t, s + (i + 16) * es));
        _mm512_storeu_ps(dst + i + 32, z_load(t, s + (i + 32) * es));
        _mm512_storeu_ps(dst + i + 48, z_load(t, s + (i + 48) * es));
    }
    for (; i < n; i += 16) {
        __mmask16 m = z_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, z_load_part(t, s + i * es, m));
    }
}

AVX512 static float z_dot(const float *a, const float *b, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i < n; i += 16) {
        __mmask16 m = z_mask(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512 static void z_axpy(float a, const float *x, float *y, size_t n)
{
    __m512 va = _mm512_set1_ps(a);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = z_mask(n - i);
        __m512 r =
            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}

/* Weighted sum of rows (kern_wsum) for NX weight vectors: 64 columns per
 * pass in 16 accumulators, the tail of the columns masked. */
AVX512 INLINE void z_wsum_n(moe_dtype t, const int NX, const unsigned char *V, size_t ldv, size_t cols,
                            const float *A, size_t lda, size_t np, float *O, size_t ldo)
{
    const size_t es = dtype_size(t);
    for (size_t d = 0; d < cols; d += 64) {
        __mmask16 m[4];
        __m512 acc[4][4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            m[c] = d + 16 * c < cols ? z_mask(cols - d - 16 * c) : 0;
#pragma GCC unroll 4
            for (int v = 0; v < NX; v++)
                acc[v][c] = _mm512_setzero_ps();
        }
        for (size_t p = 0; p < np; p++) {
            const unsigned char *row = V + (p * ldv + d) * es;
            __m512 w[4];
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                w[c] = z_load_part(t, row + 16 * c * es, m[c]);
#pragma GCC unroll 4
            for (int v = 0; v < NX; v++) {
                __m512 a = _mm512_set1_ps(A[v * lda + p]);
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                    acc[v][c] = _mm512_fmadd_ps(a, w[c], acc[v][c]);
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < NX; v++)
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                _mm512_mask_storeu_ps(O + v * ldo + d + 16 * c, m[c], acc[v][c]);
    }
}

AVX512 static void z_wsum(moe_dtype t, const void *V, size_t ldv, size_t cols, const float *A, size_t lda,
                          size_t n, size_t np, float *O, size_t ldo)
{
    ROWS_DISPATCH(z_wsum_n, t, n, V, ldv, cols, A, lda, np, O, ldo);
}

/* e^x for x <= 0 (softmax arguments): x = n ln2 + r with |r| <= ln2/2,
 * e^r by its Taylor series to r^7 (relative error below 1e-8 there), then
 * scaled by 2^n. Below -87.3 (under f32's normal range) it returns about
 * 2^-126 · e^r instead of a subnormal; a softmax weight that small is 0 at
 * f32 precision anyway. */
AVX512 INLINE __m512 z_exp_neg(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

AVX512 static void z_softmax(float *x, size_t n, float scale)
{
    __m512 vs = _mm512_set1_ps(scale), mx = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = z_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs);
        mx = _mm512_mask_max_ps(mx, m, mx, v);
    }
    __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = z_mask(n - i);
        __m512 e = z_exp_neg(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, x + i), vs, vmax));
        sum = _mm512_mask_add_ps(sum, m, sum, e);
        _mm512_mask_storeu_ps(x + i, m, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = z_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

/* g[i] = silu(g[i]) · u[i] = g / (1 + e^-g) · u: σ from e^-|g| (z_exp_neg,
 * relative error below 1e-7 for |g| < 87), mirrored for g < 0. */
AVX512 static void z_silu_mul(float *g, const float *u, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = z_mask(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = z_exp_neg(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
        __m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
        /* σ(x) = 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for x < 0 */
        __m512 sig = _mm512_mask_mul_ps(inv, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), e, inv);
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(_mm512_mul_ps(x, sig), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

#endif /* KERN_X86 */

/* ---- portable versions of the rest ------------------------------------- */

/* kern_wsum without SIMD: the same sums in the same order per column. */
static void p_wsum(moe_dtype t, const void *V, size_t ldv, size_t cols, const float *A, size_t lda, size_t n,
                   size_t np, float *O, size_t ldo)
{
    const unsigned char *base = V;
    size_t es = dtype_size(t);
    for (size_t v = 0; v < n; v++)
        memset(O + v * ldo, 0, cols * sizeof *O);
    for (size_t p = 0; p < np; p++) {
        const unsigned char *row = base + p * ldv * es;
        for (size_t d = 0; d < cols; d++) {
            float w;
            if (t == MOE_F32)
                memcpy(&w, row + d * 4, 4);
            else {
                uint16_t h;
                memcpy(&h, row + d * 2, 2);
                w = t == MOE_F16 ? kern_f16_to_f32(h) : kern_bf16_to_f32(h);
            }
            for (size_t v = 0; v < n; v++)
                O[v * ldo + d] += A[v * lda + p] * w;
        }
    }
}

static void p_softmax(float *x, size_t n, float scale)
{
    float max = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        x[i] *= scale;
        if (x[i] > max)
            max = x[i];
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}

static void p_silu_mul(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- dispatch ----------------------------------------------------------- */

typedef struct {
    const char *name;
    /* n in 1..4 */
    void (*rows)(moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y,
                 size_t ldy, size_t r0, size_t r1);
    void (*to_f32)(moe_dtype t, const void *src, float *dst, size_t n);
    float (*dot)(const float *a, const float *b, size_t n);
    void (*axpy)(float a, const float *x, float *y, size_t n);
    /* n in 1..4 */
    void (*wsum)(moe_dtype t, const void *V, size_t ldv, size_t cols, const float *A, size_t lda, size_t n,
                 size_t np, float *O, size_t ldo);
    void (*softmax)(float *x, size_t n, float scale);
    void (*silu_mul)(float *g, const float *u, size_t n);
} kern_impl;

/* Worst to best. */
static const kern_impl impls[] = {
    {"portable", p_rows, p_to_f32, p_dot, p_axpy, p_wsum, p_softmax, p_silu_mul},
#ifdef KERN_X86
    {"avx2", y_rows, y_to_f32, y_dot, y_axpy, y_wsum, p_softmax, p_silu_mul},
    {"avx512", z_rows, z_to_f32, z_dot, z_axpy, z_wsum, z_softmax, z_silu_mul},
    /* AVX-512 and the tile products (kern_tiles) */
    {"amx", z_rows, z_to_f32, z_dot, z_axpy, z_wsum, z_softmax, z_silu_mul},
#endif
};
enum { N_IMPLS = sizeof impls / sizeof impls[0] };

static _Atomic(const kern_impl *) current;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static int runs_here(const kern_impl *k)
{
#ifdef KERN_X86
    /* __builtin_cpu_supports also checks that the OS saves the wide
     * registers; not every compiler knows "f16c", so ask cpuid for that. */
    unsigned a, b, c = 0, d;
    __builtin_cpu_init();
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    int avx2 = f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (k == &impls[1])
        return avx2;
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl");
    if (k == &impls[2])
        return avx512;
    if (k == &impls[3])
        return avx512 && amx_usable();
#endif
    return k == &impls[0];
}

static const kern_impl *find(const char *name)
{
    for (int i = 0; i < N_IMPLS; i++)
        if (strcmp(impls[i].name, name) == 0)
            return &impls[i];
    return NULL;
}

/* The best that runs here; MOESCOPE_ISA may ask for a lesser one. A name
 * that is unknown or cannot run here is ignored. */
static void pick(void)
{
    const kern_impl *k = &impls[0];
    for (int i = N_IMPLS - 1; i > 0; i--)
        if (runs_here(&impls[i])) {
            k = &impls[i];
            break;
        }
    const char *want = getenv("MOESCOPE_ISA");
    const kern_impl *w = want ? find(want) : NULL;
    if (w && w <= k)
        k = w;
    atomic_store_explicit(&current, k, memory_order_release);
}

void kern_init(void)
{
    pthread_once(&init_once, pick);
}

static inline const kern_impl *impl(void)
{
    const kern_impl *k = atomic_load_explicit(&current, memory_order_acquire);
    if (!k) {
        kern_init();
        k = atomic_load_explicit(&current, memory_order_acquire);
    }
    return k;
}

/* The quantised kernels' implementation (quant.h) for k: "amx" runs
 * AVX-512's. */
static int quant_isa(const kern_impl *k)
{
    int i = (int)(k - impls);
    return i > QUANT_AVX512 ? QUANT_AVX512 : i;
}

const char *kern_isa(void)
{
    return impl()->name;
}

int kern_set_isa(const char *name)
{
    kern_init();
    const kern_impl *k = find(name);
    if (!k || !runs_here(k))
        return -1;
    atomic_store_explicit(&current, k, memory_order_release);
    return 0;
}

/* ---- the public kernels ------------------------------------------------- */

void kern_matvec(moe_dtype t, const void *W, size_t cols, const float *x, float *y, size_t r0,
                 size_t r1)
{
    assert((unsigned)t < MOE_DTYPE_COUNT);
    if (quant_is_quantised(t)) {
        quant_rows(quant_isa(impl()), t, W, cols, x, 1, y, 0, r0, r1);
        return;
    }
    impl()->rows(t, W, cols, x, 1, y, 0, r0, r1);
}

void kern_matvec_n(moe_dtype t, const void *W, size_t cols, const float *X, size_t n, float *Y,
                   size_t ldy, size_t r0, size_t r1)
{
    assert((unsigned)t < MOE_DTYPE_COUNT);
    const kern_impl *k = impl();
    if (quant_is_quantised(t)) {
        enum { TILE = 16384 }; /* floats: 64 KiB of dequantised rows */
        if (n <= 4 || cols > TILE) { /* each block decoded once per four vectors */
            quant_rows(quant_isa(k), t, W, cols, X, n, Y, ldy, r0, r1);
            return;
        }
        /* Many vectors (the tokens routed to one expert in a prefill):
         * dequantise a few rows at a time and run the f32 kernels on them,
         * which share each load of X among four rows. Decoding each block
         * for every four vectors and re-reading X for every row ran at
         * 25-30 GFLOP/s at 32 vectors, this at 62-73 (kernels_bench
         * qsweep). */
        float tile[TILE];
        size_t per = TILE / cols, rb = kern_row_bytes(t, cols);
        for (size_t b0 = r0; b0 < r1; b0 += per) {
            size_t nr = r1 - b0 < per ? r1 - b0 : per;
            quant_to_f32(quant_isa(k), t, (const unsigned char *)W + b0 * rb, tile, nr * cols);
            for (size_t v = 0; v < n; v += 4)
                k->rows(MOE_F32, tile, cols, X + v * cols, n - v < 4 ? n - v : 4, Y + v * ldy + b0, ldy, 0, nr);
        }
        return;
    }
    if (n <= 4) {
        k->rows(t, W, cols, X, n, Y, ldy, r0, r1);
        return;
    }
    /* More than four vectors pass over the rows several times: take the
     * rows in blocks of about 128 KiB, which stay in L2 until every group
     * of four has passed, so that memory is read once. */
    size_t block = ((size_t)128 << 10) / (cols * dtype_size(t) + 1) / 4 * 4;
    if (block < 4)
        block = 4;
    for (size_t b0 = r0; b0 < r1; b0 += block) {
        size_t b1 = r1 - b0 < block ? r1 : b0 + block;
        for (size_t v = 0; v < n; v += 4)
            k->rows(t, W, cols, X + v * cols, n - v < 4 ? n - v : 4, Y + v * ldy, ldy, b0, b1);
    }
}

void kern_q8_act(moe_dtype t, const float *x, size_t cols, void *out)
{
    quant_dot_act(quant_isa(impl()), t, x, cols, out);
}

void kern_matvec_q8(moe_dtype t, const void *W, size_t cols, const void *XQ, size_t n, float *Y, size_t ldy,
                    size_t r0, size_t r1)
{
    quant_dot_rows(quant_isa(impl()), t, W, cols, XQ, n, Y, ldy, r0, r1);
}

int kern_tiles(moe_dtype t)
{
#ifdef KERN_X86
    return (t == MOE_F16 || t == MOE_BF16) && impl() == &impls[3];
#else
    (void)t;
    return 0;
#endif
}

size_t kern_tile_act_bytes(size_t n, size_t cols)
{
    return amx_act_bytes(n, cols);
}

void kern_tile_act(const float *X, size_t n, size_t cols, void *out)
{
    assert(kern_tiles(MOE_F16));
    amx_act(X, n, cols, out);
}

void kern_matvec_tiles(moe_dtype t, const void *W, size_t cols, const void *XT, size_t n, float *Y, size_t ldy,
                       size_t r0, size_t r1, void *scratch, size_t scratch_bytes)
{
    assert(kern_tiles(t));
    amx_rows(t, W, cols, XT, n, Y, ldy, r0, r1, scratch, scratch_bytes);
}

size_t kern_row_bytes(moe_dtype t, size_t cols)
{
    return quant_is_quantised(t) ? cols / quant_block(t) * quant_block_bytes(t) : cols * dtype_size(t);
}

void kern_to_f32(moe_dtype t, const void *src, float *dst, size_t n)
{
    assert((unsigned)t < MOE_DTYPE_COUNT);
    if (t == MOE_F32)
        memcpy(dst, src, n * sizeof *dst);
    else if (quant_is_quantised(t))
        quant_to_f32(quant_isa(impl()), t, src, dst, n);
    else
        impl()->to_f32(t, src, dst, n);
}

float kern_dot(const float *a, const float *b, size_t n)
{
    return impl()->dot(a, b, n);
}

void kern_axpy(float a, const float *x, float *y, size_t n)
{
    impl()->axpy(a, x, y, n);
}

/* kern_wsum over Q8_0 rows (a q8_0 KV cache) where quant.c has no kernel
 * for it: a tile of rows is dequantised at a time for the f32 kernel, whose
 * sums per tile are added up in O. */
static void wsum_quant(const kern_impl *k, moe_dtype t, const void *V, size_t cols, const float *A, size_t lda,
                       size_t n, size_t np, float *O, size_t ldo)
{
    enum { TILE = 8192, MAX_COLS = 1024 }; /* floats: 32 KiB of rows; head dimensions up to 1024 */
    assert(cols > 0 && cols <= MAX_COLS);
    float tile[TILE], part[4 * MAX_COLS];
    size_t rb = kern_row_bytes(t, cols), per = TILE / cols;
    for (size_t v = 0; v < n; v++)
        memset(O + v * ldo, 0, cols * sizeof *O);
    for (size_t p0 = 0; p0 < np; p0 += per) {
        size_t m = np - p0 < per ? np - p0 : per;
        quant_to_f32(quant_isa(k), t, (const unsigned char *)V + p0 * rb, tile, m * cols);
        for (size_t v = 0; v < n; v += 4) {
            size_t nv = n - v < 4 ? n - v : 4;
            k->wsum(MOE_F32, tile, cols, cols, A + v * lda + p0, lda, nv, m, part, cols);
            for (size_t i = 0; i < nv; i++)
                for (size_t d = 0; d < cols; d++)
                    O[(v + i) * ldo + d] += part[i * cols + d];
        }
    }
}

void kern_wsum(moe_dtype t, const void *V, size_t ldv, size_t cols, const float *A, size_t lda, size_t n,
               size_t np, float *O, size_t ldo)
{
    const kern_impl *k = impl();
    if (t == MOE_Q8_0) {
        assert(ldv == cols && cols % 32 == 0);
        if (!quant_wsum_supported(quant_isa(k), t)) {
            wsum_quant(k, t, V, cols, A, lda, n, np, O, ldo);
            return;
        }
        for (size_t v = 0; v < n; v += 4)
            quant_wsum(quant_isa(k), t, V, cols, A + v * lda, lda, n - v < 4 ? n - v : 4, np, O + v * ldo, ldo);
        return;
    }
    assert(t == MOE_F32 || t == MOE_F16 || t == MOE_BF16);
    for (size_t v = 0; v < n; v += 4) {
        size_t nv = n - v < 4 ? n - v : 4;
        k->wsum(t, V, ldv, cols, A + v * lda, lda, nv, np, O + v * ldo, ldo);
    }
}

void kern_silu_mul(float *g, const float *u, size_t n)
{
    impl()->silu_mul(g, u, n);
}

void kern_softmax(float *x, size_t n, float scale)
{
    if (!n)
        return;
    impl()->softmax(x, n, scale);
}
