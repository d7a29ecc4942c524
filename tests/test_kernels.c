/* Kernels, pool and matmul against naive references written here: IEEE
 * decoding from the formula, rounding by search in the table of
 * representable values, dot products in double. Every ISA the CPU runs is
 * tested through kern_set_isa.
 *
 * Tolerance for products: |got - ref| <= 1e-5 · Σ|w·x|. Float accumulation
 * errs by at most 2^-24 per addition times the partial sum; the kernels
 * keep 8-32 partial sums, so at cols = 1000 the worst case is about
 * 125 · 6e-8 = 7.5e-6 of Σ|w·x|, and sgemm's sequential sums grow like
 * √cols · 6e-8 ≈ 2e-6 for random signs. A wrong or missing term (about
 * 1/cols ≈ 1e-3 of Σ|w·x| or more) fails by two orders of magnitude.
 *
 * The AMX tile products (f16/bf16 weights, many vectors; "amx") split each
 * operand into two bfloat16s and are tested on their own, against the
 * bound that splitting allows (tile_tol). */
#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "matmul.h"
#include "pool.h"
#include "quant.h"
#include "tap.h"
#include "testutil.h"

#define TOL 1e-5

static const char *const isas[] = {"portable", "avx2", "avx512", "amx"};
enum { N_ISAS = 4 };
static const moe_dtype dtypes[] = {MOE_F32, MOE_F16, MOE_BF16};
static const char *const dtype_names[] = {"f32", "f16", "bf16"};

/* ---- helpers --------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;


static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE binary16 and bfloat16 from the formula: (-1)^s · 2^(e-bias) · 1.m,
 * subnormals 2^(1-bias) · 0.m, all-ones exponent inf or NaN. */
static double ref_f16(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 31  ? (m ? NAN : INFINITY)
               : e == 0 ? ldexp(m / 1024.0, -14)
                        : ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

static double ref_bf16(uint16_t h)
{
    int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double v = e == 255 ? (m ? NAN : INFINITY)
               : e == 0 ? ldexp(m / 128.0, -126)
                        : ldexp(1.0 + m / 128.0, e - 127);
    return s ? -v : v;
}

static double ref_decode(moe_dtype t, const unsigned char *p, size_t i)
{
    if (t == MOE_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return t == MOE_F16 ? ref_f16(h) : ref_bf16(h);
}

static void store(moe_dtype t, unsigned char *p, size_t i, float f)
{
    uint16_t h;
    switch (t) {
    case MOE_F16:
        h = kern_f32_to_f16(f);
        memcpy(p + 2 * i, &h, 2);
        break;
    case MOE_BF16:
        h = kern_f32_to_bf16(f);
        memcpy(p + 2 * i, &h, 2);
        break;
    default:
        memcpy(p + 4 * i, &f, 4);
    }
}

static size_t esize(moe_dtype t)
{
    return t == MOE_F32 ? 4 : 2;
}

/* Same value, or both NaN. */
static int same(double a, double b)
{
    return (isnan(a) && isnan(b)) || (a == b && !signbit(a) == !signbit(b));
}

/* Round-to-nearest-even by search: values[k] for k <= top are the
 * non-negative finite values of the format in order, values[top + 1] is
 * the next power of two (the value inf rounds from). */
static uint16_t ref_round(const double *values, int top, float f)
{
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    int lo = 0, hi = top + 1; /* values[lo] <= a < values[hi] */
    if (a >= values[top + 1])
        return sign | (uint16_t)(top + 1);
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (values[mid] <= a)
            lo = mid;
        else
            hi = mid;
    }
    double m = (values[lo] + values[hi]) / 2; /* exact in double */
    int k = a < m ? lo : a > m ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | (uint16_t)k;
}

static double f16_values[0x7c01], bf16_values[0x7f81];

static void make_tables(void)
{
    for (int k = 0; k < 0x7c00; k++)
        f16_values[k] = ref_f16((uint16_t)k);
    f16_values[0x7c00] = 65536.0;
    for (int k = 0; k < 0x7f80; k++)
        bf16_values[k] = ref_bf16((uint16_t)k);
    bf16_values[0x7f80] = ldexp(1.0, 128);
}

/* The encoding f must round to, or -1 for "any NaN of f's sign". */
static int32_t want_f16(float f)
{
    return isnan(f) ? -1 : ref_round(f16_values, 0x7bff, f);
}

static int32_t want_bf16(float f)
{
    return isnan(f) ? -1 : ref_round(bf16_values, 0x7f7f, f);
}

static int is_nan16(uint16_t h, int exp_bits)
{
    int man_bits = 15 - exp_bits;
    uint16_t exp_mask = (uint16_t)(((1u << exp_bits) - 1) << man_bits);
    return (h & exp_mask) == exp_mask && (h & ((1u << man_bits) - 1)) != 0;
}

/* ---- conversions ------------------------------------------------------ */

static void test_decode(void)
{
    int bad16 = 0, bad_bf = 0, payload = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kern_f16_to_f32((uint16_t)h);
        bad16 += !same(f, ref_f16((uint16_t)h)) || !signbit(f) != !(h >> 15);
        if (isnan(f) && ((bits_of(f) >> 13) & 1023) != (h & 1023))
            payload++;
        float g = kern_bf16_to_f32((uint16_t)h);
        bad_bf += !same(g, ref_bf16((uint16_t)h)) || bits_of(g) != h << 16;
    }
    ok(bad16 == 0, "all 65536 f16 patterns decode exactly (%d wrong)", bad16);
    ok(payload == 0, "f16 NaN payloads survive decoding (%d lost)", payload);
    ok(bad_bf == 0, "all 65536 bf16 patterns decode exactly (%d wrong)", bad_bf);
}

static int check_round(const char *name, uint16_t (*conv)(float), int32_t (*want)(float),
                       int exp_bits, float f, int verbose)
{
    uint16_t got = conv(f);
    int32_t w = want(f);
    int good = w < 0 ? is_nan16(got, exp_bits) && (got >> 15) == (bits_of(f) >> 31) : got == w;
    if (!good && verbose)
        diag("%s(%a = 0x%08x) = 0x%04x, want 0x%04x", name, (double)f, bits_of(f), got,
             (unsigned)w);
    return good;
}

static void test_round(void)
{
    /* Named cases first, each with its expected encoding. */
    static const struct {
        float f;
        uint16_t f16, bf16;
        const char *what;
    } cases[] = {
        {1.0f, 0x3c00, 0x3f80, "one"},
        {1.0f + 0x1p-11f, 0x3c00, 0x3f80, "f16 tie below an even: down"},
        {1.0f + 3 * 0x1p-11f, 0x3c02, 0x3f80, "f16 tie above an odd: up"},
        {1.0f + 0x1p-8f, 0x3c04, 0x3f80, "bf16 tie below an even: down"},
        {1.0f + 3 * 0x1p-8f, 0x3c0c, 0x3f82, "bf16 tie above an odd: up"},
        {65504.0f, 0x7bff, 0x4780, "largest f16"},
        {65519.99f, 0x7bff, 0x4780, "just below the f16 overflow tie"},
        {65520.0f, 0x7c00, 0x4780, "f16 overflow tie goes to inf"},
        {1e10f, 0x7c00, 0x5015, "far past f16 range"},
        {3.4028235e38f, 0x7c00, 0x7f80, "FLT_MAX: bf16 rounds to inf"},
        {0x1p-24f, 0x0001, 0x3380, "smallest f16 subnormal"},
        {0x1p-25f, 0x0000, 0x3300, "half the smallest subnormal: tie to zero"},
        {0x1.8p-24f, 0x0002, 0x33c0, "1.5 subnormal units: tie to even (2)"},
        {0x1.000002p-25f, 0x0001, 0x3300, "just above half a unit"},
        {0x1.ff8p-15f, 0x03ff, 0x3880, "largest f16 subnormal"},
        {0x1.ffcp-15f, 0x0400, 0x3880, "tie past the largest subnormal: up to the smallest normal"},
        {0x1p-14f, 0x0400, 0x3880, "smallest f16 normal"},
        {-2.0f, 0xc000, 0xc000, "negative"},
        {-0.0f, 0x8000, 0x8000, "negative zero"},
        {0x1p-130f, 0x0000, 0x0008, "bf16 subnormal"},
        {0x1p-140f, 0x0000, 0x0000, "below half the smallest bf16 subnormal"},
        {INFINITY, 0x7c00, 0x7f80, "inf"},
        {-INFINITY, 0xfc00, 0xff80, "-inf"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = kern_f32_to_f16(cases[i].f), b = kern_f32_to_bf16(cases[i].f);
        if (h != cases[i].f16 || b != cases[i].bf16) {
            diag("%s: %a -> f16 0x%04x (want 0x%04x), bf16 0x%04x (want 0x%04x)", cases[i].what,
                 (double)cases[i].f, h, cases[i].f16, b, cases[i].bf16);
            bad++;
        }
        /* the named expectations must agree with the search reference */
        if (want_f16(cases[i].f) != cases[i].f16 || want_bf16(cases[i].f) != cases[i].bf16) {
            diag("reference disagrees on: %s", cases[i].what);
            bad++;
        }
    }
    ok(bad == 0, "f32 -> f16/bf16: named cases (ties, overflow, subnormals, signs)");

    uint32_t nans[] = {0x7f800001, 0x7fc00000, 0xffc00000, 0x7f802000, 0xff800001, 0x7fffffff};
    int nan_bad = 0;
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        nan_bad += !check_round("f16", kern_f32_to_f16, want_f16, 5, float_of(nans[i]), 1);
        nan_bad += !check_round("bf16", kern_f32_to_bf16, want_bf16, 8, float_of(nans[i]), 1);
    }
    ok(nan_bad == 0, "NaN stays NaN with its sign, whatever the payload");

    /* Every representable value, every midpoint, and the floats on each
     * side of them, in both signs. */
    int bad16 = 0, bad_bf = 0;
    for (int k = 0; k < 0x7c00; k++) {
        double lo = f16_values[k], hi = f16_values[k + 1], m = (lo + hi) / 2;
        float probe[] = {(float)lo, (float)m, nextafterf((float)m, 0),
                         nextafterf((float)m, INFINITY)};
        for (int i = 0; i < 4; i++)
            for (int s = 0; s < 2; s++)
                bad16 += !check_round("f16", kern_f32_to_f16, want_f16, 5, s ? -probe[i] : probe[i],
                                      bad16 < 5);
    }
    for (int k = 0; k < 0x7f80; k++) {
        double lo = bf16_values[k], hi = bf16_values[k + 1], m = (lo + hi) / 2;
        float probe[] = {(float)lo, (float)m, nextafterf((float)m, 0),
                         nextafterf((float)m, INFINITY)};
        for (int i = 0; i < 4; i++)
            for (int s = 0; s < 2; s++)
                bad_bf += !check_round("bf16", kern_f32_to_bf16, want_bf16, 8,
                                       s ? -probe[i] : probe[i], bad_bf < 5);
    }
    ok(bad16 == 0, "f32 -> f16: every value, midpoint and neighbour rounds as the reference");
    ok(bad_bf == 0, "f32 -> bf16: every value, midpoint and neighbour rounds as the reference");

    int bad_rand = 0;
    for (int i = 0; i < 1000000; i++) {
        float f = float_of((uint32_t)test_rng_u64(&rng_state));
        bad_rand += !check_round("f16", kern_f32_to_f16, want_f16, 5, f, bad_rand < 5);
        bad_rand += !check_round("bf16", kern_f32_to_bf16, want_bf16, 8, f, bad_rand < 5);
    }
    ok(bad_rand == 0, "f32 -> f16/bf16: a million random bit patterns");
}

/* ---- kernels, per ISA ------------------------------------------------- */

/* n random weights of type t at an odd address; free *base. */
static unsigned char *random_weights(moe_dtype t, size_t n, unsigned char **base)
{
    *base = malloc(n * esize(t) + 1);
    unsigned char *w = *base + 1;
    for (size_t i = 0; i < n; i++)
        store(t, w, i, test_rng_unit(&rng_state));
    return w;
}

static float *random_floats(size_t n)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = test_rng_unit(&rng_state);
    return x;
}

/* Y(n, rows) against the double reference, each within tol · Σ|w·x|;
 * the first bad element is shown. */
static int check_product_within(double tol, const char *what, moe_dtype t, const unsigned char *W, size_t rows,
                                size_t cols, const float *X, size_t n, const float *Y, size_t ldy)
{
    double *w = malloc(rows * cols * sizeof *w);
    for (size_t i = 0; i < rows * cols; i++)
        w[i] = ref_decode(t, W, i);
    int good = 1;
    for (size_t v = 0; v < n && good; v++)
        for (size_t r = 0; r < rows && good; r++) {
            double ref = 0, mag = 0;
            for (size_t j = 0; j < cols; j++) {
                double p = w[r * cols + j] * X[v * cols + j];
                ref += p;
                mag += fabs(p);
            }
            double got = Y[v * ldy + r];
            if (!(fabs(got - ref) <= tol * mag)) {
                diag("%s: Y[%zu][%zu] = %.9g, want %.9g (Σ|w·x| %.6g)", what, v, r, got, ref, mag);
                good = 0;
            }
        }
    free(w);
    return good;
}

static int check_product(const char *what, moe_dtype t, const unsigned char *W, size_t rows, size_t cols,
                         const float *X, size_t n, const float *Y, size_t ldy)
{
    return check_product_within(TOL, what, t, W, rows, cols, X, n, Y, ldy);
}

/* kern_matvec_n over rows [3, 21) of 23 with ldy 29; what lies outside
 * the rows computed must stay untouched. */
static int check_matvec_n(moe_dtype t, size_t n, size_t cols)
{
    size_t rows = 23, r0 = 3, r1 = 21, ldy = 29;
    unsigned char *base;
    unsigned char *W = random_weights(t, rows * cols, &base);
    float *X = random_floats(n * cols);
    float *Y = malloc(n * ldy * sizeof *Y);
    for (size_t i = 0; i < n * ldy; i++)
        Y[i] = -7.0f;
    kern_matvec_n(t, W, cols, X, n, Y, ldy, r0, r1);
    int good = 1;
    for (size_t v = 0; v < n; v++)
        for (size_t r = 0; r < ldy; r++)
            if ((r < r0 || r >= r1) && Y[v * ldy + r] != -7.0f)
                good = 0;
    char what[64];
    snprintf(what, sizeof what, "matvec_n %s, n %zu, cols %zu", dtype_names[t], n, cols);
    good =
        good && check_product(what, t, W + r0 * cols * esize(t), r1 - r0, cols, X, n, Y + r0, ldy);
    free(base);
    free(X);
    free(Y);
    return good;
}

static void test_matvec(const char *isa)
{
    static const size_t col_sizes[] = {0, 1, 7, 15, 16, 17, 33, 100, 1000};
    static const size_t row_sizes[] = {1, 5, 64};
    for (int d = 0; d < 3; d++)
        for (size_t ri = 0; ri < 3; ri++) {
            size_t rows = row_sizes[ri];
            int good = 1;
            for (size_t ci = 0; ci < sizeof col_sizes / sizeof col_sizes[0] && good; ci++) {
                size_t cols = col_sizes[ci];
                unsigned char *base;
                unsigned char *W = random_weights(dtypes[d], rows * cols, &base);
                float *x = random_floats(cols);
                float *y = malloc((rows + 2) * sizeof *y);
                for (size_t r = 0; r < rows + 2; r++)
                    y[r] = 12345.0f;
                kern_matvec(dtypes[d], W, cols, x, y + 1, 0, rows);
                char what[64];
                snprintf(what, sizeof what, "cols %zu", cols);
                good = check_product(what, dtypes[d], W, rows, cols, x, 1, y + 1, 0) &&
                       y[0] == 12345.0f && y[rows + 1] == 12345.0f;
                free(base);
                free(x);
                free(y);
            }
            ok(good, "%s matvec %s, rows %zu, cols 0..1000", isa, dtype_names[d], rows);
        }

    /* Several vectors, a sub-range of rows, a Y stride wider than rows.
     * 4100 columns make the rows pass in blocks of 8 (f32) or 12 (f16, bf16). */
    int good = 1;
    for (int d = 0; d < 3 && good; d++)
        for (size_t n = 1; n <= 9 && good; n++)
            good = check_matvec_n(dtypes[d], n, 67) && check_matvec_n(dtypes[d], n, 4100);
    ok(good, "%s matvec_n: 1-9 vectors, rows [3, 21) of 23, ldy 29, 67 and 4100 columns", isa);
}

static void test_vectors(const char *isa)
{
    static const size_t sizes[] = {0, 1, 7, 15, 16, 17, 33, 100, 1000, 65535};
    int conv = 1, dot = 1, axpy = 1;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (int d = 0; d < 3; d++) {
            /* every bit pattern, shifted through the sizes */
            unsigned char *base = malloc(n * esize(dtypes[d]) + 1), *src = base + 1;
            for (size_t i = 0; i < n; i++) {
                if (dtypes[d] == MOE_F32)
                    store(MOE_F32, src, i, test_rng_unit(&rng_state) * 1e3f);
                else {
                    uint16_t h = (uint16_t)(i * 40503u + si);
                    memcpy(src + 2 * i, &h, 2);
                }
            }
            float *dst = malloc((n + 1) * sizeof *dst);
            dst[n] = 99.0f;
            kern_to_f32(dtypes[d], src, dst, n);
            for (size_t i = 0; i < n; i++)
                if (!same(dst[i], ref_decode(dtypes[d], src, i)))
                    conv = 0;
            if (dst[n] != 99.0f)
                conv = 0;
            free(base);
            free(dst);
        }

        float *a = random_floats(n), *b = random_floats(n + 1);
        double ref = 0, mag = 0;
        for (size_t i = 0; i < n; i++) {
            ref += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
        }
        if (!(fabs(kern_dot(a, b, n) - ref) <= TOL * mag))
            dot = 0;
        float *y = malloc((n + 1) * sizeof *y);
        memcpy(y, b, (n + 1) * sizeof *y);
        kern_axpy(0.375f, a, y, n);
        for (size_t i = 0; i < n; i++)
            if (fabs(y[i] - (0.375 * a[i] + b[i])) > 1e-6)
                axpy = 0;
        if (y[n] != b[n])
            axpy = 0;
        free(a);
        free(b);
        free(y);
    }
    ok(conv, "%s to_f32: f32, f16 and bf16, sizes 0..65535, exact", isa);
    ok(dot, "%s dot: sizes 0..65535", isa);
    ok(axpy, "%s axpy: sizes 0..65535, nothing written past n", isa);
}

/* Value [p][c] of V, np rows of type t: ldv elements apart, or for Q8_0
 * blocks of 34 bytes (an f16 scale, 32 int8), rows side by side. */
static double wsum_value(moe_dtype t, const unsigned char *V, size_t ldv, size_t p, size_t c)
{
    if (t != MOE_Q8_0)
        return ref_decode(t, V, p * ldv + c);
    const unsigned char *blk = V + p * (ldv / 32 * 34) + c / 32 * 34;
    uint16_t dh;
    memcpy(&dh, blk, 2);
    return ref_f16(dh) * (int8_t)blk[2 + c % 32];
}

/* kern_wsum of n random weight vectors over V's np rows against double
 * sums, within TOL of Σ|a·v|, with nothing written past each output row. */
static int check_wsum(moe_dtype t, const unsigned char *V, size_t ldv, size_t cols, size_t n, size_t np)
{
    size_t lda = np + 2, ldo = cols + 1;
    float *A = random_floats(n * lda), *O = malloc(n * ldo * sizeof *O);
    for (size_t i = 0; i < n * ldo; i++)
        O[i] = 99.0f;
    kern_wsum(t, V, ldv, cols, A, lda, n, np, O, ldo);
    int good = 1;
    for (size_t v = 0; v < n; v++) {
        for (size_t c = 0; c < cols; c++) {
            double ref = 0, mag = 0;
            for (size_t p = 0; p < np; p++) {
                double term = A[v * lda + p] * wsum_value(t, V, ldv, p, c);
                ref += term;
                mag += fabs(term);
            }
            if (!(fabs(O[v * ldo + c] - ref) <= TOL * mag))
                good = 0;
        }
        if (O[v * ldo + cols] != 99.0f)
            good = 0;
    }
    free(A);
    free(O);
    return good;
}

/* kern_wsum against double sums over the decoded rows: types, 1-6 weight
 * vectors (one and two groups of four), widths across the 16- and 64-lane
 * steps, strided rows, and nothing written between rows of O. */
static void test_wsum(const char *isa)
{
    static const size_t widths[] = {1, 16, 17, 64, 100, 128}, counts[] = {0, 1, 5, 33};
    int good = 1;
    for (int d = 0; d < 3; d++)
        for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
            for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++)
                for (size_t n = 1; n <= 6; n++) {
                    size_t cols = widths[wi], np = counts[ci], ldv = cols + 3;
                    unsigned char *V = malloc((np * ldv + 1) * esize(dtypes[d]));
                    for (size_t i = 0; i < np * ldv; i++)
                        store(dtypes[d], V, i, test_rng_unit(&rng_state));
                    good &= check_wsum(dtypes[d], V, ldv, cols, n, np);
                    free(V);
                }
    ok(good, "%s wsum: f32, f16 and bf16 rows, 1-6 sums, widths 1..128, 0-33 rows", isa);

    /* Q8_0 rows, as a q8_0 KV cache holds its values: rows side by side,
     * tiles of 8192 dequantised values at a time (np up to 300 rows of 128
     * spans five), against the rows' own dequantised values */
    static const size_t qwidths[] = {32, 64, 128}, qcounts[] = {0, 1, 33, 300};
    good = 1;
    for (size_t wi = 0; wi < 3; wi++)
        for (size_t ci = 0; ci < 4; ci++)
            for (size_t n = 1; n <= 9; n += 4) {
                size_t cols = qwidths[wi], np = qcounts[ci], rb = cols / 32 * 34;
                unsigned char *V = malloc(np * rb + 1);
                float *row = random_floats(cols);
                for (size_t p = 0; p < np; p++) {
                    for (size_t c = 0; c < cols; c++)
                        row[c] = test_rng_unit(&rng_state);
                    quant_q8_0_from_f32(row, cols, V + p * rb);
                }
                good &= check_wsum(MOE_Q8_0, V, cols, cols, n, np);
                free(V);
                free(row);
            }
    ok(good, "%s wsum: Q8_0 rows, 1-9 sums, widths 32..128, 0-300 rows", isa);
}

/* kern_softmax against softmax in double: sizes across the 16 lanes,
 * spreads from flat to one dominant value, each weight within 1e-6 of the
 * reference relative to the largest (the f32 rounding of a few steps). */
static void test_softmax(const char *isa)
{
    static const size_t sizes[] = {1, 2, 15, 16, 17, 100, 4097};
    static const float spreads[] = {0.0f, 1.0f, 30.0f, 300.0f};
    int good = 1;
    double worst = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (size_t wi = 0; wi < sizeof spreads / sizeof *spreads; wi++) {
            size_t n = sizes[si];
            float *x = malloc((n + 1) * sizeof *x), scale = 0.125f;
            double *ref = malloc(n * sizeof *ref), max = -INFINITY, sum = 0;
            for (size_t i = 0; i < n; i++) {
                x[i] = test_rng_unit(&rng_state) * spreads[wi];
                if ((double)x[i] * scale > max)
                    max = (double)x[i] * scale;
            }
            x[n] = 99.0f;
            for (size_t i = 0; i < n; i++)
                sum += ref[i] = exp((double)x[i] * scale - max);
            kern_softmax(x, n, scale);
            for (size_t i = 0; i < n; i++) {
                double err = fabs(x[i] - ref[i] / sum) / (1.0 / sum);
                worst = err > worst ? err : worst;
                if (!(err <= 1e-6))
                    good = 0;
            }
            if (x[n] != 99.0f)
                good = 0;
            free(x);
            free(ref);
        }
    ok(good, "%s softmax: sizes 1..4097, spreads 0..300, within 1e-6 of the largest (worst %.1e)", isa, worst);
}

/* kern_silu_mul against g / (1 + e^-g) · u in double: sizes across the 16
 * lanes, g from -80 to 80 (both branches of σ, and where e^-g overflows
 * f32's range in the naive form), within 1e-6 relative (below 1e-30, where
 * f32 turns subnormal, within 1e-30 absolute); the element past the end
 * untouched. */
static void test_silu(const char *isa)
{
    static const size_t sizes[] = {1, 15, 16, 17, 1000};
    int good = 1;
    double worst = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        float *g = malloc((n + 1) * sizeof *g), *u = malloc(n * sizeof *u);
        double *ref = malloc(n * sizeof *ref);
        for (size_t i = 0; i < n; i++) {
            g[i] = (2 * test_rng_unit(&rng_state) - 1) * (i % 3 ? 8.0f : 80.0f);
            u[i] = 2 * test_rng_unit(&rng_state) - 1;
            ref[i] = (double)g[i] / (1 + exp(-(double)g[i])) * u[i];
        }
        g[n] = 99.0f;
        kern_silu_mul(g, u, n);
        for (size_t i = 0; i < n; i++) {
            if (fabs(ref[i]) < 1e-30) { /* past f32's normal range: an absolute check */
                good &= fabs(g[i]) < 1e-30;
                continue;
            }
            double err = fabs(g[i] - ref[i]) / fabs(ref[i]);
            worst = err > worst ? err : worst;
            good &= err <= 1e-6;
        }
        good &= g[n] == 99.0f;
        free(g);
        free(u);
        free(ref);
    }
    ok(good, "%s silu·u: sizes 1..1000, g in [-80, 80], within 1e-6 relative (worst %.1e)", isa, worst);
}

/* ---- AMX tile products --------------------------------------------------- */

/* The bound for a tile product, as a fraction of Σ|w·x| (amx.h): an f16
 * weight is exactly wh + wl with |wl| < 2^-7 |w|, an activation is
 * xh + xl + e with |xl| <= 2^-8 |x| and |e| <= 2^-16 |x|; leaving out
 * wl·xl and e errs by less than (2^-15 + 2^-16) |w x| per term. The tile
 * unit adds each of the three exact bfloat16 products to an f32 sum, within
 * 2^-24 of a partial sum that is at most about Σ|w·x|, and two partial
 * tiles may be added at the end: (3·cols + 2) · 2^-24 more. */
static double tile_tol(size_t cols)
{
    return 1.01 * (0x1p-15 + 0x1p-16 + (3.0 * (double)cols + 2) * 0x1p-24);
}

/* kern_matvec_tiles over rows [r0, r1) of rows, Y with ldy > rows and a
 * sentinel everywhere else, which must survive; with scratch_bytes of
 * scratch (misaligned), or none. */
static int check_tiles(moe_dtype t, const unsigned char *W, size_t rows, size_t cols, const float *X, size_t n,
                       size_t r0, size_t r1, size_t scratch_bytes, const char *what)
{
    unsigned char *scratch = scratch_bytes ? malloc(scratch_bytes + 1) : NULL;
    size_t ldy = rows + 3;
    unsigned char *XT = malloc(kern_tile_act_bytes(n, cols) + 4);
    unsigned char *xt = XT + 4; /* packed activations need no alignment */
    float *Y = malloc((n + 1) * ldy * sizeof *Y);
    for (size_t i = 0; i < (n + 1) * ldy; i++)
        Y[i] = -7.0f;
    kern_tile_act(X, n, cols, xt);
    kern_matvec_tiles(t, W, cols, xt, n, Y, ldy, r0, r1, scratch ? scratch + 1 : NULL, scratch_bytes);
    int good = 1;
    for (size_t v = 0; v <= n; v++)
        for (size_t r = 0; r < ldy; r++)
            if ((v == n || r < r0 || r >= r1) && Y[v * ldy + r] != -7.0f) {
                if (good)
                    diag("%s: Y[%zu][%zu] written, outside rows [%zu, %zu) of %zu vectors", what, v, r, r0, r1, n);
                good = 0;
            }
    good = good && check_product_within(tile_tol(cols), what, t, W + r0 * cols * esize(t), r1 - r0, cols, X, n,
                                        Y + r0, ldy);
    free(XT);
    free(Y);
    free(scratch);
    return good;
}

static void test_tiles(void)
{
    if (kern_set_isa("amx") != 0) {
        skip("amx: the AMX tile products: this CPU (or kernel) has no AMX-BF16");
        return;
    }
    ok(kern_tiles(MOE_F16) && kern_tiles(MOE_BF16) && !kern_tiles(MOE_F32) && !kern_tiles(MOE_Q8_0),
       "amx: tile products for f16 and bf16 weights only");

    /* every edge of a tile: rows and columns around 16 and 32, vectors
     * around 16 and 32 (one or two accumulators per row block) */
    static const size_t row_sizes[] = {1, 16, 17, 33, 100};
    static const size_t col_sizes[] = {1, 31, 32, 33, 300, 1000};
    static const size_t ns[] = {1, 8, 15, 16, 17, 32, 33, 70};
    for (int d = 1; d < 3; d++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            int good = 1;
            for (size_t ri = 0; ri < 5 && good; ri++)
                for (size_t ci = 0; ci < 6 && good; ci++) {
                    size_t rows = row_sizes[ri], cols = col_sizes[ci], n = ns[ni];
                    unsigned char *base, *W = random_weights(dtypes[d], rows * cols, &base);
                    float *X = random_floats(n * cols);
                    char what[80];
                    snprintf(what, sizeof what, "tiles %s %zu x %zu, n %zu", dtype_names[d], rows, cols, n);
                    /* more than 32 vectors: weights split once into scratch
                     * (1 MiB), or per 32 vectors (none, or too little) */
                    good = check_tiles(dtypes[d], W, rows, cols, X, n, 0, rows, 0, what) &&
                           (rows < 3 || check_tiles(dtypes[d], W, rows, cols, X, n, 1, rows - 1, 0, what)) &&
                           check_tiles(dtypes[d], W, rows, cols, X, n, 0, rows, 1 << 20, what) &&
                           (rows < 3 || check_tiles(dtypes[d], W, rows, cols, X, n, 1, rows - 1, 4096, what));
                    free(base);
                    free(X);
                }
            ok(good,
               "amx: tiles %s, n %zu, 5 x 6 shapes from 1 x 1 to 100 x 1000 (also rows [1, rows-1); with and "
               "without scratch): within (2^-15 + 2^-16 + (3 cols + 2) 2^-24) of Σ|w·x|",
               dtype_names[d], ns[ni]);
        }

    /* The error at its largest, all of one sign: f16 weights whose last
     * three bits are ones (wl = 7/8 of 2^-7 of w), activations just under
     * half a bfloat16 step above a bfloat16 (xl = 0.99 · 2^-8). Leaving out
     * wh·xl or wl·xh would err by 2^-8 or 2^-7 of every term. */
    {
        size_t rows = 40, cols = 1000, n = 20;
        unsigned char *W = malloc(rows * cols * 2);
        float *X = malloc(n * cols * sizeof *X);
        static const uint16_t ws[] = {0x3c07, 0x4107, 0x2c07, 0x3b87};
        for (size_t i = 0; i < rows * cols; i++)
            memcpy(W + 2 * i, &ws[i % 4], 2);
        for (size_t i = 0; i < n * cols; i++)
            X[i] = ldexpf(1.0f + 0.99f * 0x1p-8f, (int)(i % 5) - 2);
        ok(check_tiles(MOE_F16, W, rows, cols, X, n, 0, rows, 0, "tiles, worst case"),
           "amx: f16 weights and activations at the largest splitting error, all of one sign: within the bound");
        free(W);
        free(X);
    }

    /* subnormal f16 weights are normal bfloat16s; large activations */
    {
        size_t rows = 33, cols = 300, n = 17;
        unsigned char *W = malloc(rows * cols * 2);
        float *X = malloc(n * cols * sizeof *X);
        for (size_t i = 0; i < rows * cols; i++)
            store(MOE_F16, W, i, 1e-6f * test_rng_unit(&rng_state));
        for (size_t i = 0; i < n * cols; i++)
            X[i] = 3e4f * test_rng_unit(&rng_state);
        ok(check_tiles(MOE_F16, W, rows, cols, X, n, 0, rows, 0, "tiles, subnormal weights"),
           "amx: subnormal f16 weights (|w| < 1e-6) against activations up to 3e4: within the bound");
        /* a NaN in one vector spoils that vector's outputs only */
        X[5 * cols + 7] = NAN;
        float *Y = malloc(n * rows * sizeof *Y);
        unsigned char *XT = malloc(kern_tile_act_bytes(n, cols));
        kern_tile_act(X, n, cols, XT);
        kern_matvec_tiles(MOE_F16, W, cols, XT, n, Y, rows, 0, rows, NULL, 0);
        int nan_row = 1, others = 1;
        for (size_t v = 0; v < n; v++)
            for (size_t r = 0; r < rows; r++)
                if (v == 5)
                    nan_row &= isnan(Y[v * rows + r]);
                else
                    others &= isfinite(Y[v * rows + r]);
        ok(nan_row && others, "amx: a NaN activation makes its vector's outputs NaN and no other's");
        free(XT);
        free(Y);
        free(W);
        free(X);
    }
}

/* ---- pool --------------------------------------------------------------- */

typedef struct {
    atomic_int *count;  /* (n_tasks) */
    atomic_int n_tasks; /* of the current run */
    atomic_int bad_thread, bad_task;
    int size;
    long *per_thread; /* (size): written only by its own thread */
} pool_check;

static void count_task(void *arg, int task, int thread)
{
    pool_check *c = arg;
    atomic_fetch_add_explicit(&c->count[task], 1, memory_order_relaxed);
    if (task < 0 || task >= atomic_load(&c->n_tasks))
        atomic_store(&c->bad_task, 1);
    if (thread < 0 || thread >= c->size)
        atomic_store(&c->bad_thread, 1);
    else
        c->per_thread[thread] += task + 1;
}

static void test_pool(void)
{
    ok(pool_new(0) == NULL, "pool_new(0) fails");
    for (int size = 1; size <= 4; size++) {
        pool *p = pool_new(size);
        if (!ok(p != NULL && pool_size(p) == size, "pool of %d", size))
            continue;
        enum { MAX_TASKS = 1000, RUNS = 10000 };
        atomic_int *count = calloc(MAX_TASKS, sizeof *count);
        long per_thread[4] = {0};
        pool_check c = {.count = count, .size = size, .per_thread = per_thread};
        atomic_init(&c.n_tasks, 0);
        atomic_init(&c.bad_thread, 0);
        atomic_init(&c.bad_task, 0);

        /* sizes around the thread count, and many more tasks than threads */
        static const int sizes[] = {0, 1, 2, 3, 4, 5, 7, 64, 1000};
        int exact = 1;
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            for (int i = 0; i < MAX_TASKS; i++)
                atomic_store(&count[i], 0);
            atomic_store(&c.n_tasks, sizes[s]);
            for (int run = 0; run < 50; run++)
                pool_run(p, count_task, &c, sizes[s]);
            for (int i = 0; i < MAX_TASKS; i++)
                if (atomic_load(&count[i]) != (i < sizes[s] ? 50 : 0))
                    exact = 0;
        }
        ok(exact, "pool of %d: every task runs exactly once per run (0..1000 tasks)", size);

        /* Reuse: 10000 back-to-back runs of changing sizes (a late thread
         * must not take the next run for more of the last); the task sums
         * must add up. */
        memset(per_thread, 0, sizeof per_thread);
        long want = 0;
        for (int run = 0; run < RUNS; run++) {
            int n = run % 17 + 1;
            atomic_store(&c.n_tasks, n);
            pool_run(p, count_task, &c, n);
            want += (long)n * (n + 1) / 2;
        }
        long got = 0;
        for (int t = 0; t < size; t++)
            got += per_thread[t];
        ok(got == want && !atomic_load(&c.bad_thread) && !atomic_load(&c.bad_task),
           "pool of %d: %d reused runs, task and thread ids in range, sums %ld = %ld", size, RUNS,
           got, want);
        free(count);
        pool_free(p);
    }
    pool_free(NULL);
}

/* ---- matmul ------------------------------------------------------------- */

static void test_matmul(void)
{
    /* both sides of each switch from matrix-vector kernels to sgemm */
    static const size_t ns[] = {1, 2, 3, 5, 17, 24, 25, 48, 49, 128, 129};
    static const size_t shapes[][2] = {{1, 1}, {7, 33}, {100, 17}, {600, 1000}, {37, 300}, {5, 0}};
    for (int size = 1; size <= 3; size++) {
        pool *p = pool_new(size);
        matmul_ctx *c = matmul_new(p, 1000);
        for (int d = 0; d < 3; d++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                size_t n = ns[ni];
                int good = 1;
                for (size_t s = 0; s < sizeof shapes / sizeof shapes[0] && good; s++) {
                    size_t rows = shapes[s][0], cols = shapes[s][1];
                    /* sgemm is given float pointers: keep them 4-aligned */
                    unsigned char *base = malloc(rows * cols * esize(dtypes[d]) + 4), *W = base + 4;
                    for (size_t i = 0; i < rows * cols; i++)
                        store(dtypes[d], W, i, test_rng_unit(&rng_state));
                    float *X = random_floats(n * cols);
                    float *Y = malloc(n * rows * sizeof *Y);
                    for (size_t i = 0; i < n * rows; i++)
                        Y[i] = NAN; /* must be overwritten */
                    matmul(c, dtypes[d], W, rows, cols, X, n, Y);
                    char what[64];
                    snprintf(what, sizeof what, "%zu x %zu", rows, cols);
                    good = check_product_within(matmul_tiles(c, dtypes[d], n) ? tile_tol(cols) : TOL, what,
                                                dtypes[d], W, rows, cols, X, n, Y, rows);
                    free(base);
                    free(X);
                    free(Y);
                }
                ok(good, "matmul %s, n %zu, pool of %d, 6 shapes from 5 x 0 to 600 x 1000",
                   dtype_names[d], n, size);
            }
        matmul_free(c);
        pool_free(p);
    }
}

int main(void)
{
    /* MOESCOPE_ISA is read by the first kern_init. */
    setenv("MOESCOPE_ISA", "portable", 1);
    kern_init();
    ok(strcmp(kern_isa(), "portable") == 0, "MOESCOPE_ISA=portable is obeyed (%s)", kern_isa());
    ok(kern_set_isa("sse9") == -1, "an unknown ISA is refused");

    make_tables();
    test_decode();
    test_round();

    const char *best = "portable";
    for (int i = 0; i < N_ISAS; i++) {
        if (kern_set_isa(isas[i]) != 0) {
            skip("%s: not supported by this CPU", isas[i]);
            continue;
        }
        best = isas[i];
        test_matvec(isas[i]);
        test_vectors(isas[i]);
        test_wsum(isas[i]);
        test_softmax(isas[i]);
        test_silu(isas[i]);
    }
    test_tiles();
    kern_set_isa(best);
    diag("matmul uses %s kernels; OpenBLAS core %s", kern_isa(), openblas_get_corename());

    test_pool();
    test_matmul();
    return done_testing();
}
