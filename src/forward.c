/* The forward pass. A chunk of tokens goes through every layer at once
 * (norm, attention, router, experts, residual), so the matrix work is done
 * as matrix products (matmul.c, the hot spot), and the tokens routed to one
 * expert are gathered into one product per expert; with one token (decode)
 * the same code reads only the chosen experts. Every buffer was sized in
 * moe_session_new: nothing here allocates. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "controls.h"
#include "error.h"
#include "kernels.h"
#include "quant.h"
#include "session_impl.h"

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
unsigned char *session_kv_at(const moe_session *s, unsigned char *cache, int slot, int head, int pos)
{
    const moe_config *c = &s->m->cfg;
    return cache + (((size_t)slot * c->n_kv_heads + head) * s->n_ctx + pos) * s->kv_row;
}

/* nb rows of head_dim values (rows ld floats apart) into consecutive
 * cache positions from dst, rounded to f16 or quantised to Q8_0 for such
 * a cache. */
static void kv_store(const moe_session *s, unsigned char *dst, const float *src, size_t ld, int nb)
{
    size_t hd = (size_t)s->m->cfg.head_dim;
    for (int t = 0; t < nb; t++, src += ld, dst += s->kv_row) {
        if (s->kv_type == MOE_F32) {
            memcpy(dst, src, hd * sizeof *src);
        } else if (s->kv_type == MOE_Q8_0) {
            quant_q8_0_from_f32(src, hd, dst);
        } else {
            for (size_t d = 0; d < hd; d++) {
                uint16_t h = kern_f32_to_f16(src[d]);
                memcpy(dst + 2 * d, &h, 2);
            }
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
        kv_store(s, session_kv_at(s, s->kcache, slot, h, s->pos), kn + (size_t)h * hd, (size_t)kv_dim, nb);
        kv_store(s, session_kv_at(s, s->vcache, slot, h, s->pos), vn + (size_t)h * hd, (size_t)kv_dim, nb);
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

/* One attention task: up to ATTN_QB query rows from i0, the query heads
 * that share KV head kvh, over one KV cache slot. */
typedef struct {
    moe_session *s;
    int slot;
    int n; /* query rows */
    const int *tok;
} attn_job;

static void attn_task(void *ctx, int task, int thread)
{
    const attn_job *j = ctx;
    moe_session *s = j->s;
    const moe_config *c = &s->m->cfg;
    int nkv = c->n_kv_heads, hd = c->head_dim, g = c->n_heads / nkv, kvh = task % nkv;
    int i0 = task / nkv * ATTN_QB, nq = j->n - i0 < ATTN_QB ? j->n - i0 : ATTN_QB;
    size_t q_dim = (size_t)c->n_heads * hd, rows = (size_t)nq * g;
    int pos[ATTN_QB], first[ATTN_QB];
    for (int v = 0; v < nq; v++) {
        pos[v] = s->pos + (j->tok ? j->tok[i0 + v] : i0 + v);
        /* a sliding window sees positions (pos - window, pos] */
        first[v] = c->sliding_window && pos[v] >= c->sliding_window ? pos[v] - c->sliding_window + 1 : 0;
    }
    /* queries ascend: the block's keys run from the first query's window to the last query */
    int lo = first[0];
    size_t len = (size_t)(pos[nq - 1] + 1 - lo);
    float *sc = s->scores + (size_t)thread * s->scores_per_thread; /* (rows, len) */
    float *qb = sc + rows * (size_t)s->n_ctx, *ob = qb + rows * hd;     /* (rows, hd) each */
    for (int v = 0; v < nq; v++)
        memcpy(qb + (size_t)v * g * hd, s->q + (size_t)(i0 + v) * q_dim + (size_t)kvh * g * hd,
               (size_t)g * hd * sizeof(float));
    /* scores of every query and head: each key read once for all of them */
    kern_matvec_n(s->kv_type, session_kv_at(s, s->kcache, j->slot, kvh, lo), (size_t)hd, qb, rows, sc, len, 0, len);
    for (int v = 0; v < nq; v++)
        for (int h = 0; h < g; h++) {
            float *row = sc + ((size_t)v * g + h) * len;
            size_t a = (size_t)(first[v] - lo), n = (size_t)(pos[v] + 1 - first[v]);
            kern_softmax(row + a, n, 1.0f / sqrtf((float)hd));
            /* positions outside this query's window weigh nothing */
            memset(row, 0, a * sizeof *row);
            memset(row + a + n, 0, (len - a - n) * sizeof *row);
        }
    /* the weighted sums of the values, then into the heads' outputs */
    kern_wsum(s->kv_type, session_kv_at(s, s->vcache, j->slot, kvh, lo), (size_t)hd, (size_t)hd, sc, len, rows, len,
              ob, (size_t)hd);
    for (int v = 0; v < nq; v++)
        memcpy(s->att + (size_t)(i0 + v) * q_dim + (size_t)kvh * g * hd, ob + (size_t)v * g * hd,
               (size_t)g * hd * sizeof(float));
}

/* Causal softmax attention of the n queries in s->q over cache slot
 * `slot`, one task per (block of ATTN_QB queries, KV head), then the
 * output projection into s->proj (n, dim). */
static void attend(moe_session *s, const layer_weights *A, int slot, int n, const int *tok)
{
    attn_job job = {s, slot, n, tok};
    pool_run(s->pool, attn_task, &job, (n + ATTN_QB - 1) / ATTN_QB * s->m->cfg.n_kv_heads);
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
    kern_silu_mul(h1, h3, (size_t)n * ff);
    /* steering: neuron offsets on this MLP's hidden activation */
    for (int o = 0; o < s->ctl.n_offsets; o++) {
        const moe_offset *off = &s->ctl.offsets[o];
        if (off->kind == kind && off->layer == l && (kind != MOE_OFFSET_MLP || off->expert == expert))
            for (int i = 0; i < n; i++)
                h1[(size_t)i * ff + off->neuron] += off->delta;
    }
}

void session_mlp_hidden(moe_session *s, const mlp_weights *W, int n, int l, moe_offset_kind kind, int expert)
{
    matmul_item it[2] = {item(&W->gate, s->xe, n, s->h1), item(&W->up, s->xe, n, s->h3)};
    many(s, it, 2);
    swiglu_act(s, s->h1, s->h3, n, W->gate.rows, l, kind, expert);
}

/* The routed experts, several per dispatch: the experts e0 .. e1-1, whose
 * rows fit the buffers xm (rows, dim), hm1 and hm3 (rows, ff), gathered
 * side by side; every gate and up projection in one dispatch, every down
 * projection in one; the same products, in the same order of summation,
 * as one expert at a time. */
static void experts_batch(moe_session *s, const layer_weights *L, int l, int e0, int e1, float *xm, float *hm1,
                          float *hm3)
{
    int dim = s->m->cfg.dim, n_items = 0;
    size_t row = 0, hrow = 0; /* rows of xm and hidden values used so far */
    for (int e = e0; e < e1; e++) {
        int n = s->group_n[e];
        if (!n)
            continue;
        const mlp_weights *W = &L->experts[e];
        const int *tok = s->group_tok + (size_t)e * s->n_batch;
        gather_rows(xm + row * dim, s->xb, tok, n, dim);
        s->items[n_items++] = item(&W->gate, xm + row * dim, n, hm1 + hrow);
        s->items[n_items++] = item(&W->up, xm + row * dim, n, hm3 + hrow);
        row += (size_t)n;
        hrow += (size_t)n * W->gate.rows;
    }
    many(s, s->items, n_items);
    n_items = 0, row = 0, hrow = 0;
    for (int e = e0; e < e1; e++) {
        int n = s->group_n[e];
        if (!n)
            continue;
        const mlp_weights *W = &L->experts[e];
        swiglu_act(s, hm1 + hrow, hm3 + hrow, n, W->gate.rows, l, MOE_OFFSET_MLP, e);
        s->items[n_items++] = item(&W->down, hm1 + hrow, n, xm + row * dim);
        row += (size_t)n;
        hrow += (size_t)n * W->gate.rows;
    }
    many(s, s->items, n_items);
    row = 0;
    for (int e = e0; e < e1; e++) {
        const int *tok = s->group_tok + (size_t)e * s->n_batch;
        const float *w = s->group_w + (size_t)e * s->n_batch;
        for (int i = 0; i < s->group_n[e]; i++, row++)
            kern_axpy(w[i], xm + row * dim, s->proj + (size_t)tok[i] * dim, (size_t)dim);
    }
}

/* Every routed expert in batches of whole experts that fit `cap` rows:
 * a decoding step's few assignments in FEW_ROWS buffers of their own, a
 * prefill's in the batch-sized xe, h1 and h3 (one expert always fits:
 * each token sends it at most one row). Fewer dispatches than one expert
 * at a time: OLMoE's 64 experts took 128 per layer. */
static void experts_routed(moe_session *s, const layer_weights *L, int l, int total)
{
    float *xm = s->xm, *hm1 = s->hm1, *hm3 = s->hm3;
    int cap = FEW_ROWS;
    if (total > FEW_ROWS)
        xm = s->xe, hm1 = s->h1, hm3 = s->h3, cap = s->n_batch;
    for (int e0 = 0, e1; e0 < L->n_experts; e0 = e1) {
        int rows = 0;
        for (e1 = e0; e1 < L->n_experts && rows + s->group_n[e1] <= cap; e1++)
            rows += s->group_n[e1];
        experts_batch(s, L, l, e0, e1, xm, hm1, hm3);
    }
}

/* One MLP over n gathered rows of s->xe; the result replaces s->xe. */
static void swiglu(moe_session *s, const mlp_weights *W, int n, int l, moe_offset_kind kind, int expert)
{
    session_mlp_hidden(s, W, n, l, kind, expert);
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
    if (L->n_experts)
        experts_routed(s, L, l, total);
    for (int e = 0; e < ne && !L->n_experts; e++) { /* the dense MLP */
        int n = s->group_n[e];
        if (!n)
            continue;
        const int *tok = s->group_tok + (size_t)e * s->n_batch;
        const float *w = s->group_w + (size_t)e * s->n_batch;
        gather_rows(s->xe, s->xb, tok, n, dim);
        swiglu(s, &L->dense, n, l, MOE_OFFSET_MLP, e);
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

void session_deliver_trace(moe_session *s, const int32_t *ids, int nb)
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
void session_forward(moe_session *s, const int32_t *ids, int nb)
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
