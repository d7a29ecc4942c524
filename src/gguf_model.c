/* The GGUF adapter: llama.cpp's names and hyperparameter keys onto the
 * internal description of model.h.
 *
 * Architectures: `llama` (dense, or Mixtral with experts: merged 3-D
 * tensors blk.L.ffn_*_exps or the older blk.L.ffn_*.E), `qwen2moe`,
 * `qwen3moe` and `olmoe`, with names from llama.cpp's llama-arch.cpp. ggml
 * lists dimensions innermost first, so a tensor of ne [dim, ff] is the
 * (ff, dim) row-major matrix the engine calls W.
 *
 * RoPE: llama.cpp's converter permutes the rows of a `llama` model's Q and
 * K projections (and biases) within each head, from Hugging Face's
 * rotate-half pairing (i, i + hd/2) to the interleaved pairing (2i, 2i+1)
 * that its rope kernel uses. The engine keeps one RoPE, Hugging Face's, so
 * those rows are put back in their original order at load: a copy of
 * whole rows, which works for every weight type (a quantised block never
 * spans rows). The other families are converted unpermuted (llama.cpp runs
 * them with its NEOX rope, which is rotate-half). */
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "kernels.h"
#include "model.h"

typedef struct {
    const char *arch;        /* general.architecture */
    int permuted_qk;         /* converted with LlamaModel.permute */
    int renorm;              /* the top-k weights are rescaled (llama.cpp's norm_w) */
    int qkv_bias;            /* q/k/v biases always present */
    qk_norm_kind qk_norm;
} gguf_arch;

static const gguf_arch ARCHS[] = {
    {"llama", 1, 1, 0, QK_NORM_NONE},
    {"qwen2moe", 0, 0, 1, QK_NORM_NONE},
    {"qwen3moe", 0, 1, 0, QK_NORM_HEAD},
    {"olmoe", 0, 0, 0, QK_NORM_WHOLE},
};

typedef struct {
    moe_model *m;
    gguf_file *g;
    const gguf_arch *a;
    moe_error *err;
    float *vec_next;
    uint64_t params, bytes;
    uint64_t bytes_by_type[MOE_DTYPE_COUNT];
} gbinder;

/* The moe_dtype of a ggml type the kernels compute, or -1. */
static int moe_type(uint32_t t)
{
    switch (t) {
    case GGML_F32: return MOE_F32;
    case GGML_F16: return MOE_F16;
    case GGML_BF16: return MOE_BF16;
    case GGML_Q8_0: return MOE_Q8_0;
    case GGML_Q4_0: return MOE_Q4_0;
    case GGML_Q4_K: return MOE_Q4_K;
    case GGML_Q5_K: return MOE_Q5_K;
    case GGML_Q6_K: return MOE_Q6_K;
    default: return -1;
    }
}

__attribute__((format(printf, 2, 3))) static const gguf_tensor *find(gbinder *b, const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return gguf_find_tensor(b->g, name);
}

/* A tensor of exactly ne [d0, d1, d2] (trailing 1s implied) of a type the
 * kernels compute. */
static int check(gbinder *b, const gguf_tensor *t, const char *name, uint64_t d0, uint64_t d1, uint64_t d2)
{
    if (!t) {
        moe_fail(b->err, MOE_EFORMAT, "%s: tensor '%s' is missing (required by %s)", gguf_path(b->g), name,
                 b->a->arch);
        return 0;
    }
    if (t->ne[0] != d0 || t->ne[1] != d1 || t->ne[2] != d2 || t->ne[3] != 1) {
        moe_fail(b->err, MOE_EFORMAT, "%s: tensor '%s' has ne [%llu, %llu, %llu, %llu]; the metadata implies [%llu, %llu, %llu]",
                 gguf_path(b->g), name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                 (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], (unsigned long long)d0,
                 (unsigned long long)d1, (unsigned long long)d2);
        return 0;
    }
    if (moe_type(t->type) < 0) {
        moe_fail(b->err, MOE_EUNSUPPORTED,
                 "%s: tensor '%s' has type %s; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K",
                 gguf_path(b->g), name, gguf_type_name(t->type));
        return 0;
    }
    b->params += t->numel;
    b->bytes += t->nbytes;
    b->bytes_by_type[moe_type(t->type)] += t->nbytes;
    return 1;
}

static int mat(gbinder *b, wmat *w, int rows, int cols, const char *name)
{
    const gguf_tensor *t = gguf_find_tensor(b->g, name);
    if (!check(b, t, name, (uint64_t)cols, (uint64_t)rows, 1))
        return 0;
    *w = (wmat){(moe_dtype)moe_type(t->type), t->data, rows, cols};
    return 1;
}

static float *vec(gbinder *b, int n, const char *name)
{
    const gguf_tensor *t = gguf_find_tensor(b->g, name);
    if (!check(b, t, name, (uint64_t)n, 1, 1))
        return NULL;
    float *v = b->vec_next;
    b->vec_next += n;
    kern_to_f32((moe_dtype)moe_type(t->type), t->data, v, (size_t)n);
    return v;
}

/* Put the rows of one projection back into Hugging Face's order: row
 * h*hd + i*hd/2 + j of the original is row h*hd + 2j + i of the file. */
static void unpermute_rows(const void *src, void *dst, int n_heads, int hd, size_t row_bytes)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < hd / 2; j++)
                memcpy((char *)dst + ((size_t)h * hd + (size_t)i * hd / 2 + j) * row_bytes,
                       (const char *)src + ((size_t)h * hd + 2 * (size_t)j + i) * row_bytes, row_bytes);
}

static int mlp(gbinder *b, mlp_weights *w, int ff, int l, const char *suffix)
{
    const moe_config *c = &b->m->cfg;
    char name[128];
    snprintf(name, sizeof name, "blk.%d.ffn_gate%s.weight", l, suffix);
    if (!mat(b, &w->gate, ff, c->dim, name))
        return 0;
    snprintf(name, sizeof name, "blk.%d.ffn_up%s.weight", l, suffix);
    if (!mat(b, &w->up, ff, c->dim, name))
        return 0;
    snprintf(name, sizeof name, "blk.%d.ffn_down%s.weight", l, suffix);
    return mat(b, &w->down, c->dim, ff, name);
}

/* Merged experts: ffn_{gate,up}_exps ne [dim, ff, E], ffn_down_exps
 * ne [ff, dim, E]; each expert's matrices are views into them. */
static int experts(gbinder *b, layer_weights *L, int l)
{
    const moe_config *c = &b->m->cfg;
    int E = L->n_experts, ff = c->moe_ff;
    if (!find(b, "blk.%d.ffn_gate_exps.weight", l)) { /* the older files: one tensor per expert */
        char suffix[24];
        for (int e = 0; e < E; e++) {
            snprintf(suffix, sizeof suffix, ".%d", e);
            if (!mlp(b, &L->experts[e], ff, l, suffix))
                return 0;
        }
        return 1;
    }
    static const char *const which[3] = {"gate", "up", "down"};
    for (int p = 0; p < 3; p++) {
        char name[128];
        snprintf(name, sizeof name, "blk.%d.ffn_%s_exps.weight", l, which[p]);
        int rows = p == 2 ? c->dim : ff, cols = p == 2 ? ff : c->dim;
        const gguf_tensor *t = gguf_find_tensor(b->g, name);
        if (!check(b, t, name, (uint64_t)cols, (uint64_t)rows, (uint64_t)E))
            return 0;
        moe_dtype dt = (moe_dtype)moe_type(t->type);
        size_t bytes = t->nbytes / (size_t)E;
        for (int e = 0; e < E; e++) {
            wmat w = {dt, (const char *)t->data + bytes * e, rows, cols};
            if (p == 0)
                L->experts[e].gate = w;
            else if (p == 1)
                L->experts[e].up = w;
            else
                L->experts[e].down = w;
        }
    }
    return 1;
}

static int layer(gbinder *b, int l, char **owned)
{
    moe_model *m = b->m;
    const moe_config *c = &m->cfg;
    layer_weights *L = &m->layers[l];
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    char name[128];
#define NAME(what) (snprintf(name, sizeof name, "blk.%d.%s", l, what), name)

    if (!(L->attn_norm = vec(b, c->dim, NAME("attn_norm.weight"))) ||
        !(L->ffn_norm = vec(b, c->dim, NAME("ffn_norm.weight"))))
        return 0;
    if (!mat(b, &L->wq, q_dim, c->dim, NAME("attn_q.weight")) ||
        !mat(b, &L->wk, kv_dim, c->dim, NAME("attn_k.weight")) ||
        !mat(b, &L->wv, kv_dim, c->dim, NAME("attn_v.weight")) ||
        !mat(b, &L->wo, c->dim, q_dim, NAME("attn_output.weight")))
        return 0;
    if (b->a->qkv_bias || find(b, "blk.%d.attn_q.bias", l)) {
        if (!(L->bq = vec(b, q_dim, NAME("attn_q.bias"))) || !(L->bk = vec(b, kv_dim, NAME("attn_k.bias"))) ||
            !(L->bv = vec(b, kv_dim, NAME("attn_v.bias"))))
            return 0;
    }
    if (find(b, "blk.%d.attn_output.bias", l) && !(L->bo = vec(b, c->dim, NAME("attn_output.bias"))))
        return 0;
    if (b->a->qk_norm != QK_NORM_NONE) {
        int whole = b->a->qk_norm == QK_NORM_WHOLE;
        if (!(L->q_norm = vec(b, whole ? q_dim : c->head_dim, NAME("attn_q_norm.weight"))) ||
            !(L->k_norm = vec(b, whole ? kv_dim : c->head_dim, NAME("attn_k_norm.weight"))))
            return 0;
    }
    if (b->a->permuted_qk) {
        wmat *w[2] = {&L->wq, &L->wk};
        float *bias[2] = {L->bq, L->bk};
        int heads[2] = {c->n_heads, c->n_kv_heads};
        for (int i = 0; i < 2; i++) {
            size_t row = kern_row_bytes(w[i]->t, (size_t)c->dim);
            unpermute_rows(w[i]->data, *owned, heads[i], c->head_dim, row);
            w[i]->data = *owned;
            *owned += row * (size_t)w[i]->rows;
            if (bias[i]) { /* the vector store has room after the last vector */
                memcpy(b->vec_next, bias[i], (size_t)w[i]->rows * sizeof(float));
                unpermute_rows(b->vec_next, bias[i], heads[i], c->head_dim, sizeof(float));
            }
        }
    }

    if (!L->n_experts)
        return mlp(b, &L->dense, c->ff, l, "");
    if (!mat(b, &L->router, L->n_experts, c->dim, NAME("ffn_gate_inp.weight")) || !experts(b, L, l))
        return 0;
    if (find(b, "blk.%d.ffn_gate_shexp.weight", l)) {
        if (!mlp(b, &L->shared, c->shared_ff, l, "_shexp") ||
            !mat(b, &L->shared_gate, 1, c->dim, NAME("ffn_gate_inp_shexp.weight")))
            return 0;
    }
#undef NAME
    return 1;
}

/* ---- hyperparameters ---- */

static moe_status hparam_int(gbinder *b, const char *key, int lo, int hi, int *out, int required)
{
    char full[128];
    int64_t v;
    int found = 0;
    snprintf(full, sizeof full, "%s.%s", b->a->arch, key);
    moe_status st = gguf_get_int(b->g, full, lo, hi, &v, required ? NULL : &found, b->err);
    if (!st && (required || found))
        *out = (int)v;
    return st;
}

static moe_status hparam_float(gbinder *b, const char *key, double *out)
{
    char full[128];
    int found;
    snprintf(full, sizeof full, "%s.%s", b->a->arch, key);
    return gguf_get_float(b->g, full, out, &found, b->err);
}

/* rope_freqs.weight: llama.cpp's converter stores Llama 3 RoPE scaling as
 * one factor per frequency (ne [head_dim / 2]); frequency i is divided by
 * factor i. */
static moe_status rope_freqs(gbinder *b)
{
    moe_config *c = &b->m->cfg;
    const gguf_tensor *t = gguf_find_tensor(b->g, "rope_freqs.weight");
    int n = c->head_dim / 2;
    if (!t)
        return MOE_OK;
    if (t->ne[0] != (uint64_t)n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return moe_fail(b->err, MOE_EFORMAT, "%s: tensor 'rope_freqs.weight' has ne [%llu, %llu, %llu, %llu]; "
                        "the metadata implies [%d] (head_dim / 2)", gguf_path(b->g), (unsigned long long)t->ne[0],
                        (unsigned long long)t->ne[1], (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], n);
    if (t->type != GGML_F32 && t->type != GGML_F16 && t->type != GGML_BF16)
        return moe_fail(b->err, MOE_EUNSUPPORTED, "%s: tensor 'rope_freqs.weight' has type %s; supported: F32, "
                        "F16, BF16", gguf_path(b->g), gguf_type_name(t->type));
    if (!(c->rope_freqs = malloc((size_t)n * sizeof *c->rope_freqs)))
        return moe_fail(b->err, MOE_ENOMEM, "%s: out of memory", gguf_path(b->g));
    kern_to_f32((moe_dtype)moe_type(t->type), t->data, c->rope_freqs, (size_t)n);
    for (int i = 0; i < n; i++)
        if (!(c->rope_freqs[i] > 0 && c->rope_freqs[i] <= FLT_MAX)) /* NaN fails too */
            return moe_fail(b->err, MOE_EFORMAT, "%s: rope_freqs.weight[%d] is %g; a factor is positive and finite",
                            gguf_path(b->g), i, (double)c->rope_freqs[i]);
    return MOE_OK;
}

static moe_status read_config(gbinder *b)
{
    moe_config *c = &b->m->cfg;
    const char *path = gguf_path(b->g);
    moe_status st;
    c->bos_id = c->eos_id = -1;
    c->norm_topk_prob = -1;
    c->head_dim = 0;
    c->max_pos = 4096;
    c->rope_theta = 10000;
    c->norm_eps = 1e-5;
    if ((st = hparam_int(b, "block_count", 1, 4096, &c->n_layers, 1)) ||
        (st = hparam_int(b, "embedding_length", 1, 1 << 20, &c->dim, 1)) ||
        (st = hparam_int(b, "attention.head_count", 1, 4096, &c->n_heads, 1)) ||
        (st = hparam_int(b, "feed_forward_length", 0, 1 << 22, &c->ff, 1)))
        return st;
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads;
    int rope_dims = -1;
    if ((st = hparam_int(b, "attention.head_count_kv", 1, c->n_heads, &c->n_kv_heads, 0)) ||
        (st = hparam_int(b, "attention.key_length", 2, 4096, &c->head_dim, 0)) ||
        (st = hparam_int(b, "context_length", 1, 1 << 30, &c->max_pos, 0)) ||
        (st = hparam_int(b, "expert_count", 0, 4096, &c->n_experts, 0)) ||
        (st = hparam_int(b, "expert_used_count", 0, 4096, &c->k, 0)) ||
        (st = hparam_int(b, "expert_feed_forward_length", 1, 1 << 22, &c->moe_ff, 0)) ||
        (st = hparam_int(b, "expert_shared_feed_forward_length", 1, 1 << 22, &c->shared_ff, 0)) ||
        (st = hparam_int(b, "rope.dimension_count", 0, 1 << 16, &rope_dims, 0)) ||
        (st = hparam_float(b, "rope.freq_base", &c->rope_theta)) ||
        (st = hparam_float(b, "attention.layer_norm_rms_epsilon", &c->norm_eps)) ||
        (st = hparam_float(b, "attention.clamp_kqv", &c->clip_qkv)))
        return st;
    if (c->n_heads % c->n_kv_heads || c->head_dim % 2)
        return moe_fail(b->err, MOE_EFORMAT, "%s: %d heads, %d key/value heads of %d dimensions do not fit", path,
                        c->n_heads, c->n_kv_heads, c->head_dim);
    if (rope_dims >= 0 && rope_dims != c->head_dim)
        return moe_fail(b->err, MOE_EUNSUPPORTED, "%s: RoPE over %d of %d head dimensions is not supported", path,
                        rope_dims, c->head_dim);
    if (!c->moe_ff)
        c->moe_ff = c->ff;
    if (c->n_experts && (c->k < 1 || c->k > c->n_experts))
        return moe_fail(b->err, MOE_EFORMAT, "%s: %s.expert_used_count %d is not in 1..%d", path, b->a->arch, c->k,
                        c->n_experts);
    if (!c->n_experts && strcmp(b->a->arch, "llama"))
        return moe_fail(b->err, MOE_EFORMAT, "%s: %s needs %s.expert_count", path, b->a->arch, b->a->arch);

    char key[128];
    const char *s;
    size_t len;
    int found;
    snprintf(key, sizeof key, "%s.rope.scaling.type", b->a->arch);
    if ((st = gguf_get_str(b->g, key, &s, &len, &found, b->err)))
        return st;
    if (found && len == 6 && !memcmp(s, "linear", 6)) {
        c->rope = ROPE_LINEAR;
        snprintf(key, sizeof key, "%s.rope.scaling.factor", b->a->arch);
        if ((st = gguf_get_float(b->g, key, &c->rope_factor, NULL, b->err)))
            return st;
    } else if (found && !(len == 4 && !memcmp(s, "none", 4))) {
        return moe_fail(b->err, MOE_EUNSUPPORTED, "%s: RoPE scaling '%.*s' is not supported (none, linear)", path,
                        (int)(len < 32 ? len : 32), s);
    }
    if ((st = rope_freqs(b)))
        return st;
    int norm;
    snprintf(key, sizeof key, "%s.expert_weights_norm", b->a->arch);
    if ((st = gguf_get_bool(b->g, key, &norm, &found, b->err)))
        return st;
    b->m->rule.renormalize = found ? norm : b->a->renorm;

    int64_t v;
    if ((st = gguf_get_int(b->g, "tokenizer.ggml.bos_token_id", 0, INT32_MAX, &v, &found, b->err)))
        return st;
    c->bos_id = found ? (int)v : -1;
    if ((st = gguf_get_int(b->g, "tokenizer.ggml.eos_token_id", 0, INT32_MAX, &v, &found, b->err)))
        return st;
    c->eos_id = found ? (int)v : -1;

    const gguf_tensor *emb = gguf_find_tensor(b->g, "token_embd.weight");
    if (!emb || emb->ne[1] > INT32_MAX)
        return moe_fail(b->err, MOE_EFORMAT, "%s: tensor 'token_embd.weight' is missing", path);
    c->vocab = (int)emb->ne[1];
    int vocab = c->vocab;
    if ((st = hparam_int(b, "vocab_size", 1, INT32_MAX, &vocab, 0)))
        return st;
    if (vocab != c->vocab)
        return moe_fail(b->err, MOE_EFORMAT, "%s: %s.vocab_size is %d but token_embd.weight has %d rows", path,
                        b->a->arch, vocab, c->vocab);
    gguf_vtype elem;
    uint64_t n_tokens = gguf_array_len(b->g, "tokenizer.ggml.tokens", &elem);
    if (n_tokens && n_tokens != (uint64_t)c->vocab) /* llama.cpp sizes the embedding by the token count */
        return moe_fail(b->err, MOE_EFORMAT, "%s: tokenizer.ggml.tokens has %llu tokens but token_embd.weight has "
                        "%d rows", path, (unsigned long long)n_tokens, c->vocab);
    c->tied = gguf_find_tensor(b->g, "output.weight") == NULL;
    return MOE_OK;
}

moe_status gguf_model_bind(moe_model *m, const char *path, const char **arch_name, const char **hf_class,
                           moe_error *err)
{
    moe_status st;
    if ((st = gguf_open(path, &m->gguf, err)))
        return st;
    gbinder b = {m, m->gguf, NULL, err, NULL, 0, 0, {0}};
    const char *s;
    size_t len;
    if ((st = gguf_get_str(b.g, "general.architecture", &s, &len, NULL, err)))
        return st;
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++)
        if (strlen(ARCHS[i].arch) == len && !memcmp(ARCHS[i].arch, s, len))
            b.a = &ARCHS[i];
    if (!b.a)
        return moe_fail(err, MOE_EUNSUPPORTED, "%s: GGUF architecture '%.*s' is not supported; supported: llama, "
                        "qwen2moe, qwen3moe, olmoe", path, (int)(len < 40 ? len : 40), s);
    if ((st = read_config(&b)))
        return st;
    moe_config *c = &m->cfg;
    m->qk_norm = b.a->qk_norm;
    m->kv_slots = 1;
    *arch_name = c->n_experts ? strcmp(b.a->arch, "llama") ? b.a->arch : "mixtral" : "llama";
    *hf_class = !strcmp(*arch_name, "mixtral") ? "MixtralForCausalLM" : !strcmp(*arch_name, "llama") ? "LlamaForCausalLM"
              : !strcmp(*arch_name, "olmoe")   ? "OlmoeForCausalLM"
              : !strcmp(*arch_name, "qwen2moe") ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM";

    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t n_vecs = (2 * (size_t)c->dim + 2 * (q_dim + kv_dim) + c->dim) * c->n_layers + c->dim + q_dim; /* + scratch */
    m->vecs = malloc(n_vecs * sizeof(float));
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->vecs || !m->layers)
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the layer table", path);
    b.vec_next = m->vecs;
    /* A layer routes when it has a router (llama.cpp's qwen2moe/qwen3moe
     * files route in every layer; dense layers are kept where present). */
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights *L = &m->layers[l];
        if (c->n_experts && find(&b, "blk.%d.ffn_gate_inp.weight", l)) {
            L->n_experts = c->n_experts;
            if (!(L->experts = calloc((size_t)c->n_experts, sizeof *L->experts)))
                return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the expert table", path);
        }
    }

    if (!mat(&b, &m->embed, c->vocab, c->dim, "token_embd.weight"))
        return err ? err->code : MOE_EFORMAT;
    char *owned = NULL;
    if (b.a->permuted_qk) { /* room for every layer's un-permuted Q and K */
        size_t total = 0;
        for (int l = 0; l < c->n_layers; l++) {
            const gguf_tensor *q = find(&b, "blk.%d.attn_q.weight", l), *k = find(&b, "blk.%d.attn_k.weight", l);
            if (q && k && moe_type(q->type) >= 0 && moe_type(k->type) >= 0)
                total += q->nbytes + k->nbytes;
        }
        if (!(m->owned = owned = malloc(total ? total : 1)))
            return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the Q/K projections", path);
    }
    for (int l = 0; l < c->n_layers; l++)
        if (!layer(&b, l, &owned))
            return err ? err->code : MOE_EFORMAT;
    if (!(m->final_norm = vec(&b, c->dim, "output_norm.weight")))
        return err ? err->code : MOE_EFORMAT;
    if (!c->tied) {
        if (!mat(&b, &m->lm_head, c->vocab, c->dim, "output.weight"))
            return err ? err->code : MOE_EFORMAT;
    } else {
        m->lm_head = m->embed;
    }

    /* size figures, as model.c computes them */
    moe_model_info *in = &m->info;
    in->params_total = in->params_active = b.params;
    in->weight_bytes = b.bytes;
    in->active_bytes = b.bytes - (c->tied ? 0 : kern_row_bytes(m->embed.t, (size_t)c->dim) * c->vocab);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        if (!L->n_experts)
            continue;
        const mlp_weights *e = &L->experts[0];
        uint64_t idle = (uint64_t)(L->n_experts - c->k);
        in->params_active -= idle * 3ull * c->dim * c->moe_ff;
        in->active_bytes -= idle * (kern_row_bytes(e->gate.t, (size_t)c->dim) * c->moe_ff +
                                    kern_row_bytes(e->up.t, (size_t)c->dim) * c->moe_ff +
                                    kern_row_bytes(e->down.t, (size_t)c->moe_ff) * c->dim);
        in->n_moe_layers++;
        in->n_shared_experts = L->shared.gate.data ? 1 : in->n_shared_experts;
    }
    in->dtype = model_main_dtype(b.bytes_by_type);
    memcpy(in->bytes_by_type, b.bytes_by_type, sizeof in->bytes_by_type);
    return MOE_OK;
}
