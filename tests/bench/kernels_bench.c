/* Micro-benchmark of the hot spot: pool dispatch latency, matrix-vector
 * bandwidth and sgemm throughput, for choosing matmul's constants.
 *
 *   kernels_bench [pool|matvec|sweep|gemm|all]
 *
 * pool    dispatch cost, and 16 tasks of 5 µs on pools of 1-4 threads
 * matvec  n = 1 bandwidth per ISA, dtype and thread count
 * sweep   GFLOP/s over n across matmul's switch to sgemm (SMALL_N_*)
 * gemm    n = 32 and 128, and the alternative design (OpenBLAS threads)
 * qstream quantised types from memory: n = 1 and 4 through matmul over
 *         768 MB of 4096 x 1024 matrices (past the L3), 1 and 2 threads,
 *         GB/s of weights read, median of five passes
 * q8sweep K-quants, one thread: the integer kernels with 8-bit activations
 *         (quantising them included) against the f32 paths, over n
 * qsweep  quantised types, one thread: the matrix-vector kernels against
 *         dequantising tiles then sgemm, over n (SMALL_N_Q in matmul.c); in
 *         thread CPU time, which a loaded machine disturbs less
 * attn    one decode token's attention at 4096 positions of context, one
 *         thread, per KV cache type (f32, f16, q8_0): scores, softmax and
 *         weighted sums over 8 layers' caches (from memory), for 16 KV heads
 *         of one query each (OLMoE-shaped) and 4 of four (Mixtral-shaped)
 * tsweep  f16 through matmul on one thread with the AMX tile products
 *         ("amx") and without ("avx512": matrix-vector kernels, sgemm past
 *         n = 128), over n, from memory: 600 matrices of 512 x 1024 as a
 *         prefill's experts (TILE_MIN_N in matmul.c)
 *
 * Run it both ways: `OPENBLAS_CORETYPE=SKYLAKEX kernels_bench gemm`.
 * Build: gcc -std=c11 -D_GNU_SOURCE -O2 -pthread -Iinclude -Isrc
 *   $(pkg-config --cflags openblas) src/kernels.c src/amx.c src/quant.c src/quant_dot.c src/pool.c src/matmul.c
 *   tests/bench/kernels_bench.c $(pkg-config --libs openblas) -lm */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "matmul.h"
#include "pool.h"
#include "quant.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *random_weights(moe_dtype t, size_t n)
{
    unsigned char *w = malloc(n * (t == MOE_F32 ? 4 : 2));
    uint32_t s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        float f = (float)(s >> 8) / (float)(1u << 24) - 0.5f;
        uint16_t h = t == MOE_F16 ? kern_f32_to_f16(f) : kern_f32_to_bf16(f);
        if (t == MOE_F32)
            memcpy(w + 4 * i, &f, 4);
        else
            memcpy(w + 2 * i, &h, 2);
    }
    return w;
}

static float *random_floats(size_t n)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    return x;
}

/* Seconds per call of fn(arg) by the clock clk: the best mean over
 * batches of at least 20 ms, for about a second of wall time. On a shared
 * machine the best batch is the one least disturbed by other programs. */
static double best_time(double (*clk)(void), void (*fn)(void *), void *arg)
{
    fn(arg);
    double best = 1e30, end = now() + 1.0;
    do {
        int reps = 0;
        double t0 = clk(), t;
        do {
            fn(arg);
            reps++;
        } while ((t = clk() - t0) < 0.02);
        if (t / reps < best)
            best = t / reps;
    } while (now() < end);
    return best;
}

static double time_it(void (*fn)(void *), void *arg)
{
    return best_time(now, fn, arg);
}

/* ---- pool dispatch ------------------------------------------------------ */

static void nop_task(void *ctx, int task, int thread)
{
    (void)ctx, (void)task, (void)thread;
}

static pool *bench_pool;
static void dispatch(void *arg)
{
    pool_run(bench_pool, nop_task, arg, pool_size(bench_pool));
}

/* About 2 µs of arithmetic the compiler cannot drop. */
static void work_task(void *ctx, int task, int thread)
{
    volatile float *sink = ctx;
    float s = (float)task;
    for (int i = 0; i < 2000; i++)
        s = s * 0.999f + 1.0f;
    sink[thread * 16] = s;
}

static void work(void *arg)
{
    pool_run(bench_pool, work_task, arg, 16);
}

static void bench_dispatch(void)
{
    static float sink[4 * 16];
    bench_pool = pool_new(1);
    double serial = time_it(work, sink);
    pool_free(bench_pool);
    for (int n = 1; n <= 4; n++) {
        bench_pool = pool_new(n);
        double empty = time_it(dispatch, NULL), busy = time_it(work, sink);
        printf("pool of %d: %.2f us per empty run of %d tasks; 16 tasks of %.2f us: %.2f us "
               "(%.2fx of one thread)\n",
               n, 1e6 * empty, n, 1e6 * serial / 16, 1e6 * busy, serial / busy);
        pool_free(bench_pool);
    }
}

/* ---- matmul ------------------------------------------------------------- */

typedef struct {
    matmul_ctx *c;
    moe_dtype t;
    void *W;
    size_t rows, cols, n;
    float *X, *Y;
} mm_args;

static void run_matmul(void *arg)
{
    mm_args *a = arg;
    matmul(a->c, a->t, a->W, a->rows, a->cols, a->X, a->n, a->Y);
}

static const char *const dtype_names[] = {"f32", "f16", "bf16"};

static double bench_matmul(pool *p, moe_dtype t, size_t rows, size_t cols, size_t n)
{
    mm_args a = {matmul_new(p, cols),
                 t,
                 random_weights(t, rows * cols),
                 rows,
                 cols,
                 n,
                 random_floats(n * cols),
                 malloc(n * rows * sizeof(float))};
    double s = time_it(run_matmul, &a);
    matmul_free(a.c);
    free(a.W);
    free(a.X);
    free(a.Y);
    return s;
}

static void bench_matvec(void)
{
    static const size_t shapes[][2] = {{1024, 2048}, {2048, 1024}, {14336, 4096}};
    for (int isa = 0; isa < 3; isa++) {
        const char *name = (const char *[]){"portable", "avx2", "avx512"}[isa];
        if (kern_set_isa(name) != 0)
            continue;
        for (int threads = 1; threads <= 2; threads++) {
            pool *p = pool_new(threads);
            for (int d = 0; d < 3; d++)
                for (size_t s = 0; s < 3; s++) {
                    size_t rows = shapes[s][0], cols = shapes[s][1];
                    double sec = bench_matmul(p, (moe_dtype)d, rows, cols, 1);
                    double bytes = (double)rows * cols * (d == MOE_F32 ? 4 : 2);
                    printf("%-8s matvec %-4s %5zu x %5zu, %d thread%s: %7.1f us  %6.1f GB/s\n",
                           name, dtype_names[d], rows, cols, threads, threads > 1 ? "s" : " ",
                           1e6 * sec, bytes / sec / 1e9);
                }
            pool_free(p);
        }
    }
}

/* GFLOP/s over n for 2048 x 1024 weights: a drop right after matmul's
 * switch to sgemm (f32 after 24, f16 after 48) would say it is too early. */
static void bench_sweep(void)
{
    static const size_t ns[] = {1, 2, 4, 8, 16, 24, 25, 32, 48, 49, 64, 128};
    for (int threads = 1; threads <= 2; threads++) {
        pool *p = pool_new(threads);
        for (int d = 0; d < 2; d++) {
            printf("sweep %-4s %d thread%s:", dtype_names[d], threads, threads > 1 ? "s" : " ");
            for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
                double sec = bench_matmul(p, (moe_dtype)d, 2048, 1024, ns[i]);
                printf(" %zu:%.0f", ns[i], 2.0 * ns[i] * 2048 * 1024 / sec / 1e9);
            }
            printf("  GFLOP/s\n");
            fflush(stdout);
        }
        pool_free(p);
    }
}

/* The alternative to matmul's design: convert a tile on the pool, then one
 * sgemm with OpenBLAS using as many threads as the pool. */
typedef struct {
    moe_dtype t;
    const unsigned char *W;
    float *tile;
    size_t cols, r0, nr, per_task;
} conv_args;

static void conv_task(void *arg, int task, int thread)
{
    conv_args *a = arg;
    (void)thread;
    size_t i0 = (size_t)task * a->per_task, i1 = i0 + a->per_task;
    if (i1 > a->nr * a->cols)
        i1 = a->nr * a->cols;
    kern_to_f32(a->t, a->W + (a->r0 * a->cols + i0) * 2, a->tile + i0, i1 - i0);
}

typedef struct {
    pool *p;
    mm_args mm;
    float *tile;
    size_t tile_rows;
} alt_args;

static void run_alt(void *arg)
{
    alt_args *a = arg;
    mm_args *m = &a->mm;
    int nt = pool_size(a->p);
    for (size_t r0 = 0; r0 < m->rows; r0 += a->tile_rows) {
        size_t nr = m->rows - r0 < a->tile_rows ? m->rows - r0 : a->tile_rows;
        conv_args c = {m->t, m->W, a->tile, m->cols, r0, nr, (nr * m->cols + nt - 1) / nt};
        pool_run(a->p, conv_task, &c, nt);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m->n, (int)nr, (int)m->cols, 1.0f,
                    m->X, (int)m->cols, a->tile, (int)m->cols, 0.0f, m->Y + r0, (int)m->rows);
    }
}

static void bench_gemm(void)
{
    size_t rows = 2048, cols = 1024;
    printf("OpenBLAS core %s\n", openblas_get_corename());
    for (int threads = 1; threads <= 2; threads++) {
        pool *p = pool_new(threads);
        for (int d = 0; d < 3; d++)
            for (size_t n = 32; n <= 128; n *= 4) {
                double sec = bench_matmul(p, (moe_dtype)d, rows, cols, n);
                printf("matmul %-4s n %3zu, %zu x %zu, %d thread%s: %8.1f us  %6.1f GFLOP/s\n",
                       dtype_names[d], n, rows, cols, threads, threads > 1 ? "s" : " ", 1e6 * sec,
                       2.0 * n * rows * cols / sec / 1e9);
            }
        /* the alternative, f16 only */
        for (size_t n = 32; n <= 128; n *= 4)
            for (size_t tr = 128; tr <= 2048; tr *= 4) {
                alt_args a = {p,
                              {NULL, MOE_F16, random_weights(MOE_F16, rows * cols), rows, cols, n,
                               random_floats(n * cols), malloc(n * rows * sizeof(float))},
                              malloc(tr * cols * sizeof(float)),
                              tr};
                openblas_set_num_threads(threads);
                double sec = time_it(run_alt, &a);
                openblas_set_num_threads(1);
                printf(
                    "alt: convert on pool + sgemm with %d OpenBLAS threads, f16 n %3zu, tile %4zu "
                    "rows: %8.1f us  %6.1f GFLOP/s\n",
                    threads, n, tr, 1e6 * sec, 2.0 * n * rows * cols / sec / 1e9);
                free(a.mm.W);
                free(a.mm.X);
                free(a.mm.Y);
                free(a.tile);
            }
        pool_free(p);
    }
}

/* ---- quantised types ---------------------------------------------------- */

static const moe_dtype qtypes[] = {MOE_Q8_0, MOE_Q4_0, MOE_Q4_K, MOE_Q5_K, MOE_Q6_K};
static const char *const qnames[] = {"Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K"};

/* Random bytes with a small finite f16 scale in every block. */
static void *random_quant(moe_dtype t, size_t rows, size_t cols)
{
    size_t rb = kern_row_bytes(t, cols), bb = t == MOE_Q8_0 ? 34 : t == MOE_Q4_0 ? 18 : t == MOE_Q4_K ? 144
                                                              : t == MOE_Q5_K ? 176 : 210;
    unsigned char *w = malloc(rows * rb);
    uint32_t s = 777;
    for (size_t i = 0; i < rows * rb; i++) {
        s = s * 1664525u + 1013904223u;
        w[i] = (unsigned char)(s >> 24);
    }
    uint16_t d = kern_f32_to_f16(0.001f);
    for (size_t b = 0; b < rows * rb / bb; b++) {
        unsigned char *p = w + b * bb + (t == MOE_Q6_K ? 208 : 0);
        memcpy(p, &d, 2);
        if (t == MOE_Q4_K || t == MOE_Q5_K)
            memcpy(p + 2, &d, 2);
    }
    return w;
}

typedef struct {
    moe_dtype t;
    const unsigned char *W;
    size_t rows, cols, n;
    float *X, *Y, *tile;
} q_args;

static void run_qmatvec(void *arg)
{
    q_args *a = arg;
    kern_matvec_n(a->t, a->W, a->cols, a->X, a->n, a->Y, a->rows, 0, a->rows);
}

/* matmul's sgemm path on one thread: tiles of 256 rows dequantised, then sgemm. */
static void run_qgemm(void *arg)
{
    q_args *a = arg;
    size_t rb = kern_row_bytes(a->t, a->cols);
    for (size_t r0 = 0; r0 < a->rows; r0 += 256) {
        size_t nr = a->rows - r0 < 256 ? a->rows - r0 : 256;
        kern_to_f32(a->t, a->W + r0 * rb, a->tile, nr * a->cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->n, (int)nr, (int)a->cols, 1.0f, a->X,
                    (int)a->cols, a->tile, (int)a->cols, 0.0f, a->Y + r0, (int)a->rows);
    }
}

/* As time_it, in this thread's CPU time: on a machine shared with other
 * work, single-thread comparisons are then less at the mercy of the load. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_time_it(void (*fn)(void *), void *arg)
{
    return best_time(cpu_now, fn, arg);
}

static void bench_qsweep(void)
{
    static const size_t ns[] = {1, 4, 8, 16, 32, 48, 64, 96, 128};
    size_t rows = 2048, cols = 1024;
    openblas_set_num_threads(1);
    for (size_t k = 0; k < sizeof qtypes / sizeof qtypes[0]; k++) {
        moe_dtype t = qtypes[k];
        q_args a = {t, random_quant(t, rows, cols), rows, cols, 1, random_floats(128 * cols),
                    malloc(128 * rows * sizeof(float)), malloc(256 * cols * sizeof(float))};
        a.n = 1;
        double mv1 = cpu_time_it(run_qmatvec, &a);
        printf("%-5s %zu x %zu, 1 thread: n 1 matvec %.1f us (%.1f GB/s); GFLOP/s matvec/sgemm:", qnames[k],
               rows, cols, 1e6 * mv1, (double)rows * kern_row_bytes(t, cols) / mv1 / 1e9);
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            a.n = ns[i];
            double mv = cpu_time_it(run_qmatvec, &a), gm = cpu_time_it(run_qgemm, &a), f = 2.0 * ns[i] * rows * cols / 1e9;
            printf(" %zu:%.0f/%.0f", ns[i], f / mv, f / gm);
        }
        printf("\n");
        fflush(stdout);
        free((void *)a.W);
        free(a.X);
        free(a.Y);
        free(a.tile);
    }
}

static void run_q8(void *arg)
{
    q_args *a = arg;
    size_t vb = quant_dot_act_bytes(a->t, a->cols);
    for (size_t v = 0; v < a->n; v++)
        kern_q8_act(a->t, a->X + v * a->cols, a->cols, (unsigned char *)a->tile + v * vb);
    kern_matvec_q8(a->t, a->W, a->cols, a->tile, a->n, a->Y, a->rows, 0, a->rows);
}

static void bench_q8sweep(void)
{
    static const size_t ns[] = {1, 4, 8, 16, 32, 48, 64, 128, 256};
    size_t rows = 2048, cols = 1024;
    openblas_set_num_threads(1);
    for (size_t k = 2; k < sizeof qtypes / sizeof qtypes[0]; k++) {
        moe_dtype t = qtypes[k];
        q_args a = {t, random_quant(t, rows, cols), rows, cols, 1, random_floats(256 * cols),
                    malloc(256 * rows * sizeof(float)), malloc(256 * cols * sizeof(float))};
        printf("%-5s %zu x %zu, 1 thread, GFLOP/s int8/f32 matvec/f32 sgemm:", qnames[k], rows, cols);
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            a.n = ns[i];
            double f = 2.0 * ns[i] * rows * cols / 1e9, q8 = cpu_time_it(run_q8, &a);
            double mv = ns[i] <= 48 ? cpu_time_it(run_qmatvec, &a) : 0, gm = cpu_time_it(run_qgemm, &a);
            printf(" %zu:%.0f/%.0f/%.0f", ns[i], f / q8, mv > 0 ? f / mv : 0, f / gm);
        }
        printf("\n");
        fflush(stdout);
        free((void *)a.W);
        free(a.X);
        free(a.Y);
        free(a.tile);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void bench_qstream(void)
{
    enum { PASSES = 5 };
    size_t rows = 4096, cols = 1024;
    for (size_t k = 0; k < sizeof qtypes / sizeof qtypes[0]; k++) {
        moe_dtype t = qtypes[k];
        size_t bytes = rows * kern_row_bytes(t, cols), m = (size_t)768e6 / bytes;
        unsigned char *W = random_quant(t, rows * m, cols);
        float *X = random_floats(4 * cols), *Y = malloc(4 * rows * sizeof(float));
        for (int threads = 1; threads <= 2; threads++) {
            pool *p = pool_new(threads);
            matmul_ctx *c = matmul_new(p, cols);
            printf("qstream %-5s %d thread%s:", qnames[k], threads, threads > 1 ? "s" : " ");
            for (size_t n = 1; n <= 4; n += 3) {
                double gbs[PASSES];
                for (int pass = 0; pass < PASSES; pass++) {
                    double t0 = now();
                    for (size_t i = 0; i < m; i++)
                        matmul(c, t, W + i * bytes, rows, cols, X, n, Y);
                    gbs[pass] = (double)(m * bytes) / (now() - t0) / 1e9;
                }
                qsort(gbs, PASSES, sizeof gbs[0], cmp_double);
                printf("  n %zu %.2f GB/s", n, gbs[PASSES / 2]);
            }
            printf("\n");
            fflush(stdout);
            matmul_free(c);
            pool_free(p);
        }
        free(W);
        free(X);
        free(Y);
    }
}

static void bench_attn(void)
{
    enum { P = 4096, L = 8, HD = 64, PASSES = 5 };
    static const moe_dtype kv[] = {MOE_F32, MOE_F16, MOE_Q8_0};
    static const char *const kv_names[] = {"f32", "f16", "q8_0"};
    static const int heads[][2] = {{16, 1}, {4, 4}}; /* KV heads, queries per KV head */
    float *q = random_floats(4 * HD), *sc = malloc(4 * P * sizeof *sc), *o = malloc(4 * HD * sizeof *o);
    float *row = random_floats(HD);
    for (int s = 0; s < 2; s++) {
        int H = heads[s][0], G = heads[s][1];
        printf("attn %d KV heads x %d queries, head_dim %d, %d positions, %d layers, one thread:", H, G, HD, P, L);
        for (int k = 0; k < 3; k++) {
            moe_dtype t = kv[k];
            size_t rb = kern_row_bytes(t, HD), per = (size_t)P * rb, rows = (size_t)P * H * L;
            unsigned char *K = malloc(per * H * L), *V = malloc(per * H * L);
            for (size_t r = 0; r < rows; r++)
                for (int which = 0; which < 2; which++) {
                    unsigned char *dst = (which ? V : K) + r * rb;
                    for (int i = 0; i < HD; i++)
                        row[i] = (float)((r * 131 + (size_t)i * 7 + (size_t)which) % 1000) / 500.0f - 1.0f;
                    if (t == MOE_Q8_0) {
                        quant_q8_0_from_f32(row, HD, dst);
                    } else if (t == MOE_F16) {
                        for (int i = 0; i < HD; i++) {
                            uint16_t h = kern_f32_to_f16(row[i]);
                            memcpy(dst + 2 * i, &h, 2);
                        }
                    } else {
                        memcpy(dst, row, HD * sizeof *row);
                    }
                }
            double ms[PASSES];
            for (int pass = 0; pass < PASSES; pass++) {
                double t0 = now();
                for (int l = 0; l < L; l++)
                    for (int h = 0; h < H; h++) {
                        size_t off = ((size_t)l * H + h) * per;
                        kern_matvec_n(t, K + off, HD, q, (size_t)G, sc, P, 0, P);
                        for (int g = 0; g < G; g++)
                            kern_softmax(sc + (size_t)g * P, P, 0.125f);
                        kern_wsum(t, V + off, HD, HD, sc, P, (size_t)G, P, o, HD);
                    }
                ms[pass] = (now() - t0) * 1e3;
            }
            qsort(ms, PASSES, sizeof ms[0], cmp_double);
            printf("  %s %.2f ms (%.1f GB/s)", kv_names[k], ms[PASSES / 2], 2.0 * (double)(per * H * L) / ms[PASSES / 2] / 1e6);
            free(K);
            free(V);
        }
        printf("\n");
        fflush(stdout);
    }
    free(q);
    free(sc);
    free(o);
    free(row);
}

static void bench_tsweep(void)
{
    enum { PASSES = 3, M = 600 };
    static const size_t ns[] = {4, 6, 8, 12, 16, 32, 64, 128, 256};
    size_t rows = 512, cols = 1024, per = rows * cols;
    if (kern_set_isa("amx") != 0) {
        printf("tsweep: no AMX here\n");
        return;
    }
    uint16_t *W = malloc(M * per * sizeof *W);
    for (size_t i = 0; i < M * per; i++)
        W[i] = kern_f32_to_f16((float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f);
    float *X = random_floats(256 * cols), *Y = malloc(256 * rows * sizeof(float));
    pool *p = pool_new(1);
    matmul_ctx *c = matmul_new(p, cols);
    printf("tsweep f16 %zu x %zu, %d matrices, one thread, GFLOP/s:\n", rows, cols, M);
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        size_t n = ns[k];
        double gf[2];
        for (int amx = 1; amx >= 0; amx--) {
            kern_set_isa(amx ? "amx" : "avx512");
            double g[PASSES];
            for (int pass = 0; pass < PASSES; pass++) {
                double t0 = now();
                for (size_t i = 0; i < M; i++)
                    matmul(c, MOE_F16, W + i * per, rows, cols, X, n, Y);
                g[pass] = 2.0 * (double)(M * per * n) / (now() - t0) / 1e9;
            }
            qsort(g, PASSES, sizeof g[0], cmp_double);
            gf[amx] = g[PASSES / 2];
        }
        printf("  n %3zu  tiles %6.1f  avx512 %6.1f  (x%.2f)\n", n, gf[1], gf[0], gf[1] / gf[0]);
        fflush(stdout);
    }
    kern_set_isa("amx");
    matmul_free(c);
    pool_free(p);
    free(W);
    free(X);
    free(Y);
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    int all = strcmp(what, "all") == 0;
    kern_init();
    printf("kernels: %s\n", kern_isa());
    if (all || strcmp(what, "pool") == 0)
        bench_dispatch();
    if (all || strcmp(what, "matvec") == 0)
        bench_matvec();
    if (all || strcmp(what, "sweep") == 0)
        bench_sweep();
    if (all || strcmp(what, "gemm") == 0)
        bench_gemm();
    if (all || strcmp(what, "q8sweep") == 0)
        bench_q8sweep();
    if (all || strcmp(what, "qstream") == 0)
        bench_qstream();
    if (all || strcmp(what, "qsweep") == 0)
        bench_qsweep();
    if (all || strcmp(what, "tsweep") == 0)
        bench_tsweep();
    if (all || strcmp(what, "attn") == 0)
        bench_attn();
    return 0;
}
