/* Routing controls (expert masks, forced experts, router biases, k) and
 * neuron offsets against golden values from the independent reference
 * (tests/reference/reference.py --controls), plus the refusals that must
 * leave the controls unchanged. Tolerances as in test_model.c. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "moescope/moescope.h"
#include "tap.h"
#include "testutil.h"

#define LOGIT_TOL 1e-3

/* A model of tests/fixtures/models, or NULL after a failed check naming why. */
static moe_model *open_fixture(const char *name)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", test_srcdir(), name);
    moe_model *m;
    moe_error err = {0};
    if (moe_model_open(dir, &m, &err)) {
        ok(0, "%s: %s", name, err.msg);
        return NULL;
    }
    return m;
}

/* Apply one case's "controls" object through the public API. */
static int apply(moe_session *s, const cJSON *ctl, moe_error *err)
{
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(ctl, "bias"))
        if (moe_session_set_bias(s, cJSON_GetArrayItem(x, 0)->valueint, cJSON_GetArrayItem(x, 1)->valueint,
                                 (float)cJSON_GetArrayItem(x, 2)->valuedouble, err))
            return -1;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(ctl, "mask"))
        if (moe_session_set_expert(s, cJSON_GetArrayItem(x, 0)->valueint, cJSON_GetArrayItem(x, 1)->valueint,
                                   0, err))
            return -1;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(ctl, "force")) {
        int ex[64], n = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetArrayItem(x, 1))
            if (n < 64)
                ex[n++] = e->valueint;
        if (moe_session_force(s, cJSON_GetArrayItem(x, 0)->valueint, ex, n, err))
            return -1;
    }
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(ctl, "offsets")) {
        moe_offset o = {0};
        o.layer = cJSON_GetArrayItem(x, 0)->valueint;
        const char *kind = cJSON_GetArrayItem(x, 1)->valuestring;
        o.kind = !strcmp(kind, "resid") ? MOE_OFFSET_RESID : !strcmp(kind, "shared") ? MOE_OFFSET_SHARED
                                                                                     : MOE_OFFSET_MLP;
        const cJSON *e = cJSON_GetArrayItem(x, 2);
        o.expert = cJSON_IsNumber(e) ? e->valueint : 0;
        o.neuron = cJSON_GetArrayItem(x, 3)->valueint;
        /* several offsets on one target add up in the reference */
        int n_cur;
        const moe_offset *cur = moe_session_offsets(s, &n_cur);
        float base = 0;
        for (int i = 0; i < n_cur; i++)
            if (cur[i].layer == o.layer && cur[i].kind == o.kind && cur[i].neuron == o.neuron &&
                (o.kind != MOE_OFFSET_MLP || cur[i].expert == o.expert))
                base = cur[i].delta;
        o.delta = base + (float)cJSON_GetArrayItem(x, 4)->valuedouble;
        if (moe_session_set_offset(s, &o, err))
            return -1;
    }
    return 0;
}

typedef struct {
    int experts[16][64];
    float weights[16][64], probs[16][64];
    int k[16], n_routes;
} last_route;

static void on_token(void *ctx, const moe_token_trace *t)
{
    last_route *r = ctx;
    r->n_routes = t->n_routes;
    for (int i = 0; i < t->n_routes && i < 16; i++) {
        const moe_route *rt = &t->routes[i];
        r->k[i] = rt->k;
        for (int j = 0; j < rt->k && j < 64; j++) {
            r->experts[i][j] = rt->experts[j];
            r->weights[i][j] = rt->weights[j];
        }
        for (int e = 0; e < rt->n_experts && e < 64; e++)
            r->probs[i][e] = rt->probs[e];
    }
}

static void golden_cases(const char *model)
{
    char dir[1024], path[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", test_srcdir(), model);
    snprintf(path, sizeof path, "%s/tests/fixtures/golden/controls-%s.json", test_srcdir(), model);
    cJSON *root = test_read_json(path);
    moe_model *m;
    moe_error err = {0};
    if (!ok(root && moe_model_open(dir, &m, &err) == MOE_OK, "%s: model and %s load", model, path)) {
        cJSON_Delete(root);
        return;
    }
    int vocab = moe_model_info_get(m)->vocab;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        int32_t prompt[256], greedy[64];
        int np = 0, ng = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "prompt")) prompt[np++] = x->valueint;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "greedy")) greedy[ng++] = x->valueint;
        const cJSON *kj = cJSON_GetObjectItem(c, "k");
        moe_session *s;
        moe_session_params sp = {0, 2, 0};
        moe_session_new(m, &sp, &s, &err);
        if (cJSON_IsNumber(kj))
            moe_session_set_k(s, -1, kj->valueint, &err);
        if (!ok(apply(s, cJSON_GetObjectItem(c, "controls"), &err) == 0, "%s %s: controls apply (%s)", model,
                name, err.msg)) {
            moe_session_free(s);
            continue;
        }
        last_route lr = {0};
        moe_trace_sink sink = {&lr, on_token};
        moe_session_set_trace(s, &sink);
        moe_session_eval(s, prompt, np, &err);
        const float *lg = moe_session_logits(s);
        float d = 0;
        int i = 0;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "logits")) {
            float diff = fabsf(lg[i++] - (float)x->valuedouble);
            d = diff > d || isnan(diff) ? (isnan(diff) ? INFINITY : diff) : d;
        }
        ok(i == vocab && d <= LOGIT_TOL, "%s %s: logits within %g (max abs diff %.2e)", model, name, LOGIT_TOL, d);

        const cJSON *rl = cJSON_GetObjectItem(c, "routing_last");
        if (rl) {
            int same = 1, l = 0;
            float wd = 0, pd = 0;
            const cJSON *le, *lw, *lp;
            for (le = cJSON_GetObjectItem(rl, "experts")->child, lw = cJSON_GetObjectItem(rl, "weights")->child,
                lp = cJSON_GetObjectItem(rl, "probs")->child;
                le && lw; le = le->next, lw = lw->next, lp = lp ? lp->next : NULL, l++) {
                same &= cJSON_GetArraySize(le) == lr.k[l];
                int j = 0;
                for (const cJSON *a = le->child, *b = lw->child; a && b && j < 64; a = a->next, b = b->next, j++) {
                    same &= a->valueint == lr.experts[l][j];
                    wd = fmaxf(wd, fabsf((float)b->valuedouble - lr.weights[l][j]));
                }
                j = 0;
                for (const cJSON *p = lp ? lp->child : NULL; p && j < 64; p = p->next, j++)
                    pd = fmaxf(pd, fabsf((float)p->valuedouble - lr.probs[l][j]));
            }
            ok(same && l == lr.n_routes && wd <= 1e-4f && pd <= 1e-4f,
               "%s %s: last token's experts match, weights and all probabilities within 1e-4 (%.1e, %.1e)",
               model, name, wd, pd);
        }
        int same = 1;
        for (int g = 0; g < ng; g++) {
            int32_t id = test_argmax(moe_session_logits(s), vocab);
            same &= id == greedy[g];
            if (g + 1 < ng)
                moe_session_eval(s, &id, 1, &err);
        }
        ok(same, "%s %s: greedy continuation of %d identical", model, name, ng);
        moe_session_free(s);
    }
    moe_model_close(m);
    cJSON_Delete(root);
}

/* Refusals change nothing, and every accepted change is logged. */
static void refusals(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/mixtral-tiny", test_srcdir());
    moe_model *m;
    moe_session *s;
    moe_error err = {0};
    moe_session_params sp = {32, 1, 0};
    if (!ok(moe_model_open(dir, &m, &err) == MOE_OK && moe_session_new(m, &sp, &s, &err) == MOE_OK,
            "mixtral-tiny session"))
        return;
    int n0;
    moe_session_control_log(s, &n0);
    ok(moe_session_set_expert(s, 3, 0, 0, &err) == MOE_EINVAL && strstr(err.msg, "layer 3"), "layer 3 of 3: %s",
       err.msg);
    ok(moe_session_set_expert(s, -1, 8, 0, &err) == MOE_EINVAL && strstr(err.msg, "expert 8"), "expert 8: %s",
       err.msg);
    ok(moe_session_set_bias(s, -1, -1, 1, &err) == MOE_EINVAL, "expert -1: %s", err.msg);
    ok(moe_session_set_bias(s, 0, 1, NAN, &err) == MOE_EINVAL, "NaN bias: %s", err.msg);
    int dup[2] = {1, 1}, bad[1] = {9};
    ok(moe_session_force(s, -1, dup, 2, &err) == MOE_EINVAL && strstr(err.msg, "twice"), "forcing 1,1: %s",
       err.msg);
    ok(moe_session_force(s, 0, bad, 1, &err) == MOE_EINVAL, "forcing expert 9: %s", err.msg);
    int fx[8], two[2] = {6, 2};
    ok(moe_session_force(s, 1, two, 2, &err) == MOE_OK && moe_session_forced(s, 1, fx, 8) == 2 && fx[0] == 2 &&
           fx[1] == 6 && moe_session_forced(s, 0, fx, 8) == 0,
       "the forced experts of a layer can be read back");
    moe_session_force(s, 1, two, 0, &err);
    ok(moe_session_set_bias(s, 2, 5, -1.5f, &err) == MOE_OK && moe_session_bias(s, 2, 5) == -1.5f &&
           moe_session_bias(s, 1, 5) == 0,
       "a bias can be read back");
    moe_session_set_bias(s, 2, 5, 0, &err);
    ok(moe_session_set_k(s, 0, 0, &err) == MOE_EINVAL, "k 0: %s", err.msg);
    moe_offset o = {1, MOE_OFFSET_MLP, 3, 96, 1.0f};
    ok(moe_session_set_offset(s, &o, &err) == MOE_EINVAL && strstr(err.msg, "neuron 96"),
       "neuron 96 of an expert of width 96: %s", err.msg);
    o = (moe_offset){1, MOE_OFFSET_RESID, 0, 64, 1.0f};
    ok(moe_session_set_offset(s, &o, &err) == MOE_EINVAL, "residual dimension 64 of 64: %s", err.msg);
    o = (moe_offset){1, MOE_OFFSET_SHARED, 0, 1, 1.0f};
    ok(moe_session_set_offset(s, &o, &err) == MOE_EINVAL && strstr(err.msg, "shared"),
       "Mixtral has no shared expert: %s", err.msg);
    o = (moe_offset){5, MOE_OFFSET_RESID, 0, 1, 1.0f};
    ok(moe_session_set_offset(s, &o, &err) == MOE_EINVAL, "offset layer 5: %s", err.msg);
    for (int e = 0; e < 7; e++)
        moe_session_set_expert(s, 0, e, 0, &err);
    int nlog;
    moe_session_control_log(s, &nlog);
    ok(moe_session_set_expert(s, 0, 7, 0, &err) == MOE_EINVAL && strstr(err.msg, "last one"),
       "the last expert of a layer stays on: %s", err.msg);
    ok(moe_session_expert_on(s, 0, 7) && !moe_session_expert_on(s, 0, 6) && moe_session_expert_on(s, 1, 0),
       "masks are per layer");
    int n1;
    const moe_control_event *log = moe_session_control_log(s, &n1);
    ok(n0 == 0 && n1 == 11 && nlog == 11, "refusals are not logged, the 11 changes are (%d entries)", n1);
    ok(n1 >= 5 && !strcmp(log[4].text, "off L0:0") && log[4].pos == 0, "log entry: \"%s\" at %d",
       n1 > 4 ? log[4].text : "", n1 > 4 ? log[4].pos : -1);

    int32_t ids[3] = {5, 6, 7};
    moe_session_eval(s, ids, 3, &err);
    o = (moe_offset){2, MOE_OFFSET_MLP, 4, 10, 2.5f};
    moe_session_set_offset(s, &o, &err);
    o.delta = -1.0f;
    moe_session_set_offset(s, &o, &err);
    int n_off;
    const moe_offset *offs = moe_session_offsets(s, &n_off);
    ok(n_off == 1 && offs[0].delta == -1.0f, "a second delta on one neuron replaces the first");
    log = moe_session_control_log(s, &n1);
    ok(n1 == 13 && log[12].pos == 3 && !strcmp(log[12].text, "offset L2:4:10=-1"),
       "changes after 3 tokens are logged at position 3: \"%s\"", log[n1 - 1].text);
    o.delta = 0;
    moe_session_set_offset(s, &o, &err);
    moe_session_offsets(s, &n_off);
    ok(n_off == 0, "delta 0 removes the offset");
    moe_session_reset_controls(s);
    ok(moe_session_expert_on(s, 0, 0) && moe_session_get_k(s, 0) == 2, "reset lifts the masks");
    moe_session_free(s);
    moe_model_close(m);
}

/* k = all experts, forced to all, and all-but-one off then forced: same
 * outputs where the semantics say so (checked here on the engine alone;
 * the reference checks them on its side). */
static void equivalences(void)
{
    moe_model *m = open_fixture("mixtral-tiny");
    moe_error err = {0};
    if (!m)
        return;
    int32_t ids[7] = {253, 49, 186, 99, 133, 27, 303};
    float out[3][320];
    for (int v = 0; v < 3; v++) {
        moe_session *s;
        moe_session_params sp = {32, 1, 0};
        moe_session_new(m, &sp, &s, &err);
        int all[8] = {0, 1, 2, 3, 4, 5, 6, 7}, two[2] = {4, 1};
        if (v == 0)
            moe_session_set_k(s, -1, 8, &err);
        if (v == 1)
            moe_session_force(s, -1, all, 8, &err);
        if (v == 2) { /* mask all but {1, 4} with k 2 == force {4, 1} */
            for (int e = 0; e < 8; e++)
                if (e != 1 && e != 4)
                    moe_session_set_expert(s, -1, e, 0, &err);
        }
        moe_session_eval(s, ids, 7, &err);
        memcpy(out[v], moe_session_logits(s), sizeof out[v]);
        if (v == 2) {
            moe_session_reset(s);
            moe_session_reset_controls(s);
            moe_session_force(s, -1, two, 2, &err);
            moe_session_eval(s, ids, 7, &err);
            float d = 0;
            for (int i = 0; i < 320; i++)
                d = fmaxf(d, fabsf(out[2][i] - moe_session_logits(s)[i]));
            ok(d < 1e-5f, "masking all but {1,4} equals forcing {4,1} (max diff %.1e)", d);
        }
        moe_session_free(s);
    }
    float d = 0;
    for (int i = 0; i < 320; i++)
        d = fmaxf(d, fabsf(out[0][i] - out[1][i]));
    ok(d < 1e-5f, "k = 8 equals forcing all 8 experts (max diff %.1e)", d);
    moe_model_close(m);
}

/* Capacity on a crafted batch: 16 tokens all forced to expert 3 with k 1
 * and factor 1 give a capacity of ceil(16 * 1 / 8) = 2 per expert, so
 * tokens 2..15 overflow in every layer. */
typedef struct {
    int n, bad, overflowed[64];
} cap_check;

static void on_cap(void *ctx, const moe_token_trace *t)
{
    cap_check *c = ctx;
    int any = 0;
    for (int r = 0; r < t->n_routes; r++) {
        const moe_route *rt = &t->routes[r];
        if (!rt->overflow || rt->k != 1 || rt->experts[0] != 3)
            c->bad = 1;
        else
            any |= rt->overflow[0] << r;
    }
    if (t->pos < 64)
        c->overflowed[t->pos] = any;
    c->n++;
}

static void capacity_and_reprefill(void)
{
    moe_model *m = open_fixture("mixtral-tiny");
    moe_error err = {0};
    if (!m)
        return;
    int32_t ids[16];
    for (int i = 0; i < 16; i++)
        ids[i] = 10 + 7 * i;
    float ref[320], kept[320], dropped[320];
    for (int v = 0; v < 3; v++) {
        moe_session *s;
        moe_session_params sp = {64, 1, 0};
        moe_session_new(m, &sp, &s, &err);
        int three = 3;
        moe_session_set_k(s, -1, 1, &err);
        moe_session_force(s, -1, &three, 1, &err);
        cap_check cc = {0};
        moe_trace_sink sink = {&cc, on_cap};
        if (v > 0) {
            moe_session_set_trace(s, &sink);
            moe_session_set_capacity(s, 1.0, v == 2, &err);
        }
        moe_session_eval(s, ids, 16, &err);
        memcpy(v == 0 ? ref : v == 1 ? kept : dropped, moe_session_logits(s), sizeof ref);
        if (v == 1) {
            int pattern = !cc.bad && cc.n == 16;
            for (int i = 0; i < 16; i++)
                pattern &= cc.overflowed[i] == (i < 2 ? 0 : 7);
            ok(pattern, "capacity 1: tokens 0-1 fit expert 3, tokens 2-15 overflow in all 3 layers");
        }
        moe_session_free(s);
    }
    float dk = 0, dd = 0;
    for (int i = 0; i < 320; i++) {
        dk = fmaxf(dk, fabsf(kept[i] - ref[i]));
        dd = fmaxf(dd, fabsf(dropped[i] - ref[i]));
    }
    ok(dk == 0, "marking overflow leaves the output as it was");
    ok(dd > 1e-2f, "dropping the overflow changes it (max diff %.2f)", dd);

    /* Re-prefill: a mask set after the prompt, then re-prefilled, equals the
     * mask set before it. */
    moe_session *a, *b;
    moe_session_params sp = {64, 2, 0};
    moe_session_new(m, &sp, &a, &err);
    moe_session_new(m, &sp, &b, &err);
    moe_session_eval(a, ids, 16, &err);
    moe_session_set_expert(a, -1, 5, 0, &err);
    float before[320];
    memcpy(before, moe_session_logits(a), sizeof before);
    ok(moe_session_reprefill(a, &err) == MOE_OK && moe_session_pos(a) == 16, "re-prefill of 16 tokens");
    {
        /* truncating to 10 and evaluating tokens 10..15 again gives the same logits */
        float full[320];
        memcpy(full, moe_session_logits(a), sizeof full);
        ok(moe_session_truncate(a, 17, &err) == MOE_EINVAL, "truncating past the end: %s", err.msg);
        moe_session_truncate(a, 10, &err);
        moe_session_eval(a, ids + 10, 6, &err);
        float dt = 0;
        for (int i = 0; i < 320; i++)
            dt = fmaxf(dt, fabsf(full[i] - moe_session_logits(a)[i]));
        ok(moe_session_pos(a) == 16 && dt < 1e-5f, "truncate to 10 and re-evaluate: same logits (%.1e)", dt);
    }
    moe_session_set_expert(b, -1, 5, 0, &err);
    moe_session_eval(b, ids, 16, &err);
    float d = 0, d0 = 0;
    for (int i = 0; i < 320; i++) {
        d = fmaxf(d, fabsf(moe_session_logits(a)[i] - moe_session_logits(b)[i]));
        d0 = fmaxf(d0, fabsf(before[i] - moe_session_logits(b)[i]));
    }
    ok(d < 1e-5f && d0 > 1e-3f, "after re-prefill the logits are those of a session masked from the start (%.1e; %.2f before)",
       d, d0);
    moe_session_free(a);
    moe_session_free(b);
    moe_model_close(m);
}

/* Activations for the neuron picker: the width of the MLP, and an offset
 * shows up in exactly its neuron. */
static void activations(void)
{
    moe_model *m = open_fixture("mixtral-tiny");
    moe_error err = {0};
    if (!m)
        return;
    moe_session *s;
    moe_session_params sp = {32, 1, 0};
    moe_session_new(m, &sp, &s, &err);
    float a[96], b[96], r[64];
    ok(moe_session_activations(s, 1, MOE_OFFSET_MLP, 3, a, 96, &err) == -1, "no activations before a token: %s",
       err.msg);
    int32_t ids[3] = {7, 8, 9};
    moe_session_eval(s, ids, 3, &err);
    int w = moe_session_activations(s, 1, MOE_OFFSET_MLP, 3, a, 96, &err);
    moe_offset o = {1, MOE_OFFSET_MLP, 3, 10, 5.0f};
    moe_session_set_offset(s, &o, &err);
    moe_session_activations(s, 1, MOE_OFFSET_MLP, 3, b, 96, &err);
    int only = 1;
    for (int i = 0; i < 96; i++)
        only &= i == 10 ? fabsf(b[i] - a[i] - 5.0f) < 1e-5f : b[i] == a[i];
    ok(w == 96 && only, "expert 3 of layer 1: 96 activations; an offset of +5 moves neuron 10 alone");
    ok(moe_session_activations(s, 2, MOE_OFFSET_RESID, 0, r, 64, &err) == 64, "the residual stream has 64 dims");
    ok(moe_session_activations(s, 1, MOE_OFFSET_SHARED, 0, a, 96, &err) == -1, "no shared expert: %s", err.msg);
    ok(moe_session_activations(s, 1, MOE_OFFSET_MLP, 8, a, 96, &err) == -1, "expert 8: %s", err.msg);
    moe_session_free(s);
    moe_model_close(m);
}

/* Activations of an earlier token: the same as a session that stopped at
 * that token, and the session is untouched (its logits, its latest token's
 * activations and what it generates next). On a Mixtral and a MiCRo model,
 * whose blocks have caches of their own. */
static void activations_at(const char *name, int layer, int expert)
{
    moe_model *m = open_fixture(name);
    moe_error err = {0};
    if (!m)
        return;
    const moe_model_info *in = moe_model_info_get(m);
    int cap = in->ff > in->dense_ff ? in->ff : in->dense_ff;
    cap = cap > in->dim ? cap : in->dim;
    moe_session *s, *p, *q;
    moe_session_params sp = {32, 1, 0};
    moe_session_new(m, &sp, &s, &err);
    moe_session_new(m, &sp, &p, &err);
    moe_session_new(m, &sp, &q, &err);
    int32_t ids[6] = {7, 8, 9, 3, 12, 5};
    moe_session_eval(s, ids, 5, &err);
    moe_session_eval(q, ids, 5, &err);
    moe_session_eval(p, ids, 3, &err); /* stops at position 2 */
    if (expert < 0) /* MiCRo runs only the chosen block: take the one that ran at position 2 */
        for (int e = 0; e < in->n_experts && expert < 0; e++)
            if (moe_session_activations(p, layer, MOE_OFFSET_MLP, e, NULL, 0, &err) > 0)
                expert = e;
    int vocab = in->vocab;
    float *want = calloc((size_t)cap, sizeof *want), *got = calloc((size_t)cap, sizeof *got);
    float *again = calloc((size_t)cap, sizeof *again);
    float *logits = malloc((size_t)vocab * sizeof *logits);
    memcpy(logits, moe_session_logits(s), (size_t)vocab * sizeof *logits);
    /* the latest token's activations of every expert (MiCRo: only the blocks that ran) */
    int ne = in->n_experts, same = 1;
    float *latest_all = calloc((size_t)ne * cap, sizeof *latest_all);
    int *nl = calloc((size_t)ne, sizeof *nl);
    for (int e = 0; e < ne; e++)
        nl[e] = moe_session_activations(s, layer, MOE_OFFSET_MLP, e, latest_all + (size_t)e * cap, cap, &err);
    static const moe_offset_kind kinds[] = {MOE_OFFSET_MLP, MOE_OFFSET_RESID};
    for (int k = 0; k < 2; k++) {
        int nw = moe_session_activations(p, layer, kinds[k], expert, want, cap, &err);
        int ng = moe_session_activations_at(s, 2, layer, kinds[k], expert, got, cap, &err);
        ok(nw > 0 && ng == nw && test_max_abs_diff(want, got, (size_t)nw) < 1e-5,
           "%s: %s of L%d at position 2 of 5 equal a session that stopped there (%d values, max diff %g)", name,
           kinds[k] == MOE_OFFSET_MLP ? "MLP activations" : "residual", layer, ng,
           ng == nw && nw > 0 ? test_max_abs_diff(want, got, (size_t)nw) : -1.0);
    }
    ok(memcmp(logits, moe_session_logits(s), (size_t)vocab * sizeof *logits) == 0,
       "%s: the session's logits are unchanged", name);
    for (int e = 0; e < ne; e++) {
        int n = moe_session_activations(s, layer, MOE_OFFSET_MLP, e, again, cap, &err);
        same &= n == nl[e] && (n < 0 || memcmp(latest_all + (size_t)e * cap, again, (size_t)n * sizeof *again) == 0);
    }
    ok(same, "%s: the latest token's activations are unchanged (every expert of L%d)", name, layer);
    moe_session_eval(s, ids + 5, 1, &err);
    moe_session_eval(q, ids + 5, 1, &err);
    ok(memcmp(moe_session_logits(q), moe_session_logits(s), (size_t)vocab * sizeof *logits) == 0,
       "%s: the next token's logits equal those of a session never probed (the cache was restored)", name);
    /* the controls in force now apply to the re-evaluated token */
    moe_offset o = {layer, MOE_OFFSET_MLP, expert, 4, 3.0f};
    moe_session_activations(p, layer, MOE_OFFSET_MLP, expert, want, cap, &err);
    moe_session_set_offset(s, &o, &err);
    moe_session_activations_at(s, 2, layer, MOE_OFFSET_MLP, expert, got, cap, &err);
    ok(fabsf(got[4] - want[4] - 3.0f) < 1e-4f, "%s: an offset set afterwards shows at the earlier token", name);
    ok(moe_session_activations_at(s, 6, layer, MOE_OFFSET_MLP, expert, got, cap, &err) == -1,
       "%s: position 6 of 6 refused: %s", name, err.msg);
    ok(moe_session_activations_at(s, -1, layer, MOE_OFFSET_MLP, expert, got, cap, &err) == -1,
       "%s: position -1 refused: %s", name, err.msg);
    free(want), free(got), free(again), free(logits), free(latest_all), free(nl);
    moe_session_free(s);
    moe_session_free(p);
    moe_session_free(q);
    moe_model_close(m);
}

int main(void)
{
    static const char *models[] = {"mixtral-tiny", "llama-tiny", "micro-llama-tiny", "micro-olmo-tiny",
                                   "olmoe-tiny", "qwen2moe-tiny"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        golden_cases(models[i]);
    refusals();
    equivalences();
    capacity_and_reprefill();
    activations_at("mixtral-tiny", 1, 3);
    activations_at("micro-llama-tiny", 1, -1);
    activations();
    return done_testing();
}
