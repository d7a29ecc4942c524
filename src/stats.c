/* Routing statistics (see moescope.h): expert shares, how often
 * consecutive tokens share an expert (Mixtral paper, section 5), load
 * balance as the coefficient of variation of importance and load
 * (Shazeer et al., 2017), and capacity overflow (Switch Transformer,
 * GShard). Counts are kept per layer; figures are derived on request. The
 * pooled counts (the last layer_counts) keep shares and balance only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct {
    uint64_t *top1;            /* (E) first choices */
    uint64_t *any;             /* (E) assignments */
    double *importance;        /* (E) summed mixing weights */
    uint64_t pairs, same_top1, same_any;
    uint64_t overflow, assigned; /* overflow of the closed batches */
    uint64_t *batch_load;      /* (E) assignments in the current batch */
    int *prev;                 /* (k_max) previous token's experts; prev_n 0: none */
    int prev_n;
    double *share_top1, *share_any; /* (E) results */
} layer_counts;

struct moe_stats {
    int n_routes, n_experts, k, batch, in_batch;
    double capacity_factor;
    uint64_t n_tokens;
    layer_counts *layers;      /* (n_routes + 1): the last pools every layer */
};

moe_status moe_stats_new(int n_routes, int n_experts, int k, double capacity_factor, int batch,
                         moe_stats **out, moe_error *err)
{
    *out = NULL;
    if (n_routes < 1 || n_experts < 1 || n_experts > (1 << 16) || k < 1 || k > n_experts)
        return moe_fail(err, MOE_EINVAL, "statistics need MoE layers, experts and 1 <= k <= experts");
    if (!(capacity_factor > 0 && capacity_factor <= 1e6) || batch < 1)
        return moe_fail(err, MOE_EINVAL, "capacity factor %g or batch %d out of range", capacity_factor, batch);
    moe_stats *st = calloc(1, sizeof *st);
    if (!st)
        return moe_fail(err, MOE_ENOMEM, "out of memory for statistics");
    st->n_routes = n_routes;
    st->n_experts = n_experts;
    st->k = k;
    st->batch = batch;
    st->capacity_factor = capacity_factor;
    st->layers = calloc((size_t)n_routes + 1, sizeof *st->layers);
    int failed = !st->layers;
    for (int r = 0; !failed && r <= n_routes; r++) {
        layer_counts *c = &st->layers[r];
        c->top1 = calloc((size_t)n_experts, sizeof *c->top1);
        c->any = calloc((size_t)n_experts, sizeof *c->any);
        c->importance = calloc((size_t)n_experts, sizeof *c->importance);
        c->batch_load = calloc((size_t)n_experts, sizeof *c->batch_load);
        c->prev = calloc((size_t)n_experts, sizeof *c->prev);
        c->share_top1 = calloc((size_t)n_experts, sizeof *c->share_top1);
        c->share_any = calloc((size_t)n_experts, sizeof *c->share_any);
        failed = !c->top1 || !c->any || !c->importance || !c->batch_load || !c->prev || !c->share_top1 ||
                 !c->share_any;
    }
    if (failed) {
        moe_stats_free(st);
        return moe_fail(err, MOE_ENOMEM, "out of memory for statistics");
    }
    *out = st;
    return MOE_OK;
}

void moe_stats_free(moe_stats *st)
{
    if (!st)
        return;
    for (int r = 0; st->layers && r <= st->n_routes; r++) {
        layer_counts *c = &st->layers[r];
        free(c->top1);
        free(c->any);
        free(c->importance);
        free(c->batch_load);
        free(c->prev);
        free(c->share_top1);
        free(c->share_any);
    }
    free(st->layers);
    free(st);
}

/* Assignments past capacity in the current batch. Capacity follows the
 * tokens actually in it, so a short last batch is judged fairly. */
static uint64_t batch_overflow(const moe_stats *st, const layer_counts *c)
{
    uint64_t capacity = (uint64_t)ceil(st->capacity_factor * st->in_batch * st->k / st->n_experts), over = 0;
    for (int e = 0; e < st->n_experts; e++)
        over += c->batch_load[e] > capacity ? c->batch_load[e] - capacity : 0;
    return over;
}

static void end_batch(moe_stats *st)
{
    for (int r = 0; r < st->n_routes; r++) {
        layer_counts *c = &st->layers[r];
        c->overflow += batch_overflow(st, c);
        memset(c->batch_load, 0, (size_t)st->n_experts * sizeof(uint64_t));
    }
    st->in_batch = 0;
}

void moe_stats_break(moe_stats *st)
{
    for (int r = 0; r <= st->n_routes; r++)
        st->layers[r].prev_n = 0;
    end_batch(st);
}

/* Shares and balance: kept per layer and pooled over layers. */
static void count_shares(layer_counts *c, const moe_route *rt)
{
    c->top1[rt->experts[0]]++;
    for (int j = 0; j < rt->k; j++) {
        c->any[rt->experts[j]]++;
        c->importance[rt->experts[j]] += rt->weights[j];
        c->assigned++;
    }
}

/* Capacity and consecutive tokens: per layer only. */
static void count_sequence(layer_counts *c, const moe_route *rt, int n_experts)
{
    for (int j = 0; j < rt->k; j++)
        c->batch_load[rt->experts[j]]++;
    if (c->prev_n) {
        c->pairs++;
        c->same_top1 += c->prev[0] == rt->experts[0];
        int shared = 0;
        for (int j = 0; j < rt->k && !shared; j++)
            for (int q = 0; q < c->prev_n; q++)
                shared |= c->prev[q] == rt->experts[j];
        c->same_any += shared;
    }
    c->prev_n = rt->k < n_experts ? rt->k : n_experts;
    memcpy(c->prev, rt->experts, (size_t)c->prev_n * sizeof *c->prev);
}

void moe_stats_add(moe_stats *st, const moe_token_trace *t)
{
    if (t->n_routes != st->n_routes)
        return;
    for (int r = 0; r < st->n_routes; r++) {
        const moe_route *rt = &t->routes[r];
        if (rt->k < 1 || rt->n_experts != st->n_experts)
            continue;
        count_shares(&st->layers[r], rt);
        count_shares(&st->layers[st->n_routes], rt);
        count_sequence(&st->layers[r], rt, st->n_experts);
    }
    st->n_tokens++;
    if (++st->in_batch == st->batch)
        end_batch(st);
}

/* Coefficient of variation (population standard deviation / mean). */
static double cv(const double *v, int n)
{
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++)
        mean += v[i] / n;
    for (int i = 0; i < n; i++)
        var += (v[i] - mean) * (v[i] - mean) / n;
    return mean > 0 ? sqrt(var) / mean : 0;
}

void moe_stats_get(moe_stats *st, int route, moe_stats_layer *out)
{
    memset(out, 0, sizeof *out);
    int pooled = route < 0 || route >= st->n_routes;
    layer_counts *c = &st->layers[pooled ? st->n_routes : route];
    int E = st->n_experts, k = st->k;
    double tokens = (double)st->n_tokens * (pooled ? st->n_routes : 1);
    double *load = c->share_any; /* scratch before it holds the shares */
    for (int e = 0; e < E; e++)
        load[e] = (double)c->any[e];
    out->cv_load = cv(load, E);
    out->cv_importance = cv(c->importance, E);
    for (int e = 0; e < E; e++) {
        c->share_top1[e] = tokens ? c->top1[e] / tokens : 0;
        c->share_any[e] = tokens ? c->any[e] / tokens : 0;
    }
    out->n_tokens = st->n_tokens;
    out->share_top1 = c->share_top1;
    out->share_any = c->share_any;
    uint64_t pairs = 0, same1 = 0, same_any = 0, over = 0;
    for (int r = pooled ? 0 : route; r < (pooled ? st->n_routes : route + 1); r++) {
        const layer_counts *lc = &st->layers[r];
        pairs += lc->pairs;
        same1 += lc->same_top1;
        same_any += lc->same_any;
        over += lc->overflow + batch_overflow(st, lc); /* closed batches and the open one */
    }
    out->same_top1 = pairs ? (double)same1 / pairs : 0;
    out->same_any = pairs ? (double)same_any / pairs : 0;
    out->overflow = c->assigned ? (double)over / c->assigned : 0;
    out->chance_top1 = 1.0 / E;
    /* C(E-k, k) / C(E, k) = prod_{i<k} (E-k-i) / (E-i) */
    double none = 1;
    for (int i = 0; i < k; i++)
        none *= E - k - i > 0 ? (double)(E - k - i) / (E - i) : 0;
    out->chance_any = 1 - none;
}
