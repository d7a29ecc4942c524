/* The forward pass against golden values from the independent reference
 * (tests/reference/reference.py, torch in float64, written from the
 * transformers modelling code).
 *
 * Tolerance: the engine computes in f32 and the reference in f64 on the
 * same (upcast) weights, so logits of order 1-10 differ by ~1e-5; 1e-3
 * leaves room for summation order across thread counts and BLAS kernels
 * while catching any real mistake (a wrong rope pair, bias or expert moves
 * logits by 1e-1 or more). Where the CPU has AMX, the f16 and bf16
 * fixtures' prefills take the tile products, each within about 2^-15 of
 * |w x| (amx.h): their logits then differ by up to ~2e-4. Greedy continuations must match exactly; the
 * reference records the smallest top-1/top-2 gap on its path so that a
 * near-tie would be visible in a failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "moescope/moescope.h"
#include "tap.h"
#include "testutil.h"

#define LOGIT_TOL 1e-3
/* With an f16 KV cache every key and value is rounded to 11 significant
 * bits (relative error <= 2^-11 = 4.9e-4). The fixtures' logits have
 * magnitudes of a few units and pass through 2-4 attention layers, so the
 * rounding moves them by a few 1e-3 (the largest seen is 6.9e-3, OLMoE with
 * its clamped, normed keys; see the output); 2e-2 leaves room for that
 * and is still 50 times tighter than the logits themselves. */
#define KV16_TOL 2e-2
/* A q8_0 KV cache rounds every key and value to within d/2, d = max|x|/127
 * of its block of 32: up to 2^-8 of the block's largest, 8 times f16's
 * rounding, so 8 times KV16_TOL. Fixtures with head dimensions that are
 * multiples of 32 (the Qwen3-MoE ones) take it; see the output for the
 * largest difference seen. */
#define KVQ8_TOL 1.6e-1


/* ---- trace checks ---- */
typedef struct {
    int n_tokens, next_pos, bad;
    int renorm, expect_k, n_routes;
    char why[160];
    /* the routing of the most recent token, copied (the trace's own
     * pointers die with the callback) */
    int last_experts[16][8];
    float last_weights[16][8];
} trace_check;

static void on_token(void *ctx, const moe_token_trace *t)
{
    trace_check *c = ctx;
    if (c->bad)
        return;
    if (t->pos != c->next_pos)
        snprintf(c->why, sizeof c->why, "position %d, expected %d", t->pos, c->next_pos);
    else if (t->n_routes != c->n_routes)
        snprintf(c->why, sizeof c->why, "%d routes, expected %d", t->n_routes, c->n_routes);
    for (int r = 0; r < t->n_routes && !c->why[0]; r++) {
        const moe_route *rt = &t->routes[r];
        double ps = 0, ws = 0;
        for (int e = 0; e < rt->n_experts; e++)
            ps += rt->probs[e];
        for (int j = 0; j < rt->k; j++) {
            ws += rt->weights[j];
            if (j && rt->probs[rt->experts[j]] > rt->probs[rt->experts[j - 1]])
                snprintf(c->why, sizeof c->why, "experts not in order of probability");
        }
        if (fabs(ps - 1) > 1e-5)
            snprintf(c->why, sizeof c->why, "layer %d probabilities sum to %f", rt->layer, ps);
        else if (rt->k != c->expect_k)
            snprintf(c->why, sizeof c->why, "layer %d chose %d experts, expected %d", rt->layer, rt->k,
                     c->expect_k);
        else if (c->renorm && fabs(ws - 1) > 1e-5)
            snprintf(c->why, sizeof c->why, "layer %d weights sum to %f", rt->layer, ws);
    }
    for (int r = 0; r < t->n_routes && r < 16; r++)
        for (int j = 0; j < t->routes[r].k && j < 8; j++) {
            c->last_experts[r][j] = t->routes[r].experts[j];
            c->last_weights[r][j] = t->routes[r].weights[j];
        }
    c->bad = c->why[0] != 0;
    c->n_tokens++;
    c->next_pos++;
}

static void run_case(moe_model *m, const char *name, const golden_case *gc, int threads, int batch, moe_dtype kv)
{
    const moe_model_info *in = moe_model_info_get(m);
    moe_session *s;
    moe_error err = {0};
    moe_session_params sp = {0, threads, batch};
    if (!ok(moe_session_new(m, &sp, &s, &err) == MOE_OK, "%s: session (%s)", name, err.msg))
        return;
    if (kv != MOE_F32 && !ok(moe_session_set_kv_type(s, kv, &err) == MOE_OK, "%s: KV cache %s (%s)", name,
                             moe_dtype_name(kv), err.msg)) {
        moe_session_free(s);
        return;
    }
    double tol = kv == MOE_F32 ? LOGIT_TOL : kv == MOE_F16 ? KV16_TOL : KVQ8_TOL;
    if (gc->k)
        moe_session_set_k(s, -1, gc->k, &err);
    trace_check tc = {0};
    tc.renorm = in->renormalize;
    tc.expect_k = gc->k;
    tc.n_routes = in->n_moe_layers;
    moe_trace_sink sink = {&tc, on_token};
    moe_session_set_trace(s, &sink);

    char label[160];
    snprintf(label, sizeof label, "%s prompt %d k=%d threads=%d batch=%d%s", name, gc->n_prompt, gc->k,
             threads, batch, kv == MOE_F32 ? "" : kv == MOE_F16 ? " kv=f16" : " kv=q8_0");
    moe_status st = moe_session_eval(s, gc->prompt, gc->n_prompt, &err);
    ok(st == MOE_OK, "%s: eval (%s)", label, st ? err.msg : "ok");
    if (st) {
        moe_session_free(s);
        return;
    }
    float d = test_max_abs_diff(moe_session_logits(s), gc->logits, in->vocab);
    ok(gc->n_logits == in->vocab && d <= tol, "%s: last logits within %g (max abs diff %.2e)", label, tol, d);
    if (in->n_moe_layers && kv == MOE_F32) {
        ok(!tc.bad && tc.n_tokens == gc->n_prompt, "%s: trace of %d tokens well-formed%s%s", label,
           tc.n_tokens, tc.bad ? ": " : "", tc.why);
        /* the reference's own routing decision at the last prompt token */
        int same_experts = gc->route_layers == in->n_moe_layers && gc->route_k == gc->k;
        float wdiff = 0;
        for (int l = 0; same_experts && l < gc->route_layers && l < 16; l++)
            for (int j = 0; j < gc->route_k && j < 8; j++) {
                same_experts &= tc.last_experts[l][j] == gc->route_experts[l * gc->route_k + j];
                wdiff = fmaxf(wdiff, fabsf(tc.last_weights[l][j] - gc->route_weights[l * gc->route_k + j]));
            }
        ok(same_experts && wdiff <= 1e-4f,
           "%s: last token's experts per layer match the reference, weights within 1e-4 (max diff %.1e)",
           label, wdiff);
    }

    /* each logit within tol moves a gap between two by at most 2 tol */
    if (kv != MOE_F32 && !(gc->min_margin > 2 * tol)) {
        skip("%s: reference min margin %.3g <= %g; greedy not compared", label, gc->min_margin, 2 * tol);
        moe_session_free(s);
        return;
    }
    int32_t got[64];
    int n = gc->n_greedy < 64 ? gc->n_greedy : 64, same = 1;
    for (int i = 0; i < n; i++) {
        got[i] = test_argmax(moe_session_logits(s), in->vocab);
        same &= got[i] == gc->greedy[i];
        if (i + 1 < n && moe_session_eval(s, &got[i], 1, &err))
            break;
    }
    ok(same, "%s: greedy continuation of %d tokens identical (reference min margin %.3g)", label, n,
       gc->min_margin);
    if (!same) {
        printf("#   got:      ");
        for (int i = 0; i < n; i++)
            printf(" %d", got[i]);
        printf("\n#   expected: ");
        for (int i = 0; i < n; i++)
            printf(" %d", gc->greedy[i]);
        printf("\n");
    }
    moe_session_free(s);
}

static void test_model(const char *name)
{
    char dir[1024], gpath[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/%s", test_srcdir(), name);
    snprintf(gpath, sizeof gpath, "%s/tests/fixtures/golden/%s.json", test_srcdir(), name);
    moe_model *m;
    moe_error err = {0};
    if (!ok(moe_model_open(dir, &m, &err) == MOE_OK, "%s: opens (%s)", name, err.msg))
        return;
    golden g;
    if (!ok(golden_load(gpath, &g) == 0 && g.n_cases > 0, "%s: golden file has cases", name)) {
        moe_model_close(m);
        return;
    }
    for (int i = 0; i < g.n_cases; i++) {
        /* the prefill path (one batch), on two threads */
        run_case(m, name, &g.cases[i], 2, 0, MOE_F32);
        /* long prompts again: one thread, several small batches */
        if (g.cases[i].n_prompt > 8)
            run_case(m, name, &g.cases[i], 1, 3, MOE_F32);
        /* an f16 KV cache, against the same reference; and q8_0 where
         * the head dimension makes whole blocks */
        run_case(m, name, &g.cases[i], 2, 0, MOE_F16);
        if (moe_model_info_get(m)->head_dim % 32 == 0) {
            run_case(m, name, &g.cases[i], 2, 0, MOE_Q8_0);
            if (g.cases[i].n_prompt > 8)
                run_case(m, name, &g.cases[i], 1, 3, MOE_Q8_0);
        }
    }
    /* the decode path alone: the longest prompt fed one token at a time */
    const golden_case *gc = &g.cases[g.n_cases - 1];
    moe_session *s;
    moe_session_params sp = {0, 2, 1};
    if (moe_session_new(m, &sp, &s, &err) == MOE_OK) {
        if (gc->k)
            moe_session_set_k(s, -1, gc->k, &err);
        size_t vocab = (size_t)moe_model_info_get(m)->vocab;
        float *each = malloc((size_t)gc->n_prompt * vocab * sizeof *each);
        float *all = malloc((size_t)gc->n_prompt * vocab * sizeof *all);
        for (int i = 0; i < gc->n_prompt; i++) {
            moe_session_eval(s, &gc->prompt[i], 1, &err);
            memcpy(each + i * vocab, moe_session_logits(s), vocab * sizeof *each);
        }
        float d = test_max_abs_diff(moe_session_logits(s), gc->logits, vocab);
        ok(d <= LOGIT_TOL, "%s: token-by-token prompt of %d matches (max abs diff %.2e)", name,
           gc->n_prompt, d);
        moe_session_free(s);
        /* every position's logits from one prefill (batches of 3 and of the
         * whole prompt): equal to the token-by-token ones, row by row */
        for (int batch = 3; batch <= gc->n_prompt; batch += gc->n_prompt - 3) {
            moe_session_params sp2 = {0, 2, batch};
            if (moe_session_new(m, &sp2, &s, &err))
                break;
            if (gc->k)
                moe_session_set_k(s, -1, gc->k, &err);
            moe_status st = moe_session_eval_all(s, gc->prompt, gc->n_prompt, all, &err);
            float dmax = test_max_abs_diff(all, each, (size_t)gc->n_prompt * vocab);
            float dlast = test_max_abs_diff(moe_session_logits(s), gc->logits, vocab);
            ok(st == MOE_OK && dmax <= LOGIT_TOL && dlast <= LOGIT_TOL,
               "%s: eval_all in batches of %d: all %d rows equal token-by-token (max abs diff %.2e), "
               "the last the reference's (%.2e)",
               name, batch, gc->n_prompt, dmax, dlast);
            moe_session_free(s);
            if (gc->n_prompt <= 3)
                break;
        }
        free(each);
        free(all);
    }
    golden_free(&g);
    moe_model_close(m);
}

/* Parameter counts from the config alone, independently of the binder. */
static void test_info(void)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/mixtral-tiny", test_srcdir());
    moe_model *m;
    moe_error err = {0};
    if (!ok(moe_model_open(dir, &m, &err) == MOE_OK, "mixtral-tiny opens for info (%s)", err.msg))
        return;
    const moe_model_info *in = moe_model_info_get(m);
    uint64_t d = (uint64_t)in->dim, q = (uint64_t)in->n_heads * in->head_dim,
             kv = (uint64_t)in->n_kv_heads * in->head_dim, E = (uint64_t)in->n_experts, f = (uint64_t)in->ff;
    uint64_t per_layer = 2 * d + d * q + 2 * d * kv + q * d + E * d + E * 3 * d * f;
    uint64_t total = 2 * (uint64_t)in->vocab * d + in->n_layers * per_layer + d;
    uint64_t active = total - in->n_layers * (E - (uint64_t)in->k) * 3 * d * f;
    ok(!strcmp(in->arch, "mixtral") && in->n_experts == 8 && in->k == 2 && in->n_moe_layers == in->n_layers,
       "mixtral-tiny: arch %s, %d experts, k=%d", in->arch, in->n_experts, in->k);
    ok(in->params_total == total, "parameters total %llu == %llu", (unsigned long long)in->params_total,
       (unsigned long long)total);
    ok(in->params_active == active, "parameters active %llu == %llu", (unsigned long long)in->params_active,
       (unsigned long long)active);
    ok(in->weight_bytes == total * 4, "f32 weight bytes %llu", (unsigned long long)in->weight_bytes);

    moe_session *s;
    moe_session_params sp = {64, 1, 0};
    moe_session_new(m, &sp, &s, &err);
    ok(moe_session_set_k(s, -1, 0, &err) == MOE_EINVAL, "k=0 refused: %s", err.msg);
    ok(moe_session_set_k(s, -1, 9, &err) == MOE_EINVAL && strstr(err.msg, "1 to 8"), "k=9 refused: %s",
       err.msg);
    ok(moe_session_set_k(s, 7, 2, &err) == MOE_EINVAL, "layer 7 refused: %s", err.msg);
    ok(moe_session_set_k(s, 1, 3, &err) == MOE_OK && moe_session_get_k(s, 1) == 3 &&
           moe_session_get_k(s, 0) == 2,
       "k set for one layer only");
    int32_t bad[2] = {1, in->vocab};
    ok(moe_session_eval(s, bad, 2, &err) == MOE_EINVAL && moe_session_pos(s) == 0,
       "out-of-vocabulary id refused, position unchanged: %s", err.msg);
    int32_t ids[65] = {0};
    ok(moe_session_eval(s, ids, 65, &err) == MOE_EINVAL && strstr(err.msg, "context"),
       "overlong input refused: %s", err.msg);
    ok(moe_session_eval(s, ids, 64, &err) == MOE_OK && moe_session_pos(s) == 64, "a full context is fine");
    ok(moe_session_eval(s, ids, 1, &err) == MOE_EINVAL && moe_session_pos(s) == 64,
       "one more token is refused: %s", err.msg);
    moe_session_reset(s);
    ok(moe_session_pos(s) == 0 && moe_session_eval(s, ids, 1, &err) == MOE_OK, "reset starts over");
    /* the KV cache type: chosen before the first token, f32, f16 or q8_0 */
    size_t kv32 = moe_session_kv_bytes(s);
    ok(kv32 == (size_t)in->kv_bytes_per_token * 64, "f32 KV cache of 64 positions: %zu bytes", kv32);
    ok(moe_session_set_kv_type(s, MOE_F16, &err) == MOE_EINVAL && moe_session_kv_type(s) == MOE_F32,
       "KV type refused once a token is held: %s", err.msg);
    moe_session_reset(s);
    ok(moe_session_set_kv_type(s, MOE_BF16, &err) == MOE_EINVAL && strstr(err.msg, "BF16"),
       "bf16 KV cache refused: %s", err.msg);
    ok(in->head_dim % 32 != 0 && moe_session_set_kv_type(s, MOE_Q8_0, &err) == MOE_EINVAL &&
           strstr(err.msg, "multiple of 32") && moe_session_kv_type(s) == MOE_F32,
       "q8_0 KV cache refused for head dimension %d: %s", in->head_dim, err.msg);
    ok(moe_session_set_kv_type(s, MOE_F16, &err) == MOE_OK && moe_session_kv_type(s) == MOE_F16 &&
           moe_session_kv_bytes(s) * 2 == kv32,
       "f16 KV cache takes half the bytes");
    uint64_t before = moe_session_weight_bytes(s);
    moe_session_eval(s, ids, 1, &err);
    /* one token: its embedding row, every layer's attention, router and k = 2
     * experts (layer 1 has k = 3 here), the final head; f32 weights */
    uint64_t one = (uint64_t)in->dim * 4 + in->vocab * (uint64_t)in->dim * 4 +
                   in->n_layers * (d * q + 2 * d * kv + q * d + E * d) * 4 +
                   (2 * (uint64_t)in->n_layers + 1) * 3 * d * f * 4;
    ok(moe_session_weight_bytes(s) - before == one, "weight bytes read by one token: %llu == %llu",
       (unsigned long long)(moe_session_weight_bytes(s) - before), (unsigned long long)one);
    moe_session_free(s);
    moe_model_close(m);

    snprintf(dir, sizeof dir, "%s/tests/fixtures/models/llama-tiny", test_srcdir());
    if (moe_model_open(dir, &m, &err) == MOE_OK) {
        moe_session_new(m, &sp, &s, &err);
        ok(moe_session_set_k(s, -1, 1, &err) == MOE_EINVAL && strstr(err.msg, "dense"),
           "dense model: k refused: %s", err.msg);
        ok(moe_model_info_get(m)->n_moe_layers == 0, "dense model has no MoE layers");
        moe_session_free(s);
        moe_model_close(m);
    }
    moe_session_params badp = {0, 0, -1};
    ok(moe_model_open(dir, &m, &err) == MOE_OK && moe_session_new(m, &badp, &s, &err) == MOE_EINVAL,
       "negative batch size refused: %s", err.msg);
    moe_model_close(m);
}

int main(void)
{
    static const char *models[] = {"llama-tiny", "llama3-tiny", "mixtral-tiny", "mixtral-tiny-f16",
                                   "mixtral-tiny-bf16", "mixtral-tiny-swa", "olmoe-tiny",
                                   "qwen2moe-tiny", "qwen3moe-tiny", "micro-llama-tiny", "micro-olmo-tiny",
                                   "mixtral-tiny-fused", "qwen3moe-tiny-fused"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        test_model(models[i]);
    test_info();
    return done_testing();
}
