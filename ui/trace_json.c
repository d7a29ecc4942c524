/* Collecting the routing trace and writing it as JSON (see trace_json.h).
 *
 * Probabilities are written with 6 significant digits: far below what a
 * plot can show, and it keeps a trace of a 64-expert model readable. */
#include "trace_json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct trace_json {
    cJSON *root, *tokens;
    const moe_tokenizer *tok;
    int prompt;
    int oom;
};

int trace_colour_vote(const moe_token_trace *t)
{
    int best = -1, best_n = 0;
    for (int r = 0; r < t->n_routes; r++) {
        int e = t->routes[r].experts[0], n = 0;
        for (int q = 0; q < t->n_routes; q++)
            n += t->routes[q].experts[0] == e;
        if (n > best_n || (n == best_n && e < best)) {
            best = e;
            best_n = n;
        }
    }
    return best;
}

/* A JSON array of floats, printed compactly. */
static cJSON *float_array(const float *v, int n)
{
    size_t cap = (size_t)n * 16 + 3, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    buf[len++] = '[';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, i ? ",%.6g" : "%.6g", (double)v[i]);
    buf[len++] = ']';
    buf[len] = 0;
    cJSON *raw = cJSON_CreateRaw(buf);
    free(buf);
    return raw;
}

/* 1 if s[0..n) is valid UTF-8 (JSON strings must be). */
static int utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int len = s[i] < 0x80 ? 1 : (s[i] & 0xE0) == 0xC0 ? 2 : (s[i] & 0xF0) == 0xE0 ? 3
                                  : (s[i] & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || i + (size_t)len > n || (len == 2 && s[i] < 0xC2))
            return 0;
        for (int j = 1; j < len; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        i += (size_t)len;
    }
    return 1;
}

/* The token's text; a piece that is part of a character (a byte of a
 * multi-byte character) goes in "bytes" instead. */
static void add_text(cJSON *o, const moe_tokenizer *tok, int32_t id)
{
    size_t len = 0;
    const char *piece = tok ? moe_tokenizer_piece(tok, id, &len) : NULL;
    if (!piece) {
        cJSON_AddNullToObject(o, "text");
    } else if (utf8_ok((const unsigned char *)piece, len) && !memchr(piece, 0, len)) {
        char *z = strndup(piece, len);
        cJSON_AddStringToObject(o, "text", z ? z : "");
        free(z);
    } else {
        int b[16], n = 0;
        for (size_t i = 0; i < len && n < 16; i++)
            b[n++] = (unsigned char)piece[i];
        cJSON_AddNullToObject(o, "text");
        cJSON_AddItemToObject(o, "bytes", cJSON_CreateIntArray(b, n));
    }
}

static void on_token(void *ctx, const moe_token_trace *t)
{
    trace_json *tj = ctx;
    cJSON *tok = cJSON_CreateObject(), *layers = cJSON_CreateArray();
    if (!tok || !layers) {
        tj->oom = 1;
        cJSON_Delete(tok);
        cJSON_Delete(layers);
        return;
    }
    cJSON_AddNumberToObject(tok, "pos", t->pos);
    cJSON_AddNumberToObject(tok, "id", t->id);
    add_text(tok, tj->tok, t->id);
    cJSON_AddBoolToObject(tok, "prompt", tj->prompt);
    if (t->n_routes)
        cJSON_AddNumberToObject(tok, "colour", trace_colour_vote(t));
    for (int r = 0; r < t->n_routes; r++) {
        const moe_route *rt = &t->routes[r];
        cJSON *l = cJSON_CreateObject();
        cJSON_AddNumberToObject(l, "layer", rt->layer);
        cJSON_AddItemToObject(l, "probs", float_array(rt->probs, rt->n_experts));
        cJSON_AddItemToObject(l, "experts", cJSON_CreateIntArray(rt->experts, rt->k));
        cJSON_AddItemToObject(l, "weights", float_array(rt->weights, rt->k));
        if (rt->overflow) {
            int flags[4096];
            for (int j = 0; j < rt->k && j < 4096; j++)
                flags[j] = rt->overflow[j];
            cJSON_AddItemToObject(l, "overflow", cJSON_CreateIntArray(flags, rt->k < 4096 ? rt->k : 4096));
        }
        cJSON_AddItemToArray(layers, l);
    }
    cJSON_AddItemToObject(tok, "layers", layers);
    cJSON_AddItemToArray(tj->tokens, tok);
}

trace_json *trace_json_new(const moe_model *m, const moe_tokenizer *tok, const moe_sampler_params *sp)
{
    trace_json *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->tok = tok;
    const moe_model_info *in = moe_model_info_get(m);
    t->root = cJSON_CreateObject();
    cJSON *model = cJSON_AddObjectToObject(t->root, "model");
    cJSON_AddStringToObject(model, "arch", in->arch);
    cJSON_AddStringToObject(model, "hf_class", in->hf_class);
    cJSON_AddStringToObject(model, "path", in->path);
    cJSON_AddNumberToObject(model, "n_layers", in->n_layers);
    cJSON_AddNumberToObject(model, "n_moe_layers", in->n_moe_layers);
    cJSON_AddNumberToObject(model, "n_experts", in->n_experts);
    cJSON_AddNumberToObject(model, "k", in->k);
    if (in->expert_names)
        cJSON_AddItemToObject(model, "expert_names", cJSON_CreateStringArray(in->expert_names, in->n_experts));
    cJSON *s = cJSON_AddObjectToObject(t->root, "sampler");
    /* floats rounded to what a user typed: 0.95, not 0.949999988 */
    cJSON_AddNumberToObject(s, "temp", round(sp->temp * 1e6) / 1e6);
    cJSON_AddNumberToObject(s, "top_k", sp->top_k);
    cJSON_AddNumberToObject(s, "top_p", round(sp->top_p * 1e6) / 1e6);
    cJSON_AddNumberToObject(s, "min_p", round(sp->min_p * 1e6) / 1e6);
    cJSON_AddNumberToObject(s, "repeat_penalty", round(sp->repeat_penalty * 1e6) / 1e6);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)sp->seed);
    cJSON_AddStringToObject(s, "seed", seed); /* a string: JSON numbers lose 64-bit precision */
    cJSON_AddStringToObject(t->root, "colour_mode", "layer vote");
    t->tokens = cJSON_AddArrayToObject(t->root, "tokens");
    if (!t->tokens) {
        trace_json_free(t);
        return NULL;
    }
    return t;
}

void trace_json_free(trace_json *t)
{
    if (!t)
        return;
    cJSON_Delete(t->root);
    free(t);
}

void trace_json_set_controls(trace_json *t, const moe_control_event *log, int n)
{
    cJSON_DeleteItemFromObject(t->root, "controls");
    cJSON *arr = cJSON_AddArrayToObject(t->root, "controls");
    for (int i = 0; arr && i < n; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "pos", log[i].pos);
        cJSON_AddStringToObject(c, "change", log[i].text);
        cJSON_AddItemToArray(arr, c);
    }
}

moe_trace_sink trace_json_sink(trace_json *t)
{
    return (moe_trace_sink){t, on_token};
}

void trace_json_set_prompt(trace_json *t, int prompt)
{
    t->prompt = prompt;
}

int trace_json_write(trace_json *t, const char *path, char *msg, size_t msglen)
{
    if (t->oom) {
        snprintf(msg, msglen, "%s: out of memory while recording the trace", path);
        return -1;
    }
    char *text = cJSON_Print(t->root);
    if (!text) {
        snprintf(msg, msglen, "%s: out of memory formatting the trace", path);
        return -1;
    }
    size_t len = strlen(text), plen = strlen(path);
    char *tmp = malloc(plen + 16);
    int fd = -1, rc = -1;
    if (!tmp) {
        snprintf(msg, msglen, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, plen + 16, "%s.tmpXXXXXX", path);
    if ((fd = mkstemp(tmp)) < 0) {
        snprintf(msg, msglen, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        goto done;
    }
    mode_t um = umask(0);
    umask(um);
    fchmod(fd, 0666 & ~um); /* mkstemp's 0600 would hide the file from a colleague */
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0) {
            snprintf(msg, msglen, "%s: write failed: %s", path, strerror(errno));
            unlink(tmp);
            goto done;
        }
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1 || fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        snprintf(msg, msglen, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(msg, msglen, "%s: cannot replace the file: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
done:
    if (fd >= 0)
        close(fd);
    free(tmp);
    free(text);
    return rc;
}
