/* The router: the one place where gating happens.
 *
 * Given a layer's router logits it decides the experts and their mixing
 * weights, following the architecture's own rule. Later controls (masks,
 * forced experts, biases) act here and nowhere else. */
#ifndef MOE_ROUTER_H
#define MOE_ROUTER_H

#include <stdint.h>

typedef struct {
    int renormalize;           /* top-k weights rescaled to sum to one (Mixtral) */
} router_rule;

/* probs (n) receives the softmax of logits (n; -inf for an expert that is
 * switched off); experts/weights (k) the chosen experts, most probable
 * first (ties: lower index), and their weights. 1 <= k <= the number of
 * finite logits. With `forced` (n flags, n_forced of them set) exactly
 * those experts are chosen instead, and k is n_forced. Returns k. */
int router_gate(const router_rule *rule, const float *logits, int n, int k, const uint8_t *forced,
                int n_forced, float *probs, int *experts, float *weights);

#endif
