/* Gating: softmax over all experts, keep the k most probable, optionally
 * renormalise (see router.h). */
#include "router.h"

#include <assert.h>
#include <math.h>

int router_gate(const router_rule *rule, const float *logits, int n, int k, const uint8_t *forced,
                int n_forced, float *probs, int *experts, float *weights)
{
    if (forced && n_forced > 0)
        k = n_forced;
    assert(k >= 1 && k <= n);
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        probs[i] = expf(logits[i] - max);
        sum += probs[i];
    }
    for (int i = 0; i < n; i++)
        probs[i] = (float)(probs[i] / sum);

    /* Selection in descending order without scratch: each pass takes the
     * best expert ranked after the previous pick (ties: lower index first).
     * O(k·n), which stays small even with k dialled up to n. */
    double chosen_sum = 0;
    float prev_p = INFINITY;
    int prev_i = -1;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            float p = probs[i];
            int after_prev = p < prev_p || (p == prev_p && i > prev_i);
            if (forced && n_forced > 0 && !forced[i])
                continue;
            if (after_prev && (best < 0 || p > probs[best]))
                best = i;
        }
        if (best < 0) /* NaN logits: keep the result well-formed */
            best = (prev_i + 1) % n;
        experts[j] = best;
        weights[j] = probs[best];
        chosen_sum += probs[best];
        prev_p = probs[best];
        prev_i = best;
    }
    if (rule->renormalize && chosen_sum > 0)
        for (int j = 0; j < k; j++)
            weights[j] = (float)(weights[j] / chosen_sum);
    return k;
}
