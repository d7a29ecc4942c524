/* AMX-BF16 tile products (amx.h says what they compute and how exactly).
 *
 * A tile product here is C (16 weight rows x 16 vectors, f32) += A (16
 * weight rows x 32 columns) · B (32 columns x 16 vectors). The weights are
 * A, in their own row order: each step splits 32 rows x 32 columns of f16
 * into bfloat16 halves in a 4 KiB buffer that stays in L1, and the tile
 * unit reads them from there (with more than 32 vectors, a block of 32
 * rows is split once, whole, into the caller's scratch, for every pass of
 * 32 vectors). The activations are B, which the tile unit
 * wants with pairs of columns interleaved ("VNNI" order); amx_act packs
 * them that way once per product, and every thread shares the result.
 *
 * Four accumulator tiles take 32 rows x 32 vectors; more vectors take
 * further passes over the same rows. The eight tile registers:
 *   0, 1  C for rows 0-15 and 16-31, vectors 0-15 of the pass
 *   2, 3  C for rows 0-15 and 16-31, vectors 16-31
 *   4, 5  B hi and lo parts
 *   6, 7  A hi and lo parts */
#include "amx.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define AMX_BUILT 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

enum {
    KB = 32,          /* columns per tile step */
    VG = 16,          /* vectors per B tile */
    TILE = 1024,      /* bytes per tile */
    GROUP_STEP = 2 * TILE,
    /* Each row stream prefetches this many bytes ahead (8 lines): the
     * tile steps read 32 rows 64 bytes at a time, more streams than the
     * hardware prefetcher follows. */
    PREFETCH_BYTES = 512,
};

size_t amx_act_bytes(size_t n, size_t cols)
{
    return (n + VG - 1) / VG * ((cols + KB - 1) / KB) * GROUP_STEP;
}

#ifdef AMX_BUILT

#define AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))
#define INLINE static inline __attribute__((always_inline))

static int usable;
static pthread_once_t usable_once = PTHREAD_ONCE_INIT;

static void probe(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    int amx = (d >> 22 & 1) && (d >> 24 & 1); /* AMX-BF16, AMX-TILE */
    int avx512 = (b >> 16 & 1) && (b >> 30 & 1) && (a = 0, __get_cpuid_count(7, 1, &a, &b, &c, &d)) && (a >> 5 & 1);
    if (!amx || !avx512) /* the splitting needs AVX-512 F, BW and BF16 */
        return;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6) != 0xe6 || (lo & 0x60000) != 0x60000) /* the OS saves ZMM and tile state */
        return;
    /* Linux hands out the 8 KiB of tile data only to processes that ask. */
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    usable = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

int amx_usable(void)
{
    pthread_once(&usable_once, probe);
    return usable;
}

AMX INLINE __m512 bf16_lo_to_f32(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* r[i] = column i of the 16 x 16 dwords in r. */
AMX INLINE void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* then r[4i + j], lane L: rows 4i..4i+3 of column 4L + j */
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int j = 0; j < 4; j++) {
        __m512i u0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x44), u1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xee);
        __m512i u2 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x44);
        __m512i u3 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xee);
        t[j] = _mm512_shuffle_i32x4(u0, u2, 0x88);
        t[4 + j] = _mm512_shuffle_i32x4(u0, u2, 0xdd);
        t[8 + j] = _mm512_shuffle_i32x4(u1, u3, 0x88);
        t[12 + j] = _mm512_shuffle_i32x4(u1, u3, 0xdd);
    }
    for (int i = 0; i < 16; i++)
        r[i] = t[i];
}

/* One part of columns k..k+32 of a group's 16 vectors (x[c] NULL: a zero
 * pad) as a B tile: the hi part rounded to nearest, or the lo part, the
 * rounded remainder. Column pair p of vector c is dword p of its part,
 * which goes to row p, dword c: a transpose. */
AMX INLINE void pack_part(const float *const x[VG], size_t k, size_t cols, int lo, unsigned char *tile)
{
    size_t left = cols - k;
    __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
    __mmask16 m1 = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
    __m512i r[VG];
    for (int c = 0; c < VG; c++) {
        __m512 x0 = x[c] ? _mm512_maskz_loadu_ps(m0, x[c] + k) : _mm512_setzero_ps();
        __m512 x1 = x[c] ? _mm512_maskz_loadu_ps(m1, x[c] + k + 16) : _mm512_setzero_ps();
        __m512i h = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
        if (lo) {
            __m512 r0 = _mm512_sub_ps(x0, bf16_lo_to_f32(_mm512_castsi512_si256(h)));
            __m512 r1 = _mm512_sub_ps(x1, bf16_lo_to_f32(_mm512_extracti64x4_epi64(h, 1)));
            h = (__m512i)_mm512_cvtne2ps_pbh(r1, r0);
        }
        r[c] = h;
    }
    transpose16(r);
    for (int p = 0; p < VG; p++)
        _mm512_storeu_si512(tile + 64 * p, r[p]);
}

AMX static void act(const float *X, size_t n, size_t cols, void *out)
{
    size_t nkb = (cols + KB - 1) / KB;
    unsigned char *o = out;
    for (size_t g = 0; g * VG < n; g++) {
        const float *x[VG];
        for (int c = 0; c < VG; c++)
            x[c] = g * VG + (size_t)c < n ? X + (g * VG + (size_t)c) * cols : NULL;
        for (size_t b = 0; b < nkb; b++, o += GROUP_STEP) {
            pack_part(x, b * KB, cols, 0, o);
            pack_part(x, b * KB, cols, 1, o + TILE);
        }
    }
}

/* Rows [0, nr) of a 32-row block, columns k..k+32, split into a: the hi
 * part is the f32 value with its low 16 bits cleared (for f16 its top 8
 * significant bits), the lo part the rest, exact in bfloat16 since an f16
 * has 11. bf16 rows are their own hi part. Rows past nr are left alone
 * (the caller zeroed them). Each row stream prefetches ahead, running on
 * into the next block's rows (next bytes on) past its end. */
AMX INLINE void split_block(moe_dtype t, const unsigned char *W, size_t rb, size_t nr, size_t k, size_t cols,
                            size_t next, uint16_t a[2][2][VG][KB])
{
    size_t left = cols - k, at = k * 2;
    __mmask32 m = left >= KB ? 0xffffffffu : (__mmask32)((1u << left) - 1);
    size_t pf = at + PREFETCH_BYTES < rb ? at + PREFETCH_BYTES : next + at + PREFETCH_BYTES - rb;
    const __m512i keep = _mm512_set1_epi32((int)0xffff0000u);
    for (size_t i = 0; i < nr; i++) {
        const unsigned char *p = W + i * rb;
        _mm_prefetch((const char *)p + pf, _MM_HINT_T0);
        __m512i raw = _mm512_maskz_loadu_epi16(m, p + at);
        uint16_t *hi = a[i / VG][0][i % VG], *lo = a[i / VG][1][i % VG];
        if (t == MOE_BF16) {
            _mm512_store_si512(hi, raw);
            continue;
        }
        __m512 w0 = _mm512_cvtph_ps(_mm512_castsi512_si256(raw));
        __m512 w1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(raw, 1));
        __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(w0), keep));
        __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(w1), keep));
        _mm512_store_si512(hi, (__m512i)_mm512_cvtne2ps_pbh(h1, h0));
        _mm512_store_si512(lo, (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(w1, h1), _mm512_sub_ps(w0, h0)));
    }
}

/* C tile c (16 rows from r, 16 vectors from v) into Y. */
AMX INLINE void put(const float cbuf[VG][VG], float *Y, size_t ldy, size_t r, size_t nr, size_t v, size_t n)
{
    for (size_t j = 0; j < VG && v + j < n; j++)
        for (size_t i = 0; i < VG && i < nr; i++)
            Y[(v + j) * ldy + r + i] = cbuf[i][j];
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Tile c += A·B as three products, hi·hi, hi·lo and lo·hi, with A's
 * halves in tiles 6 and 7 and B's in 4 and 5 (bf16 weights: no lo·hi). */
#define DP3(c, f16)                                                                                                    \
    do {                                                                                                               \
        _tile_dpbf16ps(c, 6, 4);                                                                                       \
        _tile_dpbf16ps(c, 6, 5);                                                                                       \
        if (f16)                                                                                                       \
            _tile_dpbf16ps(c, 7, 4);                                                                                   \
    } while (0)
/* A's halves (a[0], a[1]) into tiles 6 and 7, B's (hi, then lo 1 KiB on) into 4 and 5 */
#define LOAD_A(a, f16)                                                                                                 \
    do {                                                                                                               \
        _tile_loadd(6, (a)[0], 64);                                                                                    \
        if (f16)                                                                                                       \
            _tile_loadd(7, (a)[1], 64);                                                                                \
    } while (0)
#define LOAD_B(b)                                                                                                      \
    do {                                                                                                               \
        _tile_loadd(4, (b), 64);                                                                                       \
        _tile_loadd(5, (b) + TILE, 64);                                                                                \
    } while (0)

/* One column block's tile products for a 32-row block: A, the weights'
 * halves, from a; B, group g's activations from b0 and group g + 1's from
 * b1 when `two`; rows 16-31 only when rows2. */
AMX INLINE void tile_step(const uint16_t a[2][2][VG][KB], const unsigned char *b0, const unsigned char *b1, int two,
                          int rows2, int f16)
{
    LOAD_B(b0);
    LOAD_A(a[0], f16);
    if (!two) { /* 0, 1: hi·hi; 2, 3: the rest, in chains half as long */
        _tile_dpbf16ps(0, 6, 4);
        _tile_dpbf16ps(2, 6, 5);
        if (f16)
            _tile_dpbf16ps(2, 7, 4);
        if (rows2) {
            LOAD_A(a[1], f16);
            _tile_dpbf16ps(1, 6, 4);
            _tile_dpbf16ps(3, 6, 5);
            if (f16)
                _tile_dpbf16ps(3, 7, 4);
        }
        return;
    }
    DP3(0, f16);
    LOAD_B(b1);
    DP3(2, f16);
    if (!rows2)
        return;
    LOAD_A(a[1], f16);
    DP3(3, f16); /* B still holds group g + 1 */
    LOAD_B(b0);
    DP3(1, f16);
}

/* The accumulators of one pass (32 rows from r, groups g and g + 1) into Y. */
AMX INLINE void put_pass(float *Y, size_t ldy, size_t r, size_t nr, size_t g, size_t n, int two, int rows2)
{
    _Alignas(64) float c[VG][VG], c2[VG][VG];
    size_t v = g * VG;
    for (int half = 0; half < 1 + rows2; half++) {
        size_t rr = r + (size_t)half * VG, nrr = half ? nr - VG : nr;
        if (half) {
            _tile_stored(1, c, 64);
            _tile_stored(3, c2, 64);
        } else {
            _tile_stored(0, c, 64);
            _tile_stored(2, c2, 64);
        }
        if (two) {
            put(c, Y, ldy, rr, nrr, v, n);
            put(c2, Y, ldy, rr, nrr, v + VG, n);
        } else {
            for (int i = 0; i < VG; i++)
                for (int j = 0; j < VG; j++)
                    c[i][j] += c2[i][j];
            put(c, Y, ldy, rr, nrr, v, n);
        }
    }
}

typedef uint16_t split_t[2][2][VG][KB]; /* 32 rows x 32 columns, hi and lo: 4 KiB */

AMX static void rows(moe_dtype t, const void *W, size_t cols, const void *XP, size_t n, float *Y, size_t ldy,
                     size_t r0, size_t r1, void *scratch, size_t scratch_bytes)
{
    _Alignas(64) tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = VG;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);

    const size_t rb = cols * 2, nkb = (cols + KB - 1) / KB, ng = (n + VG - 1) / VG;
    const int f16 = t == MOE_F16;
    /* Up to 32 vectors, one pass: each column block is split just before
     * its tile products, into one of two buffers in L1 taken in turn.
     * More vectors, more passes: a block's weights are split once, whole,
     * into the caller's scratch (in L2), where it has room. */
    _Alignas(64) split_t buf[2];
    uintptr_t sp = ((uintptr_t)scratch + 63) & ~(uintptr_t)63;
    size_t room = scratch ? (scratch_bytes - (sp - (uintptr_t)scratch)) / sizeof(split_t) : 0;
    int once = ng > 2 && scratch_bytes > 64 && nkb <= room;
    split_t *whole = once ? (split_t *)sp : NULL;
    const unsigned char *xp = XP;

    for (size_t r = r0; r < r1; r += 2 * VG) {
        size_t nr = r1 - r < 2 * VG ? r1 - r : 2 * VG;
        const unsigned char *w = (const unsigned char *)W + r * rb;
        int rows2 = nr > VG;
        if (nr < 2 * VG) /* rows past the end multiply as zeros */
            memset(once ? (void *)whole : (void *)buf, 0, (once ? nkb : 2) * sizeof(split_t));
        if (once)
            for (size_t b = 0; b < nkb; b++)
                split_block(t, w, rb, nr, b * KB, cols, 2 * VG * rb, whole[b]);
        for (size_t g = 0; g < ng; g += 2) {
            int two = g + 1 < ng;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (size_t b = 0; b < nkb; b++) {
                const unsigned char *b0 = xp + (g * nkb + b) * GROUP_STEP;
                if (once) {
                    tile_step(whole[b], b0, b0 + nkb * GROUP_STEP, two, rows2, f16);
                    continue;
                }
                split_block(t, w, rb, nr, b * KB, cols, 2 * VG * rb, buf[b & 1]);
                tile_step(buf[b & 1], b0, b0 + nkb * GROUP_STEP, two, rows2, f16);
            }
            put_pass(Y, ldy, r, nr, g, n, two, rows2);
        }
    }
    _tile_release();
}

void amx_act(const float *X, size_t n, size_t cols, void *out)
{
    act(X, n, cols, out);
}

void amx_rows(moe_dtype t, const void *W, size_t cols, const void *XP, size_t n, float *Y, size_t ldy, size_t r0,
              size_t r1, void *scratch, size_t scratch_bytes)
{
    rows(t, W, cols, XP, n, Y, ldy, r0, r1, scratch, scratch_bytes);
}

#else /* no AMX in this build */

int amx_usable(void)
{
    return 0;
}

void amx_act(const float *X, size_t n, size_t cols, void *out)
{
    (void)X, (void)n, (void)cols, (void)out;
}

void amx_rows(moe_dtype t, const void *W, size_t cols, const void *XP, size_t n, float *Y, size_t ldy, size_t r0,
              size_t r1, void *scratch, size_t scratch_bytes)
{
    (void)t, (void)W, (void)cols, (void)XP, (void)n, (void)Y, (void)ldy, (void)r0, (void)r1;
    (void)scratch, (void)scratch_bytes;
}

#endif
