/* The conversation store (see convo.h). */
#include "convo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int convo_init(convo *c, int n_routes, int n_experts, int n_layers, const moe_tokenizer *tok)
{
    memset(c, 0, sizeof *c);
    c->n_routes = n_routes;
    c->n_experts = n_experts;
    c->tokenizer = tok;
    if (!(c->route_layer = calloc((size_t)(n_routes ? n_routes : 1), sizeof *c->route_layer)))
        return -1;
    /* until the first token says otherwise: the last n_routes layers */
    for (int r = 0; r < n_routes; r++)
        c->route_layer[r] = n_layers - n_routes + r;
    return 0;
}

void convo_done(convo *c)
{
    free(c->route_layer);
    free(c->tok);
    free(c->probs);
    free(c->experts);
    free(c->weights);
    memset(c, 0, sizeof *c);
}

void convo_clear(convo *c)
{
    c->n = 0;
}

static int grow(convo *c, int need)
{
    if (need <= c->cap)
        return 0;
    int cap = c->cap ? c->cap * 2 : 256;
    while (cap < need)
        cap *= 2;
    size_t per = (size_t)c->n_routes * (size_t)c->n_experts;
    convo_token *tok = realloc(c->tok, (size_t)cap * sizeof *tok);
    if (tok)
        c->tok = tok;
    float *p = realloc(c->probs, (size_t)cap * per * sizeof *p + 1);
    if (p)
        c->probs = p;
    int16_t *e = realloc(c->experts, (size_t)cap * per * sizeof *e + 1);
    if (e)
        c->experts = e;
    float *w = realloc(c->weights, (size_t)cap * per * sizeof *w + 1);
    if (w)
        c->weights = w;
    if (!tok || !p || !e || !w)
        return -1;
    c->cap = cap;
    return 0;
}

void convo_add(convo *c, const moe_token_trace *t)
{
    size_t len = 0;
    const char *piece = c->tokenizer ? moe_tokenizer_piece(c->tokenizer, t->id, &len) : NULL;
    convo_add_text(c, t, piece, len);
}

void convo_add_text(convo *c, const moe_token_trace *t, const char *piece, size_t len)
{
    int i = t->pos;
    if (i < 0 || i > c->n || t->n_routes != c->n_routes)
        return; /* positions arrive in order; anything else is not ours */
    if (i == c->n && grow(c, i + 1)) {
        c->oom = 1;
        return;
    }
    convo_token *ct = &c->tok[i];
    if (i == c->n) {
        memset(ct, 0, sizeof *ct);
        ct->prompt = (uint8_t)c->prompt_mode;
        c->n++;
    }
    ct->id = t->id;
    if (!piece)
        len = (size_t)snprintf(ct->text, sizeof ct->text, "[%d]", (int)t->id);
    else
        memcpy(ct->text, piece, len = len < sizeof ct->text - 1 ? len : sizeof ct->text - 1);
    ct->text[len] = 0;
    ct->len = (uint8_t)len;
    int E = c->n_experts;
    int votes[512] = {0};
    int best = -1;
    for (int r = 0; r < t->n_routes; r++) {
        const moe_route *rt = &t->routes[r];
        c->route_layer[r] = rt->layer;
        size_t off = ((size_t)i * c->n_routes + r) * E;
        int ne = rt->n_experts < E ? rt->n_experts : E;
        memcpy(c->probs + off, rt->probs, (size_t)ne * sizeof(float));
        int k = rt->k < E ? rt->k : E;
        for (int j = 0; j < E; j++) {
            c->experts[off + j] = (int16_t)(j < k ? rt->experts[j] : -1);
            c->weights[off + j] = j < k ? rt->weights[j] : 0;
        }
        if (k > 0 && rt->experts[0] >= 0 && rt->experts[0] < 512) {
            int e = rt->experts[0];
            votes[e]++;
            if (best < 0 || votes[e] > votes[best] || (votes[e] == votes[best] && e < best))
                best = e;
        }
    }
    ct->vote = (int16_t)best;
}

int convo_colour(const convo *c, int i, int r)
{
    if (r < 0 || r >= c->n_routes)
        return c->tok[i].vote;
    return convo_experts(c, i, r)[0];
}

int convo_k(const convo *c, int i, int r)
{
    const int16_t *e = convo_experts(c, i, r);
    int k = 0;
    while (k < c->n_experts && e[k] >= 0)
        k++;
    return k;
}
