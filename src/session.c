/* A session: KV cache, scratch buffers and the forward pass.
 *
 * Every buffer is sized in moe_session_new; moe_session_eval allocates
 * nothing. A call runs its tokens in chunks of n_batch: each layer sees the
 * whole chunk at once, so the matrix work is done as matrix products, and
 * the tokens routed to one expert are gathered into one product per expert.
 * With one token (decode) the same code reads only the chosen experts. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "kernels.h"
#include "matmul.h"
#include "model.h"
#include "pool.h"
#include "session.h"

struct moe_session {
    moe_model *m;
    pool *pool;
    matmul_ctx *mm;
    int n_ctx, n_batch, pos;
    controls ctl;              /* the interventions in force */
    moe_trace_sink sink;

    /* activations of one chunk of nb <= n_batch tokens */
    float *x;                  /* (nb, dim) residual stream */
    float *xb;                 /* (nb, dim) normed input of a sublayer */
    float *q;                  /* (nb, q_dim) queries */
    float *att;                /* (nb, q_dim) attention output, heads concatenated */
    float *scores;             /* (n_threads, n_heads / n_kv_heads, n_ctx) attention weights
                                * of one query group, per thread */
    float *proj;               /* (nb, dim) output of o_proj / the MLPs */
    float *rlogits;            /* (nb, n_experts) router logits */
    /* routing of the chunk, kept for the trace */
    float *probs;              /* (nb, n_moe_layers, n_experts) */
    int *chosen;               /* (nb, n_moe_layers, n_experts) first k used */
    float *weights;            /* (nb, n_moe_layers, n_experts) first k used */
    uint8_t *overflow;         /* (nb, n_moe_layers, n_experts) first k used */
    int *load;                 /* (n_experts) assignments so far in the batch */
    int32_t *history;          /* (n_ctx) every token evaluated, for re-prefill */
    float *last_in;            /* (n_layers * kv_slots, dim) MLP input of the latest token */
    uint8_t *last_ok;          /* (n_layers * kv_slots) that block ran for the latest token */
    float *last_out;           /* (n_layers, dim) hidden state after each layer, latest token */
    /* what re-evaluating an earlier token overwrites, kept meanwhile */
    float *probe_in, *probe_out, *probe_logits; /* as last_in, last_out, logits */
    uint8_t *probe_ok;         /* as last_ok */
    float *probe_kv;           /* (n_layers * kv_slots, 2, kv_dim) one cache row per block */
    int *n_chosen;             /* (nb, n_moe_layers) */
    moe_route *routes;         /* (n_moe_layers) handed to the sink */
    /* tokens grouped by expert */
    int *group_n;              /* (n_experts) */
    int *group_tok;            /* (n_experts, nb) */
    float *group_w;            /* (n_experts, nb) */
    float *xe;                 /* (nb, dim) gathered inputs of one expert */
    float *h1, *h3;            /* (nb, ff) expert hidden activations */
    /* every chosen expert of a step with at most FEW_ROWS assignments */
    float *xm;                 /* (FEW_ROWS, dim) inputs, then outputs, expert by expert */
    float *hm1, *hm3;          /* (FEW_ROWS, ff) their hidden activations */
    matmul_item *items;        /* (2 * n_experts) products of one dispatch */
    float *logits;             /* (vocab) of the last token */
    float *all_logits;         /* the caller's (n, vocab) during moe_session_eval_all: next row to fill */
    /* (n_layers * kv_slots, n_kv_heads, n_ctx, head_dim) of kv_type: a slot per
     * block, and each head's positions side by side for the attention kernels */
    unsigned char *kcache, *vcache;
    moe_dtype kv_type;         /* MOE_F32 or MOE_F16 */
    size_t kv_es;              /* bytes per cache element */
    float *knew, *vnew;        /* (nb, kv_dim) the chunk's keys and values before they are stored */
    uint64_t bytes_read;       /* weight bytes multiplied since the session began */
    float *acc;                /* (nb, dim) a MiCRo layer's weighted sum of blocks */
    float *hbuf;               /* (nb, dim) a block's stream after its attention */
    float *rope_cos, *rope_sin; /* (n_ctx, head_dim / 2) */
};

/* Assignments of tokens to experts up to which a step runs all its experts
 * as one batch of products (decoding: k per token). */
enum { FEW_ROWS = 32 };

/* ---- allocation ---------------------------------------------------------- */

/* calloc of a*b*c floats/ints with the product checked. */
static void *alloc3(size_t a, size_t b, size_t c, size_t elem, int *failed)
{
    size_t n = a;
    if ((b && n > SIZE_MAX / b) || (n *= b, c && n > SIZE_MAX / c) || (n *= c, n > SIZE_MAX / elem)) {
        *failed = 1;
        return NULL;
    }
    void *p = calloc(n ? n : 1, elem);
    if (!p)
        *failed = 1;
    return p;
}

/* Rotary frequencies, with the llama3 and linear rescalings as the
 * transformers rope initialisation functions define them. */
static double rope_inv_freq(const moe_config *c, int i)
{
    double inv = 1.0 / pow(c->rope_theta, (2.0 * i) / c->head_dim);
    if (c->rope_freqs) /* llama.cpp's per-frequency factors: llama3 scaling precomputed */
        inv /= c->rope_freqs[i];
    if (c->rope == ROPE_LINEAR)
        return inv / c->rope_factor;
    if (c->rope != ROPE_LLAMA3)
        return inv;
    double low_wavelen = c->rope_orig_max_pos / c->rope_low_freq_factor;
    double high_wavelen = c->rope_orig_max_pos / c->rope_high_freq_factor;
    double wavelen = 2 * M_PI / inv;
    if (wavelen < high_wavelen)
        return inv;
    if (wavelen > low_wavelen)
        return inv / c->rope_factor;
    double smooth = (c->rope_orig_max_pos / wavelen - c->rope_low_freq_factor) /
                    (c->rope_high_freq_factor - c->rope_low_freq_factor);
    return (1 - smooth) * inv / c->rope_factor + smooth * inv;
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

moe_status moe_session_new(moe_model *m, const moe_session_params *p, moe_session **out, moe_error *err)
{
    *out = NULL;
    const moe_config *c = &m->cfg;
    moe_session_params d = {0, 0, 0};
    if (!p)
        p = &d;
    int n_ctx = p->n_ctx ? p->n_ctx : (c->max_pos < 4096 ? c->max_pos : 4096);
    int n_threads = p->n_threads ? p->n_threads : online_cores();
    int n_batch = p->n_batch ? p->n_batch : 512;
    if (n_ctx < 1 || n_ctx > (1 << 20))
        return moe_fail(err, MOE_EINVAL, "context length %d is out of range (1 to 1048576)", n_ctx);
    if (n_threads < 1 || n_threads > 256)
        return moe_fail(err, MOE_EINVAL, "thread count %d is out of range (1 to 256)", n_threads);
    if (n_batch < 1 || n_batch > 8192)
        return moe_fail(err, MOE_EINVAL, "batch size %d is out of range (1 to 8192)", n_batch);
    if (n_batch > n_ctx)
        n_batch = n_ctx;

    moe_session *s = calloc(1, sizeof *s);
    if (!s)
        return moe_fail(err, MOE_ENOMEM, "out of memory creating a session");
    s->m = m;
    s->n_ctx = n_ctx;
    s->n_batch = n_batch;
    s->kv_type = MOE_F32;
    s->kv_es = 4;
    size_t nb = (size_t)n_batch, dim = (size_t)c->dim;
    size_t ff = (size_t)c->ff; /* the widest MLP: dense, routed or shared */
    if ((size_t)c->moe_ff > ff)
        ff = (size_t)c->moe_ff;
    if ((size_t)c->shared_ff > ff)
        ff = (size_t)c->shared_ff;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t ne = c->n_experts ? (size_t)c->n_experts : 1, nml = (size_t)m->info.n_moe_layers;
    int failed = 0;
    failed |= controls_init(&s->ctl, c->n_layers, (int)ne, c->k) != 0;
    size_t slots = (size_t)c->n_layers * m->kv_slots;
    s->x = alloc3(nb, dim, 1, sizeof(float), &failed);
    s->xb = alloc3(nb, dim, 1, sizeof(float), &failed);
    s->q = alloc3(nb, q_dim, 1, sizeof(float), &failed);
    s->att = alloc3(nb, q_dim, 1, sizeof(float), &failed);
    s->scores = alloc3((size_t)n_threads, (size_t)(c->n_heads / c->n_kv_heads), (size_t)n_ctx, sizeof(float),
                       &failed);
    s->proj = alloc3(nb, dim, 1, sizeof(float), &failed);
    s->rlogits = alloc3(nb, ne, 1, sizeof(float), &failed);
    s->probs = alloc3(nb, nml, ne, sizeof(float), &failed);
    s->chosen = alloc3(nb, nml, ne, sizeof(int), &failed);
    s->weights = alloc3(nb, nml, ne, sizeof(float), &failed);
    s->n_chosen = alloc3(nb, nml, 1, sizeof(int), &failed);
    s->overflow = alloc3(nb, nml, ne, 1, &failed);
    s->load = alloc3(ne, 1, 1, sizeof(int), &failed);
    s->history = alloc3((size_t)n_ctx, 1, 1, sizeof(int32_t), &failed);
    s->last_in = alloc3(slots, dim, 1, sizeof(float), &failed);
    s->last_ok = alloc3(slots, 1, 1, 1, &failed);
    s->last_out = alloc3((size_t)c->n_layers, dim, 1, sizeof(float), &failed);
    s->probe_in = alloc3(slots, dim, 1, sizeof(float), &failed);
    s->probe_ok = alloc3(slots, 1, 1, 1, &failed);
    s->probe_out = alloc3((size_t)c->n_layers, dim, 1, sizeof(float), &failed);
    s->probe_logits = alloc3((size_t)c->vocab, 1, 1, sizeof(float), &failed);
    s->probe_kv = alloc3(slots, 2, kv_dim, s->kv_es, &failed);
    s->routes = alloc3(nml, 1, 1, sizeof(moe_route), &failed);
    s->group_n = alloc3(ne, 1, 1, sizeof(int), &failed);
    s->group_tok = alloc3(ne, nb, 1, sizeof(int), &failed);
    s->group_w = alloc3(ne, nb, 1, sizeof(float), &failed);
    s->xe = alloc3(nb, dim, 1, sizeof(float), &failed);
    s->h1 = alloc3(nb, ff, 1, sizeof(float), &failed);
    s->h3 = alloc3(nb, ff, 1, sizeof(float), &failed);
    s->xm = alloc3(FEW_ROWS, dim, 1, sizeof(float), &failed);
    s->hm1 = alloc3(FEW_ROWS, ff, 1, sizeof(float), &failed);
    s->hm3 = alloc3(FEW_ROWS, ff, 1, sizeof(float), &failed);
    s->items = alloc3(2, ne, 1, sizeof(matmul_item), &failed);
    s->logits = alloc3((size_t)c->vocab, 1, 1, sizeof(float), &failed);
    s->kcache = alloc3(slots, (size_t)n_ctx, kv_dim, s->kv_es, &failed);
    s->vcache = alloc3(slots, (size_t)n_ctx, kv_dim, s->kv_es, &failed);
    s->knew = alloc3(nb, kv_dim, 1, sizeof(float), &failed);
    s->vnew = alloc3(nb, kv_dim, 1, sizeof(float), &failed);
    s->acc = alloc3(nb, dim, 1, sizeof(float), &failed);
    s->hbuf = alloc3(nb, dim, 1, sizeof(float), &failed);
    s->rope_cos = alloc3((size_t)n_ctx, (size_t)c->head_dim / 2, 1, sizeof(float), &failed);
    s->rope_sin = alloc3((size_t)n_ctx, (size_t)c->head_dim / 2, 1, sizeof(float), &failed);
    if (failed) {
        moe_session_free(s);
        return moe_fail(err, MOE_ENOMEM,
                        "out of memory for a session of %d tokens of context (KV cache %.1f MiB); "
                        "try a shorter context",
                        n_ctx, 2.0 * c->n_layers * m->kv_slots * n_ctx * kv_dim * s->kv_es / (1 << 20));
    }
    size_t max_cols = dim > ff ? dim : ff;
    if (q_dim > max_cols)
        max_cols = q_dim;
    kern_init();
    if (!(s->pool = pool_new(n_threads)) || !(s->mm = matmul_new(s->pool, max_cols))) {
        moe_session_free(s);
        return moe_fail(err, MOE_ENOMEM, "cannot start %d threads", n_threads);
    }
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double inv = rope_inv_freq(c, i);
        for (int t = 0; t < n_ctx; t++) {
            s->rope_cos[(size_t)t * half + i] = (float)cos(t * inv);
            s->rope_sin[(size_t)t * half + i] = (float)sin(t * inv);
        }
    }
    *out = s;
    return MOE_OK;
}

void moe_session_free(moe_session *s)
{
    if (!s)
        return;
    matmul_free(s->mm);
    pool_free(s->pool);
    controls_done(&s->ctl);
    void *bufs[] = {s->x, s->xb, s->q, s->att, s->scores, s->proj, s->rlogits,
                    s->probs, s->chosen, s->weights, s->n_chosen, s->routes, s->group_n,
                    s->group_tok, s->group_w, s->xe, s->h1, s->h3, s->logits, s->kcache,
                    s->vcache, s->rope_cos, s->rope_sin, s->overflow, s->load, s->history,
                    s->last_in, s->last_out, s->last_ok, s->acc, s->hbuf,
                    s->probe_in, s->probe_ok, s->probe_out, s->probe_logits, s->probe_kv,
                    s->knew, s->vnew, s->xm, s->hm1, s->hm3, s->items};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(s);
}

/* ---- building blocks ------------------------------------------------------- */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++)
        out[i] = w[i] * (x[i] * scale);
}

static void add_bias(float *y, const float *b, int rows, int n)
{
    if (!b)
        return;
    for (int t = 0; t < rows; t++)
        for (int i = 0; i < n; i++)
            y[(size_t)t * n + i] += b[i];
}

/* Rotate pairs (i, i + half) of every head: the rotate_half convention. */
static void rope(float *v, int n_heads, int head_dim, const float *cos_t, const float *sin_t)
{
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *a = v + (size_t)h * head_dim, *b = a + half;
        for (int i = 0; i < half; i++) {
            float x1 = a[i], x2 = b[i];
            a[i] = x1 * cos_t[i] - x2 * sin_t[i];
            b[i] = x2 * cos_t[i] + x1 * sin_t[i];
        }
    }
}

static void mm(moe_session *s, const wmat *w, const float *X, int n, float *Y)
{
    s->bytes_read += (uint64_t)w->rows * kern_row_bytes(w->t, (size_t)w->cols);
    matmul(s->mm, w->t, w->data, (size_t)w->rows, (size_t)w->cols, X, (size_t)n, Y);
}

static matmul_item item(const wmat *w, const float *X, int n, float *Y)
{
    return (matmul_item){w->t, w->data, (size_t)w->rows, (size_t)w->cols, X, (size_t)n, Y};
}

/* Independent products in one dispatch of the pool (see matmul_many). */
static void many(moe_session *s, const matmul_item *it, int n)
{
    for (int i = 0; i < n; i++)
        s->bytes_read += (uint64_t)it[i].rows * kern_row_bytes(it[i].t, it[i].cols);
    matmul_many(s->mm, it, n);
}

static void clip(float *v, int n, float m)
{
    for (int i = 0; i < n; i++)
        v[i] = v[i] < -m ? -m : v[i] > m ? m : v[i];
}

/* q or k of one token after its projection: OLMoE normalises over the
 * whole projection (then may clamp), Qwen3 over each head; RoPE last. */
static void shape_qk(moe_session *s, float *v, const float *norm, int n_heads, int pos)
{
    const moe_config *c = &s->m->cfg;
    int hd = c->head_dim, half = hd / 2;
    float eps = (float)c->norm_eps;
    if (s->m->qk_norm == QK_NORM_WHOLE)
        rmsnorm(v, v, norm, n_heads * hd, eps);
    else if (s->m->qk_norm == QK_NORM_HEAD)
        for (int h = 0; h < n_heads; h++)
            rmsnorm(v + h * hd, v + h * hd, norm, hd, eps);
    if (c->clip_qkv > 0)
        clip(v, n_heads * hd, (float)c->clip_qkv);
    rope(v, n_heads, hd, s->rope_cos + (size_t)pos * half, s->rope_sin + (size_t)pos * half);
}

/* Head `head`'s row of cache slot `slot` at position pos (K or V). */
static unsigned char *kv_at(const moe_session *s, unsigned char *cache, int slot, int head, int pos)
{
    const moe_config *c = &s->m->cfg;
    return cache + (((size_t)slot * c->n_kv_heads + head) * s->n_ctx + pos) * c->head_dim * s->kv_es;
}

/* nb rows of head_dim values (rows ld floats apart) into consecutive
 * cache positions from dst, rounded to f16 for an f16 cache. */
static void kv_store(const moe_session *s, unsigned char *dst, const float *src, size_t ld, int nb)
{
    size_t hd = (size_t)s->m->cfg.head_dim;
    for (int t = 0; t < nb; t++, src += ld, dst += hd * s->kv_es) {
        if (s->kv_type == MOE_F32) {
            memcpy(dst, src, hd * sizeof *src);
            continue;
        }
        for (size_t d = 0; d < hd; d++) {
            uint16_t h = kern_f32_to_f16(src[d]);
            memcpy(dst + 2 * d, &h, 2);
        }
    }
}

/* The chunk's nb keys and values, projected into s->knew and s->vnew,
 * finished (bias, norms, RoPE, clamp) and stored into KV cache slot `slot`
 * at their positions. */
static void kv_finish(moe_session *s, const layer_weights *A, int slot, int nb)
{
    const moe_config *c = &s->m->cfg;
    int hd = c->head_dim, kv_dim = c->n_kv_heads * hd;
    float *kn = s->knew, *vn = s->vnew;
    add_bias(kn, A->bk, nb, kv_dim);
    add_bias(vn, A->bv, nb, kv_dim);
    for (int t = 0; t < nb; t++) {
        shape_qk(s, kn + (size_t)t * kv_dim, A->k_norm, c->n_kv_heads, s->pos + t);
        if (c->clip_qkv > 0)
            clip(vn + (size_t)t * kv_dim, kv_dim, (float)c->clip_qkv);
    }
    for (int h = 0; h < c->n_kv_heads; h++) {
        kv_store(s, kv_at(s, s->kcache, slot, h, s->pos), kn + (size_t)h * hd, (size_t)kv_dim, nb);
        kv_store(s, kv_at(s, s->vcache, slot, h, s->pos), vn + (size_t)h * hd, (size_t)kv_dim, nb);
    }
}

/* Keys and values of the chunk's nb tokens from `in` (nb, dim), into KV
 * cache slot `slot` at their positions. */
static void project_kv(moe_session *s, const layer_weights *A, int slot, const float *in, int nb)
{
    matmul_item it[2] = {item(&A->wk, in, nb, s->knew), item(&A->wv, in, nb, s->vnew)};
    many(s, it, 2);
    kv_finish(s, A, slot, nb);
}

/* Queries of n rows, projected into s->q, finished (bias, norms, RoPE);
 * row i is token tok[i] of the chunk (i when tok is NULL). */
static void q_finish(moe_session *s, const layer_weights *A, int n, const int *tok)
{
    const moe_config *c = &s->m->cfg;
    int q_dim = c->n_heads * c->head_dim;
    add_bias(s->q, A->bq, n, q_dim);
    for (int i = 0; i < n; i++)
        shape_qk(s, s->q + (size_t)i * q_dim, A->q_norm, c->n_heads, s->pos + (tok ? tok[i] : i));
}

/* Queries of n rows of `in`; row i is token tok[i] of the chunk (i when
 * tok is NULL). */
static void project_q(moe_session *s, const layer_weights *A, const float *in, int n, const int *tok)
{
    mm(s, &A->wq, in, n, s->q);
    q_finish(s, A, n, tok);
}

/* One attention task: query row i, the query heads that share KV head
 * kvh (side by side in q), over one KV cache slot. */
typedef struct {
    moe_session *s;
    int slot;
    const int *tok;
} attn_job;

static void attn_task(void *ctx, int task, int thread)
{
    const attn_job *j = ctx;
    moe_session *s = j->s;
    const moe_config *c = &s->m->cfg;
    int nkv = c->n_kv_heads, hd = c->head_dim, g = c->n_heads / nkv, i = task / nkv, kvh = task % nkv;
    int pos = s->pos + (j->tok ? j->tok[i] : i);
    /* a sliding window sees positions (pos - window, pos] */
    int first = c->sliding_window && pos >= c->sliding_window ? pos - c->sliding_window + 1 : 0;
    size_t len = (size_t)(pos + 1 - first), q_dim = (size_t)c->n_heads * hd;
    const float *q = s->q + i * q_dim + (size_t)kvh * g * hd;
    float *sc = s->scores + (size_t)thread * g * s->n_ctx; /* (g, len) */
    /* scores of the g heads: each key read once for all of them */
    kern_matvec_n(s->kv_type, kv_at(s, s->kcache, j->slot, kvh, first), (size_t)hd, q, (size_t)g, sc, len, 0,
                  len);
    for (int h = 0; h < g; h++)
        kern_softmax(sc + (size_t)h * len, len, 1.0f / sqrtf((float)hd));
    /* the weighted sums of the values, straight into the heads' outputs */
    kern_wsum(s->kv_type, kv_at(s, s->vcache, j->slot, kvh, first), (size_t)hd, (size_t)hd, sc, len, (size_t)g,
              len, s->att + i * q_dim + (size_t)kvh * g * hd, (size_t)hd);
}

/* Causal softmax attention of the n queries in s->q over cache slot
 * `slot`, one task per (query, head), then the output projection into
 * s->proj (n, dim). */
static void attend(moe_session *s, const layer_weights *A, int slot, int n, const int *tok)
{
    attn_job job = {s, slot, tok};
    pool_run(s->pool, attn_task, &job, n * s->m->cfg.n_kv_heads);
    mm(s, &A->wo, s->att, n, s->proj);
    add_bias(s->proj, A->bo, n, s->m->cfg.dim);
}

static void attention(moe_session *s, int l, int nb)
{
    const layer_weights *L = &s->m->layers[l];
    matmul_item it[3] = {item(&L->wq, s->xb, nb, s->q), item(&L->wk, s->xb, nb, s->knew),
                         item(&L->wv, s->xb, nb, s->vnew)};
    many(s, it, 3);
    kv_finish(s, L, l, nb);
    q_finish(s, L, nb, NULL);
    attend(s, L, l, nb, NULL);
}

/* Decide the experts of every token in the chunk and group tokens by
 * expert. Dense layers send every token to their one MLP with weight 1. */
static void route(moe_session *s, int l, int moe_idx, int nb)
{
    const layer_weights *L = &s->m->layers[l];
    int ne = L->n_experts ? L->n_experts : 1;
    memset(s->group_n, 0, (size_t)ne * sizeof *s->group_n);
    if (!L->n_experts) {
        for (int t = 0; t < nb; t++) {
            s->group_tok[t] = t;
            s->group_w[t] = 1;
        }
        s->group_n[0] = nb;
        return;
    }
    if (L->router0.data) { /* MiCRo: gate.1(gate.0(x)) on the layer's input */
        mm(s, &L->router0, s->x, nb, s->xe);
        mm(s, &L->router, s->xe, nb, s->rlogits);
    } else {
        mm(s, &L->router, s->xb, nb, s->rlogits);
    }
    const controls *ctl = &s->ctl;
    size_t nml = (size_t)s->m->info.n_moe_layers, stride = (size_t)ne;
    const float *bias = ctl->bias + (size_t)l * ne;
    const uint8_t *off = ctl->off + (size_t)l * ne;
    const uint8_t *forced = ctl->n_forced[l] ? ctl->forced + (size_t)l * ne : NULL;
    int k = ctl->k[l] < ctl->n_on[l] ? ctl->k[l] : ctl->n_on[l];
    /* capacity of each expert in this batch, in assignments */
    int capacity = ctl->capacity > 0 ? (int)ceil(ctl->capacity * nb * ctl->k[l] / ne) : 0;
    if (capacity)
        memset(s->load, 0, (size_t)ne * sizeof *s->load);
    for (int t = 0; t < nb; t++) {
        float *lg = s->rlogits + (size_t)t * ne;
        /* controls act on the logits: biases, then switched-off experts */
        if (ctl->has_bias[l])
            for (int e = 0; e < ne; e++)
                lg[e] += bias[e];
        if (ctl->n_on[l] < ne)
            for (int e = 0; e < ne; e++)
                if (off[e])
                    lg[e] = -INFINITY;
        size_t rec = ((size_t)t * nml + moe_idx) * stride;
        int *experts = s->chosen + rec;
        float *w = s->weights + rec;
        uint8_t *over = s->overflow + rec;
        int used = router_gate(&s->m->rule, lg, ne, k, forced, ctl->n_forced[l], s->probs + rec, experts, w);
        s->n_chosen[(size_t)t * nml + moe_idx] = used;
        for (int j = 0; j < used; j++) {
            int e = experts[j];
            over[j] = capacity && ++s->load[e] > capacity;
            if (over[j] && ctl->drop) {
                w[j] = 0;
                continue;
            }
            int slot = s->group_n[e]++;
            s->group_tok[(size_t)e * s->n_batch + slot] = t;
            s->group_w[(size_t)e * s->n_batch + slot] = w[j];
        }
    }
}

/* SwiGLU experts over their groups; the weighted outputs sum into proj. */
/* dst row i = src row tok[i]: the tokens routed to one expert, side by side. */
static void gather_rows(float *dst, const float *src, const int *tok, int n, int dim)
{
    for (int i = 0; i < n; i++)
        memcpy(dst + (size_t)i * dim, src + (size_t)tok[i] * dim, (size_t)dim * sizeof(float));
}

/* The hidden activation of one MLP over n gathered rows of s->xe into
 * s->h1: silu(gate x) * up x, with the neuron offsets aimed at it. */
/* h1 = silu(h1) * h3 over n rows of ff, then the neuron offsets aimed at
 * this MLP. */
static void swiglu_act(moe_session *s, float *h1, const float *h3, int n, int ff, int l, moe_offset_kind kind,
                       int expert)
{
    for (size_t i = 0; i < (size_t)n * ff; i++) {
        float g = h1[i];
        h1[i] = g / (1.0f + expf(-g)) * h3[i];
    }
    /* steering: neuron offsets on this MLP's hidden activation */
    for (int o = 0; o < s->ctl.n_offsets; o++) {
        const moe_offset *off = &s->ctl.offsets[o];
        if (off->kind == kind && off->layer == l && (kind != MOE_OFFSET_MLP || off->expert == expert))
            for (int i = 0; i < n; i++)
                h1[(size_t)i * ff + off->neuron] += off->delta;
    }
}

static void mlp_hidden(moe_session *s, const mlp_weights *W, int n, int l, moe_offset_kind kind, int expert)
{
    matmul_item it[2] = {item(&W->gate, s->xe, n, s->h1), item(&W->up, s->xe, n, s->h3)};
    many(s, it, 2);
    swiglu_act(s, s->h1, s->h3, n, W->gate.rows, l, kind, expert);
}

/* The routed experts of a step with few assignments in all (decoding):
 * every chosen expert's gate and up projections in one dispatch, then
 * every down projection in one; the same products, in the same order of
 * summation, as one expert at a time. */
static void experts_few(moe_session *s, const layer_weights *L, int l)
{
    int dim = s->m->cfg.dim, n_items = 0;
    size_t row = 0, hrow = 0; /* rows of xm and hidden values used so far */
    for (int e = 0; e < L->n_experts; e++) {
        int n = s->group_n[e];
        if (!n)
            continue;
        const mlp_weights *W = &L->experts[e];
        const int *tok = s->group_tok + (size_t)e * s->n_batch;
        gather_rows(s->xm + row * dim, s->xb, tok, n, dim);
        s->items[n_items++] = item(&W->gate, s->xm + row * dim, n, s->hm1 + hrow);
        s->items[n_items++] = item(&W->up, s->xm + row * dim, n, s->hm3 + hrow);
        row += (size_t)n;
        hrow += (size_t)n * W->gate.rows;
    }
    many(s, s->items, n_items);
    n_items = 0, row = 0, hrow = 0;
    for (int e = 0; e < L->n_experts; e++) {
        int n = s->group_n[e];
        if (!n)
            continue;
        const mlp_weights *W = &L->experts[e];
        swiglu_act(s, s->hm1 + hrow, s->hm3 + hrow, n, W->gate.rows, l, MOE_OFFSET_MLP, e);
        s->items[n_items++] = item(&W->down, s->hm1 + hrow, n, s->xm + row * dim);
        row += (size_t)n;
        hrow += (size_t)n * W->gate.rows;
    }
    many(s, s->items, n_items);
    row = 0;
    for (int e = 0; e < L->n_experts; e++) {
        const int *tok = s->group_tok + (size_t)e * s->n_batch;
        const float *w = s->group_w + (size_t)e * s->n_batch;
        for (int i = 0; i < s->group_n[e]; i++, row++)
            kern_axpy(w[i], s->xm + row * dim, s->proj + (size_t)tok[i] * dim, (size_t)dim);
    }
}

/* One MLP over n gathered rows of s->xe; the result replaces s->xe. */
static void swiglu(moe_session *s, const mlp_weights *W, int n, int l, moe_offset_kind kind, int expert)
{
    mlp_hidden(s, W, n, l, kind, expert);
    mm(s, &W->down, s->h1, n, s->xe);
}

/* The MLP block: routed experts over their groups (or the dense MLP), and
 * the shared expert; the weighted outputs sum into proj. */
static void experts(moe_session *s, int l, int nb)
{
    const layer_weights *L = &s->m->layers[l];
    int dim = s->m->cfg.dim;
    int ne = L->n_experts ? L->n_experts : 1;
    memset(s->proj, 0, (size_t)nb * dim * sizeof(float));
    int total = 0;
    for (int e = 0; e < ne; e++)
        total += s->group_n[e];
    int few = L->n_experts && total <= FEW_ROWS;
    if (few)
        experts_few(s, L, l);
    for (int e = 0; e < ne && !few; e++) {
        int n = s->group_n[e];
        if (!n)
            continue;
        const int *tok = s->group_tok + (size_t)e * s->n_batch;
        const float *w = s->group_w + (size_t)e * s->n_batch;
        gather_rows(s->xe, s->xb, tok, n, dim);
        swiglu(s, L->n_experts ? &L->experts[e] : &L->dense, n, l, MOE_OFFSET_MLP, e);
        for (int i = 0; i < n; i++)
            kern_axpy(w[i], s->xe + (size_t)i * dim, s->proj + (size_t)tok[i] * dim, (size_t)dim);
    }
    if (L->shared.gate.data) {
        /* Qwen2-MoE: every token also goes through the shared expert,
         * scaled by sigmoid(shared_expert_gate · x) */
        memcpy(s->xe, s->xb, (size_t)nb * dim * sizeof(float));
        mm(s, &L->shared_gate, s->xb, nb, s->rlogits); /* (nb, 1) */
        swiglu(s, &L->shared, nb, l, MOE_OFFSET_SHARED, 0);
        for (int t = 0; t < nb; t++) {
            float g = 1.0f / (1.0f + expf(-s->rlogits[t]));
            kern_axpy(g, s->xe + (size_t)t * dim, s->proj + (size_t)t * dim, (size_t)dim);
        }
    }
}

/* A MiCRo layer: each expert is a whole decoder block (residuals
 * inside), and the layer's output is the weighted sum of the chosen
 * blocks' outputs. Every block keeps keys and values for every position,
 * chosen or not, as the released code does; only the chosen blocks run
 * their queries, attention and MLP. */
static void micro_layer(moe_session *s, int l, int moe_idx, int nb)
{
    const layer_weights *L = &s->m->layers[l];
    int dim = s->m->cfg.dim;
    float eps = (float)s->m->cfg.norm_eps;
    route(s, l, moe_idx, nb);
    memset(s->acc, 0, (size_t)nb * dim * sizeof(float));
    for (int e = 0; e < L->n_experts; e++) {
        const layer_weights *B = &L->blocks[e];
        int slot = l * s->m->kv_slots + e;
        /* the block's input: normed (Llama) or raw (OLMo-2 post-norms) */
        const float *in = s->x;
        if (B->attn_norm) {
            for (int t = 0; t < nb; t++)
                rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, B->attn_norm, dim, eps);
            in = s->xb;
        }
        project_kv(s, B, slot, in, nb);
        s->last_ok[slot] = 0;
        int n = s->group_n[e];
        if (!n)
            continue;
        const int *tok = s->group_tok + (size_t)e * s->n_batch;
        const float *w = s->group_w + (size_t)e * s->n_batch;
        gather_rows(s->xe, in, tok, n, dim);
        project_q(s, B, s->xe, n, tok);
        attend(s, B, slot, n, tok);
        /* h = x + attention; the MLP's input is norm(h) or h */
        for (int i = 0; i < n; i++) {
            float *h = s->hbuf + (size_t)i * dim, *o = s->proj + (size_t)i * dim;
            if (B->post_attn_norm)
                rmsnorm(o, o, B->post_attn_norm, dim, eps);
            for (int d = 0; d < dim; d++)
                h[d] = s->x[(size_t)tok[i] * dim + d] + o[d];
            if (B->ffn_norm)
                rmsnorm(s->xe + (size_t)i * dim, h, B->ffn_norm, dim, eps);
            else
                memcpy(s->xe + (size_t)i * dim, h, (size_t)dim * sizeof(float));
        }
        if (tok[n - 1] == nb - 1) {
            memcpy(s->last_in + (size_t)slot * dim, s->xe + (size_t)(n - 1) * dim, (size_t)dim * sizeof(float));
            s->last_ok[slot] = 1;
        }
        swiglu(s, &B->dense, n, l, MOE_OFFSET_MLP, e);
        for (int i = 0; i < n; i++) {
            float *y = s->xe + (size_t)i * dim, *h = s->hbuf + (size_t)i * dim;
            if (B->post_ffn_norm)
                rmsnorm(y, y, B->post_ffn_norm, dim, eps);
            for (int d = 0; d < dim; d++)
                y[d] += h[d];
            kern_axpy(w[i], y, s->acc + (size_t)tok[i] * dim, (size_t)dim);
        }
    }
    memcpy(s->x, s->acc, (size_t)nb * dim * sizeof(float));
}

static void deliver_trace(moe_session *s, const int32_t *ids, int nb)
{
    if (!s->sink.on_token)
        return;
    const moe_model *m = s->m;
    int nml = m->info.n_moe_layers, ne = m->cfg.n_experts ? m->cfg.n_experts : 1;
    for (int t = 0; t < nb; t++) {
        int r = 0;
        for (int l = 0; l < m->cfg.n_layers; l++) {
            if (!m->layers[l].n_experts)
                continue;
            size_t rec = ((size_t)t * nml + r) * ne;
            s->routes[r] = (moe_route){l,
                                       ne,
                                       s->probs + rec,
                                       s->n_chosen[(size_t)t * nml + r],
                                       s->chosen + rec,
                                       s->weights + rec,
                                       s->ctl.capacity > 0 ? s->overflow + rec : NULL};
            r++;
        }
        moe_token_trace tt = {s->pos + t, ids[t], nml, s->routes};
        s->sink.on_token(s->sink.ctx, &tt);
    }
}

/* Steering on the residual stream after layer l; and the latest token's
 * hidden state there, for the neuron picker. */
static void resid_offsets(moe_session *s, int l, int nb)
{
    int dim = s->m->cfg.dim;
    for (int o = 0; o < s->ctl.n_offsets; o++) {
        const moe_offset *off = &s->ctl.offsets[o];
        if (off->kind == MOE_OFFSET_RESID && off->layer == l)
            for (int t = 0; t < nb; t++)
                s->x[(size_t)t * dim + off->neuron] += off->delta;
    }
    memcpy(s->last_out + (size_t)l * dim, s->x + (size_t)(nb - 1) * dim, (size_t)dim * sizeof(float));
}

/* The forward pass of one chunk; logits of its last token. */
static void forward(moe_session *s, const int32_t *ids, int nb)
{
    const moe_model *m = s->m;
    const moe_config *c = &m->cfg;
    int dim = c->dim;
    float eps = (float)c->norm_eps;

    /* token embeddings */
    size_t row_bytes = kern_row_bytes(m->embed.t, (size_t)dim);
    s->bytes_read += (uint64_t)nb * row_bytes;
    for (int t = 0; t < nb; t++)
        kern_to_f32(m->embed.t, (const char *)m->embed.data + (size_t)ids[t] * row_bytes,
                    s->x + (size_t)t * dim, (size_t)dim);

    int moe_idx = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        if (L->blocks) {
            micro_layer(s, l, moe_idx++, nb);
            resid_offsets(s, l, nb);
            continue;
        }
        /* attention block: x += attn(norm(x)) */
        for (int t = 0; t < nb; t++)
            rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, L->attn_norm, dim, eps);
        attention(s, l, nb);
        for (size_t i = 0; i < (size_t)nb * dim; i++)
            s->x[i] += s->proj[i];
        /* MLP block: x += sum of chosen experts' outputs on norm(x) */
        for (int t = 0; t < nb; t++)
            rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, L->ffn_norm, dim, eps);
        memcpy(s->last_in + (size_t)l * m->kv_slots * dim, s->xb + (size_t)(nb - 1) * dim,
               (size_t)dim * sizeof(float));
        s->last_ok[l * m->kv_slots] = 1;
        route(s, l, moe_idx, nb);
        experts(s, l, nb);
        for (size_t i = 0; i < (size_t)nb * dim; i++)
            s->x[i] += s->proj[i];
        resid_offsets(s, l, nb);
        moe_idx += L->n_experts ? 1 : 0;
    }
    /* final norm and the vocabulary projection: the last token, or every
     * token when the caller keeps them all (moe_session_eval_all) */
    if (s->all_logits) {
        size_t vocab = (size_t)c->vocab;
        for (int t = 0; t < nb; t++)
            rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, m->final_norm, dim, eps);
        mm(s, &m->lm_head, s->xb, nb, s->all_logits);
        memcpy(s->logits, s->all_logits + (size_t)(nb - 1) * vocab, vocab * sizeof(float));
        s->all_logits += (size_t)nb * vocab;
        return;
    }
    rmsnorm(s->xb, s->x + (size_t)(nb - 1) * dim, m->final_norm, dim, eps);
    mm(s, &m->lm_head, s->xb, 1, s->logits);
}

moe_status moe_session_eval(moe_session *s, const int32_t *ids, int n, moe_error *err)
{
    if (n < 1)
        return moe_fail(err, MOE_EINVAL, "nothing to evaluate (0 tokens)");
    if (n > s->n_ctx - s->pos)
        return moe_fail(err, MOE_EINVAL, "context full: %d tokens at position %d exceed the context of %d",
                        n, s->pos, s->n_ctx);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->m->cfg.vocab)
            return moe_fail(err, MOE_EINVAL, "token id %d at index %d is outside the vocabulary (0 to %d)",
                            (int)ids[i], i, s->m->cfg.vocab - 1);
    /* memmove: re-prefill evaluates the history in place */
    memmove(s->history + s->pos, ids, (size_t)n * sizeof *ids);
    ids = s->history + s->pos;
    for (int done = 0; done < n;) {
        int nb = n - done < s->n_batch ? n - done : s->n_batch;
        forward(s, ids + done, nb);
        deliver_trace(s, ids + done, nb);
        s->pos += nb;
        done += nb;
    }
    return MOE_OK;
}

moe_status moe_session_eval_all(moe_session *s, const int32_t *ids, int n, float *logits, moe_error *err)
{
    s->all_logits = logits;
    moe_status st = moe_session_eval(s, ids, n, err);
    s->all_logits = NULL;
    return st;
}

const float *moe_session_logits(const moe_session *s)
{
    return s->logits;
}

int moe_session_pos(const moe_session *s)
{
    return s->pos;
}

int moe_session_n_ctx(const moe_session *s)
{
    return s->n_ctx;
}

moe_status moe_session_set_kv_type(moe_session *s, moe_dtype t, moe_error *err)
{
    if (t != MOE_F32 && t != MOE_F16)
        return moe_fail(err, MOE_EINVAL, "KV cache type %s is not supported (f32 or f16)",
                        (unsigned)t < MOE_DTYPE_COUNT ? moe_dtype_name(t) : "unknown");
    if (s->pos)
        return moe_fail(err, MOE_EINVAL, "the KV cache type can change only before the first token (%d held)",
                        s->pos);
    if (t == s->kv_type)
        return MOE_OK;
    const moe_config *c = &s->m->cfg;
    size_t slots = (size_t)c->n_layers * s->m->kv_slots, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t es = t == MOE_F16 ? 2 : 4;
    int failed = 0;
    unsigned char *k = alloc3(slots, (size_t)s->n_ctx, kv_dim, es, &failed);
    unsigned char *v = alloc3(slots, (size_t)s->n_ctx, kv_dim, es, &failed);
    void *probe = alloc3(slots, 2, kv_dim, es, &failed);
    if (failed) {
        free(k), free(v), free(probe);
        return moe_fail(err, MOE_ENOMEM, "out of memory for a %s KV cache of %d tokens", moe_dtype_name(t),
                        s->n_ctx);
    }
    free(s->kcache), free(s->vcache), free(s->probe_kv);
    s->kcache = k, s->vcache = v, s->probe_kv = probe;
    s->kv_type = t;
    s->kv_es = es;
    return MOE_OK;
}

moe_dtype moe_session_kv_type(const moe_session *s)
{
    return s->kv_type;
}

uint64_t moe_session_weight_bytes(const moe_session *s)
{
    return s->bytes_read;
}

size_t moe_session_kv_bytes(const moe_session *s)
{
    const moe_config *c = &s->m->cfg;
    return 2 * (size_t)c->n_layers * s->m->kv_slots * s->n_ctx * c->n_kv_heads * c->head_dim * s->kv_es;
}

int moe_session_n_threads(const moe_session *s)
{
    return pool_size(s->pool);
}

/* Read one activation of the latest evaluated token (see the header). */
static int read_activations(moe_session *s, int layer, moe_offset_kind kind, int expert, float *out, int cap,
                            moe_error *err)
{
    const moe_model *m = s->m;
    int dim = m->cfg.dim;
    const layer_weights *L = &m->layers[layer];
    if (kind == MOE_OFFSET_RESID) {
        if (cap > 0)
            memcpy(out, s->last_out + (size_t)layer * dim, (size_t)(cap < dim ? cap : dim) * sizeof(float));
        return dim;
    }
    const mlp_weights *W;
    int slot = layer * m->kv_slots;
    if (kind == MOE_OFFSET_SHARED) {
        if (!L->shared.gate.data)
            return moe_fail(err, MOE_EINVAL, "layer %d has no shared expert", layer), -1;
        W = &L->shared;
    } else if (L->blocks) {
        if (expert < 0 || expert >= L->n_experts)
            return moe_fail(err, MOE_EINVAL, "expert %d does not exist in layer %d", expert, layer), -1;
        if (!s->last_ok[layer * m->kv_slots + expert])
            return moe_fail(err, MOE_EINVAL, "expert %d of layer %d did not run for this token", expert, layer),
                   -1;
        W = &L->blocks[expert].dense;
        slot = layer * m->kv_slots + expert;
    } else if (L->n_experts) {
        if (expert < 0 || expert >= L->n_experts)
            return moe_fail(err, MOE_EINVAL, "expert %d does not exist in layer %d", expert, layer), -1;
        W = &L->experts[expert];
    } else {
        W = &L->dense;
    }
    /* one row through the same MLP code the forward pass uses */
    memcpy(s->xe, s->last_in + (size_t)slot * dim, (size_t)dim * sizeof(float));
    mlp_hidden(s, W, 1, layer, kind, L->n_experts ? expert : 0);
    int ff = W->gate.rows;
    if (cap > 0)
        memcpy(out, s->h1, (size_t)(cap < ff ? cap : ff) * sizeof(float));
    return ff;
}

/* Copy (save != 0) or put back what evaluating one token overwrites beyond
 * its own position: the latest token's activations, the logits, and the
 * cache row at `pos` of every block. */
static void probe_state(moe_session *s, int pos, int save)
{
    const moe_model *m = s->m;
    const moe_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t slots = (size_t)c->n_layers * m->kv_slots;
    struct { void *live, *keep; size_t bytes; } part[] = {
        {s->last_in, s->probe_in, slots * dim * sizeof *s->last_in},
        {s->last_ok, s->probe_ok, slots * sizeof *s->last_ok},
        {s->last_out, s->probe_out, (size_t)c->n_layers * dim * sizeof *s->last_out},
        {s->logits, s->probe_logits, (size_t)c->vocab * sizeof *s->logits},
    };
    for (size_t i = 0; i < sizeof part / sizeof *part; i++)
        memcpy(save ? part[i].keep : part[i].live, save ? part[i].live : part[i].keep, part[i].bytes);
    size_t row = (size_t)c->head_dim * s->kv_es; /* one head's */
    for (size_t slot = 0; slot < slots; slot++)
        for (int h = 0; h < c->n_kv_heads; h++) {
            unsigned char *k = kv_at(s, s->kcache, (int)slot, h, pos), *v = kv_at(s, s->vcache, (int)slot, h, pos);
            unsigned char *kk =
                (unsigned char *)s->probe_kv + (2 * slot * kv_dim + (size_t)h * c->head_dim) * s->kv_es;
            unsigned char *vk = kk + kv_dim * s->kv_es;
            memcpy(save ? kk : k, save ? k : kk, row);
            memcpy(save ? vk : v, save ? v : vk, row);
        }
}

int moe_session_activations_at(moe_session *s, int pos, int layer, moe_offset_kind kind, int expert, float *out,
                               int cap, moe_error *err)
{
    const moe_model *m = s->m;
    if (!s->pos)
        return moe_fail(err, MOE_EINVAL, "no token evaluated yet"), -1;
    if (pos < 0 || pos >= s->pos)
        return moe_fail(err, MOE_EINVAL, "position %d is not in the session (0 to %d)", pos, s->pos - 1), -1;
    if (layer < 0 || layer >= m->cfg.n_layers)
        return moe_fail(err, MOE_EINVAL, "layer %d is out of range (0 to %d)", layer, m->cfg.n_layers - 1), -1;
    if (pos == s->pos - 1)
        return read_activations(s, layer, kind, expert, out, cap, err);
    /* Evaluate the token at pos again, over the cache before it, then put
     * back everything that touched: the session is as it was. */
    probe_state(s, pos, 1);
    int end = s->pos;
    s->pos = pos;
    forward(s, s->history + pos, 1);
    s->pos = end;
    int n = read_activations(s, layer, kind, expert, out, cap, err);
    probe_state(s, pos, 0);
    return n;
}

int moe_session_activations(moe_session *s, int layer, moe_offset_kind kind, int expert, float *out, int cap,
                            moe_error *err)
{
    return moe_session_activations_at(s, s->pos - 1, layer, kind, expert, out, cap, err);
}

moe_status moe_session_reprefill(moe_session *s, moe_error *err)
{
    int n = s->pos;
    if (!n)
        return MOE_OK;
    controls_note_reprefill(s);
    s->pos = 0;
    return moe_session_eval(s, s->history, n, err);
}

moe_status moe_session_truncate(moe_session *s, int pos, moe_error *err)
{
    if (pos < 0 || pos > s->pos)
        return moe_fail(err, MOE_EINVAL, "cannot truncate to position %d: the session holds %d", pos, s->pos);
    s->pos = pos;
    return MOE_OK;
}

void moe_session_reset(moe_session *s)
{
    s->pos = 0;
}

void moe_session_set_trace(moe_session *s, const moe_trace_sink *sink)
{
    s->sink = sink ? *sink : (moe_trace_sink){NULL, NULL};
}

controls *session_controls(moe_session *s)
{
    return &s->ctl;
}

const controls *session_controls_const(const moe_session *s)
{
    return &s->ctl;
}

const moe_model *session_model(const moe_session *s)
{
    return s->m;
}
