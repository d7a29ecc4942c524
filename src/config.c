/* Reading config.json. Every number that later sizes a buffer is checked
 * here against a sane range, so that a hostile config cannot make the
 * engine allocate absurd amounts or divide by zero. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"

moe_status json_read_file(const char *path, size_t max_bytes, cJSON **out, moe_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return moe_fail(err, MOE_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return moe_fail(err, MOE_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return moe_fail(err, MOE_EFORMAT, "%s: %lld bytes is larger than the %zu allowed for this file",
                        path, (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return moe_fail(err, MOE_ENOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return moe_fail(err, MOE_EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, n, &end, 0);
    if (!root) {
        size_t at = end && end >= buf ? (size_t)(end - buf) : 0;
        free(buf);
        return moe_fail(err, MOE_EFORMAT,
                        "%s: not valid JSON (error near byte %zu; nesting deeper than %d is refused)",
                        path, at, CJSON_NESTING_LIMIT);
    }
    free(buf);
    *out = root;
    return MOE_OK;
}

/* ---- typed field access ------------------------------------------------ */

typedef struct {
    const char *path;
    const cJSON *root;
    moe_error *err;
    moe_status st;             /* first failure; later calls do nothing */
} reader;

static const cJSON *field(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* An integer in [lo, hi]; `def` when absent and def_ok. */
static int read_int(reader *r, const char *key, int lo, int hi, int def_ok, int def)
{
    if (r->st)
        return def;
    const cJSON *v = field(r->root, key);
    if (!v || cJSON_IsNull(v)) {
        if (def_ok)
            return def;
        r->st = moe_fail(r->err, MOE_EFORMAT, "%s: required key \"%s\" is missing", r->path, key);
        return def;
    }
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < lo || d > hi) {
        char *txt = cJSON_PrintUnformatted(v);
        r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"%s\" is %.40s; expected an integer from %d to %d",
                         r->path, key, txt ? txt : "?", lo, hi);
        free(txt);
        return def;
    }
    return (int)d;
}

static double read_num(reader *r, const char *key, double lo, double hi, double def)
{
    if (r->st)
        return def;
    const cJSON *v = field(r->root, key);
    if (!v || cJSON_IsNull(v))
        return def;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) {
        char *txt = cJSON_PrintUnformatted(v);
        r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"%s\" is %.40s; expected a number from %g to %g",
                         r->path, key, txt ? txt : "?", lo, hi);
        free(txt);
        return def;
    }
    return v->valuedouble;
}

static int read_bool(reader *r, const char *key, int def)
{
    if (r->st)
        return def;
    const cJSON *v = field(r->root, key);
    if (!v || cJSON_IsNull(v))
        return def;
    if (!cJSON_IsBool(v)) {
        r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"%s\" must be true or false", r->path, key);
        return def;
    }
    return cJSON_IsTrue(v);
}

/* A token id, or a list of them (the first is used); -1 when absent. */
static int read_token_id(reader *r, const char *key, int vocab)
{
    if (r->st)
        return -1;
    const cJSON *v = field(r->root, key);
    if (!v || cJSON_IsNull(v))
        return -1;
    if (cJSON_IsArray(v))
        v = cJSON_GetArrayItem(v, 0);
    if (!v || !cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble >= vocab) {
        r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"%s\" must be a token id below vocab_size %d",
                         r->path, key, vocab);
        return -1;
    }
    return (int)v->valuedouble;
}

static void read_str(reader *r, const char *key, char *dst, size_t cap)
{
    dst[0] = 0;
    if (r->st)
        return;
    const cJSON *v = field(r->root, key);
    if (v && cJSON_IsString(v))
        snprintf(dst, cap, "%s", v->valuestring);
}

/* A list of layer indices, each below num_hidden_layers. */
static void read_layer_list(reader *r, const char *key, moe_config *c)
{
    const cJSON *v = field(r->root, key);
    if (r->st || !v || cJSON_IsNull(v))
        return;
    int n = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || n > c->n_layers) {
        r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"%s\" must be a list of at most %d layer indices", r->path,
                         key, c->n_layers);
        return;
    }
    c->mlp_only_layers = calloc((size_t)n + 1, sizeof(int));
    if (!c->mlp_only_layers) {
        r->st = moe_fail(r->err, MOE_ENOMEM, "%s: out of memory", r->path);
        return;
    }
    for (const cJSON *x = v->child; x; x = x->next) {
        if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < 0 ||
            x->valuedouble >= c->n_layers) {
            r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"%s\" holds %g, not a layer index below %d", r->path,
                             key, x->valuedouble, c->n_layers);
            return;
        }
        c->mlp_only_layers[c->n_mlp_only++] = (int)x->valuedouble;
    }
}

/* "expert_names": one short string per expert. */
static void read_expert_names(reader *r, moe_config *c)
{
    const cJSON *v = field(r->root, "expert_names");
    if (r->st || !v || cJSON_IsNull(v))
        return;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != c->n_experts) {
        r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"expert_names\" must list one name for each of the %d experts",
                         r->path, c->n_experts);
        return;
    }
    c->expert_names = calloc((size_t)c->n_experts + 1, sizeof *c->expert_names);
    int i = 0;
    for (const cJSON *x = v->child; c->expert_names && x; x = x->next, i++) {
        if (!cJSON_IsString(x) || strlen(x->valuestring) > 32 || !(c->expert_names[i] = strdup(x->valuestring))) {
            r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"expert_names\" entry %d must be a string of at most 32 bytes",
                             r->path, i);
            return;
        }
    }
    if (!c->expert_names)
        r->st = moe_fail(r->err, MOE_ENOMEM, "%s: out of memory", r->path);
}

void config_done(moe_config *c)
{
    for (int i = 0; c->expert_names && c->expert_names[i]; i++)
        free(c->expert_names[i]);
    free(c->expert_names);
    c->expert_names = NULL;
    free(c->mlp_only_layers);
    c->mlp_only_layers = NULL;
    c->n_mlp_only = 0;
    free(c->rope_freqs);
    c->rope_freqs = NULL;
}

static void read_rope_scaling(reader *r, moe_config *c)
{
    /* transformers 5 folds rope_theta and rope_scaling into rope_parameters */
    const cJSON *rp = field(r->root, "rope_parameters");
    if (!r->st && rp && cJSON_IsObject(rp)) {
        reader sub = {r->path, rp, r->err, MOE_OK};
        c->rope_theta = read_num(&sub, "rope_theta", 1e-3, 1e12, c->rope_theta);
        r->st = sub.st;
    }
    const cJSON *rs = rp && cJSON_IsObject(rp) ? rp : field(r->root, "rope_scaling");
    c->rope = ROPE_DEFAULT;
    c->rope_factor = 1;
    if (r->st || !rs || cJSON_IsNull(rs))
        return;
    if (!cJSON_IsObject(rs)) {
        r->st = moe_fail(r->err, MOE_EFORMAT, "%s: \"rope_scaling\" must be an object or null", r->path);
        return;
    }
    const cJSON *t = field(rs, "rope_type");
    if (!t)
        t = field(rs, "type"); /* the older spelling */
    const char *type = t && cJSON_IsString(t) ? t->valuestring : "default";
    reader sub = {r->path, rs, r->err, MOE_OK};
    if (strcmp(type, "default") == 0) {
        c->rope = ROPE_DEFAULT;
    } else if (strcmp(type, "linear") == 0) {
        c->rope = ROPE_LINEAR;
        c->rope_factor = read_num(&sub, "factor", 1e-3, 1e6, 1);
    } else if (strcmp(type, "llama3") == 0) {
        c->rope = ROPE_LLAMA3;
        c->rope_factor = read_num(&sub, "factor", 1e-3, 1e6, 8);
        c->rope_low_freq_factor = read_num(&sub, "low_freq_factor", 1e-6, 1e6, 1);
        c->rope_high_freq_factor = read_num(&sub, "high_freq_factor", 1e-6, 1e6, 4);
        c->rope_orig_max_pos = read_int(&sub, "original_max_position_embeddings", 1, 1 << 24, 1, 8192);
        if (!sub.st && c->rope_high_freq_factor <= c->rope_low_freq_factor)
            sub.st = moe_fail(r->err, MOE_EFORMAT,
                              "%s: rope_scaling: high_freq_factor must exceed low_freq_factor", r->path);
    } else {
        r->st = moe_fail(r->err, MOE_EUNSUPPORTED,
                         "%s: rope_scaling type \"%.40s\" is not supported (supported: default, linear, llama3)",
                         r->path, type);
        return;
    }
    r->st = sub.st;
}

moe_status config_load(const char *path, moe_config *c, moe_error *err)
{
    memset(c, 0, sizeof *c);
    cJSON *root;
    moe_status st = json_read_file(path, 4u << 20, &root, err);
    if (st)
        return st;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return moe_fail(err, MOE_EFORMAT, "%s: expected a JSON object", path);
    }
    reader r = {path, root, err, MOE_OK};
    const cJSON *archs = field(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    if (a0 && cJSON_IsString(a0))
        snprintf(c->hf_class, sizeof c->hf_class, "%s", a0->valuestring);
    read_str(&r, "model_type", c->model_type, sizeof c->model_type);

    /* Limits: generous for real models, small enough that every product
     * of two of them fits comfortably in 64 bits. */
    c->dim = read_int(&r, "hidden_size", 1, 1 << 16, 0, 0);
    c->n_layers = read_int(&r, "num_hidden_layers", 1, 1024, 0, 0);
    c->n_heads = read_int(&r, "num_attention_heads", 1, 1024, 0, 0);
    c->n_kv_heads = read_int(&r, "num_key_value_heads", 1, 1024, 1, c->n_heads);
    c->ff = read_int(&r, "intermediate_size", 1, 1 << 18, 0, 0);
    c->vocab = read_int(&r, "vocab_size", 1, 1 << 22, 0, 0);
    c->max_pos = read_int(&r, "max_position_embeddings", 1, 1 << 24, 1, 4096);
    c->head_dim = read_int(&r, "head_dim", 2, 1 << 12, 1, c->n_heads ? c->dim / c->n_heads : 0);
    c->n_experts = read_int(&r, "num_local_experts", 1, 4096, 1, 0);
    if (!c->n_experts) /* OLMoE and Qwen-MoE say num_experts */
        c->n_experts = read_int(&r, "num_experts", 0, 4096, 1, 0);
    c->moe_ff = read_int(&r, "moe_intermediate_size", 1, 1 << 18, 1, c->ff);
    c->shared_ff = read_int(&r, "shared_expert_intermediate_size", 0, 1 << 18, 1, 0);
    c->norm_topk_prob = read_bool(&r, "norm_topk_prob", -1);
    c->decoder_sparse_step = read_int(&r, "decoder_sparse_step", 1, 1 << 16, 1, 1);
    c->clip_qkv = read_num(&r, "clip_qkv", 1e-6, 1e9, 0);
    if (!r.st && read_bool(&r, "use_sliding_window", 0))
        r.st = moe_fail(err, MOE_EUNSUPPORTED, "%s: \"use_sliding_window\": true is not supported", path);
    read_layer_list(&r, "mlp_only_layers", c);
    read_expert_names(&r, c);
    /* MiCRo counts a layer once per expert in num_hidden_layers (its KV
     * cache slots); backbone_num_layers is the real depth */
    int backbone = read_int(&r, "backbone_num_layers", 1, 1024, 1, 0);
    if (backbone)
        c->n_layers = backbone;
    c->k = read_int(&r, "num_experts_per_tok", 1, 4096, 1, c->n_experts ? 2 : 0);
    c->tied = read_bool(&r, "tie_word_embeddings", 0);
    c->attn_bias = read_bool(&r, "attention_bias", 0);
    c->mlp_bias = read_bool(&r, "mlp_bias", 0);
    c->rope_theta = read_num(&r, "rope_theta", 1e-3, 1e12, 10000);
    c->norm_eps = read_num(&r, "rms_norm_eps", 0, 1, 1e-6);
    c->sliding_window = read_int(&r, "sliding_window", 1, 1 << 24, 1, 0);
    c->bos_id = read_token_id(&r, "bos_token_id", c->vocab);
    c->eos_id = read_token_id(&r, "eos_token_id", c->vocab);
    read_rope_scaling(&r, c);
    const cJSON *act = field(root, "hidden_act");
    if (!r.st && act && cJSON_IsString(act) && strcmp(act->valuestring, "silu") != 0)
        r.st = moe_fail(err, MOE_EUNSUPPORTED, "%s: hidden_act \"%.40s\" is not supported (only silu)",
                        path, act->valuestring);
    cJSON_Delete(root);
    if (r.st) {
        config_done(c);
        return r.st;
    }

    if (c->n_heads % c->n_kv_heads != 0 || c->head_dim < 2 || c->head_dim % 2 != 0)
        config_done(c);
    if (c->n_heads % c->n_kv_heads != 0)
        return moe_fail(err, MOE_EFORMAT,
                        "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                        c->n_heads, c->n_kv_heads);
    if (c->head_dim < 2 || c->head_dim % 2 != 0)
        return moe_fail(err, MOE_EFORMAT, "%s: head_dim %d must be even for rotary embeddings", path,
                        c->head_dim);
    if (c->n_experts && c->k > c->n_experts) {
        config_done(c);
        return moe_fail(err, MOE_EFORMAT, "%s: num_experts_per_tok %d exceeds the %d experts", path, c->k,
                        c->n_experts);
    }
    return MOE_OK;
}
