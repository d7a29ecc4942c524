/* The router: the one place where gating happens.
 *
 * Given a layer's router logits it decides the experts and their mixing
 * weights, following the architecture's own rule. Later controls (masks,
 * forced experts, biases) act here and nowhere else. */
#ifndef MOE_ROUTER_H
#define MOE_ROUTER_H

typedef struct {
    int renormalize;           /* top-k weights rescaled to sum to one (Mixtral) */
} router_rule;

/* probs (n) receives the softmax of logits (n); experts/weights (k) the
 * chosen experts, most probable first (ties: lower index), and their
 * weights. 1 <= k <= n. */
void router_gate(const router_rule *rule, const float *logits, int n, int k, float *probs,
                 int *experts, float *weights);

#endif
