/* GGUF models (tools/gen_gguf.py) against the golden values of the
 * safetensors fixtures they were converted from.
 *
 * F32, F16 and BF16 files hold exactly the weights the reference ran on, so
 * their logits must match the golden ones within test_model.c's 1e-3 and
 * their greedy continuations exactly. This also checks the llama Q/K
 * un-permutation: a wrong row order moves logits by far more than 1e-3.
 *
 * Q8_0 files are checked twice. Against their "-deq" twin (the same
 * quantised values widened to F32) the quantised kernels must agree within
 * the same 1e-3: that isolates the kernels from the quantisation error.
 * Against the golden f32 logits the quantisation error itself is measured:
 * Q8_0 rounds each weight to a step of max|block|/127. On these fixtures
 * (random weights, dim 64) the logits' relative RMS error is 1.1-3.9% and
 * the largest single logit error 0.10-0.39 whenever the last token is
 * routed as in the reference, except one OLMoE case at 7.3% (an earlier
 * token's routing flip is the likely cause: only the last token's routing
 * is in the golden file). Q8_RMS = 8% fails on a wrong scale or block
 * layout (errors of order 100%). A token whose router choice flips (a
 * near-tie among experts) moves discontinuously (seen: 12% and 38%), so the
 * comparison is made only when the last token's experts equal the
 * reference's. Greedy continuations must equal the
 * f32 ones where the reference's smallest top-1/top-2 gap along the path
 * exceeds Q8_MARGIN = 1.0: 2.5 times the largest logit error seen without a
 * routing flip, so that no measured error could swap the top two.
 *
 * The K-quant and Q4_0 mixes ("-k-tiny": hidden 256, since K-quant rows are
 * whole super-blocks of 256) are checked the same way, against their "-deq"
 * twin within LOGIT_TOL, and against the unquantised F16 source checkpoint
 * run through the safetensors path. An 80-token prompt crosses the
 * matrix-vector/sgemm crossover, so prefill uses dequantised tiles and
 * token-by-token decoding the fused kernels. The weights' own relative RMS
 * error (tools/gen_gguf.py on Gaussian rows) is 5.7% for Q4_K, 6.8% Q4_0,
 * 2.9% Q5_K, 1.5% Q6_K, 0.5% Q8_0; through a layer it grows 2-8 times (Q8_0
 * above). Measured logit errors with the last token routed as in the source:
 * Q4_K_M 7.9-19.2% (largest single logit error 1.77), Q4_0 14.5% (1.26),
 * Q5_K_M 5.7% (0.49). Q4_RMS = 0.30 and Q5_RMS = 0.12 are about 1.5 and 2
 * times the largest measured; a wrong block layout or scale gives errors of
 * order 100%. Greedy continuations are compared where the source's smallest
 * top-1/top-2 gap exceeds 2.5 times the largest logit error measured
 * (Q4_MARGIN 4.5, Q5_MARGIN 1.25); on these random models the gaps are
 * smaller (0.04-0.34), so the comparison is skipped with the reason
 * printed: for 4- and 5-bit weights the continuation is not expected to
 * survive.
 *
 * Those checks run with f32 activations (moe_session_set_act_type). The
 * default on AVX-512 quantises the activations meeting Q4_K/Q5_K/Q6_K
 * weights to 8 bits (blocks of 256, step max|x|/127: the step of Q8_0
 * weights, over longer blocks), so it is checked against the "-deq" twin
 * as Q8_0 weights are against f32, with its own measured bound: relative
 * RMS logit error 0.7-1.4% (largest single logit error 0.12) when the last
 * token is routed alike; Q8ACT_RMS = 3% is about twice the largest, and a
 * wrong kernel gives errors of order 100% (test_quant bounds every product
 * by the activations' rounding). Greedy continuations are compared where
 * the twin's smallest margin exceeds Q8ACT_MARGIN = 0.3, 2.5 times the
 * largest logit error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "moescope/moescope.h"
#include "tap.h"
#include "testutil.h"

#define LOGIT_TOL 1e-3
#define Q8_RMS 0.08
#define Q8_MARGIN 1.0
#define Q4_RMS 0.30
#define Q4_MARGIN 4.5
#define Q5_RMS 0.12
#define Q5_MARGIN 1.25
#define Q8ACT_RMS 0.03
#define Q8ACT_MARGIN 0.3

static moe_model *open_gguf(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/gguf/%s.gguf", test_srcdir(), name);
    moe_model *m = NULL;
    moe_error err = {0};
    ok(moe_model_open(path, &m, &err) == MOE_OK, "%s: opens (%s)", name, err.msg);
    return m;
}

/* The experts chosen for the most recent token, per MoE layer. */
typedef struct {
    int experts[16][8];
} last_route;

static void on_token(void *ctx, const moe_token_trace *t)
{
    last_route *r = ctx;
    for (int l = 0; l < t->n_routes && l < 16; l++)
        for (int j = 0; j < t->routes[l].k && j < 8; j++)
            r->experts[l][j] = t->routes[l].experts[j];
}

static last_route route; /* of the prompt's last token in the latest run */

/* Logits after the prompt, then the greedy continuation of n tokens. */
static int run(moe_model *m, const golden_case *gc, int batch, float *logits, int32_t *greedy, int n)
{
    moe_session *s;
    moe_error err = {0};
    moe_session_params sp = {0, 2, batch};
    if (moe_session_new(m, &sp, &s, &err))
        return 0;
    if (gc->k)
        moe_session_set_k(s, -1, gc->k, &err);
    memset(&route, 0, sizeof route);
    moe_trace_sink sink = {&route, on_token};
    moe_session_set_trace(s, &sink);
    int vocab = moe_model_info_get(m)->vocab, good = moe_session_eval(s, gc->prompt, gc->n_prompt, &err) == MOE_OK;
    moe_session_set_trace(s, NULL);
    if (good)
        memcpy(logits, moe_session_logits(s), (size_t)vocab * sizeof *logits);
    for (int i = 0; good && i < n; i++) {
        greedy[i] = test_argmax(moe_session_logits(s), vocab);
        good = i + 1 == n || moe_session_eval(s, &greedy[i], 1, &err) == MOE_OK;
    }
    moe_session_free(s);
    return good;
}

/* A GGUF file whose weights equal the golden model's. */
static void test_exact(const char *file, const char *golden_name, const char *arch, const char *dtype)
{
    moe_model *m = open_gguf(file);
    if (!m)
        return;
    const moe_model_info *in = moe_model_info_get(m);
    ok(!strcmp(in->arch, arch) && !strcmp(moe_dtype_name(in->dtype), dtype), "%s: arch %s, dtype %s", file,
       in->arch, moe_dtype_name(in->dtype));
    char gpath[1024];
    snprintf(gpath, sizeof gpath, "%s/tests/fixtures/golden/%s.json", test_srcdir(), golden_name);
    golden g;
    if (golden_load(gpath, &g)) {
        moe_model_close(m);
        return;
    }
    float *logits = malloc((size_t)in->vocab * sizeof *logits);
    for (int i = 0; i < g.n_cases; i++) {
        const golden_case *gc = &g.cases[i];
        int32_t got[64];
        int n = gc->n_greedy < 64 ? gc->n_greedy : 64;
        for (int batch = 0; batch <= 1; batch++) { /* prefill (sgemm) and token by token (matvec) */
            if (!ok(run(m, gc, batch, logits, got, n), "%s case %d: runs", file, i))
                continue;
            float d = test_max_abs_diff(logits, gc->logits, in->vocab);
            ok(gc->n_logits == in->vocab && d <= LOGIT_TOL, "%s case %d batch %d: logits within %g (max diff %.2e)",
               file, i, batch, LOGIT_TOL, d);
            ok(!memcmp(got, gc->greedy, (size_t)n * sizeof *got), "%s case %d batch %d: greedy %d tokens identical",
               file, i, batch, n);
        }
    }
    free(logits);
    golden_free(&g);
    moe_model_close(m);
}

/* A Q8_0 file: against its dequantised twin, and against the golden f32. */
static void test_q8(const char *file, const char *golden_name)
{
    char deq_name[256];
    snprintf(deq_name, sizeof deq_name, "%s-deq", file);
    moe_model *m = open_gguf(file), *d = open_gguf(deq_name);
    char gpath[1024];
    snprintf(gpath, sizeof gpath, "%s/tests/fixtures/golden/%s.json", test_srcdir(), golden_name);
    golden g;
    if (!m || !d || golden_load(gpath, &g)) {
        moe_model_close(m);
        moe_model_close(d);
        return;
    }
    const moe_model_info *in = moe_model_info_get(m);
    ok(!strcmp(moe_dtype_name(in->dtype), "Q8_0"), "%s: dtype %s", file, moe_dtype_name(in->dtype));
    float *lq = malloc((size_t)in->vocab * sizeof *lq), *ld = malloc((size_t)in->vocab * sizeof *ld);
    for (int i = 0; i < g.n_cases; i++) {
        const golden_case *gc = &g.cases[i];
        int32_t gq[64], gd[64];
        int n = gc->n_greedy < 64 ? gc->n_greedy : 64;
        for (int batch = 0; batch <= 1; batch++) {
            if (!ok(run(m, gc, batch, lq, gq, n) && run(d, gc, batch, ld, gd, n), "%s case %d: runs", file, i))
                continue;
            float dd = test_max_abs_diff(lq, ld, in->vocab), dg = test_max_abs_diff(lq, gc->logits, in->vocab);
            double se = 0, ss = 0;
            for (int v = 0; v < in->vocab; v++)
                se += (lq[v] - gc->logits[v]) * (double)(lq[v] - gc->logits[v]), ss += gc->logits[v] * (double)gc->logits[v];
            int same_route = gc->route_layers == in->n_moe_layers;
            for (int l = 0; same_route && l < gc->route_layers && l < 16; l++)
                for (int j = 0; j < gc->route_k && j < 8; j++)
                    same_route &= route.experts[l][j] == gc->route_experts[l * gc->route_k + j];
            ok(dd <= LOGIT_TOL, "%s case %d batch %d: logits equal the dequantised weights' within %g (%.2e)", file, i,
               batch, LOGIT_TOL, dd);
            if (same_route)
                ok(sqrt(se / ss) <= Q8_RMS, "%s case %d batch %d: relative RMS error %.4f <= %g (max %.3f)", file, i,
                   batch, sqrt(se / ss), Q8_RMS, dg);
            else
                skip("%s case %d: the last token's routing differs from the reference's (relative RMS %.3f)", file, i,
                     sqrt(se / ss));
            if (gc->min_margin > Q8_MARGIN)
                ok(!memcmp(gq, gc->greedy, (size_t)n * sizeof *gq),
                   "%s case %d batch %d: greedy %d tokens equal the f32 ones (min margin %.2f > %.2f)", file, i, batch,
                   n, gc->min_margin, Q8_MARGIN);
            else
                skip("%s case %d: min margin %.2f <= %.2f; greedy not compared", file, i, gc->min_margin, Q8_MARGIN);
        }
    }
    free(lq);
    free(ld);
    golden_free(&g);
    moe_model_close(m);
    moe_model_close(d);
}

/* ---- K-quant and Q4_0 mixes ------------------------------------------- */

/* A fixed prompt of n ids below vocab (an LCG), longer than the matrix-vector
 * crossover so that prefill goes through the dequantised sgemm tiles. */
static void mix_prompt(int32_t *ids, int n, int vocab)
{
    uint32_t s = 12345;
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        ids[i] = 3 + (int32_t)((s >> 8) % (uint32_t)(vocab - 3));
    }
}

enum { MIX_PROMPT = 80, MIX_GREEDY = 16 };

/* Logits after the prompt, the greedy continuation, the last prompt token's
 * routing and the smallest top-1/top-2 logit gap along the greedy path. */
static int run_ids(moe_model *m, const int32_t *ids, int n_ids, int batch, moe_dtype act, float *logits,
                   int32_t *greedy, int n, last_route *r, float *margin)
{
    moe_session *s;
    moe_error err = {0};
    moe_session_params sp = {0, 2, batch};
    if (moe_session_new(m, &sp, &s, &err))
        return 0;
    if (moe_session_set_act_type(s, act, &err)) {
        moe_session_free(s);
        return 0;
    }
    memset(&route, 0, sizeof route);
    moe_trace_sink sink = {&route, on_token};
    moe_session_set_trace(s, &sink);
    int vocab = moe_model_info_get(m)->vocab, good = moe_session_eval(s, ids, n_ids, &err) == MOE_OK;
    moe_session_set_trace(s, NULL);
    *r = route;
    if (good)
        memcpy(logits, moe_session_logits(s), (size_t)vocab * sizeof *logits);
    *margin = INFINITY;
    for (int i = 0; good && i < n; i++) {
        const float *l = moe_session_logits(s);
        greedy[i] = test_argmax(l, vocab);
        float second = -INFINITY;
        for (int v = 0; v < vocab; v++)
            if (v != greedy[i] && l[v] > second)
                second = l[v];
        if (l[greedy[i]] - second < *margin)
            *margin = l[greedy[i]] - second;
        good = i + 1 == n || moe_session_eval(s, &greedy[i], 1, &err) == MOE_OK;
    }
    moe_session_free(s);
    return good;
}

/* The mix with 8-bit activations (the default on AVX-512) against its
 * "-deq" twin's logits ld (f32 activations; route rd, smallest greedy
 * margin md): the relative RMS error of the logits within Q8ACT_RMS when
 * the last token is routed alike, and the same greedy continuation where
 * md exceeds Q8ACT_MARGIN. */
static void test_act_q8(moe_model *m, const char *file, const int32_t *ids, int batch, const float *ld,
                        const int32_t *gd, const last_route *rd, float md)
{
    int vocab = moe_model_info_get(m)->vocab;
    int32_t g8[MIX_GREEDY];
    float *l8 = malloc((size_t)vocab * sizeof *l8), m8;
    last_route r8;
    if (!ok(l8 && run_ids(m, ids, MIX_PROMPT, batch, MOE_Q8_0, l8, g8, MIX_GREEDY, &r8, &m8),
            "%s batch %d, 8-bit activations: runs", file, batch)) {
        free(l8);
        return;
    }
    double se = 0, ss = 0;
    for (int v = 0; v < vocab; v++)
        se += (l8[v] - ld[v]) * (double)(l8[v] - ld[v]), ss += ld[v] * (double)ld[v];
    double rel = sqrt(se / ss);
    if (!memcmp(&r8, rd, sizeof r8))
        ok(rel <= Q8ACT_RMS,
           "%s batch %d, 8-bit activations: relative RMS error against the dequantised weights' %.4f <= %g "
           "(max %.3f)", file, batch, rel, Q8ACT_RMS, test_max_abs_diff(l8, ld, vocab));
    else
        skip("%s batch %d, 8-bit activations: the last token's routing differs from f32's (relative RMS %.3f)", file,
             batch, rel);
    if (md > Q8ACT_MARGIN)
        ok(!memcmp(g8, gd, MIX_GREEDY * sizeof *g8), "%s batch %d, 8-bit activations: greedy %d tokens equal (min margin %.2f > %.2f)",
           file, batch, MIX_GREEDY, md, Q8ACT_MARGIN);
    else
        skip("%s batch %d, 8-bit activations: the dequantised model's min margin %.2f <= %.2f; greedy not compared",
             file, batch, md, Q8ACT_MARGIN);
    free(l8);
}

/* A quantised mix (tools/gen_gguf.py): against its "-deq" twin within
 * LOGIT_TOL, and against the unquantised source checkpoint (F16 safetensors,
 * run through the safetensors path) within rms_bound relative RMS (when the
 * last token is routed alike) and with equal greedy continuations where the
 * source's smallest top-1/top-2 gap exceeds margin_bound. `types` lists the
 * weight types the mix must contain. */
static void test_mix(const char *file, const char *source, const moe_dtype *types, int n_types, double rms_bound,
                     double margin_bound)
{
    char deq_name[256], spath[1024];
    snprintf(deq_name, sizeof deq_name, "%s-deq", file);
    snprintf(spath, sizeof spath, "%s/tests/fixtures/models/%s", test_srcdir(), source);
    moe_model *m = open_gguf(file), *d = open_gguf(deq_name), *src = NULL;
    moe_error err = {0};
    ok(moe_model_open(spath, &src, &err) == MOE_OK, "%s: opens (%s)", source, err.msg);
    if (!m || !d || !src) {
        moe_model_close(m);
        moe_model_close(d);
        moe_model_close(src);
        return;
    }
    const moe_model_info *in = moe_model_info_get(m);
    char mix[256] = "";
    int have_all = 1;
    for (int t = 0; t < MOE_DTYPE_COUNT; t++)
        if (in->bytes_by_type[t])
            snprintf(mix + strlen(mix), sizeof mix - strlen(mix), " %s %.0f%%", moe_dtype_name((moe_dtype)t),
                     100.0 * (double)in->bytes_by_type[t] / (double)in->weight_bytes);
    for (int i = 0; i < n_types; i++)
        have_all &= in->bytes_by_type[types[i]] > 0;
    ok(have_all, "%s: weight types%s", file, mix);

    int vocab = in->vocab;
    int32_t ids[MIX_PROMPT], gq[MIX_GREEDY], gd[MIX_GREEDY], gs[MIX_GREEDY];
    mix_prompt(ids, MIX_PROMPT, vocab);
    float *lq = malloc((size_t)vocab * sizeof *lq), *ld = malloc((size_t)vocab * sizeof *ld),
          *ls = malloc((size_t)vocab * sizeof *ls);
    last_route rq, rd, rs;
    float mq, md, ms;
    for (int batch = 0; batch <= 1; batch++) {
        if (!ok(run_ids(m, ids, MIX_PROMPT, batch, MOE_F32, lq, gq, MIX_GREEDY, &rq, &mq) &&
                    run_ids(d, ids, MIX_PROMPT, batch, MOE_F32, ld, gd, MIX_GREEDY, &rd, &md) &&
                    run_ids(src, ids, MIX_PROMPT, batch, MOE_F32, ls, gs, MIX_GREEDY, &rs, &ms),
                "%s batch %d: runs", file, batch))
            continue;
        float dd = test_max_abs_diff(lq, ld, vocab), dg = test_max_abs_diff(lq, ls, vocab);
        ok(dd <= LOGIT_TOL, "%s batch %d, f32 activations: logits equal the dequantised weights' within %g (%.2e)",
           file, batch, LOGIT_TOL, dd);
        test_act_q8(m, file, ids, batch, ld, gd, &rd, md);
        ok(!memcmp(gq, gd, sizeof gq) || md <= 2 * LOGIT_TOL,
           "%s batch %d: greedy %d tokens equal the dequantised weights' (min margin %.3f)", file, batch,
           MIX_GREEDY, md);
        double se = 0, ss = 0;
        for (int v = 0; v < vocab; v++)
            se += (lq[v] - ls[v]) * (double)(lq[v] - ls[v]), ss += ls[v] * (double)ls[v];
        double rel = sqrt(se / ss);
        if (!memcmp(&rq, &rs, sizeof rq))
            ok(rel <= rms_bound, "%s batch %d: relative RMS error against the unquantised model %.4f <= %g (max %.3f)",
               file, batch, rel, rms_bound, dg);
        else
            skip("%s batch %d: the last token's routing differs from the unquantised model's (relative RMS %.3f)",
                 file, batch, rel);
        if (ms > margin_bound)
            ok(!memcmp(gq, gs, sizeof gq), "%s batch %d: greedy %d tokens equal the unquantised ones (min margin %.2f > %.2f)",
               file, batch, MIX_GREEDY, ms, margin_bound);
        else
            skip("%s batch %d: the unquantised model's min margin %.2f <= %.2f; greedy not compared", file, batch, ms,
                 margin_bound);
    }
    free(lq);
    free(ld);
    free(ls);
    moe_model_close(m);
    moe_model_close(d);
    moe_model_close(src);
}

static void test_errors(void)
{
    char path[1024];
    moe_model *m = NULL;
    moe_error err = {0};
    snprintf(path, sizeof path, "%s/tests/fixtures/gguf/missing.gguf", test_srcdir());
    ok(moe_model_open(path, &m, &err) == MOE_EIO && !m && strstr(err.msg, "missing.gguf"), "a missing file: %s",
       err.msg);
    snprintf(path, sizeof path, "%s/tests/fixtures/gguf/bad-q4_k-rows.gguf", test_srcdir());
    err = (moe_error){0};
    ok(moe_model_open(path, &m, &err) == MOE_EFORMAT && !m && strstr(err.msg, "bad-q4_k-rows.gguf") &&
           strstr(err.msg, "'token_embd.weight'") && strstr(err.msg, "Q4_K") && strstr(err.msg, "rows of 64"),
       "a Q4_K tensor whose rows are not whole blocks: %s", err.msg);
}

int main(void)
{
    test_exact("mixtral-tiny-f32", "mixtral-tiny", "mixtral", "F32");
    test_exact("mixtral-tiny-f32-split", "mixtral-tiny", "mixtral", "F32");
    test_exact("mixtral-tiny-f16", "mixtral-tiny-f16", "mixtral", "F16");
    test_exact("mixtral-tiny-bf16", "mixtral-tiny-bf16", "mixtral", "BF16");
    test_exact("llama-tiny-f32", "llama-tiny", "llama", "F32");
    test_exact("llama3-tiny-f32", "llama3-tiny", "llama", "F32"); /* rope_freqs.weight: Llama 3 RoPE scaling */
    test_exact("qwen2moe-tiny-f32", "qwen2moe-tiny", "qwen2moe", "F32");
    test_exact("qwen3moe-tiny-f32", "qwen3moe-tiny", "qwen3moe", "F32");
    test_exact("olmoe-tiny-f32", "olmoe-tiny", "olmoe", "F32");
    test_q8("mixtral-tiny-q8_0", "mixtral-tiny");
    test_q8("qwen2moe-tiny-q8_0", "qwen2moe-tiny");
    test_q8("qwen3moe-tiny-q8_0", "qwen3moe-tiny");
    test_q8("olmoe-tiny-q8_0", "olmoe-tiny");
    {
        static const moe_dtype k4m8[] = {MOE_Q4_K, MOE_Q5_K, MOE_Q6_K, MOE_Q8_0};
        static const moe_dtype k4m[] = {MOE_Q4_K, MOE_Q6_K, MOE_Q8_0};
        static const moe_dtype k5m[] = {MOE_Q5_K, MOE_Q6_K, MOE_Q8_0};
        static const moe_dtype q40[] = {MOE_Q4_0, MOE_Q6_K};
        test_mix("mixtral-k-tiny-q4_k_m", "mixtral-k-tiny", k4m8, 4, Q4_RMS, Q4_MARGIN);
        test_mix("qwen3moe-k-tiny-q4_k_m", "qwen3moe-k-tiny", k4m, 3, Q4_RMS, Q4_MARGIN);
        test_mix("qwen3moe-k-tiny-q5_k_m", "qwen3moe-k-tiny", k5m, 3, Q5_RMS, Q5_MARGIN);
        test_mix("olmoe-k-tiny-q4_k_m", "olmoe-k-tiny", k4m, 3, Q4_RMS, Q4_MARGIN);
        test_mix("olmoe-k-tiny-q4_0", "olmoe-k-tiny", q40, 2, Q4_RMS, Q4_MARGIN);
        test_mix("qwen2moe-k-tiny-q4_k_m", "qwen2moe-k-tiny", k4m, 3, Q4_RMS, Q4_MARGIN);
    }
    test_errors();
    return done_testing();
}
