/* The conversation as the router saw it: every token in the session with
 * its text and, per MoE layer, the probabilities of all experts and the
 * experts chosen with their weights. Filled by a trace sink, indexed by
 * position, so a re-prefill overwrites the routing of the tokens it sees
 * again. Not locked: the owner (tui.h) guards it. */
#ifndef MOE_CONVO_H
#define MOE_CONVO_H

#include <stddef.h>
#include <stdint.h>

#include "moescope/moescope.h"

typedef struct {
    int32_t id;
    uint8_t prompt;            /* part of a prompt the user typed */
    int16_t vote;              /* majority vote of the layers' top-1 */
    char text[24];             /* the token's bytes, cut at 23 */
    uint8_t len;
} convo_token;

typedef struct {
    int n_routes, n_experts;
    int *route_layer;          /* (n_routes) layer index of each MoE layer */
    int n, cap;
    convo_token *tok;          /* (cap) */
    float *probs;              /* (cap, n_routes, n_experts) */
    int16_t *experts;          /* (cap, n_routes, n_experts) chosen, best first; -1 ends */
    float *weights;            /* (cap, n_routes, n_experts) */
    const moe_tokenizer *tokenizer; /* NULL: texts are ids */
    int prompt_mode;           /* tokens arriving now belong to a prompt */
    int oom;
} convo;

/* 0, or -1 when out of memory. */
int convo_init(convo *c, int n_routes, int n_experts, int n_layers, const moe_tokenizer *tok);
void convo_done(convo *c);
void convo_clear(convo *c);
/* Record a token (append at c->n or overwrite an earlier position). */
void convo_add(convo *c, const moe_token_trace *t);
/* The same with the token's text given (a transcript's, in review mode);
 * NULL: its id. */
void convo_add_text(convo *c, const moe_token_trace *t, const char *text, size_t len);
/* Per-token, per-route views. */
static inline const float *convo_probs(const convo *c, int i, int r)
{
    return c->probs + ((size_t)i * c->n_routes + r) * c->n_experts;
}
static inline const int16_t *convo_experts(const convo *c, int i, int r)
{
    return c->experts + ((size_t)i * c->n_routes + r) * c->n_experts;
}
static inline const float *convo_weights(const convo *c, int i, int r)
{
    return c->weights + ((size_t)i * c->n_routes + r) * c->n_experts;
}
/* The expert that colours token i: the vote, or route r's top-1 (r >= 0). */
int convo_colour(const convo *c, int i, int r);
/* The number of experts chosen for token i at route r. */
int convo_k(const convo *c, int i, int r);

#endif
