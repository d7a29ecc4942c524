/* Session transcripts in memory and as JSON (see transcript.h and
 * docs/transcript.schema.json).
 *
 * The file is one JSON object written a key per line, with one line per
 * token, turn and control change, so that a transcript diffs and greps
 * well. Each line is printed by cJSON; probabilities and weights are fixed
 * decimals with five places (error at most 5e-6, well inside the 1e-4 the
 * format promises) with trailing zeros dropped, which keeps a 64-expert
 * model's transcript small. */
#include "transcript.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_EXPERTS 4096
#define MAX_LAYERS 4096
#define MAX_TOKENS (1 << 24)
#define MAX_FILE ((size_t)1 << 31)

typedef struct {
    transcript_token pub;
    char *text;                /* owned copy of pub.text */
    int *k;                    /* (n_routes) experts chosen per route; one block with the next three */
    int *experts;              /* (n_routes, n_experts) best first; k[r] of each row used */
    float *weights;            /* (n_routes, n_experts) */
    uint8_t *overflow;         /* (n_routes, n_experts) or NULL */
} tok_rec;

typedef struct {
    transcript_turn pub;
    char *role, *text;
    size_t len;
} turn_rec;

typedef struct {
    transcript_control pub;
    char *change;
} ctl_rec;

struct transcript {
    int version;
    char created[32];
    double t0;                 /* wall-clock seconds at creation */
    transcript_model model;
    char *arch, *hf_class, *path, *digest;
    char **names;
    int *moe_layers;
    moe_sampler_params sp;
    const moe_tokenizer *tok;
    int prompt_mode;
    tok_rec *toks;
    float *probs;              /* (cap, n_moe_layers, n_experts) */
    int n, cap;
    turn_rec *turns;
    int n_turns, cap_turns;
    ctl_rec *ctls;
    int n_ctls, cap_ctls;
    int n_log_seen;            /* entries of the session log already synced */
    char err[160];             /* the first recording failure; reported by save */
};

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t used;
} sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const uint8_t *p)
{
    uint32_t w[64], a, b, cc, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g, g = f, f = e, e = d + t1, d = cc, cc = b, b = a, a = t1 + t2;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
    c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

static void sha256_init(sha256_ctx *c)
{
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, H0, sizeof H0);
    c->len = 0;
    c->used = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n)
{
    c->len += n;
    while (n) {
        size_t take = 64 - c->used < n ? 64 - c->used : n;
        memcpy(c->buf + c->used, p, take);
        c->used += take, p += take, n -= take;
        if (c->used == 64) {
            sha256_block(c, c->buf);
            c->used = 0;
        }
    }
}

static void sha256_hex(sha256_ctx *c, char hex[65])
{
    uint64_t bits = c->len * 8;
    uint8_t pad = 0x80, zero = 0, lenb[8];
    sha256_update(c, &pad, 1);
    while (c->used != 56)
        sha256_update(c, &zero, 1);
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, lenb, 8);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 8 * i, 9, "%08x", c->h[i]);
}

int transcript_sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    sha256_ctx c;
    sha256_init(&c);
    uint8_t buf[1 << 14];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        sha256_update(&c, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        errno = EIO;
        return -1;
    }
    sha256_hex(&c, hex);
    return 0;
}

/* ---- small helpers ------------------------------------------------------- */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void iso_time(double t, char out[32])
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static char *dup_s(const char *s)
{
    return s ? dup_n(s, strlen(s)) : NULL;
}

int transcript_utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int len = s[i] < 0x80 ? 1 : (s[i] & 0xE0) == 0xC0 ? 2 : (s[i] & 0xF0) == 0xE0 ? 3
                                  : (s[i] & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || !s[i] || i + (size_t)len > n || (len == 2 && s[i] < 0xC2))
            return 0;
        for (int j = 1; j < len; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        i += (size_t)len;
    }
    return 1;
}

/* s[0..n) with each byte that is not part of a valid UTF-8 character (or
 * is NUL) replaced by U+FFFD: what a JSON string can hold. Caller frees. */
static char *utf8_clean(const char *s, size_t n)
{
    char *out = malloc(3 * n + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        while (len <= 4 && i + len <= n && !transcript_utf8_ok((const unsigned char *)s + i, len))
            len++;
        if (len <= 4 && i + len <= n) {
            memcpy(out + o, s + i, len);
            o += len, i += len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3, i++;
        }
    }
    out[o] = 0;
    return out;
}

static void set_err(transcript *t, const char *fmt, ...)
{
    if (t->err[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof t->err, fmt, ap);
    va_end(ap);
}

int transcript_colour_vote(const moe_token_trace *t)
{
    int best = -1, best_n = 0;
    for (int r = 0; r < t->n_routes; r++) {
        if (t->routes[r].k < 1)
            continue;
        int e = t->routes[r].experts[0], n = 0;
        for (int q = 0; q < t->n_routes; q++)
            n += t->routes[q].k > 0 && t->routes[q].experts[0] == e;
        if (n > best_n || (n == best_n && e < best)) {
            best = e;
            best_n = n;
        }
    }
    return best;
}

/* ---- building ------------------------------------------------------------ */

static transcript *alloc_empty(void)
{
    transcript *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->version = TRANSCRIPT_VERSION;
    t->sp = moe_sampler_defaults();
    return t;
}

/* Point the public model view at the owned strings. */
static void model_view(transcript *t)
{
    t->model.arch = t->arch;
    t->model.hf_class = t->hf_class ? t->hf_class : "";
    t->model.path = t->path;
    t->model.config_sha256 = t->digest;
    t->model.moe_layers = t->moe_layers;
    t->model.expert_names = (const char *const *)t->names;
}

transcript *transcript_new(const moe_model *m, const moe_tokenizer *tok, const moe_sampler_params *sp)
{
    transcript *t = alloc_empty();
    if (!t)
        return NULL;
    const moe_model_info *in = moe_model_info_get(m);
    t->tok = tok;
    t->sp = *sp;
    t->t0 = wall_now();
    iso_time(t->t0, t->created);
    t->arch = dup_s(in->arch);
    t->hf_class = dup_s(in->hf_class ? in->hf_class : "");
    t->path = dup_s(in->path);
    if (!t->arch || !t->hf_class || !t->path)
        goto fail;
    size_t plen = strlen(in->path);
    char *cfg = malloc(plen + 16), hex[65];
    if (!cfg)
        goto fail;
    snprintf(cfg, plen + 16, "%s/config.json", in->path);
    if (transcript_sha256_file(cfg, hex) == 0)
        t->digest = dup_s(hex);
    free(cfg);
    t->model.n_layers = in->n_layers;
    t->model.n_moe_layers = in->n_moe_layers;
    t->model.n_experts = in->n_experts;
    t->model.k = in->k;
    t->model.vocab = in->vocab;
    if (in->expert_names) {
        if (!(t->names = calloc((size_t)in->n_experts, sizeof *t->names)))
            goto fail;
        for (int e = 0; e < in->n_experts; e++)
            if (!(t->names[e] = dup_s(in->expert_names[e] ? in->expert_names[e] : "")))
                goto fail;
    }
    model_view(t);
    return t;
fail:
    transcript_free(t);
    return NULL;
}

void transcript_free(transcript *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n; i++) {
        free(t->toks[i].text);
        free(t->toks[i].k);
    }
    for (int i = 0; i < t->n_turns; i++) {
        free(t->turns[i].role);
        free(t->turns[i].text);
    }
    for (int i = 0; i < t->n_ctls; i++)
        free(t->ctls[i].change);
    if (t->names)
        for (int e = 0; e < t->model.n_experts; e++)
            free(t->names[e]);
    free(t->names);
    free(t->toks);
    free(t->probs);
    free(t->turns);
    free(t->ctls);
    free(t->moe_layers);
    free(t->arch);
    free(t->hf_class);
    free(t->path);
    free(t->digest);
    free(t);
}

static size_t route_cells(const transcript *t)
{
    return (size_t)t->model.n_moe_layers * (size_t)t->model.n_experts;
}

/* Make room for one more token; 0 or -1. */
static int grow_tokens(transcript *t)
{
    if (t->n < t->cap)
        return 0;
    if (t->cap >= MAX_TOKENS)
        return -1;
    int cap = t->cap ? 2 * t->cap : 64;
    tok_rec *toks = realloc(t->toks, (size_t)cap * sizeof *toks);
    if (!toks)
        return -1;
    t->toks = toks;
    size_t cells = route_cells(t);
    if (cells) {
        float *p = realloc(t->probs, (size_t)cap * cells * sizeof *p);
        if (!p)
            return -1;
        t->probs = p;
    }
    t->cap = cap;
    return 0;
}

/* The routing block of a token: k, experts, weights, overflow. */
static int alloc_routes(const transcript *t, tok_rec *r, int with_overflow)
{
    size_t nr = (size_t)t->model.n_moe_layers, cells = route_cells(t);
    size_t bytes = nr * sizeof(int) + cells * (sizeof(int) + sizeof(float)) + (with_overflow ? cells : 0);
    char *blk = calloc(1, bytes ? bytes : 1);
    if (!blk)
        return -1;
    r->k = (int *)blk;
    r->experts = (int *)(blk + nr * sizeof(int));
    r->weights = (float *)(blk + nr * sizeof(int) + cells * sizeof(int));
    r->overflow = with_overflow ? (uint8_t *)(blk + nr * sizeof(int) + cells * (sizeof(int) + sizeof(float))) : NULL;
    return 0;
}

static void set_text(transcript *t, tok_rec *r, int32_t id)
{
    size_t len = 0;
    const char *piece = t->tok ? moe_tokenizer_piece(t->tok, id, &len) : NULL;
    r->text = piece ? dup_n(piece, len) : NULL;
    r->pub.text = r->text;
    r->pub.len = r->text ? len : 0;
}

int transcript_add_token(transcript *t, const moe_token_trace *tt)
{
    int nr = t->model.n_moe_layers, ne = t->model.n_experts;
    if (tt->pos < 0 || tt->pos > t->n) {
        set_err(t, "token at position %d skips past the %d recorded", tt->pos, t->n);
        return -1;
    }
    if (tt->n_routes != nr) {
        set_err(t, "token %d has %d MoE layers, the model %d", tt->pos, tt->n_routes, nr);
        return -1;
    }
    for (int r = 0; r < nr; r++)
        if (tt->routes[r].n_experts != ne || tt->routes[r].k < 0 || tt->routes[r].k > ne ||
            (t->moe_layers && tt->routes[r].layer != t->moe_layers[r])) {
            set_err(t, "token %d: MoE layer %d does not match the model", tt->pos, r);
            return -1;
        }
    if (nr > 0 && !t->moe_layers) {
        if (!(t->moe_layers = malloc((size_t)nr * sizeof *t->moe_layers)))
            goto oom;
        for (int r = 0; r < nr; r++)
            t->moe_layers[r] = tt->routes[r].layer;
        t->model.moe_layers = t->moe_layers;
    }
    int with_overflow = 0;
    for (int r = 0; r < nr; r++)
        with_overflow |= tt->routes[r].overflow != NULL;
    tok_rec fresh = {0}, *rec;
    if (alloc_routes(t, &fresh, with_overflow))
        goto oom;
    if (tt->pos == t->n) {
        if (grow_tokens(t)) {
            free(fresh.k);
            goto oom;
        }
        rec = &t->toks[t->n];
        *rec = fresh;
        rec->pub.pos = tt->pos;
        rec->pub.prompt = t->prompt_mode;
        rec->pub.time = wall_now() - t->t0;
        rec->pub.id = tt->id;
        set_text(t, rec, tt->id);
        t->n++;
    } else { /* a re-prefill: new routing, same token */
        rec = &t->toks[tt->pos];
        free(rec->k);
        rec->k = fresh.k, rec->experts = fresh.experts, rec->weights = fresh.weights, rec->overflow = fresh.overflow;
        if (rec->pub.id != tt->id) {
            free(rec->text);
            rec->pub.id = tt->id;
            set_text(t, rec, tt->id);
        }
    }
    rec->pub.colour = transcript_colour_vote(tt);
    float *probs = t->probs + (size_t)tt->pos * route_cells(t);
    for (int r = 0; r < nr; r++) {
        const moe_route *rt = &tt->routes[r];
        memcpy(probs + (size_t)r * ne, rt->probs, (size_t)ne * sizeof *probs);
        rec->k[r] = rt->k;
        for (int j = 0; j < rt->k; j++) {
            rec->experts[(size_t)r * ne + j] = rt->experts[j];
            rec->weights[(size_t)r * ne + j] = rt->weights[j];
            if (rec->overflow)
                rec->overflow[(size_t)r * ne + j] = rt->overflow ? rt->overflow[j] : 0;
        }
    }
    return 0;
oom:
    set_err(t, "out of memory recording token %d", tt->pos);
    return -1;
}

static void sink_on_token(void *ctx, const moe_token_trace *tt)
{
    transcript_add_token(ctx, tt);
}

moe_trace_sink transcript_sink(transcript *t)
{
    return (moe_trace_sink){t, sink_on_token};
}

void transcript_set_prompt(transcript *t, int prompt)
{
    t->prompt_mode = !!prompt;
}

int transcript_add_turn(transcript *t, const char *role, const char *text)
{
    if (t->n_turns == t->cap_turns) {
        int cap = t->cap_turns ? 2 * t->cap_turns : 8;
        turn_rec *g = realloc(t->turns, (size_t)cap * sizeof *g);
        if (!g)
            goto oom;
        t->turns = g;
        t->cap_turns = cap;
    }
    turn_rec *r = &t->turns[t->n_turns];
    memset(r, 0, sizeof *r);
    r->role = dup_s(role);
    r->text = dup_s(text ? text : "");
    if (!r->role || !r->text) {
        free(r->role);
        free(r->text);
        goto oom;
    }
    r->len = strlen(r->text);
    r->pub = (transcript_turn){r->role, r->text, t->n, wall_now() - t->t0};
    return t->n_turns++;
oom:
    set_err(t, "out of memory recording a turn");
    return -1;
}

int transcript_turn_append(transcript *t, int turn, const char *text, size_t len)
{
    if (turn < 0 || turn >= t->n_turns)
        return -1;
    turn_rec *r = &t->turns[turn];
    char *g = realloc(r->text, r->len + len + 1);
    if (!g) {
        set_err(t, "out of memory recording a turn");
        return -1;
    }
    memcpy(g + r->len, text, len);
    r->len += len;
    g[r->len] = 0;
    r->text = g;
    r->pub.text = g;
    return 0;
}

static int add_control(transcript *t, int pos, const char *change, double time)
{
    if (t->n_ctls == t->cap_ctls) {
        int cap = t->cap_ctls ? 2 * t->cap_ctls : 16;
        ctl_rec *g = realloc(t->ctls, (size_t)cap * sizeof *g);
        if (!g)
            goto oom;
        t->ctls = g;
        t->cap_ctls = cap;
    }
    ctl_rec *c = &t->ctls[t->n_ctls];
    if (!(c->change = dup_s(change)))
        goto oom;
    c->pub = (transcript_control){pos, c->change, time};
    t->n_ctls++;
    return 0;
oom:
    set_err(t, "out of memory recording a control change");
    return -1;
}

int transcript_add_control(transcript *t, int pos, const char *change, int timed)
{
    return add_control(t, pos, change, timed ? wall_now() - t->t0 : -1);
}

int transcript_sync_controls(transcript *t, const moe_control_event *log, int n, int timed)
{
    for (; t->n_log_seen < n; t->n_log_seen++)
        if (transcript_add_control(t, log[t->n_log_seen].pos, log[t->n_log_seen].text, timed))
            return -1;
    return 0;
}

void transcript_controls_seen(transcript *t, int n)
{
    t->n_log_seen = n;
}

/* ---- reading ------------------------------------------------------------- */

int transcript_version(const transcript *t) { return t->version; }
const char *transcript_created(const transcript *t) { return t->created; }
const transcript_model *transcript_model_get(const transcript *t) { return &t->model; }
const moe_sampler_params *transcript_sampler(const transcript *t) { return &t->sp; }
int transcript_n_tokens(const transcript *t) { return t->n; }
int transcript_n_turns(const transcript *t) { return t->n_turns; }
int transcript_n_controls(const transcript *t) { return t->n_ctls; }
const transcript_token *transcript_token_at(const transcript *t, int i) { return &t->toks[i].pub; }
const transcript_turn *transcript_turn_at(const transcript *t, int i) { return &t->turns[i].pub; }
const transcript_control *transcript_control_at(const transcript *t, int i) { return &t->ctls[i].pub; }

void transcript_route(const transcript *t, int i, int r, moe_route *out)
{
    const tok_rec *rec = &t->toks[i];
    size_t ne = (size_t)t->model.n_experts;
    out->layer = t->moe_layers ? t->moe_layers[r] : r;
    out->n_experts = (int)ne;
    out->probs = t->probs + ((size_t)i * (size_t)t->model.n_moe_layers + (size_t)r) * ne;
    out->k = rec->k[r];
    out->experts = rec->experts + (size_t)r * ne;
    out->weights = rec->weights + (size_t)r * ne;
    out->overflow = rec->overflow ? rec->overflow + (size_t)r * ne : NULL;
}

void transcript_token_trace(const transcript *t, int i, moe_route *routes, moe_token_trace *out)
{
    out->pos = t->toks[i].pub.pos;
    out->id = t->toks[i].pub.id;
    out->n_routes = t->model.n_moe_layers;
    out->routes = routes;
    for (int r = 0; r < t->model.n_moe_layers; r++)
        transcript_route(t, i, r, &routes[r]);
}

/* ---- writing ------------------------------------------------------------- */

/* A number with at most five decimals, trailing zeros dropped: "0.25", "1", "0".
 * Written by hand below 1e12 (the probabilities and weights of every token:
 * snprintf's float formatting was most of an autosave's time). For a value
 * that is a float, v * 1e5 is exact in double, so rounding it to nearest
 * even gives the digits "%.5f" gives; a double within 1e-11 of a tie may
 * differ in its last digit. */
static int fixed5(char *buf, size_t cap, double v)
{
    if (!isfinite(v))
        v = 0;
    if (fabs(v) < 1e12 && cap >= 24) {
        long long q = (long long)nearbyint(v * 1e5);
        unsigned long long u = q < 0 ? 0ull - (unsigned long long)q : (unsigned long long)q;
        unsigned long long ip = u / 100000, fp = u % 100000;
        char digits[24];
        int nd = 0, n = 0;
        do
            digits[nd++] = (char)('0' + ip % 10);
        while (ip /= 10);
        if (q < 0)
            buf[n++] = '-';
        while (nd)
            buf[n++] = digits[--nd];
        if (fp) {
            buf[n++] = '.';
            for (unsigned long long d = 10000; fp; d /= 10) {
                buf[n++] = (char)('0' + fp / d);
                fp %= d;
            }
        }
        buf[n] = 0;
        return n;
    }
    int n = snprintf(buf, cap, "%.5f", v);
    while (n > 1 && buf[n - 1] == '0')
        buf[--n] = 0;
    if (n > 1 && buf[n - 1] == '.')
        buf[--n] = 0;
    if (!strcmp(buf, "-0"))
        n = snprintf(buf, cap, "0");
    return n;
}

static cJSON *fixed_array(const float *v, int n)
{
    size_t cap = (size_t)n * 12 + 3, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    buf[len++] = '[';
    for (int i = 0; i < n; i++) {
        if (i)
            buf[len++] = ',';
        len += (size_t)fixed5(buf + len, cap - len, v[i]);
    }
    buf[len++] = ']';
    buf[len] = 0;
    cJSON *raw = cJSON_CreateRaw(buf);
    free(buf);
    return raw;
}

static cJSON *time_number(double t)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.3f", t);
    return cJSON_CreateRaw(buf);
}

static cJSON *token_json(const transcript *t, int i)
{
    const tok_rec *rec = &t->toks[i];
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "pos", rec->pub.pos);
    cJSON_AddNumberToObject(o, "id", rec->pub.id);
    if (rec->text && transcript_utf8_ok((const unsigned char *)rec->text, rec->pub.len)) {
        cJSON_AddStringToObject(o, "text", rec->text);
    } else {
        cJSON_AddNullToObject(o, "text");
        if (rec->text) { /* part of a character, or a NUL: the bytes themselves */
            int b[64], n = 0;
            for (size_t j = 0; j < rec->pub.len && n < 64; j++)
                b[n++] = (unsigned char)rec->text[j];
            cJSON_AddItemToObject(o, "bytes", cJSON_CreateIntArray(b, n));
        }
    }
    cJSON_AddBoolToObject(o, "prompt", rec->pub.prompt);
    if (rec->pub.time >= 0)
        cJSON_AddItemToObject(o, "time", time_number(rec->pub.time));
    if (t->model.n_moe_layers)
        cJSON_AddNumberToObject(o, "colour", rec->pub.colour);
    cJSON *layers = cJSON_AddArrayToObject(o, "layers");
    for (int r = 0; layers && r < t->model.n_moe_layers; r++) {
        moe_route rt;
        transcript_route(t, i, r, &rt);
        cJSON *l = cJSON_CreateObject();
        cJSON_AddNumberToObject(l, "layer", rt.layer);
        cJSON_AddItemToObject(l, "probs", fixed_array(rt.probs, rt.n_experts));
        cJSON_AddItemToObject(l, "experts", cJSON_CreateIntArray(rt.experts, rt.k));
        cJSON_AddItemToObject(l, "weights", fixed_array(rt.weights, rt.k));
        if (rt.overflow) {
            int flags[MAX_EXPERTS];
            for (int j = 0; j < rt.k; j++)
                flags[j] = rt.overflow[j];
            cJSON_AddItemToObject(l, "overflow", cJSON_CreateIntArray(flags, rt.k));
        }
        cJSON_AddItemToArray(layers, l);
    }
    return o;
}

static cJSON *model_json(const transcript *t)
{
    const transcript_model *m = &t->model;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "arch", m->arch);
    cJSON_AddStringToObject(o, "hf_class", m->hf_class);
    cJSON_AddStringToObject(o, "path", m->path);
    if (m->config_sha256)
        cJSON_AddStringToObject(o, "config_sha256", m->config_sha256);
    else
        cJSON_AddNullToObject(o, "config_sha256");
    cJSON_AddNumberToObject(o, "n_layers", m->n_layers);
    cJSON_AddNumberToObject(o, "n_moe_layers", m->n_moe_layers);
    cJSON_AddNumberToObject(o, "n_experts", m->n_experts);
    cJSON_AddNumberToObject(o, "k", m->k);
    cJSON_AddNumberToObject(o, "vocab", m->vocab);
    if (m->moe_layers)
        cJSON_AddItemToObject(o, "moe_layers", cJSON_CreateIntArray(m->moe_layers, m->n_moe_layers));
    if (m->expert_names)
        cJSON_AddItemToObject(o, "expert_names", cJSON_CreateStringArray(m->expert_names, m->n_experts));
    return o;
}

static cJSON *sampler_json(const moe_sampler_params *sp)
{
    cJSON *s = cJSON_CreateObject();
    /* floats rounded to what a user typed: 0.95, not 0.949999988 */
    cJSON_AddNumberToObject(s, "temp", round(sp->temp * 1e6) / 1e6);
    cJSON_AddNumberToObject(s, "top_k", sp->top_k);
    cJSON_AddNumberToObject(s, "top_p", round(sp->top_p * 1e6) / 1e6);
    cJSON_AddNumberToObject(s, "min_p", round(sp->min_p * 1e6) / 1e6);
    cJSON_AddNumberToObject(s, "repeat_penalty", round(sp->repeat_penalty * 1e6) / 1e6);
    cJSON_AddNumberToObject(s, "repeat_last_n", sp->repeat_last_n);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)sp->seed);
    cJSON_AddStringToObject(s, "seed", seed); /* a string: JSON numbers lose 64-bit precision */
    return s;
}

/* Print item unformatted to f after `prefix`; -1 when out of memory. */
static int put_json(FILE *f, const char *prefix, cJSON *item, const char *suffix)
{
    char *s = item ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_Delete(item);
    if (!s)
        return -1;
    fputs(prefix, f);
    fputs(s, f);
    fputs(suffix, f);
    free(s);
    return 0;
}

static int write_doc(const transcript *t, FILE *f)
{
    char saved[32];
    iso_time(wall_now(), saved);
    fprintf(f, "{\n\"format\": \"%s\",\n\"version\": %d,\n", TRANSCRIPT_FORMAT, TRANSCRIPT_VERSION);
    fprintf(f, "\"created\": \"%s\",\n\"saved\": \"%s\",\n\"engine\": \"moescope %s\",\n", t->created, saved,
            PACKAGE_VERSION);
    if (put_json(f, "\"model\": ", model_json(t), ",\n") || put_json(f, "\"sampler\": ", sampler_json(&t->sp), ",\n"))
        return -1;
    fprintf(f, "\"colour_mode\": \"layer vote\",\n\"n_tokens\": %d,\n\"turns\": [", t->n);
    for (int i = 0; i < t->n_turns; i++) {
        const transcript_turn *u = &t->turns[i].pub;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "role", u->role);
        char *clean = utf8_clean(u->text, strlen(u->text));
        if (!clean) {
            cJSON_Delete(o);
            return -1;
        }
        cJSON_AddStringToObject(o, "text", clean);
        free(clean);
        cJSON_AddNumberToObject(o, "token", u->token);
        cJSON_AddItemToObject(o, "time", time_number(u->time));
        if (put_json(f, i ? ",\n" : "\n", o, ""))
            return -1;
    }
    fputs(t->n_turns ? "\n],\n\"tokens\": [" : "],\n\"tokens\": [", f);
    for (int i = 0; i < t->n; i++)
        if (put_json(f, i ? ",\n" : "\n", token_json(t, i), ""))
            return -1;
    fputs(t->n ? "\n],\n\"controls\": [" : "],\n\"controls\": [", f);
    for (int i = 0; i < t->n_ctls; i++) {
        const transcript_control *c = &t->ctls[i].pub;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "pos", c->pos);
        cJSON_AddStringToObject(o, "change", c->change);
        if (c->time >= 0)
            cJSON_AddItemToObject(o, "time", time_number(c->time));
        if (put_json(f, i ? ",\n" : "\n", o, ""))
            return -1;
    }
    fputs(t->n_ctls ? "\n]\n}\n" : "]\n}\n", f);
    return 0;
}

/* Written to a temporary file beside path, then renamed over it; with
 * `sync`, the file and then its directory are synced to disk. */
static int save(const transcript *t, const char *path, int sync, char *msg, size_t msglen)
{
    if (t->err[0]) {
        snprintf(msg, msglen, "%s: not saved: %s", path, t->err);
        return -1;
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16), *dir = malloc(plen + 2);
    int fd = -1, rc = -1, tmp_made = 0;
    FILE *f = NULL;
    if (!tmp || !dir) {
        snprintf(msg, msglen, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, plen + 16, "%s.tmpXXXXXX", path);
    if ((fd = mkstemp(tmp)) < 0) {
        snprintf(msg, msglen, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        goto done;
    }
    tmp_made = 1;
    mode_t um = umask(0);
    umask(um);
    if (fchmod(fd, 0666 & ~um) != 0) { /* mkstemp's 0600 would hide the file from a colleague */
        snprintf(msg, msglen, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    if (!(f = fdopen(fd, "w"))) {
        snprintf(msg, msglen, "%s: %s", path, strerror(errno));
        goto done;
    }
    fd = -1;
    errno = 0;
    if (write_doc(t, f)) {
        snprintf(msg, msglen, "%s: out of memory formatting the transcript", path);
        goto done;
    }
    if (fflush(f) != 0 || ferror(f) || (sync && fsync(fileno(f)) != 0)) {
        snprintf(msg, msglen, "%s: write failed: %s", path, strerror(errno ? errno : EIO));
        goto done;
    }
    int cr = fclose(f);
    f = NULL;
    if (cr != 0) {
        snprintf(msg, msglen, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        snprintf(msg, msglen, "%s: cannot replace the file: %s", path, strerror(errno));
        goto done;
    }
    tmp_made = 0;
    /* the rename itself is durable only once the directory is synced */
    memcpy(dir, path, plen + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int dfd = sync ? open(dir, O_RDONLY | O_DIRECTORY) : -1;
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
done:
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    if (tmp_made)
        unlink(tmp);
    free(tmp);
    free(dir);
    return rc;
}

int transcript_save(const transcript *t, const char *path, char *msg, size_t msglen)
{
    return save(t, path, 1, msg, msglen);
}

int transcript_save_quick(const transcript *t, const char *path, char *msg, size_t msglen)
{
    return save(t, path, 0, msg, msglen);
}

/* ---- loading ------------------------------------------------------------- */

typedef struct {
    const char *file;
    char *msg;
    size_t len;
} vctx;

__attribute__((format(printf, 2, 3))) static int bad(vctx *v, const char *fmt, ...)
{
    int n = snprintf(v->msg, v->len, "%s: ", v->file);
    if (n < 0 || (size_t)n >= v->len)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->msg + n, v->len - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *type_name(const cJSON *j)
{
    if (!j)
        return "missing";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsArray(j)) return "an array";
    return "an object";
}

/* An integer member in [lo, hi]. Absent: *out = dflt when opt, else an error. */
static int get_int(vctx *v, const cJSON *o, const char *where, const char *key, long lo, long hi, int opt, long dflt,
                   long *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j && opt) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(j))
        return bad(v, "%s%s%s: expected an integer, found %s", where, *where ? "." : "", key, type_name(j));
    double d = j->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi)
        return bad(v, "%s%s%s: %g is not an integer from %ld to %ld", where, *where ? "." : "", key, d, lo, hi);
    *out = (long)d;
    return 0;
}

static int get_num(vctx *v, const cJSON *o, const char *where, const char *key, double lo, double hi, int opt,
                   double dflt, double *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j && opt) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(j))
        return bad(v, "%s%s%s: expected a number, found %s", where, *where ? "." : "", key, type_name(j));
    if (!isfinite(j->valuedouble) || j->valuedouble < lo || j->valuedouble > hi)
        return bad(v, "%s%s%s: %g is out of range (%g to %g)", where, *where ? "." : "", key, j->valuedouble, lo, hi);
    *out = j->valuedouble;
    return 0;
}

/* A string member (NULL when absent and opt). */
static int get_str(vctx *v, const cJSON *o, const char *where, const char *key, int opt, const char **out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (!j && opt)
        return 0;
    if (!cJSON_IsString(j))
        return bad(v, "%s%s%s: expected a string, found %s", where, *where ? "." : "", key, type_name(j));
    *out = j->valuestring;
    return 0;
}

/* An array member of exactly n elements (n < 0: any number up to -n). */
static const cJSON *get_arr(vctx *v, const cJSON *o, const char *where, const char *key, int n, const char *what)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(j)) {
        bad(v, "%s%s%s: expected an array, found %s", where, *where ? "." : "", key, type_name(j));
        return NULL;
    }
    int size = cJSON_GetArraySize(j);
    if (n >= 0 && size != n) {
        bad(v, "%s%s%s: %d values where %d were expected (%s)", where, *where ? "." : "", key, size, n, what);
        return NULL;
    }
    if (n < 0 && size > -n) {
        bad(v, "%s%s%s: %d entries, more than the %d allowed", where, *where ? "." : "", key, size, -n);
        return NULL;
    }
    return j;
}

/* Numbers of an array into out[n], each in [lo, hi]. */
static int num_list(vctx *v, const cJSON *a, const char *where, const char *key, double lo, double hi, float *out)
{
    int i = 0;
    for (const cJSON *x = a->child; x; x = x->next, i++) {
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble < lo || x->valuedouble > hi)
            return bad(v, "%s%s%s[%d]: expected a number from %g to %g, found %s", where, *where ? "." : "", key, i, lo, hi,
                       cJSON_IsNumber(x) ? "one outside" : type_name(x));
        out[i] = (float)x->valuedouble;
    }
    return 0;
}

static int int_list(vctx *v, const cJSON *a, const char *where, const char *key, long lo, long hi, int *out)
{
    int i = 0;
    for (const cJSON *x = a->child; x; x = x->next, i++) {
        double d = cJSON_IsNumber(x) ? x->valuedouble : NAN;
        if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi)
            return bad(v, "%s%s%s[%d]: expected an integer from %ld to %ld, found %s", where, *where ? "." : "", key, i, lo, hi,
                       cJSON_IsNumber(x) ? "one outside" : type_name(x));
        out[i] = (int)d;
    }
    return 0;
}

static int load_model(vctx *v, transcript *t, const cJSON *root)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(m))
        return bad(v, "model: expected an object, found %s", type_name(m));
    const char *arch, *cls, *path, *digest = NULL;
    long nl, nm, ne, k, vocab;
    if (get_str(v, m, "model", "arch", 0, &arch) || get_str(v, m, "model", "hf_class", t->version == 0, &cls) ||
        get_str(v, m, "model", "path", 0, &path) ||
        get_int(v, m, "model", "n_layers", 1, MAX_LAYERS, 0, 0, &nl) ||
        get_int(v, m, "model", "n_moe_layers", 0, nl, 0, 0, &nm) ||
        get_int(v, m, "model", "n_experts", 0, MAX_EXPERTS, 0, 0, &ne) ||
        get_int(v, m, "model", "k", 0, ne, 0, 0, &k) ||
        get_int(v, m, "model", "vocab", 0, INT32_MAX, t->version == 0, 0, &vocab))
        return -1;
    if ((nm > 0) != (ne > 0))
        return bad(v, "model: %ld MoE layers but %ld experts", nm, ne);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(m, "config_sha256");
    if (d && !cJSON_IsNull(d)) {
        if (get_str(v, m, "model", "config_sha256", 0, &digest))
            return -1;
        if (strlen(digest) != 64 || strspn(digest, "0123456789abcdef") != 64)
            return bad(v, "model.config_sha256: expected 64 lower-case hex digits");
    }
    t->arch = dup_s(arch);
    t->hf_class = dup_s(cls ? cls : "");
    t->path = dup_s(path);
    t->digest = digest ? dup_s(digest) : NULL;
    if (!t->arch || !t->hf_class || !t->path || (digest && !t->digest))
        return bad(v, "out of memory");
    t->model.n_layers = (int)nl, t->model.n_moe_layers = (int)nm, t->model.n_experts = (int)ne;
    t->model.k = (int)k, t->model.vocab = (int)vocab;
    if (cJSON_GetObjectItemCaseSensitive(m, "moe_layers")) {
        const cJSON *a = get_arr(v, m, "model", "moe_layers", (int)nm, "one per MoE layer of the model");
        if (!a || !(t->moe_layers = malloc((size_t)(nm ? nm : 1) * sizeof *t->moe_layers)) ||
            int_list(v, a, "model", "moe_layers", 0, nl - 1, t->moe_layers))
            return a && !t->moe_layers ? bad(v, "out of memory") : -1;
        for (int r = 1; r < nm; r++)
            if (t->moe_layers[r] <= t->moe_layers[r - 1])
                return bad(v, "model.moe_layers: not in increasing layer order");
    }
    if (cJSON_GetObjectItemCaseSensitive(m, "expert_names")) {
        const cJSON *a = get_arr(v, m, "model", "expert_names", (int)ne, "one per expert of the model");
        if (!a)
            return -1;
        if (!(t->names = calloc((size_t)(ne ? ne : 1), sizeof *t->names)))
            return bad(v, "out of memory");
        int e = 0;
        for (const cJSON *x = a->child; x; x = x->next, e++) {
            if (!cJSON_IsString(x) || strlen(x->valuestring) > 200)
                return bad(v, "model.expert_names[%d]: expected a short string, found %s", e, type_name(x));
            if (!(t->names[e] = dup_s(x->valuestring)))
                return bad(v, "out of memory");
        }
    }
    model_view(t);
    return 0;
}

static int load_sampler(vctx *v, transcript *t, const cJSON *root)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "sampler");
    if (!cJSON_IsObject(s))
        return bad(v, "sampler: expected an object, found %s", type_name(s));
    double temp, top_p, min_p, rp;
    long top_k, last_n;
    const char *seed;
    if (get_num(v, s, "sampler", "temp", 0, 1e6, 0, 0, &temp) ||
        get_int(v, s, "sampler", "top_k", -1, INT32_MAX, 0, 0, &top_k) ||
        get_num(v, s, "sampler", "top_p", 0, 1e6, 0, 0, &top_p) ||
        get_num(v, s, "sampler", "min_p", 0, 1e6, 0, 0, &min_p) ||
        get_num(v, s, "sampler", "repeat_penalty", 0, 1e6, 0, 0, &rp) ||
        get_int(v, s, "sampler", "repeat_last_n", 0, INT32_MAX, t->version == 0, 64, &last_n) ||
        get_str(v, s, "sampler", "seed", 0, &seed))
        return -1;
    char *end;
    errno = 0;
    unsigned long long sd = strtoull(seed, &end, 10);
    if (!*seed || *end || *seed == '-' || *seed == '+' || *seed == ' ' || errno)
        return bad(v, "sampler.seed: expected a decimal string of a 64-bit seed, not \"%.40s\"", seed);
    t->sp.temp = (float)temp, t->sp.top_k = (int)top_k, t->sp.top_p = (float)top_p, t->sp.min_p = (float)min_p;
    t->sp.repeat_penalty = (float)rp, t->sp.repeat_last_n = (int)last_n, t->sp.seed = sd;
    return 0;
}

static int load_token(vctx *v, transcript *t, const cJSON *o, int i)
{
    char where[48];
    snprintf(where, sizeof where, "tokens[%d]", i);
    if (!cJSON_IsObject(o))
        return bad(v, "%s: expected an object, found %s", where, type_name(o));
    int nr = t->model.n_moe_layers, ne = t->model.n_experts;
    long pos, id, colour;
    double time;
    if (get_int(v, o, where, "pos", 0, MAX_TOKENS, 0, 0, &pos) ||
        get_int(v, o, where, "id", 0, t->model.vocab ? t->model.vocab - 1 : INT32_MAX, 0, 0, &id) ||
        get_num(v, o, where, "time", 0, 1e10, 1, -1, &time) ||
        get_int(v, o, where, "colour", -1, ne - 1, nr == 0, -1, &colour))
        return -1;
    if (pos != i)
        return bad(v, "%s.pos: %ld, but tokens are stored in position order from 0", where, pos);
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    if (!cJSON_IsBool(prompt))
        return bad(v, "%s.prompt: expected true or false, found %s", where, type_name(prompt));
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text"), *bytes = cJSON_GetObjectItemCaseSensitive(o, "bytes");
    if (!text || !(cJSON_IsString(text) || cJSON_IsNull(text)))
        return bad(v, "%s.text: expected a string or null, found %s", where, type_name(text));
    const cJSON *layers = get_arr(v, o, where, "layers", nr, "one per MoE layer of the model");
    if (!layers)
        return -1;
    tok_rec *rec = &t->toks[i];
    memset(rec, 0, sizeof *rec);
    int with_overflow = 0;
    for (const cJSON *l = layers->child; l; l = l->next)
        with_overflow |= cJSON_GetObjectItemCaseSensitive(l, "overflow") != NULL;
    if (alloc_routes(t, rec, with_overflow))
        return bad(v, "out of memory");
    t->n = i + 1; /* owned from here: transcript_free releases it */
    rec->pub.pos = (int)pos, rec->pub.id = (int32_t)id, rec->pub.prompt = cJSON_IsTrue(prompt);
    rec->pub.colour = (int)colour, rec->pub.time = time;
    if (cJSON_IsString(text)) {
        if (strlen(text->valuestring) > 4096)
            return bad(v, "%s.text: %zu bytes is too long for one token", where, strlen(text->valuestring));
        rec->text = dup_s(text->valuestring);
    } else if (bytes) {
        if (!cJSON_IsArray(bytes) || cJSON_GetArraySize(bytes) < 1 || cJSON_GetArraySize(bytes) > 64)
            return bad(v, "%s.bytes: expected an array of 1 to 64 byte values", where);
        int b[64], n = cJSON_GetArraySize(bytes);
        if (int_list(v, bytes, where, "bytes", 0, 255, b))
            return -1;
        if ((rec->text = malloc((size_t)n + 1))) {
            for (int j = 0; j < n; j++)
                rec->text[j] = (char)b[j];
            rec->text[n] = 0;
        }
        rec->pub.len = (size_t)n;
    }
    if ((cJSON_IsString(text) || bytes) && !rec->text)
        return bad(v, "out of memory");
    if (cJSON_IsString(text))
        rec->pub.len = strlen(rec->text);
    rec->pub.text = rec->text;
    float *probs = t->probs + (size_t)i * route_cells(t);
    int r = 0;
    for (const cJSON *l = layers->child; l; l = l->next, r++) {
        char lw[80];
        snprintf(lw, sizeof lw, "%s.layers[%d]", where, r);
        if (!cJSON_IsObject(l))
            return bad(v, "%s: expected an object, found %s", lw, type_name(l));
        long layer;
        if (get_int(v, l, lw, "layer", 0, t->model.n_layers - 1, 0, 0, &layer))
            return -1;
        if (t->moe_layers && t->moe_layers[r] >= 0 && layer != t->moe_layers[r])
            return bad(v, "%s.layer: %ld, but MoE layer %d of the model is layer %d", lw, layer, r,
                       t->moe_layers[r]);
        const cJSON *p = get_arr(v, l, lw, "probs", ne, "one per expert of the model");
        if (!p || num_list(v, p, lw, "probs", 0, 1.0001, probs + (size_t)r * ne))
            return -1;
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(l, "experts");
        if (!cJSON_IsArray(ex))
            return bad(v, "%s.experts: expected an array, found %s", lw, type_name(ex));
        int k = cJSON_GetArraySize(ex);
        if (k > ne)
            return bad(v, "%s.experts: %d chosen, but the model has only %d experts", lw, k, ne);
        rec->k[r] = k;
        int *ek = rec->experts + (size_t)r * ne;
        if (int_list(v, ex, lw, "experts", 0, ne - 1, ek))
            return -1;
        for (int a = 0; a < k; a++)
            for (int b = 0; b < a; b++)
                if (ek[a] == ek[b])
                    return bad(v, "%s.experts: expert %d is chosen twice", lw, ek[a]);
        const cJSON *w = get_arr(v, l, lw, "weights", k, "one per chosen expert");
        if (!w || num_list(v, w, lw, "weights", -1e6, 1e6, rec->weights + (size_t)r * ne))
            return -1;
        if (cJSON_GetObjectItemCaseSensitive(l, "overflow")) {
            const cJSON *of = get_arr(v, l, lw, "overflow", k, "one per chosen expert");
            int flags[MAX_EXPERTS];
            if (!of || int_list(v, of, lw, "overflow", 0, 1, flags))
                return -1;
            for (int j = 0; j < k; j++)
                rec->overflow[(size_t)r * ne + j] = (uint8_t)flags[j];
        }
        if (!t->moe_layers && i == 0) {
            if (!(t->moe_layers = malloc((size_t)nr * sizeof *t->moe_layers)))
                return bad(v, "out of memory");
            for (int q = 0; q < nr; q++) /* filled from token 0; version 0 has no model.moe_layers */
                t->moe_layers[q] = -1;
        }
        if (t->moe_layers[r] < 0) {
            if (r && layer <= t->moe_layers[r - 1])
                return bad(v, "%s.layer: %ld after layer %d: not in layer order", lw, layer, t->moe_layers[r - 1]);
            t->moe_layers[r] = (int)layer;
        }
    }
    t->model.moe_layers = t->moe_layers;
    return 0;
}

static int load_doc(vctx *v, transcript *t, const cJSON *root)
{
    if (!cJSON_IsObject(root))
        return bad(v, "expected a JSON object at the top, found %s", type_name(root));
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!fmt && !ver) {
        /* `run --trace` before transcripts: version 0 */
        if (!cJSON_GetObjectItemCaseSensitive(root, "model") || !cJSON_GetObjectItemCaseSensitive(root, "tokens"))
            return bad(v, "not a moescope transcript (no \"format\" key, and not a routing trace either)");
        t->version = 0;
    } else {
        if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, TRANSCRIPT_FORMAT) != 0)
            return bad(v, "not a moescope transcript: \"format\" is %s%s%s, not \"%s\"",
                       cJSON_IsString(fmt) ? "\"" : "", cJSON_IsString(fmt) ? fmt->valuestring : type_name(fmt),
                       cJSON_IsString(fmt) ? "\"" : "", TRANSCRIPT_FORMAT);
        if (!cJSON_IsNumber(ver) || ver->valuedouble != floor(ver->valuedouble) || ver->valuedouble < 1)
            return bad(v, "version: expected a positive integer, found %s", type_name(ver));
        if (ver->valuedouble > TRANSCRIPT_VERSION)
            return bad(v, "transcript format version %g is newer than this moescope reads (%d); "
                          "open it with a newer moescope",
                       ver->valuedouble, TRANSCRIPT_VERSION);
        t->version = (int)ver->valuedouble;
    }
    if (load_model(v, t, root) || load_sampler(v, t, root))
        return -1;
    if (t->version >= 1) {
        const char *created;
        if (get_str(v, root, "", "created", 0, &created))
            return -1;
        snprintf(t->created, sizeof t->created, "%s", created);
    }
    const cJSON *toks = get_arr(v, root, "", "tokens", -MAX_TOKENS, NULL);
    if (!toks)
        return -1;
    int n = cJSON_GetArraySize(toks);
    if (t->version >= 1) {
        long declared;
        if (get_int(v, root, "", "n_tokens", 0, MAX_TOKENS, 0, 0, &declared))
            return -1;
        if (declared != n)
            return bad(v, "n_tokens says %ld tokens but the tokens array holds %d (truncated or edited?)", declared,
                       n);
    }
    if (n > 0) {
        if (!(t->toks = calloc((size_t)n, sizeof *t->toks)))
            return bad(v, "out of memory for %d tokens", n);
        size_t cells = route_cells(t);
        if (cells && (cells > SIZE_MAX / sizeof(float) / (size_t)n ||
                      !(t->probs = malloc((size_t)n * cells * sizeof *t->probs))))
            return bad(v, "out of memory for the routing of %d tokens", n);
        t->cap = n;
    }
    int i = 0;
    for (const cJSON *o = toks->child; o; o = o->next, i++)
        if (load_token(v, t, o, i))
            return -1;
    const cJSON *turns = t->version >= 1 ? get_arr(v, root, "", "turns", -MAX_TOKENS, NULL) : NULL;
    if (t->version >= 1 && !turns)
        return -1;
    i = 0;
    for (const cJSON *o = turns ? turns->child : NULL; o; o = o->next, i++) {
        char where[32];
        snprintf(where, sizeof where, "turns[%d]", i);
        if (!cJSON_IsObject(o))
            return bad(v, "%s: expected an object, found %s", where, type_name(o));
        const char *role, *text;
        long tok;
        double time;
        if (get_str(v, o, where, "role", 0, &role) || get_str(v, o, where, "text", 0, &text) ||
            get_int(v, o, where, "token", i ? t->turns[i - 1].pub.token : 0, n, 0, 0, &tok) ||
            get_num(v, o, where, "time", 0, 1e10, 1, 0, &time))
            return -1;
        if (transcript_add_turn(t, role, text) < 0)
            return bad(v, "out of memory");
        t->turns[i].pub.token = (int)tok;
        t->turns[i].pub.time = time;
    }
    const cJSON *ctls = cJSON_GetObjectItemCaseSensitive(root, "controls");
    if (ctls || t->version >= 1) {
        if (!(ctls = get_arr(v, root, "", "controls", -MAX_TOKENS, NULL)))
            return -1;
    }
    i = 0;
    for (const cJSON *o = ctls ? ctls->child : NULL; o; o = o->next, i++) {
        char where[32];
        snprintf(where, sizeof where, "controls[%d]", i);
        if (!cJSON_IsObject(o))
            return bad(v, "%s: expected an object, found %s", where, type_name(o));
        const char *change;
        long pos;
        double time;
        if (get_int(v, o, where, "pos", i ? t->ctls[i - 1].pub.pos : 0, n, 0, 0, &pos) ||
            get_str(v, o, where, "change", 0, &change) || get_num(v, o, where, "time", 0, 1e10, 1, -1, &time))
            return -1;
        if (strlen(change) > 95 || !*change)
            return bad(v, "%s.change: expected a control of 1 to 95 characters", where);
        if (add_control(t, (int)pos, change, time))
            return bad(v, "out of memory");
    }
    t->n_log_seen = t->n_ctls;
    return 0;
}

/* Line and column of byte offset off in s. */
static void line_col(const char *s, size_t off, int *line, int *col)
{
    *line = 1, *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (s[i] == '\n')
            (*line)++, *col = 1;
        else
            (*col)++;
    }
}

transcript *transcript_load(const char *path, char *msg, size_t msglen)
{
    vctx v = {path, msg, msglen};
    FILE *f = fopen(path, "rb");
    if (!f) {
        bad(&v, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        bad(&v, "not a regular file");
        return NULL;
    }
    if ((size_t)st.st_size > MAX_FILE) {
        fclose(f);
        bad(&v, "%lld bytes is larger than a transcript can be (2 GiB)", (long long)st.st_size);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    size_t got = buf ? fread(buf, 1, size, f) : 0;
    fclose(f);
    if (!buf || got != size) {
        free(buf);
        bad(&v, buf ? "read failed" : "out of memory for %zu bytes", size);
        return NULL;
    }
    buf[size] = 0;
    transcript *t = NULL;
    size_t lead = strspn(buf, " \t\r\n");
    if (lead == size) {
        bad(&v, "the file is empty");
        goto done;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, size, &end, 0);
    if (!root) {
        size_t off = end && end >= buf && end <= buf + size ? (size_t)(end - buf) : 0;
        int line, col;
        line_col(buf, off, &line, &col);
        if (off + strspn(buf + off, " \t\r\n") + 1 >= size)
            bad(&v, "not valid JSON: it ends early, at line %d (truncated?)", line);
        else
            bad(&v, "not valid JSON at line %d, column %d", line, col);
        goto done;
    }
    if (end && end[strspn(end, " \t\r\n")] != 0) {
        int line, col;
        line_col(buf, (size_t)(end - buf), &line, &col);
        bad(&v, "not valid JSON: text after the document at line %d, column %d", line, col);
        cJSON_Delete(root);
        goto done;
    }
    if (!(t = alloc_empty())) {
        bad(&v, "out of memory");
        cJSON_Delete(root);
        goto done;
    }
    if (load_doc(&v, t, root)) {
        transcript_free(t);
        t = NULL;
    }
    cJSON_Delete(root);
done:
    free(buf);
    return t;
}

/* ---- comparing ----------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int differ(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return 1;
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

int transcript_compare(const transcript *a, const transcript *b, double tol, char *msg, size_t len)
{
    const transcript_model *ma = &a->model, *mb = &b->model;
    if (!str_eq(ma->arch, mb->arch) || !str_eq(ma->hf_class, mb->hf_class) || !str_eq(ma->path, mb->path) ||
        !str_eq(ma->config_sha256, mb->config_sha256))
        return differ(msg, len, "model identity differs");
    if (ma->n_layers != mb->n_layers || ma->n_moe_layers != mb->n_moe_layers || ma->n_experts != mb->n_experts ||
        ma->k != mb->k || ma->vocab != mb->vocab)
        return differ(msg, len, "model sizes differ");
    if (!ma->moe_layers != !mb->moe_layers ||
        (ma->moe_layers && memcmp(ma->moe_layers, mb->moe_layers, (size_t)ma->n_moe_layers * sizeof(int))))
        return differ(msg, len, "MoE layer indices differ");
    if (!ma->expert_names != !mb->expert_names)
        return differ(msg, len, "expert names differ");
    for (int e = 0; ma->expert_names && e < ma->n_experts; e++)
        if (!str_eq(ma->expert_names[e], mb->expert_names[e]))
            return differ(msg, len, "expert %d's name differs", e);
    const moe_sampler_params *sa = &a->sp, *sb = &b->sp;
    if (fabsf(sa->temp - sb->temp) > 1e-6f || sa->top_k != sb->top_k || fabsf(sa->top_p - sb->top_p) > 1e-6f ||
        fabsf(sa->min_p - sb->min_p) > 1e-6f || fabsf(sa->repeat_penalty - sb->repeat_penalty) > 1e-6f ||
        sa->repeat_last_n != sb->repeat_last_n || sa->seed != sb->seed)
        return differ(msg, len, "sampler settings differ");
    if (strcmp(a->created, b->created))
        return differ(msg, len, "creation time differs");
    if (a->n_turns != b->n_turns)
        return differ(msg, len, "%d turns against %d", a->n_turns, b->n_turns);
    for (int i = 0; i < a->n_turns; i++) {
        const transcript_turn *x = &a->turns[i].pub, *y = &b->turns[i].pub;
        char *cx = utf8_clean(x->text, strlen(x->text)), *cy = utf8_clean(y->text, strlen(y->text));
        int same = cx && cy && !strcmp(cx, cy); /* as a JSON string can hold them */
        free(cx);
        free(cy);
        if (strcmp(x->role, y->role) || !same || x->token != y->token || fabs(x->time - y->time) > 1e-3)
            return differ(msg, len, "turn %d differs", i);
    }
    if (a->n_ctls != b->n_ctls)
        return differ(msg, len, "%d control changes against %d", a->n_ctls, b->n_ctls);
    for (int i = 0; i < a->n_ctls; i++) {
        const transcript_control *x = &a->ctls[i].pub, *y = &b->ctls[i].pub;
        if (x->pos != y->pos || strcmp(x->change, y->change) || fabs(x->time - y->time) > 1e-3)
            return differ(msg, len, "control change %d differs", i);
    }
    if (a->n != b->n)
        return differ(msg, len, "%d tokens against %d", a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        const transcript_token *x = &a->toks[i].pub, *y = &b->toks[i].pub;
        if (x->pos != y->pos || x->id != y->id || x->prompt != y->prompt || x->colour != y->colour ||
            fabs(x->time - y->time) > 1e-3)
            return differ(msg, len, "token %d differs", i);
        if (!x->text != !y->text || x->len != y->len || (x->text && memcmp(x->text, y->text, x->len)))
            return differ(msg, len, "token %d's text differs", i);
        for (int r = 0; r < ma->n_moe_layers; r++) {
            moe_route ra, rb;
            transcript_route(a, i, r, &ra);
            transcript_route(b, i, r, &rb);
            if (ra.k != rb.k || memcmp(ra.experts, rb.experts, (size_t)ra.k * sizeof(int)))
                return differ(msg, len, "token %d, MoE layer %d: chosen experts differ", i, r);
            if (!ra.overflow != !rb.overflow || (ra.overflow && memcmp(ra.overflow, rb.overflow, (size_t)ra.k)))
                return differ(msg, len, "token %d, MoE layer %d: overflow marks differ", i, r);
            for (int j = 0; j < ra.k; j++)
                if (fabs((double)ra.weights[j] - rb.weights[j]) > tol)
                    return differ(msg, len, "token %d, MoE layer %d: weight %d differs by %g", i, r, j,
                                  fabs((double)ra.weights[j] - rb.weights[j]));
            for (int e = 0; e < ra.n_experts; e++)
                if (fabs((double)ra.probs[e] - rb.probs[e]) > tol)
                    return differ(msg, len, "token %d, MoE layer %d: probability of expert %d differs by %g", i, r,
                                  e, fabs((double)ra.probs[e] - rb.probs[e]));
        }
    }
    return 0;
}
