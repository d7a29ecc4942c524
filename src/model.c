/* Opening a model and the architecture adapters.
 *
 * An adapter knows one Hugging Face family: its class name, its tensor
 * names and its routing rule. Binding looks up every tensor the config
 * implies, checks dtype and shape, and fills the internal description in
 * model.h. Nothing after this file looks at names or JSON again. */
#include "model.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "kernels.h"

typedef struct arch arch;
struct arch {
    const char *name;          /* moescope's adapter name */
    const char *hf_class;
    const char *model_type;
    int moe;                   /* routed experts in every layer */
    router_rule rule;
    /* Name of the tensor for layer l (expert e where it matters). */
    void (*mlp_names)(char *buf, size_t cap, int l, int e, int which);
};

enum { W_GATE, W_UP, W_DOWN };

static void llama_mlp_names(char *buf, size_t cap, int l, int e, int which)
{
    static const char *proj[] = {"gate_proj", "up_proj", "down_proj"};
    (void)e;
    snprintf(buf, cap, "model.layers.%d.mlp.%s.weight", l, proj[which]);
}

static void mixtral_mlp_names(char *buf, size_t cap, int l, int e, int which)
{
    static const char *w[] = {"w1", "w3", "w2"};
    if (e < 0)
        snprintf(buf, cap, "model.layers.%d.block_sparse_moe.gate.weight", l);
    else
        snprintf(buf, cap, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, e, w[which]);
}

static const arch ARCHS[] = {
    {"llama", "LlamaForCausalLM", "llama", 0, {0}, llama_mlp_names},
    {"mixtral", "MixtralForCausalLM", "mixtral", 1, {1}, mixtral_mlp_names},
};
#define N_ARCHS (sizeof ARCHS / sizeof ARCHS[0])

const char *moe_supported_archs(void)
{
    return "LlamaForCausalLM (llama), MixtralForCausalLM (mixtral)";
}

const char *moe_dtype_name(moe_dtype t)
{
    static const char *names[] = {"F32", "F16", "BF16"};
    return (unsigned)t < MOE_DTYPE_COUNT ? names[t] : "?";
}

static size_t dtype_size(moe_dtype t)
{
    return t == MOE_F32 ? 4 : 2;
}

static const arch *find_arch(const moe_config *c)
{
    for (size_t i = 0; i < N_ARCHS; i++)
        if (strcmp(c->hf_class, ARCHS[i].hf_class) == 0)
            return &ARCHS[i];
    if (!c->hf_class[0]) /* no "architectures": fall back to model_type */
        for (size_t i = 0; i < N_ARCHS; i++)
            if (strcmp(c->model_type, ARCHS[i].model_type) == 0)
                return &ARCHS[i];
    return NULL;
}

/* ---- binding tensors --------------------------------------------------- */

typedef struct {
    moe_model *m;
    moe_error *err;
    float *vec_next;           /* next free float in m->vecs */
    uint64_t params;
    uint64_t bytes;
    uint64_t bytes_by_type[MOE_DTYPE_COUNT];
} binder;

__attribute__((format(printf, 2, 3))) static const st_tensor *lookup(binder *b, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const st_tensor *t = st_set_find(b->m->st, name);
    if (!t)
        moe_fail(b->err, MOE_EFORMAT, "%s: tensor '%s' is missing (required by %s in config.json)",
                 b->m->dir, name, b->m->cfg.hf_class);
    return t;
}

static int check_shape(binder *b, const st_tensor *t, int ndim, int d0, int d1)
{
    int bad = t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1);
    if (!bad && st_dtype_to_moe(t->dtype) >= 0)
        return 1;
    char found[96] = "[", *p = found + 1;
    for (int i = 0; i < t->ndim && p < found + sizeof found - 24; i++)
        p += snprintf(p, (size_t)(found + sizeof found - p), i ? ", %lld" : "%lld", (long long)t->shape[i]);
    snprintf(p, (size_t)(found + sizeof found - p), "]");
    if (bad) {
        char want[48];
        if (ndim == 2)
            snprintf(want, sizeof want, "[%d, %d]", d0, d1);
        else
            snprintf(want, sizeof want, "[%d]", d0);
        moe_fail(b->err, MOE_EFORMAT, "%s: tensor '%s' has shape %s; config.json implies %s", t->file,
                 t->name, found, want);
    } else {
        moe_fail(b->err, MOE_EUNSUPPORTED, "%s: tensor '%s' has type %s; supported: F32, F16, BF16",
                 t->file, t->name, st_dtype_name(t->dtype));
    }
    return 0;
}

static void count(binder *b, const st_tensor *t)
{
    b->params += t->numel;
    b->bytes += t->nbytes;
    b->bytes_by_type[st_dtype_to_moe(t->dtype)] += t->nbytes;
}

static int bind_mat(binder *b, wmat *w, int rows, int cols, const char *name)
{
    const st_tensor *t = lookup(b, "%s", name);
    if (!t || !check_shape(b, t, 2, rows, cols))
        return 0;
    w->t = (moe_dtype)st_dtype_to_moe(t->dtype);
    w->data = t->data;
    w->rows = rows;
    w->cols = cols;
    count(b, t);
    return 1;
}

/* A vector of n, converted to f32 into the model's vector storage. */
static float *bind_vec(binder *b, int n, const char *name)
{
    const st_tensor *t = lookup(b, "%s", name);
    if (!t || !check_shape(b, t, 1, n, 0))
        return NULL;
    float *v = b->vec_next;
    b->vec_next += n;
    const unsigned char *src = t->data;
    moe_dtype dt = (moe_dtype)st_dtype_to_moe(t->dtype);
    for (int i = 0; i < n; i++) {
        uint16_t h;
        switch (dt) {
        case MOE_F32: memcpy(&v[i], src + 4 * (size_t)i, 4); break;
        case MOE_F16: memcpy(&h, src + 2 * (size_t)i, 2); v[i] = kern_f16_to_f32(h); break;
        default: memcpy(&h, src + 2 * (size_t)i, 2); v[i] = kern_bf16_to_f32(h); break;
        }
    }
    count(b, t);
    return v;
}

static int bind_layer(binder *b, const arch *a, int l)
{
    const moe_config *c = &b->m->cfg;
    layer_weights *L = &b->m->layers[l];
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    char name[256];
#define ATTN(field, rows, cols, proj)                                                          \
    (snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.weight", l, proj),              \
     bind_mat(b, &L->field, rows, cols, name))
#define VEC(n, fmt, ...) (snprintf(name, sizeof name, fmt, __VA_ARGS__), bind_vec(b, n, name))

    if (!(L->attn_norm = VEC(c->dim, "model.layers.%d.input_layernorm.weight", l)) ||
        !(L->ffn_norm = VEC(c->dim, "model.layers.%d.post_attention_layernorm.weight", l)) ||
        !ATTN(wq, q_dim, c->dim, "q_proj") || !ATTN(wk, kv_dim, c->dim, "k_proj") ||
        !ATTN(wv, kv_dim, c->dim, "v_proj") || !ATTN(wo, c->dim, q_dim, "o_proj"))
        return 0;
    if (c->attn_bias &&
        (!(L->bq = VEC(q_dim, "model.layers.%d.self_attn.q_proj.bias", l)) ||
         !(L->bk = VEC(kv_dim, "model.layers.%d.self_attn.k_proj.bias", l)) ||
         !(L->bv = VEC(kv_dim, "model.layers.%d.self_attn.v_proj.bias", l)) ||
         !(L->bo = VEC(c->dim, "model.layers.%d.self_attn.o_proj.bias", l))))
        return 0;
#undef ATTN
#undef VEC

    L->n_experts = a->moe ? c->n_experts : 0;
    if (L->n_experts) {
        a->mlp_names(name, sizeof name, l, -1, 0);
        if (!bind_mat(b, &L->router, L->n_experts, c->dim, name))
            return 0;
    }
    for (int e = 0; e < (L->n_experts ? L->n_experts : 1); e++) {
        mlp_weights *w = &L->experts[e];
        wmat *dst[] = {&w->gate, &w->up, &w->down};
        for (int which = W_GATE; which <= W_DOWN; which++) {
            a->mlp_names(name, sizeof name, l, e, which);
            int rows = which == W_DOWN ? c->dim : c->ff, cols = which == W_DOWN ? c->ff : c->dim;
            if (!bind_mat(b, dst[which], rows, cols, name))
                return 0;
        }
    }
    return 1;
}

static moe_status bind_model(moe_model *m, const arch *a, moe_error *err)
{
    const moe_config *c = &m->cfg;
    binder b = {m, err, NULL, 0, 0, {0}};

    /* All f32 vectors in one allocation: norms and optional biases. */
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t per_layer = 2 * (size_t)c->dim + (c->attn_bias ? q_dim + 2 * kv_dim + c->dim : 0);
    size_t n_vecs = per_layer * c->n_layers + c->dim;
    m->vecs = malloc(n_vecs * sizeof(float));
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->vecs || !m->layers)
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the layer table", m->dir);
    b.vec_next = m->vecs;
    int n_exp = a->moe ? c->n_experts : 1;
    for (int l = 0; l < c->n_layers; l++) {
        m->layers[l].experts = calloc((size_t)n_exp, sizeof(mlp_weights));
        if (!m->layers[l].experts)
            return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the expert table", m->dir);
    }

    if (!bind_mat(&b, &m->embed, c->vocab, c->dim, "model.embed_tokens.weight"))
        return err ? err->code : MOE_EFORMAT;
    for (int l = 0; l < c->n_layers; l++)
        if (!bind_layer(&b, a, l))
            return err ? err->code : MOE_EFORMAT;
    if (!(m->final_norm = bind_vec(&b, c->dim, "model.norm.weight")))
        return err ? err->code : MOE_EFORMAT;
    if (c->tied) {
        m->lm_head = m->embed;
    } else if (!bind_mat(&b, &m->lm_head, c->vocab, c->dim, "lm_head.weight")) {
        return err ? err->code : MOE_EFORMAT;
    }

    /* Size figures for inspect and bench. */
    moe_model_info *in = &m->info;
    uint64_t expert_params = 3ull * c->dim * c->ff;
    uint64_t expert_bytes = expert_params * dtype_size(m->layers[0].experts[0].gate.t);
    in->params_total = b.params;
    in->weight_bytes = b.bytes;
    in->params_active = b.params;
    in->active_bytes = b.bytes - (uint64_t)c->vocab * c->dim * dtype_size(m->embed.t) * (c->tied ? 0 : 1);
    if (a->moe) {
        uint64_t idle = (uint64_t)c->n_layers * (uint64_t)(c->n_experts - c->k);
        in->params_active -= idle * expert_params;
        in->active_bytes -= idle * expert_bytes;
    }
    moe_dtype main_t = MOE_F32;
    for (int t = 0; t < MOE_DTYPE_COUNT; t++)
        if (b.bytes_by_type[t] > b.bytes_by_type[main_t])
            main_t = (moe_dtype)t;
    in->dtype = main_t;
    return MOE_OK;
}

/* ---- opening ----------------------------------------------------------- */

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* "org/name" with nothing path-like about it. */
static int looks_like_hf_id(const char *s)
{
    const char *slash = strchr(s, '/');
    return slash && slash != s && slash[1] && !strchr(slash + 1, '/') && s[0] != '.' &&
           !strstr(s, "..") && !strchr(s, '\\');
}

moe_status moe_model_open(const char *path_or_id, moe_model **out, moe_error *err)
{
    *out = NULL;
    char dir[4096];
    moe_status st;
    if (is_dir(path_or_id)) {
        snprintf(dir, sizeof dir, "%s", path_or_id);
    } else if (access(path_or_id, F_OK) == 0) {
        return moe_fail(err, MOE_EUNSUPPORTED,
                        "%s: a model is a directory with config.json and *.safetensors (or a Hugging "
                        "Face id in the local cache)",
                        path_or_id);
    } else if (looks_like_hf_id(path_or_id)) {
        if ((st = moe_hf_resolve(path_or_id, dir, sizeof dir, err)))
            return st;
    } else {
        return moe_fail(err, MOE_EIO, "%s: no such model directory", path_or_id);
    }

    moe_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        return moe_fail(err, MOE_ENOMEM, "out of memory opening %s", dir);
    }
    char cfg_path[4200];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    if ((st = config_load(cfg_path, &m->cfg, err)))
        goto fail;
    const arch *a = find_arch(&m->cfg);
    if (!a) {
        st = moe_fail(err, MOE_EUNSUPPORTED,
                      "%s: architecture '%s' (model_type '%s') is not supported; supported: %s", cfg_path,
                      m->cfg.hf_class[0] ? m->cfg.hf_class : "(none)",
                      m->cfg.model_type[0] ? m->cfg.model_type : "(none)", moe_supported_archs());
        goto fail;
    }
    if (a->moe && m->cfg.n_experts == 0) {
        st = moe_fail(err, MOE_EFORMAT, "%s: %s needs \"num_local_experts\"", cfg_path, a->hf_class);
        goto fail;
    }
    if (!a->moe)
        m->cfg.n_experts = m->cfg.k = 0;
    m->rule = a->rule;
    if ((st = st_set_open_dir(dir, &m->st, err)))
        goto fail;
    if ((st = bind_model(m, a, err)))
        goto fail;

    moe_model_info *in = &m->info;
    const moe_config *c = &m->cfg;
    in->arch = a->name;
    in->hf_class = a->hf_class;
    in->path = m->dir;
    in->n_layers = c->n_layers;
    in->dim = c->dim;
    in->n_heads = c->n_heads;
    in->n_kv_heads = c->n_kv_heads;
    in->head_dim = c->head_dim;
    in->ff = c->ff;
    in->n_experts = c->n_experts;
    in->k = c->k;
    in->n_moe_layers = a->moe ? c->n_layers : 0;
    in->vocab = c->vocab;
    in->max_pos = c->max_pos;
    in->tied_embeddings = c->tied;
    in->bos_id = c->bos_id;
    in->eos_id = c->eos_id;
    in->rope_theta = (float)c->rope_theta;
    in->norm_eps = (float)c->norm_eps;
    *out = m;
    return MOE_OK;
fail:
    moe_model_close(m);
    return st;
}

void moe_model_close(moe_model *m)
{
    if (!m)
        return;
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++)
            free(m->layers[l].experts);
    free(m->layers);
    free(m->vecs);
    st_set_close(m->st);
    free(m->dir);
    free(m);
}

const moe_model_info *moe_model_info_get(const moe_model *m)
{
    return &m->info;
}
