/* The sampler: each stage of the chain, seeded determinism, and the
 * distribution it draws from (frequencies against the softmax computed
 * here by hand). */
#include <math.h>
#include <string.h>

#include "moescope/moescope.h"
#include "tap.h"

static moe_sampler *make(moe_sampler_params p, int n)
{
    moe_sampler *s = NULL;
    moe_error err;
    if (moe_sampler_new(&p, n, &s, &err))
        diag("sampler: %s", err.msg);
    return s;
}

static moe_sampler_params plain(float temp, uint64_t seed)
{
    moe_sampler_params p = moe_sampler_defaults();
    p.temp = temp;
    p.top_k = 0;
    p.top_p = 1;
    p.min_p = 0;
    p.seed = seed;
    return p;
}

/* Draw n samples and count each id. */
static void draw(moe_sampler *s, const float *logits, int n, int *counts)
{
    for (int i = 0; i < n; i++)
        counts[moe_sampler_sample(s, logits)]++;
}

int main(void)
{
    const float lg[5] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.08f), logf(0.02f)};

    moe_sampler *s = make(plain(0, 1), 5);
    ok(moe_sampler_sample(s, lg) == 0, "greedy takes the most likely token");
    moe_sampler_free(s);

    /* Seeded: the same seed repeats, a different seed does not. */
    int a[64], b[64], c[64];
    moe_sampler *s1 = make(plain(1, 42), 5), *s2 = make(plain(1, 42), 5), *s3 = make(plain(1, 43), 5);
    int differ = 0;
    for (int i = 0; i < 64; i++) {
        a[i] = moe_sampler_sample(s1, lg);
        b[i] = moe_sampler_sample(s2, lg);
        c[i] = moe_sampler_sample(s3, lg);
        differ |= a[i] != c[i];
    }
    ok(memcmp(a, b, sizeof a) == 0, "same seed, same 64 draws");
    ok(differ, "another seed, other draws");
    moe_sampler_free(s1);
    moe_sampler_free(s2);
    moe_sampler_free(s3);

    /* Temperature 1 reproduces the softmax: 40000 draws, each frequency
     * within 0.01 (about 4 standard deviations at p = 0.4). */
    int counts[5] = {0};
    s = make(plain(1, 7), 5);
    draw(s, lg, 40000, counts);
    const double p[5] = {0.4, 0.3, 0.2, 0.08, 0.02};
    double worst = 0;
    for (int i = 0; i < 5; i++)
        worst = fmax(worst, fabs(counts[i] / 40000.0 - p[i]));
    ok(worst < 0.01, "temperature 1 frequencies match the softmax (worst gap %.4f)", worst);
    moe_sampler_free(s);

    /* Temperature 0.5 squares the odds: p ∝ p_i². */
    memset(counts, 0, sizeof counts);
    s = make(plain(0.5f, 9), 5);
    draw(s, lg, 40000, counts);
    double z = 0;
    for (int i = 0; i < 5; i++)
        z += p[i] * p[i];
    worst = 0;
    for (int i = 0; i < 5; i++)
        worst = fmax(worst, fabs(counts[i] / 40000.0 - p[i] * p[i] / z));
    ok(worst < 0.01, "temperature 0.5 sharpens as p^2 (worst gap %.4f)", worst);
    moe_sampler_free(s);

    /* top-k 2 keeps ids 0 and 1 */
    moe_sampler_params q = plain(1, 3);
    q.top_k = 2;
    memset(counts, 0, sizeof counts);
    s = make(q, 5);
    draw(s, lg, 5000, counts);
    ok(counts[2] + counts[3] + counts[4] == 0 && counts[0] && counts[1], "top-k 2 keeps two tokens");
    moe_sampler_free(s);

    /* top-p 0.65: 0.4 + 0.3 reaches it, so ids 0 and 1 */
    q = plain(1, 4);
    q.top_p = 0.65f;
    memset(counts, 0, sizeof counts);
    s = make(q, 5);
    draw(s, lg, 5000, counts);
    ok(counts[2] + counts[3] + counts[4] == 0 && counts[0] && counts[1], "top-p 0.65 keeps two tokens");
    moe_sampler_free(s);

    /* min-p 0.25: p >= 0.1 keeps ids 0, 1, 2 */
    q = plain(1, 5);
    q.min_p = 0.25f;
    memset(counts, 0, sizeof counts);
    s = make(q, 5);
    draw(s, lg, 5000, counts);
    ok(counts[3] + counts[4] == 0 && counts[2], "min-p 0.25 keeps three tokens");
    moe_sampler_free(s);

    /* Repetition penalty divides positive logits and multiplies negative ones. */
    const float rl[3] = {2.0f, 1.5f, -0.5f};
    q = plain(0, 1);
    q.repeat_penalty = 2.0f;
    s = make(q, 3);
    moe_sampler_accept(s, 0);
    ok(moe_sampler_sample(s, rl) == 1, "penalised token 0 (2.0 -> 1.0) loses to 1.5");
    moe_sampler_free(s);
    const float rn[3] = {-1.0f, -1.5f, -3.0f};
    s = make(q, 3);
    moe_sampler_accept(s, 0);
    ok(moe_sampler_sample(s, rn) == 1, "penalised negative token 0 (-1 -> -2) loses to -1.5");
    moe_sampler_free(s);
    q.repeat_last_n = 1;
    s = make(q, 3);
    moe_sampler_accept(s, 0);
    moe_sampler_accept(s, 2);
    ok(moe_sampler_sample(s, rl) == 0, "the penalty only sees repeat_last_n tokens");
    moe_sampler_free(s);

    /* Impossible settings are refused with a message. */
    moe_error err;
    moe_sampler *bad = NULL;
    q = plain(1, 0);
    q.top_p = 1.5f;
    ok(moe_sampler_new(&q, 5, &bad, &err) == MOE_EINVAL && strstr(err.msg, "top-p"), "top-p 1.5: %s",
       err.msg);
    q = plain(-1, 0);
    ok(moe_sampler_new(&q, 5, &bad, &err) == MOE_EINVAL && strstr(err.msg, "temperature"),
       "temperature -1: %s", err.msg);
    q = plain(1, 0);
    q.repeat_penalty = 0;
    ok(moe_sampler_new(&q, 5, &bad, &err) == MOE_EINVAL, "repeat penalty 0: %s", err.msg);
    ok(bad == NULL, "no sampler on failure");
    return done_testing();
}
