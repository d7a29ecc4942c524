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

/* An architecture adapter: one Hugging Face family's names and rules. */
typedef enum { BIAS_CONFIG, BIAS_QKV } bias_rule;
typedef enum { SPARSE_NONE, SPARSE_ALL, SPARSE_QWEN, SPARSE_BLOCKS } sparse_rule;
typedef enum { NORM_PRE, NORM_POST } norm_rule; /* Llama: before each sublayer; OLMo-2: after */

typedef struct {
    const char *name;          /* moescope's adapter name */
    const char *hf_class;
    const char *model_type;
    sparse_rule sparse;        /* which layers route */
    const char *router;        /* "model.layers.%d.<router>.weight" */
    const char *experts;       /* "model.layers.%d.<experts>.%d.<proj>.weight" */
    const char *proj[3];       /* names of gate, up and down */
    int renorm_default;        /* top-k weights rescaled when norm_topk_prob is absent */
    int renorm_fixed;          /* the family always rescales (Mixtral) */
    int shared_expert;
    bias_rule bias;
    qk_norm_kind qk_norm;
    int sliding_window;        /* honours "sliding_window" (Qwen's needs use_sliding_window, refused) */
    norm_rule norms;           /* of the blocks (MiCRo's OLMo variant: post-norms) */
    const char *prefix;        /* tensor names: "model." or "" (MiCRo) */
    const char *final_norm;    /* "norm" or "final_norm" */
    const char *const *expert_names; /* defaults when config.json has no "expert_names" */
} arch;

/* MiCRo's experts, in the order of the released code's ablation table. */
static const char *const MICRO_EXPERTS[] = {"logic", "social", "world", "language", NULL};

enum { W_GATE, W_UP, W_DOWN };

static const arch ARCHS[] = {
    {"llama", "LlamaForCausalLM", "llama", SPARSE_NONE, NULL, NULL, {NULL, NULL, NULL}, 0, 0, 0,
     BIAS_CONFIG, QK_NORM_NONE, 0, NORM_PRE, "model.", "norm", NULL},
    {"mixtral", "MixtralForCausalLM", "mixtral", SPARSE_ALL, "block_sparse_moe.gate",
     "block_sparse_moe.experts", {"w1", "w3", "w2"}, 1, 1, 0, BIAS_CONFIG, QK_NORM_NONE, 1, NORM_PRE,
     "model.", "norm", NULL},
    {"olmoe", "OlmoeForCausalLM", "olmoe", SPARSE_ALL, "mlp.gate", "mlp.experts",
     {"gate_proj", "up_proj", "down_proj"}, 0, 0, 0, BIAS_CONFIG, QK_NORM_WHOLE, 0, NORM_PRE, "model.",
     "norm", NULL},
    {"qwen2moe", "Qwen2MoeForCausalLM", "qwen2_moe", SPARSE_QWEN, "mlp.gate", "mlp.experts",
     {"gate_proj", "up_proj", "down_proj"}, 0, 0, 1, BIAS_QKV, QK_NORM_NONE, 0, NORM_PRE, "model.", "norm",
     NULL},
    {"qwen3moe", "Qwen3MoeForCausalLM", "qwen3_moe", SPARSE_QWEN, "mlp.gate", "mlp.experts",
     {"gate_proj", "up_proj", "down_proj"}, 0, 0, 0, BIAS_CONFIG, QK_NORM_HEAD, 0, NORM_PRE, "model.",
     "norm", NULL},
    /* MiCRo: every expert a whole decoder block; router gate.1(gate.0(x)) */
    {"micro-llama", "MiCRoLlama", "micro_llama", SPARSE_BLOCKS, "gate", "experts",
     {"gate_proj", "up_proj", "down_proj"}, 1, 1, 0, BIAS_CONFIG, QK_NORM_NONE, 0, NORM_PRE, "",
     "final_norm", MICRO_EXPERTS},
    {"micro-olmo", "MiCRoOLMo", "micro_olmo", SPARSE_BLOCKS, "gate", "experts",
     {"gate_proj", "up_proj", "down_proj"}, 1, 1, 0, BIAS_CONFIG, QK_NORM_WHOLE, 0, NORM_POST, "", "norm",
     MICRO_EXPERTS},
};
#define N_ARCHS (sizeof ARCHS / sizeof ARCHS[0])

/* Whether layer l routes, by the family's rule. */
static int layer_is_sparse(const arch *a, const moe_config *c, int l)
{
    if (a->sparse == SPARSE_NONE || !c->n_experts)
        return 0;
    if (a->sparse == SPARSE_ALL || a->sparse == SPARSE_BLOCKS)
        return 1;
    for (int i = 0; i < c->n_mlp_only; i++) /* Qwen2MoeDecoderLayer's rule */
        if (c->mlp_only_layers[i] == l)
            return 0;
    return (l + 1) % c->decoder_sparse_step == 0;
}

const char *moe_supported_archs(void)
{
    return "LlamaForCausalLM (llama), MixtralForCausalLM (mixtral), OlmoeForCausalLM (olmoe), "
           "Qwen2MoeForCausalLM (qwen2_moe), Qwen3MoeForCausalLM (qwen3_moe), MiCRoLlama, MiCRoOLMo";
}

const char *moe_dtype_name(moe_dtype t)
{
    static const char *names[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K"};
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

/* gate/up/down of an MLP of width ff; `prefix` is e.g.
 * "model.layers.3.mlp.experts.5" and proj the three names. */
static int bind_mlp(binder *b, mlp_weights *w, int ff, const char *prefix, const char *const proj[3])
{
    const moe_config *c = &b->m->cfg;
    wmat *dst[] = {&w->gate, &w->up, &w->down};
    char name[320];
    for (int which = W_GATE; which <= W_DOWN; which++) {
        snprintf(name, sizeof name, "%s.%s.weight", prefix, proj[which]);
        int rows = which == W_DOWN ? c->dim : ff, cols = which == W_DOWN ? ff : c->dim;
        if (!bind_mat(b, dst[which], rows, cols, name))
            return 0;
    }
    return 1;
}

/* A 3-D tensor of exactly (d0, d1, d2). */
static const st_tensor *bind_3d(binder *b, const char *name, int d0, int d1, int d2)
{
    const st_tensor *t = lookup(b, "%s", name);
    if (!t)
        return NULL;
    if (t->ndim != 3 || t->shape[0] != d0 || t->shape[1] != d1 || t->shape[2] != d2 ||
        st_dtype_to_moe(t->dtype) < 0) {
        moe_fail(b->err, MOE_EFORMAT, "%s: tensor '%s' is not a %s tensor of shape [%d, %d, %d]", t->file, name,
                 "F32/F16/BF16", d0, d1, d2);
        return NULL;
    }
    count(b, t);
    return t;
}

/* Experts saved fused, as newer transformers do: gate_up_proj (E, 2ff, dim)
 * with each expert's gate rows before its up rows, and down_proj
 * (E, dim, ff). Each expert's matrices are views into them. */
static int bind_fused_experts(binder *b, layer_weights *L, const char *prefix, int ff)
{
    const moe_config *c = &b->m->cfg;
    char name[320];
    snprintf(name, sizeof name, "%s.gate_up_proj", prefix);
    const st_tensor *gu = bind_3d(b, name, L->n_experts, 2 * ff, c->dim);
    snprintf(name, sizeof name, "%s.down_proj", prefix);
    const st_tensor *dn = gu ? bind_3d(b, name, L->n_experts, c->dim, ff) : NULL;
    if (!dn)
        return 0;
    moe_dtype tg = (moe_dtype)st_dtype_to_moe(gu->dtype), td = (moe_dtype)st_dtype_to_moe(dn->dtype);
    size_t mat = (size_t)ff * c->dim * dtype_size(tg), dmat = (size_t)c->dim * ff * dtype_size(td);
    for (int e = 0; e < L->n_experts; e++) {
        const char *g = (const char *)gu->data + 2 * mat * e;
        L->experts[e].gate = (wmat){tg, g, ff, c->dim};
        L->experts[e].up = (wmat){tg, g + mat, ff, c->dim};
        L->experts[e].down = (wmat){td, (const char *)dn->data + dmat * e, c->dim, ff};
    }
    return 1;
}

/* The attention and norms of one decoder block whose tensors start with
 * `prefix` ("model.layers.3" or, in MiCRo, "layers.3.experts.1"). */
static int bind_block(binder *b, const arch *a, layer_weights *L, const char *prefix)
{
    const moe_config *c = &b->m->cfg;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    char name[320];
#define ATTN(field, rows, cols, proj)                                                          \
    (snprintf(name, sizeof name, "%s.self_attn.%s.weight", prefix, proj),                      \
     bind_mat(b, &L->field, rows, cols, name))
#define VEC(n, what) (snprintf(name, sizeof name, "%s.%s", prefix, what), bind_vec(b, n, name))

    if (a->norms == NORM_PRE && (!(L->attn_norm = VEC(c->dim, "input_layernorm.weight")) ||
                                 !(L->ffn_norm = VEC(c->dim, "post_attention_layernorm.weight"))))
        return 0;
    if (a->norms == NORM_POST && (!(L->post_attn_norm = VEC(c->dim, "post_attention_layernorm.weight")) ||
                                  !(L->post_ffn_norm = VEC(c->dim, "post_feedforward_layernorm.weight"))))
        return 0;
    if (!ATTN(wq, q_dim, c->dim, "q_proj") || !ATTN(wk, kv_dim, c->dim, "k_proj") ||
        !ATTN(wv, kv_dim, c->dim, "v_proj") || !ATTN(wo, c->dim, q_dim, "o_proj"))
        return 0;
    int qkv_bias = a->bias == BIAS_QKV || c->attn_bias, o_bias = a->bias == BIAS_CONFIG && c->attn_bias;
    if (qkv_bias && (!(L->bq = VEC(q_dim, "self_attn.q_proj.bias")) ||
                     !(L->bk = VEC(kv_dim, "self_attn.k_proj.bias")) ||
                     !(L->bv = VEC(kv_dim, "self_attn.v_proj.bias"))))
        return 0;
    if (o_bias && !(L->bo = VEC(c->dim, "self_attn.o_proj.bias")))
        return 0;
    if (a->qk_norm != QK_NORM_NONE) {
        int qn = a->qk_norm == QK_NORM_WHOLE ? q_dim : c->head_dim;
        int kn = a->qk_norm == QK_NORM_WHOLE ? kv_dim : c->head_dim;
        if (!(L->q_norm = VEC(qn, "self_attn.q_norm.weight")) || !(L->k_norm = VEC(kn, "self_attn.k_norm.weight")))
            return 0;
    }
#undef ATTN
#undef VEC
    return 1;
}

static int bind_layer(binder *b, const arch *a, int l)
{
    static const char *const dense_proj[3] = {"gate_proj", "up_proj", "down_proj"};
    const moe_config *c = &b->m->cfg;
    layer_weights *L = &b->m->layers[l];
    char name[320], prefix[256];

    if (a->sparse == SPARSE_BLOCKS) {
        /* MiCRo: a two-map router and one whole block per expert */
        L->n_experts = c->n_experts;
        snprintf(name, sizeof name, "%slayers.%d.%s.0.weight", a->prefix, l, a->router);
        if (!bind_mat(b, &L->router0, c->dim, c->dim, name))
            return 0;
        snprintf(name, sizeof name, "%slayers.%d.%s.1.weight", a->prefix, l, a->router);
        if (!bind_mat(b, &L->router, c->n_experts, c->dim, name))
            return 0;
        for (int e = 0; e < c->n_experts; e++) {
            snprintf(prefix, sizeof prefix, "%slayers.%d.%s.%d", a->prefix, l, a->experts, e);
            if (!bind_block(b, a, &L->blocks[e], prefix))
                return 0;
            snprintf(name, sizeof name, "%s.mlp", prefix);
            if (!bind_mlp(b, &L->blocks[e].dense, c->ff, name, dense_proj))
                return 0;
        }
        return 1;
    }
    snprintf(prefix, sizeof prefix, "%slayers.%d", a->prefix, l);
    if (!bind_block(b, a, L, prefix))
        return 0;
    if (!layer_is_sparse(a, c, l)) {
        L->n_experts = 0;
        snprintf(prefix, sizeof prefix, "%slayers.%d.mlp", a->prefix, l);
        return bind_mlp(b, &L->dense, c->ff, prefix, dense_proj);
    }
    L->n_experts = c->n_experts;
    /* Newer transformers name every family's MoE block "mlp" and may fuse
     * the experts into two 3-D tensors; older files name them one by one. */
    snprintf(prefix, sizeof prefix, "%slayers.%d.mlp.experts", a->prefix, l);
    snprintf(name, sizeof name, "%s.gate_up_proj", prefix);
    int fused = st_set_find(b->m->st, name) != NULL;
    snprintf(name, sizeof name, "%slayers.%d.%s.weight", a->prefix, l, fused ? "mlp.gate" : a->router);
    if (!bind_mat(b, &L->router, L->n_experts, c->dim, name))
        return 0;
    if (fused) {
        if (!bind_fused_experts(b, L, prefix, c->moe_ff))
            return 0;
    } else {
        for (int e = 0; e < L->n_experts; e++) {
            snprintf(prefix, sizeof prefix, "%slayers.%d.%s.%d", a->prefix, l, a->experts, e);
            if (!bind_mlp(b, &L->experts[e], c->moe_ff, prefix, a->proj))
                return 0;
        }
    }
    if (a->shared_expert && c->shared_ff) {
        snprintf(prefix, sizeof prefix, "%slayers.%d.mlp.shared_expert", a->prefix, l);
        snprintf(name, sizeof name, "%slayers.%d.mlp.shared_expert_gate.weight", a->prefix, l);
        if (!bind_mlp(b, &L->shared, c->shared_ff, prefix, dense_proj) ||
            !bind_mat(b, &L->shared_gate, 1, c->dim, name))
            return 0;
    }
    return 1;
}

static moe_status bind_model(moe_model *m, const arch *a, moe_error *err)
{
    const moe_config *c = &m->cfg;
    binder b = {m, err, NULL, 0, 0, {0}};

    /* All f32 vectors in one allocation: norms, q/k norms, biases, for
     * every block (a MiCRo layer has one per expert). */
    int blocks = a->sparse == SPARSE_BLOCKS ? c->n_experts : 1;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t per_block = 2 * (size_t)c->dim + 2 * (q_dim + kv_dim) + c->dim;
    size_t n_vecs = per_block * blocks * c->n_layers + c->dim;
    m->vecs = malloc(n_vecs * sizeof(float));
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->vecs || !m->layers)
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the layer table", m->dir);
    b.vec_next = m->vecs;
    m->kv_slots = blocks;
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights *L = &m->layers[l];
        if (a->sparse == SPARSE_BLOCKS)
            L->blocks = calloc((size_t)c->n_experts, sizeof *L->blocks);
        else if (layer_is_sparse(a, c, l))
            L->experts = calloc((size_t)c->n_experts, sizeof(mlp_weights));
        if (layer_is_sparse(a, c, l) && !L->blocks && !L->experts)
            return moe_fail(err, MOE_ENOMEM, "%s: out of memory for the expert table", m->dir);
    }

    char name[64];
    snprintf(name, sizeof name, "%sembed_tokens.weight", a->prefix);
    if (!bind_mat(&b, &m->embed, c->vocab, c->dim, name))
        return err ? err->code : MOE_EFORMAT;
    for (int l = 0; l < c->n_layers; l++)
        if (!bind_layer(&b, a, l))
            return err ? err->code : MOE_EFORMAT;
    snprintf(name, sizeof name, "%s%s.weight", a->prefix, a->final_norm);
    if (!(m->final_norm = bind_vec(&b, c->dim, name)))
        return err ? err->code : MOE_EFORMAT;
    /* A saved lm_head wins: MiCRo's Llama variant inherits
     * tie_word_embeddings from its base yet trains its own head. */
    if (st_set_find(m->st, "lm_head.weight") || !c->tied) {
        if (!bind_mat(&b, &m->lm_head, c->vocab, c->dim, "lm_head.weight"))
            return err ? err->code : MOE_EFORMAT;
    } else {
        m->lm_head = m->embed;
    }

    /* Size figures for inspect and bench: a routed layer reads k of its
     * experts per token (a MiCRo layer k of its blocks, and the keys and
     * values of the others). */
    moe_model_info *in = &m->info;
    int own_head = m->lm_head.data != m->embed.data;
    in->params_total = b.params;
    in->weight_bytes = b.bytes;
    in->params_active = b.params;
    in->active_bytes = b.bytes - (own_head ? (uint64_t)c->vocab * c->dim * dtype_size(m->embed.t) : 0);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        if (!L->n_experts)
            continue;
        uint64_t expert_params = 3ull * c->dim * c->moe_ff;
        moe_dtype et = L->blocks ? L->blocks[0].dense.gate.t : L->experts[0].gate.t;
        if (L->blocks) { /* whole block but its keys and values */
            uint64_t q_dim2 = (uint64_t)c->n_heads * c->head_dim;
            expert_params = 3ull * c->dim * c->ff + 2 * q_dim2 * c->dim;
        }
        uint64_t idle = (uint64_t)(L->n_experts - c->k);
        in->params_active -= idle * expert_params;
        in->active_bytes -= idle * expert_params * dtype_size(et);
        in->n_moe_layers++;
        in->n_shared_experts = L->shared.gate.data ? 1 : in->n_shared_experts;
    }
    in->dtype = model_main_dtype(b.bytes_by_type);
    memcpy(in->bytes_by_type, b.bytes_by_type, sizeof in->bytes_by_type);
    return MOE_OK;
}

moe_dtype model_main_dtype(const uint64_t bytes_by_type[MOE_DTYPE_COUNT])
{
    moe_dtype main_t = MOE_F32;
    for (int t = 0; t < MOE_DTYPE_COUNT; t++)
        if (bytes_by_type[t] > bytes_by_type[main_t])
            main_t = (moe_dtype)t;
    return main_t;
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
    size_t plen = strlen(path_or_id);
    int gguf = plen > 5 && !strcmp(path_or_id + plen - 5, ".gguf") && !is_dir(path_or_id);
    if (gguf || is_dir(path_or_id)) {
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
    const char *arch_name, *hf_class;
    if (gguf) {
        if ((st = gguf_model_bind(m, dir, &arch_name, &hf_class, err)))
            goto fail;
        goto bound;
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
    if (a->sparse != SPARSE_NONE && m->cfg.n_experts == 0) {
        st = moe_fail(err, MOE_EFORMAT, "%s: %s needs the number of experts (\"%s\")", cfg_path, a->hf_class,
                      strcmp(a->name, "mixtral") ? "num_experts" : "num_local_experts");
        goto fail;
    }
    if (a->sparse == SPARSE_NONE)
        m->cfg.n_experts = m->cfg.k = 0;
    m->rule.renormalize = a->renorm_fixed ? 1 : m->cfg.norm_topk_prob >= 0 ? m->cfg.norm_topk_prob : a->renorm_default;
    m->qk_norm = a->qk_norm;
    m->info.expert_names = m->cfg.expert_names ? (const char *const *)m->cfg.expert_names : a->expert_names;
    if (!a->sliding_window)
        m->cfg.sliding_window = 0;
    if ((st = st_set_open_dir(dir, &m->st, err)))
        goto fail;
    if ((st = bind_model(m, a, err)))
        goto fail;
    arch_name = a->name;
    hf_class = a->hf_class;

bound:;
    moe_model_info *in = &m->info;
    const moe_config *c = &m->cfg;
    in->arch = arch_name;
    in->hf_class = hf_class;
    in->path = m->dir;
    in->n_layers = c->n_layers;
    in->dim = c->dim;
    in->n_heads = c->n_heads;
    in->n_kv_heads = c->n_kv_heads;
    in->head_dim = c->head_dim;
    in->ff = c->n_experts ? c->moe_ff : c->ff;
    in->dense_ff = c->ff;
    in->shared_ff = in->n_shared_experts ? c->shared_ff : 0;
    in->renormalize = m->rule.renormalize;
    in->n_experts = c->n_experts;
    in->k = c->k;
    in->vocab = c->vocab;
    in->max_pos = c->max_pos;
    in->tied_embeddings = c->tied;
    in->kv_bytes_per_token = 2ull * c->n_layers * m->kv_slots * c->n_kv_heads * c->head_dim * sizeof(float);
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
        for (int l = 0; l < m->cfg.n_layers; l++) {
            free(m->layers[l].experts);
            free(m->layers[l].blocks);
        }
    free(m->layers);
    free(m->vecs);
    config_done(&m->cfg);
    st_set_close(m->st);
    gguf_close(m->gguf);
    free(m->owned);
    free(m->dir);
    free(m);
}

const moe_model_info *moe_model_info_get(const moe_model *m)
{
    return &m->info;
}
