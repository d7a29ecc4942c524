/* A session: its buffers and KV cache (sized once, in moe_session_new),
 * evaluation in chunks of n_batch through the forward pass (forward.c),
 * the controls' entry points and the probes of earlier tokens. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "kernels.h"
#include "session_impl.h"

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

/* The KV cache's buffers for keys and values of type t, and the probe's
 * copy of one position, each (blocks, positions, n_kv_heads rows of
 * head_dim values); *failed set on overflow or out of memory. */
static void kv_alloc(const moe_model *m, int n_ctx, moe_dtype t, unsigned char **k, unsigned char **v,
                     unsigned char **probe, int *failed)
{
    const moe_config *c = &m->cfg;
    size_t slots = (size_t)c->n_layers * m->kv_slots, nkv = (size_t)c->n_kv_heads;
    size_t row = kern_row_bytes(t, (size_t)c->head_dim);
    *k = alloc3(slots, (size_t)n_ctx, nkv * row, 1, failed);
    *v = alloc3(slots, (size_t)n_ctx, nkv * row, 1, failed);
    *probe = alloc3(slots, 2 * nkv, row, 1, failed);
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
    s->kv_row = kern_row_bytes(MOE_F32, (size_t)c->head_dim);
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
    size_t qg = (size_t)ATTN_QB * (size_t)(c->n_heads / c->n_kv_heads);
    s->scores_per_thread = qg * ((size_t)n_ctx + 2 * (size_t)c->head_dim);
    s->scores = alloc3((size_t)n_threads, s->scores_per_thread, 1, sizeof(float), &failed);
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
    kv_alloc(m, n_ctx, s->kv_type, &s->kcache, &s->vcache, &s->probe_kv, &failed);
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
                        n_ctx, 2.0 * c->n_layers * m->kv_slots * n_ctx * c->n_kv_heads * s->kv_row / (1 << 20));
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
        session_forward(s, ids + done, nb);
        session_deliver_trace(s, ids + done, nb);
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

/* A type's name for a message, or "unknown" for a value outside the enum. */
static const char *type_label(moe_dtype t)
{
    return (unsigned)t < MOE_DTYPE_COUNT ? moe_dtype_name(t) : "unknown";
}

moe_status moe_session_set_kv_type(moe_session *s, moe_dtype t, moe_error *err)
{
    const moe_config *c = &s->m->cfg;
    if (t != MOE_F32 && t != MOE_F16 && t != MOE_Q8_0)
        return moe_fail(err, MOE_EINVAL, "KV cache type %s is not supported (f32, f16 or q8_0)",
                        type_label(t));
    if (t == MOE_Q8_0 && c->head_dim % 32)
        return moe_fail(err, MOE_EINVAL,
                        "a q8_0 KV cache needs a head dimension that is a multiple of 32 (its blocks); "
                        "this model's is %d",
                        c->head_dim);
    if (s->pos)
        return moe_fail(err, MOE_EINVAL, "the KV cache type can change only before the first token (%d held)",
                        s->pos);
    if (t == s->kv_type)
        return MOE_OK;
    int failed = 0;
    unsigned char *k, *v, *probe;
    kv_alloc(s->m, s->n_ctx, t, &k, &v, &probe, &failed);
    if (failed) {
        free(k), free(v), free(probe);
        return moe_fail(err, MOE_ENOMEM, "out of memory for a %s KV cache of %d tokens", moe_dtype_name(t),
                        s->n_ctx);
    }
    free(s->kcache), free(s->vcache), free(s->probe_kv);
    s->kcache = k, s->vcache = v, s->probe_kv = probe;
    s->kv_type = t;
    s->kv_row = kern_row_bytes(t, (size_t)c->head_dim);
    return MOE_OK;
}

moe_dtype moe_session_kv_type(const moe_session *s)
{
    return s->kv_type;
}

moe_status moe_session_set_act_type(moe_session *s, moe_dtype t, moe_error *err)
{
    if (t != MOE_F32 && t != MOE_Q8_0)
        return moe_fail(err, MOE_EINVAL, "activation type %s is not supported for quantised weights (f32 or q8_0)",
                        type_label(t));
    matmul_set_act_q8(s->mm, t == MOE_Q8_0);
    return MOE_OK;
}

moe_dtype moe_session_act_type(const moe_session *s)
{
    return matmul_act_q8(s->mm) ? MOE_Q8_0 : MOE_F32;
}

uint64_t moe_session_weight_bytes(const moe_session *s)
{
    return s->bytes_read;
}

size_t moe_session_kv_bytes(const moe_session *s)
{
    const moe_config *c = &s->m->cfg;
    return 2 * (size_t)c->n_layers * s->m->kv_slots * s->n_ctx * c->n_kv_heads * s->kv_row;
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
    session_mlp_hidden(s, W, 1, layer, kind, L->n_experts ? expert : 0);
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
    size_t dim = (size_t)c->dim;
    size_t slots = (size_t)c->n_layers * m->kv_slots;
    struct { void *live, *keep; size_t bytes; } part[] = {
        {s->last_in, s->probe_in, slots * dim * sizeof *s->last_in},
        {s->last_ok, s->probe_ok, slots * sizeof *s->last_ok},
        {s->last_out, s->probe_out, (size_t)c->n_layers * dim * sizeof *s->last_out},
        {s->logits, s->probe_logits, (size_t)c->vocab * sizeof *s->logits},
    };
    for (size_t i = 0; i < sizeof part / sizeof *part; i++)
        memcpy(save ? part[i].keep : part[i].live, save ? part[i].live : part[i].keep, part[i].bytes);
    size_t row = s->kv_row, nkv = (size_t)c->n_kv_heads; /* one head's */
    for (size_t slot = 0; slot < slots; slot++)
        for (int h = 0; h < c->n_kv_heads; h++) {
            unsigned char *k = session_kv_at(s, s->kcache, (int)slot, h, pos), *v = session_kv_at(s, s->vcache, (int)slot, h, pos);
            unsigned char *kk = s->probe_kv + (2 * slot * nkv + (size_t)h) * row;
            unsigned char *vk = kk + nkv * row;
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
    session_forward(s, s->history + pos, 1);
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
