/* Quantised weight types (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) in every ISA the
 * CPU runs.
 *
 * Dequantisation must give exactly the values that tools/gen_gguf.py's
 * numpy dequantiser (written from ggml's dequantize_row_*) wrote into
 * tests/fixtures/quant/TYPE.f32 for the blocks of TYPE.bin: both round
 * every product and difference to f32 in ggml's order, so equality is
 * bitwise.
 *
 * Products (kern_matvec_n, n = 1..6: up to four vectors the fused
 * kernels, beyond four dequantised rows through the f32 kernels; and
 * matmul on a pool, whose n over 48 dequantise tiles for sgemm) are
 * compared with a dot product in double
 * over those expected values, within 1e-5 · Σ|w·x| as test_kernels.c
 * argues for f32 accumulation; and each SIMD kernel with the portable one
 * on random blocks (random bytes with a finite scale, and scales near the
 * f16 extremes), within the same bound.
 *
 * The integer path (8-bit activations, quant_dot.c; Q4_K, Q5_K, Q6_K):
 * the activation quantiser's rounding is within half a step of every
 * value; each product equals a double dot product of the dequantised
 * weights with the dequantised activations within 1e-5 · Σ|w·x̂| (the
 * integers are exact; only the per-block scaling rounds); and against the
 * f32 activations the error is at most Σ|w|·d/2, the bound the
 * activations' rounding (|x − x̂| ≤ d/2) puts on it, which is what the
 * model-level tolerances build on. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "matmul.h"
#include "pool.h"
#include "quant.h"
#include "tap.h"
#include "testutil.h"

#define TOL 1e-5

static const char *const isas[] = {"portable", "avx2", "avx512"};
enum { N_ISAS = 3, N_TYPES = 5 };
static const moe_dtype types[N_TYPES] = {MOE_Q8_0, MOE_Q4_0, MOE_Q4_K, MOE_Q5_K, MOE_Q6_K};
static const char *const files[N_TYPES] = {"q8_0", "q4_0", "q4_k", "q5_k", "q6_k"};

static uint64_t rng_state = 0x243f6a8885a308d3u;


static void *read_file(const char *name, const char *ext, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/quant/%s%s", test_srcdir(), name, ext);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(p, 1, (size_t)n, f);
    fclose(f);
    return p;
}

/* Random blocks: random bytes, with the f16 scale fields set to a finite
 * value of magnitude about `scale` (kept below 2^15, so no block overflows
 * f32: |w| < 2^15 · 127 · 63). */
static unsigned char *random_blocks(moe_dtype t, size_t nblocks, float scale)
{
    size_t bb = quant_block_bytes(t);
    unsigned char *p = malloc(nblocks * bb);
    for (size_t i = 0; i < nblocks * bb; i++)
        p[i] = (unsigned char)test_rng_u64(&rng_state);
    for (size_t b = 0; b < nblocks; b++) {
        unsigned char *q = p + b * bb;
        size_t at = t == MOE_Q6_K ? 208 : 0, count = t == MOE_Q4_K || t == MOE_Q5_K ? 2 : 1;
        for (size_t k = 0; k < count; k++) {
            uint16_t h = kern_f32_to_f16(scale * test_rng_unit(&rng_state));
            memcpy(q + at + 2 * k, &h, 2);
        }
    }
    return p;
}

static float *random_floats(size_t n)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = test_rng_unit(&rng_state);
    return x;
}

/* Y (n, rows) against double dot products of the expected weights. */
static int check_against(const float *w, size_t rows, size_t cols, const float *X, size_t n, const float *Y,
                         double *worst)
{
    int good = 1;
    for (size_t v = 0; v < n; v++)
        for (size_t r = 0; r < rows; r++) {
            double ref = 0, mag = 0;
            for (size_t j = 0; j < cols; j++) {
                ref += (double)w[r * cols + j] * X[v * cols + j];
                mag += fabs((double)w[r * cols + j] * X[v * cols + j]);
            }
            double e = fabs(Y[v * rows + r] - ref) / (mag > 0 ? mag : 1);
            if (e > *worst)
                *worst = e;
            good &= fabs(Y[v * rows + r] - ref) <= TOL * mag + 1e-30;
        }
    return good;
}

static void test_fixture(int ti, const char *isa)
{
    moe_dtype t = types[ti];
    size_t nb, nf;
    unsigned char *raw = read_file(files[ti], ".bin", &nb);
    float *want = read_file(files[ti], ".f32", &nf);
    if (!raw || !want) {
        ok(0, "%s: tests/fixtures/quant/%s.bin and .f32 are readable", isa, files[ti]);
        free(raw);
        free(want);
        return;
    }
    size_t B = quant_block(t), bb = quant_block_bytes(t), nblocks = nb / bb, n = nblocks * B;
    ok(nb % bb == 0 && nf == n * sizeof(float), "%s: %s fixture: %zu blocks, %zu values", isa, moe_dtype_name(t),
       nblocks, n);
    float *got = malloc(n * sizeof *got);
    kern_to_f32(t, raw, got, n);
    size_t bad = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof *got) && !(got[i] == 0 && want[i] == 0)) {
            bad++;
            if (first == n)
                first = i;
        }
    ok(bad == 0, "%s: %s dequantises to ggml's values exactly (%zu differ%s%.9g vs %.9g)", isa, moe_dtype_name(t), bad,
       bad ? "; first: " : "", bad ? got[first] : 0.0, bad ? want[first] : 0.0);

    /* The same blocks as a matrix: two blocks per row. */
    size_t cols = 2 * B, rows = n / cols;
    float *X = random_floats(6 * cols), *Y = malloc(6 * rows * sizeof *Y);
    for (size_t v = 1; v <= 6; v++) {
        memset(Y, 0, 6 * rows * sizeof *Y);
        kern_matvec_n(t, raw, cols, X, v, Y, rows, 0, rows);
        double worst = 0;
        int good = check_against(want, rows, cols, X, v, Y, &worst);
        ok(good,
           "%s: %s matvec, %zu vector(s), %zu x %zu: within %g of Σ|w·x| (worst "
           "%.1e)",
           isa, moe_dtype_name(t), v, rows, cols, TOL, worst);
    }
    free(X);
    free(Y);
    free(got);
    free(raw);
    free(want);
}

static void test_simd_cols(int ti, const char *isa, float scale, size_t cols)
{
    moe_dtype t = types[ti];
    size_t B = quant_block(t), rows = 37, n = 5;
    unsigned char *W = random_blocks(t, rows * cols / B, scale);
    float *X = random_floats(n * cols), *Yp = calloc(n * rows, sizeof *Yp), *Ys = calloc(n * rows, sizeof *Ys);
    float *wp = malloc(rows * cols * sizeof *wp), *ws = malloc(rows * cols * sizeof *ws);
    kern_set_isa("portable");
    kern_to_f32(t, W, wp, rows * cols);
    kern_matvec_n(t, W, cols, X, n, Yp, rows, 0, rows);
    kern_set_isa(isa);
    kern_to_f32(t, W, ws, rows * cols);
    kern_matvec_n(t, W, cols, X, n, Ys, rows, 3, rows); /* a range that starts inside */
    kern_matvec(t, W, cols, X, Ys, 0, 3);
    for (size_t v = 1; v < n; v++)
        kern_matvec_n(t, W, cols, X + v * cols, 1, Ys + v * rows, rows, 0, 3);
    ok(!memcmp(wp, ws, rows * cols * sizeof *wp), "%s: %s dequantisation equals the portable one (scale %g, %zu columns)", isa,
       moe_dtype_name(t), scale, cols);
    int good = 1;
    double worst = 0;
    for (size_t v = 0; v < n; v++)
        for (size_t r = 0; r < rows; r++) {
            double mag = 0;
            for (size_t j = 0; j < cols; j++)
                mag += fabs((double)wp[r * cols + j] * X[v * cols + j]);
            double e = fabs((double)Ys[v * rows + r] - Yp[v * rows + r]);
            good &= isfinite(Ys[v * rows + r]) && e <= TOL * mag + 1e-30;
            if (mag > 0 && e / mag > worst)
                worst = e / mag;
        }
    ok(good,
       "%s: %s matvec equals the portable one within %g of Σ|w·x| (scale %g, %zu columns, "
       "worst %.1e)",
       isa, moe_dtype_name(t), TOL, scale, cols, worst);
    free(W);
    free(X);
    free(Yp);
    free(Ys);
    free(wp);
    free(ws);
}

/* Each SIMD kernel against the portable one on random blocks: long rows,
 * and for the 32-blocks also short ones (3 blocks), which the AVX-512
 * kernel takes four rows at a time. */
static void test_simd(int ti, const char *isa, float scale)
{
    size_t B = quant_block(types[ti]);
    test_simd_cols(ti, isa, scale, 8 * 256 + (B == 32 ? 96 : 0));
    if (B == 32)
        test_simd_cols(ti, isa, scale, 96);
}

/* The activation quantiser: rounding within half a step, |q| ≤ 127 with
 * 127 reached, the bsums, a zero block, a NaN. */
static void test_q8_act(void)
{
    size_t cols = 4 * 256;
    float *x = random_floats(cols);
    for (size_t i = 0; i < 256; i++)
        x[256 + i] = 0;             /* block 1: zeros */
    for (size_t i = 0; i < 256; i++)
        x[512 + i] *= 1e-30f;       /* block 2: tiny */
    x[768 + 5] = NAN;               /* block 3: not finite */
    quant_q8k *q = malloc(quant_dot_act_bytes(MOE_Q4_K, cols));
    kern_q8_act(MOE_Q4_K, x, cols, q);
    int good = 1, sums = 1, reached = 1;
    double worst = 0;
    for (size_t b = 0; b < 3; b++) {
        int top = 0;
        for (size_t i = 0; i < 256; i++) {
            double e = fabs((double)x[256 * b + i] - (double)q[b].d * q[b].q[i]);
            if (q[b].d > 0 && e / q[b].d > worst)
                worst = e / q[b].d;
            good &= e <= 0.5 * q[b].d * (1 + 1e-6) + 1e-45 && q[b].q[i] >= -127;
            top |= abs(q[b].q[i]) == 127;
        }
        reached &= b == 1 ? q[b].d == 0 : top;
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int i = 0; i < 16; i++)
                sum += q[b].q[16 * g + i];
            sums &= sum == q[b].bsums[g];
        }
    }
    ok(good, "8-bit activations: every value within half a step of its own (worst %.3f steps)", worst);
    ok(reached, "8-bit activations: the largest value of a block is ±127; a zero block has scale 0");
    ok(sums, "8-bit activations: bsums are the sums of each 16");
    ok(isnan(q[3].d), "8-bit activations: a NaN makes its block's scale NaN (products NaN, as in f32)");
    quant_q8k *q2 = malloc(quant_dot_act_bytes(MOE_Q4_K, cols));
    for (int i = 0; i < N_ISAS; i++)
        if (kern_set_isa(isas[i]) == 0) {
            kern_q8_act(MOE_Q4_K, x, cols, q2);
            ok(!memcmp(q, q2, 3 * sizeof *q) && isnan(q2[3].d), "8-bit activations: %s gives the same bytes", isas[i]);
        }
    free(q2);
    free(q);
    free(x);
}

/* Y (n, rows) of the integer path against (a) double dot products of the
 * dequantised weights w with the dequantised activations, within TOL of
 * Σ|w·x̂|; (b) those with the f32 activations X, within Σ|w|·d/2. */
static int check_q8(const float *w, size_t rows, size_t cols, const float *X, const quant_q8k *XQ, size_t n,
                    const float *Y, double *worst_exact, double *worst_bound)
{
    size_t nb = cols / 256;
    int good = 1;
    for (size_t v = 0; v < n; v++)
        for (size_t r = 0; r < rows; r++) {
            double ref = 0, mag = 0, exact = 0, bound = 0;
            for (size_t j = 0; j < cols; j++) {
                const quant_q8k *b = &XQ[v * nb + j / 256];
                double wj = w[r * cols + j], xh = (double)b->d * b->q[j % 256];
                ref += wj * xh;
                mag += fabs(wj * xh);
                exact += wj * X[v * cols + j];
                bound += fabs(wj) * b->d / 2;
            }
            double y = Y[v * rows + r], e = fabs(y - ref) / (mag > 0 ? mag : 1);
            double eb = bound > 0 ? fabs(y - exact) / bound : 0;
            if (e > *worst_exact)
                *worst_exact = e;
            if (eb > *worst_bound)
                *worst_bound = eb;
            good &= isfinite(y) && fabs(y - ref) <= TOL * mag + 1e-30 &&
                    fabs(y - exact) <= bound + TOL * mag + 1e-30;
        }
    return good;
}

/* The integer kernels of one ISA on random blocks, n = 1..6 vectors. */
static void test_q8_rows(moe_dtype t, const char *isa, float scale)
{
    size_t cols = 4 * 256, rows = 21, nmax = 6, nb = cols / 256;
    unsigned char *W = random_blocks(t, rows * nb, scale);
    float *w = malloc(rows * cols * sizeof *w), *X = random_floats(nmax * cols);
    for (size_t i = 0; i < nmax * cols; i++)
        X[i] = 2 * X[i] - 1;
    quant_q8k *XQ = malloc(nmax * quant_dot_act_bytes(t, cols));
    for (size_t v = 0; v < nmax; v++)
        kern_q8_act(t, X + v * cols, cols, XQ + v * nb);
    kern_to_f32(t, W, w, rows * cols);
    float *Y = calloc(nmax * rows, sizeof *Y);
    int good = 1;
    double we = 0, wb = 0;
    for (size_t n = 1; n <= nmax; n++) {
        kern_matvec_q8(t, W, cols, XQ, n, Y, rows, 2, rows); /* a range that starts inside */
        kern_matvec_q8(t, W, cols, XQ, n, Y, rows, 0, 2);
        good &= check_q8(w, rows, cols, X, XQ, n, Y, &we, &wb);
    }
    ok(good,
       "%s: %s with 8-bit activations, 1-6 vectors (scale %g): within %g of Σ|w·x̂| of the dequantised values "
       "(worst %.1e), and of the f32 product within Σ|w|·d/2 (worst %.2f of it)",
       isa, moe_dtype_name(t), scale, TOL, we, wb);
    free(W);
    free(w);
    free(X);
    free(XQ);
    free(Y);
}

/* matmul on a pool of 3: the matrix-vector path for small n, tiles of
 * dequantised rows through sgemm for large n. */
static void test_matmul(void)
{
    pool *p = pool_new(3);
    size_t cols = 512, rows = 300;
    matmul_ctx *c = p ? matmul_new(p, cols) : NULL;
    if (!ok(c != NULL, "a pool of 3 and a matmul context")) {
        pool_free(p);
        return;
    }
    matmul_set_act_q8(c, 0);
    for (int ti = 0; ti < N_TYPES; ti++) {
        moe_dtype t = types[ti];
        unsigned char *W = random_blocks(t, rows * cols / quant_block(t), 0.01f);
        float *w = malloc(rows * cols * sizeof *w);
        kern_to_f32(t, W, w, rows * cols);
        static const size_t ns[] = {1, 5, 24, 49, 130};
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            size_t n = ns[i];
            float *X = random_floats(n * cols), *Y = calloc(n * rows, sizeof *Y);
            matmul(c, t, W, rows, cols, X, n, Y);
            double worst = 0;
            int good = check_against(w, rows, cols, X, n, Y, &worst);
            ok(good, "matmul %s, n %zu, %zu x %zu: within %g (worst %.1e)", moe_dtype_name(t), n, rows, cols, TOL,
               worst);
            free(X);
            free(Y);
        }
        free(W);
        free(w);
    }

    /* 8-bit activations through matmul and matmul_many (shared X
     * quantised once): small n take the integer kernels, large n sgemm. */
    matmul_free(c);
    cols = 1024;
    if (!ok((c = matmul_new(p, cols)) != NULL, "a matmul context for 1024 columns")) {
        pool_free(p);
        return;
    }
    matmul_set_act_q8(c, 1);
    for (int ti = 2; ti < N_TYPES; ti++) {
        moe_dtype t = types[ti];
        unsigned char *W = random_blocks(t, rows * cols / 256, 0.01f);
        float *w = malloc(rows * cols * sizeof *w);
        kern_to_f32(t, W, w, rows * cols);
        uint16_t *Wh = malloc(rows * cols * sizeof *Wh);
        for (size_t i = 0; i < rows * cols; i++)
            Wh[i] = kern_f32_to_f16(w[i]);
        static const size_t ns[] = {1, 5, 48, 49};
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            size_t n = ns[i], nb = cols / 256;
            float *X = random_floats(n * cols), *Y = calloc(n * rows, sizeof *Y), *Y2 = calloc(n * rows, sizeof *Y2);
            quant_q8k *XQ = malloc(n * quant_dot_act_bytes(t, cols));
            for (size_t v = 0; v < n; v++)
                kern_q8_act(t, X + v * cols, cols, XQ + v * nb);
            matmul(c, t, W, rows, cols, X, n, Y);
            /* with f16 weights on the same X between them: that X in two
             * forms where the f16 product takes the tile products */
            float *Yh = malloc(n * rows * sizeof *Yh), *Yh2 = malloc(n * rows * sizeof *Yh2);
            matmul(c, MOE_F16, Wh, rows, cols, X, n, Yh);
            matmul_item items[3] = {{t, W, rows, cols, X, n, Y2}, {MOE_F16, Wh, rows, cols, X, n, Yh2},
                                    {t, W, rows, cols, X, n, Y2}};
            matmul_many(c, items, 3);
            double we = 0, wb = 0;
            int good = n <= 48 ? check_q8(w, rows, cols, X, XQ, n, Y, &we, &wb)
                               : check_against(w, rows, cols, X, n, Y, &we);
            ok(good && !memcmp(Y, Y2, n * rows * sizeof *Y) && !memcmp(Yh, Yh2, n * rows * sizeof *Yh),
               "matmul %s, 8-bit activations, n %zu: %s (worst %.1e), matmul_many the same, and so an f16 "
               "product on the same X%s",
               moe_dtype_name(t), n, n <= 48 ? "integer kernels within their bounds" : "sgemm with f32 activations",
               we, matmul_tiles(c, MOE_F16, n) ? " (tile products)" : "");
            free(Yh);
            free(Yh2);
            free(X);
            free(Y);
            free(Y2);
            free(XQ);
        }
        free(Wh);
        free(W);
        free(w);
    }
    matmul_free(c);
    pool_free(p);
}

/* The Q8_0 quantiser of the KV cache (ggml's quantize_row_q8_0_ref):
 * against its definition, computed here in double. */
static void test_q8_0_quantiser(void)
{
    enum { N = 32 * 64 };
    float *x = malloc(N * sizeof *x);
    unsigned char *q = malloc(N / 32 * 34);
    for (size_t i = 0; i < N; i++) /* blocks of very different ranges */
        x[i] = test_rng_unit(&rng_state) * ldexpf(1.0f, (int)(i / 32 % 24) - 12);
    for (size_t i = 64; i < 96; i++) /* an all-zero block */
        x[i] = 0;
    quant_q8_0_from_f32(x, N, q);
    int good = 1, reach = 0;
    double worst = 0;
    for (size_t b = 0; b < N / 32; b++) {
        double amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmax(amax, fabs(x[b * 32 + j]));
        uint16_t dh;
        memcpy(&dh, q + b * 34, 2);
        double d = kern_f16_to_f32(dh), dref = (float)(amax / 127);
        good &= d == kern_f16_to_f32(kern_f32_to_f16((float)dref)); /* d is amax/127 rounded to f16 */
        for (int j = 0; j < 32; j++) {
            int8_t v = (int8_t)q[b * 34 + 2 + j];
            reach |= v == 127 || v == -127;
            good &= v != -128;
            double err = fabs(v * d - x[b * 32 + j]);
            /* half a step of amax/127, and the f16 rounding of that step
             * (2^-11 of it, or more where it is an f16 subnormal) over up
             * to 127 steps */
            double bound = 0.5 * dref * (1 + 1e-6) + 127 * fabs(d - dref);
            if (amax > 0 && err / bound > worst)
                worst = err / bound;
            good &= amax > 0 ? err <= bound : v == 0 && d == 0;
        }
    }
    ok(good && reach, "Q8_0 quantiser: d = f16(max|x|/127), q never -128 and ±127 reached, each value within "
                      "half a step plus 127 times d's f16 rounding (worst %.3f of it), a zero block all zero",
       worst);
    x[5] = NAN;
    quant_q8_0_from_f32(x, 32, q);
    uint16_t dh;
    memcpy(&dh, q, 2);
    ok(isnan(kern_f16_to_f32(dh)), "Q8_0 quantiser: a NaN makes its block's scale NaN");
    free(x);
    free(q);
}

int main(void)
{
    kern_init();
    const char *best = kern_isa();
    for (int i = 0; i < N_ISAS; i++) {
        if (kern_set_isa(isas[i]) != 0) {
            skip("%s: not supported by this CPU", isas[i]);
            continue;
        }
        for (int ti = 0; ti < N_TYPES; ti++)
            test_fixture(ti, isas[i]);
        if (i == 0)
            continue;
        for (int ti = 0; ti < N_TYPES; ti++) {
            test_simd(ti, isas[i], 0.01f);
            test_simd(ti, isas[i], 1e-7f);   /* subnormal f16 scales */
            test_simd(ti, isas[i], 30000.f); /* near the largest f16 */
        }
    }
    test_q8_act();
    for (int i = 0; i < N_ISAS; i++)
        if (kern_set_isa(isas[i]) == 0)
            for (int ti = 2; ti < N_TYPES; ti++) {
                test_q8_rows(types[ti], isas[i], 0.01f);
                test_q8_rows(types[ti], isas[i], 1e-7f);
                test_q8_rows(types[ti], isas[i], 30000.f);
            }
    kern_set_isa(best);
    test_matmul();
    test_q8_0_quantiser();

    /* Row sizes: whole blocks. */
    ok(kern_row_bytes(MOE_Q8_0, 64) == 68 && kern_row_bytes(MOE_Q4_0, 64) == 36 &&
           kern_row_bytes(MOE_Q4_K, 512) == 288 && kern_row_bytes(MOE_Q5_K, 512) == 352 &&
           kern_row_bytes(MOE_Q6_K, 512) == 420,
       "row bytes: Q8_0 34, Q4_0 18, Q4_K 144, Q5_K 176, Q6_K 210 per block");
    ok(!strcmp(moe_dtype_name(MOE_Q4_0), "Q4_0") && !strcmp(moe_dtype_name(MOE_Q4_K), "Q4_K") &&
           !strcmp(moe_dtype_name(MOE_Q5_K), "Q5_K") && !strcmp(moe_dtype_name(MOE_Q6_K), "Q6_K"),
       "dtype names");
    return done_testing();
}
