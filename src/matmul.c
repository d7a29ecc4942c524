/* The hot spot: Y = X · Wᵀ for one weight matrix, on the pool.
 *
 * Up to a few dozen rows of X (decode, or the tokens routed to one expert)
 * go through the matrix-vector kernels: W's rows are split into chunks over
 * the pool, each weight is read from memory once and used for four rows of
 * X at a time. More rows of X go through OpenBLAS sgemm, one block of W's
 * rows per task: f32 weights are used in place, f16/bf16 weights are first
 * converted to f32 in the thread's own tile. Where the CPU has AMX
 * (kern_tiles), f16/bf16 weights against 8 rows of X or more take
 * the tile products instead, in the same chunks as the matrix-vector
 * kernels. All parallelism is the pool's:
 * OpenBLAS is kept single-threaded, so that its threads and ours never
 * compete for the same cores. */
#include "matmul.h"

#include <assert.h>
#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"

/* Measured on Sapphire Rapids with OpenBLAS 0.3.21's SkylakeX kernels
 * (tests/bench/kernels_bench.c). */
enum {
    /* Up to this many rows of X the matrix-vector kernels beat sgemm. The
     * crossover is later for weights in cache (n = 32 for f32, 64 for f16
     * at 2048 x 1024) than from memory (24 and 48 at 8192-14336 x 4096);
     * f16 and bf16 must be converted for sgemm, so they cross later. */
    SMALL_N_F32 = 24,
    /* f16/bf16: 128 rather than the 48 of the raw crossover, since sgemm
     * also pays for the conversion of each tile and OpenBLAS's packing of
     * X per tile: four alternating rounds of pp128/pp512 on the bench
     * models (2 threads), medians 48 -> 128: Mixtral-shaped pp128 443 ->
     * 507 t/s (its attention projections, n = 128), pp512 520 -> 511;
     * OLMoE-shaped 352 -> 355 and 386 -> 382. */
    SMALL_N_F16 = 128,
    /* Quantised types (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) dequantise a tile of
     * rows for sgemm; the matrix-vector kernels decode each block once for
     * up to four vectors, and for more dequantise 64 KiB of rows for the
     * f32 kernels. kernels_bench qsweep (2048 x 1024, one thread, on a
     * loaded machine): matvec 57-62 GFLOP/s at n = 16, 68-73 at 32, 76-84
     * at 128, sgemm 22-31 throughout, for every type; moescope bench pp128
     * on the Q4_K_M bench model is the same with 48 and 128 (165/164 and
     * 233/226 t/s, paired runs), so 48 is kept. */
    SMALL_N_Q = 48,
    /* From this many rows of X on, f16/bf16 weights take the AMX tile
     * products where there are any, up to any n. They cost about the same
     * for any n up to 16 (splitting the weights into bfloat16 halves is
     * most of the work), the AVX-512 kernels cost in proportion to n.
     * kernels_bench tsweep (one thread, 600 matrices of 512 x 1024 f16,
     * past the L3 as a prefill's experts are), GFLOP/s with tiles from
     * n = 8 against without: n = 8 69.9/66.0, 12 98.6/78.5, 16 134/86,
     * 32 171/94, 64 212/105, 128 286/116, 256 285/136 (sgemm); a kernel
     * of tiles alone at n = 4 and 6 ran at 37 and 54 against 50 and 54. */
    TILE_MIN_N = 8,
    CHUNKS_PER_THREAD = 4, /* matrix-vector chunks per thread, for balance */
    ROW_ALIGN = 16,        /* chunks and tiles are whole multiples of this many rows */
    /* f32 tile of converted weight rows per thread, 1 MiB: half of L2.
     * Larger tiles help large n a little and hurt n = 32 more. */
    TILE_FLOATS = 256 * 1024,
};

struct matmul_ctx {
    pool *pool;
    int n_threads;
    size_t max_cols;
    size_t tile_floats; /* per thread */
    float *tiles;       /* (n_threads, tile_floats): weight rows converted to f32, or split for the tiles */
    int act_q8;         /* 8-bit activations for the weight types that have integer kernels */
    unsigned char *xq;  /* one dispatch's activations, quantised or packed for the kernels */
    size_t xq_cap;
};

/* The form in which a product's activations reach the kernels. */
typedef enum {
    ACT_F32,   /* X as it is */
    ACT_Q8,    /* quantised to 8 bits for the integer kernels (kern_q8_act) */
    ACT_TILES, /* packed for the tile products (kern_tile_act) */
} act_form;

/* One call's arguments, shared by its tasks. */
typedef struct {
    matmul_ctx *c;
    moe_dtype t;
    const unsigned char *W; /* (rows, cols) of type t */
    size_t rows, cols;
    const float *X;   /* (n, cols) */
    act_form form;
    const void *XQ;   /* X in that form, or NULL for ACT_F32 */
    size_t n;
    float *Y;     /* (n, rows) */
    size_t block; /* rows of W per task */
} job;

matmul_ctx *matmul_new(pool *p, size_t max_cols)
{
    matmul_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pool = p;
    c->n_threads = pool_size(p);
    c->max_cols = max_cols;
    c->tile_floats = TILE_FLOATS;
    if (c->tile_floats < ROW_ALIGN * max_cols)
        c->tile_floats = ROW_ALIGN * max_cols;
    c->tiles = malloc((size_t)c->n_threads * c->tile_floats * sizeof *c->tiles);
    if (!c->tiles) {
        free(c);
        return NULL;
    }
    kern_init();
    /* the integer kernels' SIMD code: where it runs, 8-bit activations by default */
    c->act_q8 = strcmp(kern_isa(), "portable") != 0;
    openblas_set_num_threads(1);
    return c;
}

void matmul_free(matmul_ctx *c)
{
    if (!c)
        return;
    free(c->tiles);
    free(c->xq);
    free(c);
}

void matmul_set_act_q8(matmul_ctx *c, int on)
{
    c->act_q8 = on;
}

int matmul_act_q8(const matmul_ctx *c)
{
    return c->act_q8;
}

/* Room for `bytes` of activations in another form: 0 when there is none, and
 * the caller takes the f32 path. Grows only, so the hot path allocates
 * only while the sizes are still growing. */
static int xq_reserve(matmul_ctx *c, size_t bytes)
{
    if (bytes <= c->xq_cap)
        return 1;
    unsigned char *p = realloc(c->xq, bytes);
    if (!p)
        return 0;
    c->xq = p;
    c->xq_cap = bytes;
    return 1;
}

/* Up to this many rows of X the matrix-vector kernels are used. */
static size_t small_n(moe_dtype t)
{
    return t == MOE_F32 ? SMALL_N_F32 : t == MOE_F16 || t == MOE_BF16 ? SMALL_N_F16 : SMALL_N_Q;
}

/* The form X takes for n rows against weights of type t. */
static act_form form_of(const matmul_ctx *c, moe_dtype t, size_t n)
{
    if (n >= TILE_MIN_N && kern_tiles(t))
        return ACT_TILES;
    if (n <= small_n(t) && c->act_q8 && quant_dot_supported(t))
        return ACT_Q8;
    return ACT_F32;
}

int matmul_tiles(const matmul_ctx *c, moe_dtype t, size_t n)
{
    return form_of(c, t, n) == ACT_TILES;
}

/* Whether a product goes through the chunked kernels (matrix-vector or
 * tiles) rather than sgemm. */
static int chunked(const matmul_ctx *c, moe_dtype t, size_t n)
{
    return n <= small_n(t) || form_of(c, t, n) == ACT_TILES;
}

static size_t form_bytes(act_form f, moe_dtype t, size_t n, size_t cols)
{
    return f == ACT_Q8 ? n * quant_dot_act_bytes(t, cols) : f == ACT_TILES ? kern_tile_act_bytes(n, cols) : 0;
}

static void put_in_form(act_form f, moe_dtype t, const float *X, size_t n, size_t cols, unsigned char *out)
{
    if (f == ACT_TILES) {
        kern_tile_act(X, n, cols, out);
        return;
    }
    size_t vb = quant_dot_act_bytes(t, cols);
    for (size_t v = 0; v < n; v++)
        kern_q8_act(t, X + v * cols, cols, out + v * vb);
}

static size_t round_up(size_t x, size_t m)
{
    return (x + m - 1) / m * m;
}

/* Rows r0..r1 of W against X, or against XQ, X in the given form, on
 * the given thread (whose tile is the tile products' scratch). */
static void rows_of(matmul_ctx *c, int thread, moe_dtype t, const void *W, size_t cols, const float *X,
                    act_form form, const void *XQ, size_t n, float *Y, size_t ldy, size_t r0, size_t r1)
{
    if (form == ACT_Q8)
        kern_matvec_q8(t, W, cols, XQ, n, Y, ldy, r0, r1);
    else if (form == ACT_TILES)
        kern_matvec_tiles(t, W, cols, XQ, n, Y, ldy, r0, r1, c->tiles + (size_t)thread * c->tile_floats,
                          c->tile_floats * sizeof *c->tiles);
    else
        kern_matvec_n(t, W, cols, X, n, Y, ldy, r0, r1);
}

static void matvec_task(void *arg, int task, int thread)
{
    const job *j = arg;
    size_t r0 = (size_t)task * j->block;
    size_t r1 = r0 + j->block < j->rows ? r0 + j->block : j->rows;
    rows_of(j->c, thread, j->t, j->W, j->cols, j->X, j->form, j->XQ, j->n, j->Y, j->rows, r0, r1);
}

static void gemm_task(void *arg, int task, int thread)
{
    const job *j = arg;
    size_t r0 = (size_t)task * j->block;
    size_t nr = r0 + j->block < j->rows ? j->block : j->rows - r0;
    const unsigned char *w = j->W + r0 * kern_row_bytes(j->t, j->cols);
    const float *w32 = (const float *)w;
    if (j->t != MOE_F32) {
        float *tile = j->c->tiles + (size_t)thread * j->c->tile_floats;
        kern_to_f32(j->t, w, tile, nr * j->cols);
        w32 = tile;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->n, (int)nr, (int)j->cols, 1.0f,
                j->X, (int)j->cols, w32, (int)j->cols, 0.0f, j->Y + r0, (int)j->rows);
}

void matmul(matmul_ctx *c, moe_dtype t, const void *W, size_t rows, size_t cols, const float *X,
            size_t n, float *Y)
{
    assert(cols <= c->max_cols);
    if (rows == 0 || n == 0)
        return;
    if (cols == 0) { /* empty sums; sgemm would reject lda = 0 */
        memset(Y, 0, n * rows * sizeof *Y);
        return;
    }
    job j = {c, t, W, rows, cols, X, ACT_F32, NULL, n, Y, 0};
    size_t nt = (size_t)c->n_threads;

    if (chunked(c, t, n)) {
        /* A few chunks per thread, so that a thread slowed by something
         * else does not hold up the rest. */
        size_t want = nt == 1 ? 1 : nt * CHUNKS_PER_THREAD;
        j.block = round_up((rows + want - 1) / want, ROW_ALIGN);
        act_form f = form_of(c, t, n);
        if (f != ACT_F32 && xq_reserve(c, form_bytes(f, t, n, cols))) {
            put_in_form(f, t, X, n, cols, c->xq);
            j.form = f;
            j.XQ = c->xq;
        }
        pool_run(c->pool, matvec_task, &j, (int)((rows + j.block - 1) / j.block));
        return;
    }

    assert(n <= INT_MAX && rows <= INT_MAX && cols <= INT_MAX);
    /* Two blocks per thread; f16/bf16 blocks are also limited to a tile. */
    j.block = nt == 1 ? rows : round_up((rows + 2 * nt - 1) / (2 * nt), ROW_ALIGN);
    if (t != MOE_F32) {
        size_t tile = c->tile_floats / (cols ? cols : 1) / ROW_ALIGN * ROW_ALIGN;
        if (tile < j.block)
            j.block = tile;
    }
    pool_run(c->pool, gemm_task, &j, (int)((rows + j.block - 1) / j.block));
}

/* ---- several products, one dispatch --------------------------------------- */

enum { MANY_MAX = 32 }; /* products per dispatch */

typedef struct {
    matmul_ctx *c;
    const matmul_item *item[MANY_MAX];
    act_form form[MANY_MAX];
    const void *xq[MANY_MAX]; /* the item's X in that form, or NULL */
    int n;
    size_t block[MANY_MAX];   /* rows of W per task, as matmul chooses */
    int first[MANY_MAX + 1]; /* the first task of each item */
} many_job;

static void many_task(void *arg, int task, int thread)
{
    const many_job *j = arg;
    int i = 0;
    while (task >= j->first[i + 1])
        i++;
    const matmul_item *it = j->item[i];
    size_t r0 = (size_t)(task - j->first[i]) * j->block[i];
    size_t r1 = r0 + j->block[i] < it->rows ? r0 + j->block[i] : it->rows;
    rows_of(j->c, thread, it->t, it->W, it->cols, it->X, j->form[i], j->xq[i], it->n, it->Y, it->rows, r0, r1);
}

/* Whether item it goes through the chunked kernels of one dispatch rather
 * than a matmul of its own. */
static int many_small(const matmul_ctx *c, const matmul_item *it)
{
    return chunked(c, it->t, it->n) && it->cols > 0;
}

void matmul_many(matmul_ctx *c, const matmul_item *items, int n_items)
{
    many_job j;
    j.c = c;
    j.n = 0;
    j.first[0] = 0;
    size_t nt = (size_t)c->n_threads, want = nt == 1 ? 1 : nt * CHUNKS_PER_THREAD;

    /* The activations of every item that takes them in another form, each
     * distinct X put in each form once (q, k and v share theirs, as do an
     * expert's gate and up), in one buffer reserved up front so that no
     * pointer moves. */
    enum { SEEN_MAX = 2 * MANY_MAX };
    struct prepared {
        const float *X;
        act_form form;
        size_t n, cols, at; /* at: offset in c->xq */
    } seen[SEEN_MAX];
    int n_seen = 0;
    size_t need = 0;
    for (int i = 0; i < n_items; i++)
        if (many_small(c, &items[i]))
            need += form_bytes(form_of(c, items[i].t, items[i].n), items[i].t, items[i].n, items[i].cols);
    int formed = need > 0 && xq_reserve(c, need);
    size_t used = 0;

    for (int i = 0; i < n_items; i++) {
        const matmul_item *it = &items[i];
        assert(it->cols <= c->max_cols);
        if (!many_small(c, it)) { /* sgemm, which leaves c->xq alone */
            matmul(c, it->t, it->W, it->rows, it->cols, it->X, it->n, it->Y);
            continue;
        }
        if (it->rows == 0 || it->n == 0)
            continue;
        if (j.n == MANY_MAX) { /* full: run what is gathered */
            pool_run(c->pool, many_task, &j, j.first[j.n]);
            j.n = 0;
        }
        /* the same blocks as matmul, so that every output is the same */
        size_t block = round_up((it->rows + want - 1) / want, ROW_ALIGN);
        j.item[j.n] = it;
        j.form[j.n] = ACT_F32;
        j.xq[j.n] = NULL;
        act_form f = form_of(c, it->t, it->n);
        if (formed && f != ACT_F32) {
            int k = 0;
            while (k < n_seen && !(seen[k].X == it->X && seen[k].form == f && seen[k].n == it->n &&
                                   seen[k].cols == it->cols))
                k++;
            if (k == n_seen) {
                put_in_form(f, it->t, it->X, it->n, it->cols, c->xq + used);
                if (n_seen < SEEN_MAX)
                    seen[n_seen++] = (struct prepared){it->X, f, it->n, it->cols, used};
                j.xq[j.n] = c->xq + used;
                used += form_bytes(f, it->t, it->n, it->cols);
            } else {
                j.xq[j.n] = c->xq + seen[k].at;
            }
            j.form[j.n] = f;
        }
        j.block[j.n] = block;
        j.first[j.n + 1] = j.first[j.n] + (int)((it->rows + block - 1) / block);
        j.n++;
    }
    if (j.n)
        pool_run(c->pool, many_task, &j, j.first[j.n]);
}
