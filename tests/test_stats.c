/* Routing statistics on crafted routings whose answers are worked out by
 * hand in the comments. */
#include <math.h>
#include <string.h>

#include "moescope/moescope.h"
#include "tap.h"

#define CLOSE(a, b) (fabs((a) - (b)) < 1e-12)

/* Feed one token routed to `experts` (k of them, weights given) in each of
 * n_routes layers (layer r gets experts shifted by r*shift). */
static void feed(moe_stats *st, int n_routes, int E, const int *experts, const float *weights, int k)
{
    float probs[64] = {0};
    int ex[8][8];
    moe_route routes[8];
    for (int r = 0; r < n_routes; r++) {
        for (int j = 0; j < k; j++)
            ex[r][j] = experts[j];
        routes[r] = (moe_route){r, E, probs, k, ex[r], weights, NULL};
    }
    moe_token_trace t = {0, 0, n_routes, routes};
    moe_stats_add(st, &t);
}

int main(void)
{
    moe_stats *st;
    moe_error err;
    moe_stats_layer L;

    /* E = 4, k = 1, one layer, capacity factor 1 over batches of 4 tokens.
     * First choices 0 0 1 2 | 0 3 3 3:
     *   shares 3/8 1/8 1/8 3/8;
     *   consecutive pairs: 7, same in (0,0) (3,3) (3,3) -> 3/7;
     *   load 3 1 1 3: mean 2, sd 1 -> CV 0.5 (weights 1: importance too);
     *   capacity ceil(1 * 4 * 1 / 4) = 1: batch one overflows expert 0 once,
     *   batch two expert 3 twice -> 3 of 8 assignments. */
    ok(moe_stats_new(1, 4, 1, 1.0, 4, &st, &err) == MOE_OK, "stats for 1 layer of 4 experts");
    const int seq[8] = {0, 0, 1, 2, 0, 3, 3, 3};
    const float one = 1.0f;
    for (int i = 0; i < 8; i++)
        feed(st, 1, 4, &seq[i], &one, 1);
    moe_stats_get(st, 0, &L);
    ok(L.n_tokens == 8, "8 tokens");
    ok(CLOSE(L.share_top1[0], 3.0 / 8) && CLOSE(L.share_top1[1], 1.0 / 8) && CLOSE(L.share_top1[3], 3.0 / 8),
       "shares 3/8 1/8 1/8 3/8 (%g %g %g %g)", L.share_top1[0], L.share_top1[1], L.share_top1[2],
       L.share_top1[3]);
    ok(CLOSE(L.same_top1, 3.0 / 7), "same first choice in 3 of 7 consecutive pairs (%g)", L.same_top1);
    ok(CLOSE(L.cv_load, 0.5) && CLOSE(L.cv_importance, 0.5), "CV of load and importance 0.5 (%g, %g)",
       L.cv_load, L.cv_importance);
    ok(CLOSE(L.overflow, 3.0 / 8), "3 of 8 assignments overflow capacity 1 (%g)", L.overflow);
    ok(CLOSE(L.chance_top1, 0.25) && CLOSE(L.chance_any, 0.25), "chance 1/4 for k = 1");
    moe_stats_free(st);

    /* A sequence break: 0 | 0 makes no pair. */
    moe_stats_new(1, 4, 1, 1.0, 4, &st, &err);
    feed(st, 1, 4, &seq[0], &one, 1);
    moe_stats_break(st);
    feed(st, 1, 4, &seq[1], &one, 1);
    moe_stats_get(st, 0, &L);
    ok(L.same_top1 == 0, "no consecutive pair across a break");
    moe_stats_free(st);

    /* E = 8, k = 2 (Mixtral): chance of sharing an expert is
     * 1 - (6/8)(5/7) = 13/28 ~ 46%, the paper's random baseline. Tokens
     * {1,2} {2,5} {6,7}: pairs share in 1 of 2; first choices never repeat.
     * Weights 0.75/0.25: importance per expert 0 .75 1.0 0 0 .25 .75 .25,
     * mean 3/8; load 0 1 2 0 0 1 1 1, mean 6/8. */
    moe_stats_new(2, 8, 2, 2.0, 3, &st, &err);
    const int a[2] = {1, 2}, b[2] = {2, 5}, c[2] = {6, 7};
    const float w[2] = {0.75f, 0.25f};
    feed(st, 2, 8, a, w, 2);
    feed(st, 2, 8, b, w, 2);
    feed(st, 2, 8, c, w, 2);
    moe_stats_get(st, 1, &L);
    ok(CLOSE(L.chance_any, 13.0 / 28), "chance of a shared expert for top-2 of 8 is 13/28 (%g)", L.chance_any);
    ok(CLOSE(L.same_any, 0.5) && L.same_top1 == 0, "1 of 2 pairs share an expert, none a first choice");
    double imp[8] = {0, .75, 1.0, 0, 0, .25, .75, .25}, m = 3.0 / 8, var = 0;
    for (int e = 0; e < 8; e++)
        var += (imp[e] - m) * (imp[e] - m) / 8;
    double ld[8] = {0, 1, 2, 0, 0, 1, 1, 1}, lm = 6.0 / 8, lv = 0;
    for (int e = 0; e < 8; e++)
        lv += (ld[e] - lm) * (ld[e] - lm) / 8;
    ok(fabs(L.cv_importance - sqrt(var) / m) < 1e-6 && CLOSE(L.cv_load, sqrt(lv) / lm),
       "CV of importance %.6f and load %.6f", L.cv_importance, L.cv_load);
    ok(CLOSE(L.share_any[2], 2.0 / 3) && CLOSE(L.share_top1[1], 1.0 / 3), "expert 2 in 2 of 3 tokens");
    /* capacity ceil(2 * 3 * 2 / 8) = 2: expert 2 has 2, nothing overflows */
    ok(L.overflow == 0, "no overflow at capacity factor 2");
    moe_stats_layer P;
    moe_stats_get(st, -1, &P);
    double sum = 0;
    for (int e = 0; e < 8; e++)
        sum += P.share_top1[e];
    ok(CLOSE(sum, 1) && CLOSE(P.share_any[2], 2.0 / 3) && CLOSE(P.same_any, 0.5),
       "pooled over 2 identical layers: same figures");
    moe_stats_free(st);

    /* A short batch: 3 tokens 0 0 1 with batch 4 and capacity factor 1 give
     * capacity ceil(3 / 4) = 1, so expert 0's second token overflows: 1/3. */
    moe_stats_new(1, 4, 1, 1.0, 4, &st, &err);
    for (int i = 0; i < 3; i++)
        feed(st, 1, 4, &seq[i], &one, 1);
    moe_stats_get(st, 0, &L);
    ok(CLOSE(L.overflow, 1.0 / 3), "a short batch has a capacity of its own (overflow %g)", L.overflow);
    moe_stats_free(st);

    ok(moe_stats_new(1, 4, 5, 1.0, 4, &st, &err) == MOE_EINVAL, "k above the experts refused: %s", err.msg);
    ok(moe_stats_new(1, 4, 1, 0, 4, &st, &err) == MOE_EINVAL, "capacity factor 0 refused: %s", err.msg);
    return done_testing();
}
