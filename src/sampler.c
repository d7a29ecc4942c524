/* Choosing the next token: greedy, or the llama.cpp chain of repetition
 * penalty, top-k, top-p, min-p and temperature, then a draw from a seeded
 * generator so that a run can be repeated exactly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct {
    float logit;
    int32_t id;
} cand;

struct moe_sampler {
    moe_sampler_params p;
    int n_vocab;
    cand *cands;               /* (n_vocab) */
    int32_t *history;          /* ring of the last repeat_last_n tokens */
    int n_hist, hist_at;
    uint64_t rng;
};

moe_sampler_params moe_sampler_defaults(void)
{
    return (moe_sampler_params){0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0};
}

moe_status moe_sampler_new(const moe_sampler_params *p, int n_vocab, moe_sampler **out, moe_error *err)
{
    *out = NULL;
    if (!(p->temp >= 0 && p->temp <= 100))
        return moe_fail(err, MOE_EINVAL, "temperature %g is out of range (0 to 100)", p->temp);
    if (!(p->top_p >= 0 && p->top_p <= 1))
        return moe_fail(err, MOE_EINVAL, "top-p %g is out of range (0 to 1)", p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return moe_fail(err, MOE_EINVAL, "min-p %g is out of range (0 to 1)", p->min_p);
    if (!(p->repeat_penalty > 0 && p->repeat_penalty <= 100))
        return moe_fail(err, MOE_EINVAL, "repeat penalty %g is out of range (above 0, at most 100)",
                        p->repeat_penalty);
    if (p->repeat_last_n < 0 || p->repeat_last_n > (1 << 20))
        return moe_fail(err, MOE_EINVAL, "repeat-last-n %d is out of range", p->repeat_last_n);
    if (n_vocab < 1)
        return moe_fail(err, MOE_EINVAL, "empty vocabulary");
    moe_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return moe_fail(err, MOE_ENOMEM, "out of memory for the sampler");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    s->history = malloc((size_t)(p->repeat_last_n ? p->repeat_last_n : 1) * sizeof *s->history);
    if (!s->cands || !s->history) {
        moe_sampler_free(s);
        return moe_fail(err, MOE_ENOMEM, "out of memory for the sampler");
    }
    /* splitmix64 of the seed: different seeds give unrelated streams */
    s->rng = p->seed + 0x9E3779B97F4A7C15ull;
    *out = s;
    return MOE_OK;
}

void moe_sampler_free(moe_sampler *s)
{
    if (!s)
        return;
    free(s->cands);
    free(s->history);
    free(s);
}

void moe_sampler_accept(moe_sampler *s, int32_t id)
{
    if (!s->p.repeat_last_n)
        return;
    s->history[s->hist_at] = id;
    s->hist_at = (s->hist_at + 1) % s->p.repeat_last_n;
    if (s->n_hist < s->p.repeat_last_n)
        s->n_hist++;
}

static double next_uniform(moe_sampler *s)
{
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int by_logit_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void penalize(moe_sampler *s)
{
    if (s->p.repeat_penalty == 1.0f)
        return;
    /* Each distinct recent token is penalised once, as in llama.cpp. */
    for (int i = 0; i < s->n_hist; i++) {
        int32_t id = s->history[i];
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= s->history[j] == id;
        if (seen || id < 0 || id >= s->n_vocab)
            continue;
        float *l = &s->cands[id].logit; /* cands are still indexed by id here */
        *l = *l > 0 ? *l / s->p.repeat_penalty : *l * s->p.repeat_penalty;
    }
}

int32_t moe_sampler_sample(moe_sampler *s, const float *logits)
{
    int n = s->n_vocab;
    for (int i = 0; i < n; i++)
        s->cands[i] = (cand){logits[i], i};
    penalize(s);
    if (s->p.temp <= 0) {
        int best = 0;
        for (int i = 1; i < n; i++)
            if (s->cands[i].logit > s->cands[best].logit)
                best = i;
        return s->cands[best].id;
    }
    /* top-k first keeps the sort small */
    int keep = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    qsort(s->cands, (size_t)n, sizeof *s->cands, by_logit_desc);
    n = keep;

    /* probabilities at temperature 1 for top-p and min-p, as llama.cpp's chain */
    float max = s->cands[0].logit;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp(s->cands[i].logit - max);
    if (s->p.top_p < 1) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += exp(s->cands[i].logit - max) / sum;
            if (acc >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (s->p.min_p > 0) {
        /* p_i >= min_p * p_max  <=>  logit_i >= max + log(min_p) */
        float floor_logit = max + logf(s->p.min_p);
        int m = 1;
        while (m < n && s->cands[m].logit >= floor_logit)
            m++;
        n = m;
    }
    sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((s->cands[i].logit - max) / s->p.temp);
    double r = next_uniform(s) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += exp((s->cands[i].logit - max) / s->p.temp);
        if (r < acc)
            return s->cands[i].id;
    }
    return s->cands[n - 1].id;
}
